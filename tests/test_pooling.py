"""What the pooled experiments train, validate and test on (pooling.py)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

import data
import main
import pooling
from conftest import gene_rows, write_split
from test_resume import run


@pytest.fixture(scope="module")
def misaligned(tiny_dir, tmp_path_factory):
    """tiny_dir with S002's train and test splits swapped: S002 tests the genes S001 and S003
    train on, and trains on the genes they test on."""
    out = tmp_path_factory.mktemp("misaligned")
    for cell in data.list_cells(tiny_dir):
        shutil.copytree(tiny_dir / cell, out / cell, ignore=shutil.ignore_patterns(".cache"))
    cls = out / "S002" / "classification"
    (cls / "train.csv").rename(cls / "swap.csv")
    (cls / "test.csv").rename(cls / "train.csv")
    (cls / "swap.csv").rename(cls / "test.csv")
    return out


def ids_of(data_dir, cell, split):
    return set(getattr(data.load_cell(data_dir / cell), split).ids)


def test_pooled_gene_ids_are_kept_whole(tmp_path):
    rng = np.random.default_rng(0)
    names = {}
    for cell in ("E001", "E002"):
        for k, split in enumerate(data.SPLITS):
            genes = [f"ENSG0000014151{k}.18", f"ENSG0000014152{k}.1_PAR_Y"]
            names[cell, split] = genes
            rows = [
                r for i, g in enumerate(genes) for r in gene_rows(g, rng.poisson(2, (100, 5)), i)
            ]
            write_split(tmp_path / cell / "classification" / f"{split}.csv", rows)
    mix = pooling.load_data_mix(tmp_path, seed=0)
    pooled = set(mix.train.ids) | set(mix.valid.ids)
    assert pooled == {g for c in ("E001", "E002") for s in ("train", "valid") for g in names[c, s]}
    # Whole ids match, so a tested gene is found in the pool by its id.
    plan = pooling.plan(tmp_path, ["E001"], ["E002"], ("train",), "paper", "row")
    assert plan.counts["E002"]["train_in_pool"] == 2


def test_aligned_splits_pool_the_same_with_or_without_leaving_out(tiny_dir):
    cells = data.list_cells(tiny_dir)
    plan = pooling.plan(tiny_dir, cells, cells, ("test",), "held_out", "row")
    assert plan.rows_left_out == 0 and len(plan.left_out) == 0
    assert all(c == {"test_in_pool": 0, "test_seen": 0} for c in plan.counts.values())
    tested = set().union(*(ids_of(tiny_dir, c, "test") for c in cells))
    paper = pooling.load_data_mix(tiny_dir, cells, seed=5)
    held = pooling.load_data_mix(tiny_dir, cells, seed=5, leave_out=tested)
    for a, b in ((paper.train, held.train), (paper.valid, held.valid)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.cells, b.cells)


def test_split_by_gene_puts_each_gene_on_one_side(tiny_dir):
    cells = data.list_cells(tiny_dir)
    by_row = pooling.load_data_mix(tiny_dir, cells, seed=5)
    assert set(by_row.train.ids) & set(by_row.valid.ids)  # the paper's split: both sides
    mix = pooling.load_data_mix(tiny_dir, cells, seed=5, by_gene=True)
    assert not set(mix.train.ids) & set(mix.valid.ids)
    assert len(mix.train.ids) + len(mix.valid.ids) == 3 * 2 * 40
    # Each gene has 3 rows (one per cell): the cut lands within a gene of 70%.
    assert abs(len(mix.train.ids) - 0.7 * 240) <= 3
    assert len(set(zip(mix.train.cells, mix.train.ids))) == len(mix.train.ids)  # no row twice
    again = pooling.load_data_mix(tiny_dir, cells, seed=5, by_gene=True)
    np.testing.assert_array_equal(again.train.ids, mix.train.ids)


def test_misaligned_splits_are_counted_and_left_out(misaligned):
    cells = data.list_cells(misaligned)
    held = pooling.plan(misaligned, cells, cells, ("test",), "held_out", "row")
    paper = pooling.plan(misaligned, cells, cells, ("test",), "paper", "row")
    for cell in cells:  # every test gene of every cell is another cell's training gene
        assert held.counts[cell] == {"test_in_pool": 40, "test_seen": 0}
        assert paper.counts[cell] == {"test_in_pool": 40, "test_seen": 40}
    assert paper.rows_left_out == 0 and held.rows_left_out == 120 and held.rows == 120
    mix = pooling.load_data_mix(misaligned, cells, seed=5, leave_out=held.left_out)
    tested = set().union(*(ids_of(misaligned, c, "test") for c in cells))
    assert not (set(mix.train.ids) | set(mix.valid.ids)) & tested
    assert len(mix.train.ids) + len(mix.valid.ids) == 120
    # Fine-tuning also keeps out the genes that validate a fine-tuned cell: here nothing is left.
    tune = pooling.plan(misaligned, cells, cells, ("valid", "test"), "held_out", "gene")
    with pytest.raises(data.DataError, match="--pooling paper"):
        tune.check(misaligned)
    pooling.plan(misaligned, cells, cells, ("valid", "test"), "paper", "gene").check(misaligned)


@pytest.mark.slow
def test_mix_on_misaligned_cells_never_tests_a_gene_it_trained_on(misaligned, tmp_path):
    save = tmp_path / "mix"
    res = run("--data_dir", misaligned, "--save_dir", save, "--mix", "--epochs", 1,
              "--batch_size", 16, "--seed", 3)  # fmt: skip
    assert "Test genes in the pooled data: 120 in 3 of 3 tested cells" in res.stdout
    assert "none trained or validated on" in res.stdout
    table = pd.read_csv(save / "output-mix.csv", dtype={"cell": str})
    assert list(table.test_in_pool) == [40, 40, 40] and list(table.test_seen) == [0, 0, 0]
    trained = json.loads((save / "trained.json").read_text())
    assert trained["pooling"] == "held_out" and trained["pool_split"] == "row"
    assert trained["genes"] == {"train": 84, "valid": 36}
    assert trained["overlap"]["S002"] == {"test_in_pool": 40, "test_seen": 0}
    assert trained["left_out"]["rows"] == 120


def test_older_pooled_runs_resume_as_the_paper_pooled(tmp_path, tiny_dir):
    args = main.parse_args(["--data_dir", str(tiny_dir), "--mix", "--save_dir", str(tmp_path)])
    assert (args.pooling, args.pool_split) == ("held_out", "row")
    tuned = main.parse_args(["--data_dir", str(tiny_dir), "--finetune", "--save_dir", "x"])
    assert (tuned.pooling, tuned.pool_split) == ("held_out", "gene")
    recorded = {"data_dir": str(tiny_dir), "mix": True, "epochs": 1, "cells": ["S001"]}
    (tmp_path / "args.json").write_text(json.dumps(recorded))
    resumed = main.parse_args(["--save_dir", str(tmp_path), "--resume"])
    assert (resumed.pooling, resumed.pool_split) == ("paper", "row")
    with pytest.raises(main.UsageError, match="pools as the paper did"):
        main.parse_args(["--save_dir", str(tmp_path), "--resume", "--pooling", "held_out"])
