"""Fine-tuning the mixed model on each cell, and leave-one-out transfer (1 epoch each)."""

import json

import numpy as np
import pandas as pd
import pytest

import data
import experiments
import main
import pooling
from conftest import assert_one_line_error
from test_resume import run

SETTINGS = ["--epochs", 1, "--finetune_epochs", 1, "--batch_size", 16, "--seed", 5]


def weights(path):
    import Convnet

    model = Convnet.load_model(str(path))
    return {
        layer.name: [w.copy() for w in layer.get_weights()]
        for layer in model.layers
        if layer.get_weights()
    }


def max_change(a, b, layer):
    return max(float(np.abs(x - y).max()) for x, y in zip(a[layer], b[layer]))


@pytest.fixture(scope="module")
def finetune_run(tiny_dir, tmp_path_factory):
    save = tmp_path_factory.mktemp("ft") / "run"
    res = run("--data_dir", tiny_dir, "--save_dir", save, "--finetune", *SETTINGS)
    return save, res


def test_finetune_writes_both_aucs_and_starts_from_the_mixed_model(finetune_run, tiny_dir):
    import keras

    import Convnet

    save, res = finetune_run
    table = pd.read_csv(save / "output-finetune.csv", dtype={"cell": str})
    assert list(table.cell) == data.list_cells(tiny_dir)
    assert table[["auc_mixed", "auc_finetuned"]].notna().all().all()
    # Pre-trained on the train splits alone: every valid and test gene of the fine-tuned cells
    # is kept out (one split for all cells here), and the pool is split by gene.
    trained = json.loads((save / "trained.json").read_text())
    assert trained["pooling"] == "held_out" and trained["pool_split"] == "gene"
    assert sum(trained["genes"].values()) == 3 * 40 and trained["genes_on_both_sides"] == 0
    assert trained["left_out"]["rows"] == 3 * 40  # the valid splits
    assert list(table.test_in_pool) == [0, 0, 0] and list(table.test_seen) == [0, 0, 0]
    assert "finetuned mean AUC" in res.stdout and "mixed mean AUC" in res.stdout
    pretrained = weights(save / "best_model.keras")
    keras.utils.set_random_seed(123)
    fresh = {
        layer.name: layer.get_weights()
        for layer in Convnet.Conv1DNet().layers
        if layer.get_weights()
    }
    for cell in table.cell:
        # The mixed model's own test of the cell, next to the fine-tuned one's.
        mixed = pd.read_csv(save / cell / "mixed" / "predictions.csv")
        assert len(mixed) == table.set_index("cell").n_test[cell]
        # One epoch of 3 steps at lr 1e-4 moves each weight by about 3e-4 at most (Adam):
        # the fine-tuned model is the pre-trained one plus a little, not a new network.
        tuned = weights(save / cell / "final_model.keras")
        for layer in ("conv1", "conv3", "dense1", "output"):
            assert 0 < max_change(tuned, pretrained, layer) < 2e-3, (cell, layer)
            assert max_change(tuned, fresh, layer) > 0.05, (cell, layer)


def test_freeze_conv_from_saved_weights(finetune_run, tiny_dir, tmp_path):
    save, _ = finetune_run
    out = tmp_path / "frozen"
    res = run(
        "--data_dir",
        tiny_dir,
        "--save_dir",
        out,
        "--weights",
        save,
        "--freeze_conv",
        "--finetune",
        "--cells",
        "S001",
        *SETTINGS,
    )
    assert "Pre-training" not in res.stdout  # started from the saved mixed model
    pretrained = weights(save / "best_model.keras")
    tuned = weights(out / "S001" / "final_model.keras")
    for layer in ("conv1", "conv2", "conv3"):
        assert max_change(tuned, pretrained, layer) == 0, layer
    assert max_change(tuned, pretrained, "dense1") > 0
    row = pd.read_csv(out / "output-finetune.csv").iloc[0]
    assert row.best_epoch_mixed == json.loads((save / "trained.json").read_text())["best_epoch"]


@pytest.mark.slow
def test_leave_one_out_keeps_the_cell_out_of_pretraining(tiny_dir, tmp_path):
    out = tmp_path / "loo"
    run("--data_dir", tiny_dir, "--save_dir", out, "--holdout_cell", "S002", *SETTINGS)
    table = pd.read_csv(out / "output-finetune.csv", dtype={"cell": str})
    assert list(table.cell) == ["S002"]
    trained = json.loads((out / "trained.json").read_text())
    assert trained["cells"] == ["S001", "S003"]
    # Two cells' train splits: their valid splits hold the genes S002 validates on (one split
    # for all cells here), so they stay out, and the pool is split by gene.
    assert sum(trained["genes"].values()) == 2 * 40
    assert trained["left_out"] == {"cells": ["S002"], "splits": ["valid", "test"], "genes": 40,
                                   "rows": 80}  # fmt: skip
    assert trained["pool_split"] == "gene" and trained["genes_on_both_sides"] == 0
    assert list(table.test_in_pool) == [0] and list(table.test_seen) == [0]
    # The pooled gene ids and their cells, as the run builds them: none from S002.
    args = main.parse_args(["--data_dir", str(tiny_dir), "--holdout_cell", "S002"])
    cells = data.list_cells(tiny_dir)
    plan = experiments.pool_plan(args, cells)
    mix = pooling.load_data_mix(tiny_dir, plan.pool, seed=5, tests=False, leave_out=plan.left_out)
    pooled = set(zip(mix.train.cells, mix.train.ids)) | set(zip(mix.valid.cells, mix.valid.ids))
    held = data.load_cell(tiny_dir / "S002")
    assert len(pooled) == 80 and not pooled & {("S002", g) for g in held.train.ids}
    assert "S002" not in set(mix.train.cells) | set(mix.valid.cells)
    assert not {g for _, g in pooled} & (set(held.valid.ids) | set(held.test.ids))
    # A saved model is used for leave-one-out only when its record shows the cell was not in
    # its pool: this one's was.
    res = run("--data_dir", tiny_dir, "--save_dir", tmp_path / "again", "--holdout_cell",
              "S001", "--weights", out, *SETTINGS, check=False)  # fmt: skip
    assert_one_line_error(res, "trained.json: --holdout_cell S001 was in the pool")
    res = run("--data_dir", tiny_dir, "--save_dir", tmp_path / "again", "--holdout_cell",
              "S002", "--weights", out, *SETTINGS)  # fmt: skip
    assert "Test genes in the pooled data: none" in res.stdout
    # Leave-one-out over several cells: each held-out cell pre-trains on the others in its own
    # folder and gets the row of a run that holds it out alone; a stopped run resumes with
    # the held-out cells not in the table.
    each = tmp_path / "each"
    run("--data_dir", tiny_dir, "--save_dir", each, "--holdout_cell", "S002,S003", *SETTINGS)
    rows = (each / "output-finetune.csv").read_text().splitlines(keepends=True)
    assert [r.split(",")[0] for r in rows[1:]] == ["S002", "S003"]
    assert rows[1] == (out / "output-finetune.csv").read_text().splitlines(keepends=True)[1]
    for cell, pool in (("S003", ["S001", "S002"]), ("S002", ["S001", "S003"])):
        trained = json.loads((each / cell / "pretraining" / "trained.json").read_text())
        assert trained["cells"] == pool
    assert not (each / "trained.json").exists()
    (each / "output-finetune.csv").write_text("".join(rows[:2]))  # stopped after S002
    res = run("--save_dir", each, "--resume")
    assert "S002: finished earlier, kept" in res.stdout and "Cell 2/2: S003: left out" in res.stdout
    assert (each / "output-finetune.csv").read_text() == "".join(rows)
    # With --weights nothing is pre-trained: the one model must hold none of the cells.
    mixed = tmp_path / "mixed-S001"
    run("--data_dir", tiny_dir, "--save_dir", mixed, "--mix", "--cells", "S001", *SETTINGS)
    res = run("--data_dir", tiny_dir, "--save_dir", tmp_path / "w", "--holdout_cell", "all",
              "--weights", mixed, *SETTINGS, check=False)  # fmt: skip
    assert_one_line_error(res, "trained.json: --holdout_cell S001 was in the pool")
    run("--data_dir", tiny_dir, "--save_dir", tmp_path / "w", "--holdout_cell", "S002,S003",
        "--weights", mixed, *SETTINGS)  # fmt: skip
    table = pd.read_csv(tmp_path / "w" / "output-finetune.csv", dtype={"cell": str})
    assert list(table.cell) == ["S002", "S003"] and table.auc_finetuned.notna().all()
    assert not (tmp_path / "w" / "S002" / "pretraining").exists()


def test_finetune_resume_keeps_pretrained_model_and_finished_cells(finetune_run, tmp_path):
    import shutil

    save, _ = finetune_run
    copy = tmp_path / "copy"
    shutil.copytree(save, copy)
    table = (save / "output-finetune.csv").read_text()
    lines = table.splitlines(keepends=True)
    (copy / "output-finetune.csv").write_text("".join(lines[:2]))  # stopped after S001
    res = run("--save_dir", copy, "--resume")
    assert "Mixed model trained earlier" in res.stdout
    assert "S001: finished earlier, kept" in res.stdout
    assert (copy / "output-finetune.csv").read_text() == table
    res = run("--save_dir", copy, "--resume", "--finetune_lr", 0.01, check=False)
    assert res.returncode == 2 and "--finetune_lr 0.01 (the run has 0.0001)" in res.stderr
