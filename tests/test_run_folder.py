"""One run owns its folder; diverged training, foreign models and empty selections end in one
line and exit status 2, with nothing already written lost or mixed."""

import subprocess
import sys

import pandas as pd
import pytest

import data
from conftest import ROOT, assert_one_line_error


def main_cmd(*args):
    return [sys.executable, str(ROOT / "main.py"), *map(str, args)]


def run_main(*args, **kwargs):
    return subprocess.run(
        main_cmd(*args), capture_output=True, text=True, cwd=ROOT, timeout=600, **kwargs
    )


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_and_touches_nothing(tiny_dir, tmp_path):
    save = tmp_path / "run"
    first = subprocess.Popen(
        main_cmd("--data_dir", tiny_dir, "--save_dir", save, "--epochs", 3, "--seed", 3),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        for line in first.stdout:  # args.json is written before the first cell starts
            if line.startswith("Cell 1/3"):
                break
        assert first.poll() is None
        for extra in ([], ["--overwrite"], ["--resume"]):
            res = run_main("--data_dir", tiny_dir, "--save_dir", save, "--epochs", 3, *extra)
            assert_one_line_error(
                res, str(save), f"another run is using this folder (process {first.pid})"
            )
        out, err = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    # The first run finished every cell, its table whole, untouched by the refused ones.
    assert list(pd.read_csv(save / "output.csv", dtype={"cell": str})["cell"]) == [
        "S001",
        "S002",
        "S003",
    ]
    assert not (save / ".lock").exists()  # released at exit
    # With the first run gone, the folder is free again.
    res = run_main("--save_dir", save, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "S003: finished earlier, kept" in res.stdout


DIVERGES = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
import data
load_cell = data.load_cell
def poisoned(cell_dir, *args, **kwargs):
    cell = load_cell(cell_dir, *args, **kwargs)
    if cell.name == "S002":  # a cell whose loss is NaN from the first batch on
        cell.train = cell.train._replace(x=np.full_like(cell.train.x, np.nan))
    return cell
data.load_cell = poisoned
import main
sys.exit(main.main({argv!r}))
"""


@pytest.mark.slow
def test_a_cell_whose_training_diverges_stops_the_run_in_one_line(tiny_dir, tmp_path):
    save = tmp_path / "run"
    argv = [str(a) for a in ["--data_dir", tiny_dir, "--save_dir", save, "--epochs", 2]]
    res = subprocess.run(
        [sys.executable, "-c", DIVERGES.format(root=str(ROOT), argv=argv)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert_one_line_error(
        res, "S002: training diverged at epoch 1 (loss nan)", "no model to test", "learning rate"
    )
    assert list(pd.read_csv(save / "output.csv", dtype={"cell": str})["cell"]) == ["S001"]
    assert not (save / "S002" / "best_model.keras").exists()
    assert not (save / "S002" / "final_model.keras").exists()


@pytest.mark.slow
def test_a_foreign_model_is_refused_and_leaves_no_save_folder(tiny_dir, tmp_path):
    import keras

    inp = keras.Input((505, 1))
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inp))
    foreign = keras.Model(inp, out)
    foreign.save(tmp_path / "foreign.keras")
    foreign.save(tmp_path / "foreign.h5")
    (tmp_path / "empty.keras").write_bytes(b"")
    for name, what in (
        ("foreign.keras", "its layers: InputLayer(505, 1) > Flatten(505) > Dense(2, softmax)"),
        ("foreign.h5", "not this project's network"),
        ("empty.keras", "an empty file"),
    ):
        save = tmp_path / f"run-{name}"
        res = run_main("--data_dir", tiny_dir, "--weights", tmp_path / name, "--save_dir", save)
        assert_one_line_error(res, name, what)
        assert not save.exists()


def test_empty_selections_are_refused_and_write_nothing(tiny_dir, tmp_path):
    save = tmp_path / "run"
    for cells in ("", ",", " , "):
        res = run_main("--data_dir", tiny_dir, "--cells", cells, "--save_dir", save)
        assert_one_line_error(res, "--cells", "names no cell")
    for held_out, problem in ((",", "names no cell"), ("S001,S009", "S009")):
        res = run_main("--data_dir", tiny_dir, "--holdout_cell", held_out, "--save_dir", save)
        assert_one_line_error(res, "--holdout_cell" if held_out == "," else "S009", problem)
    res = run_main("--data_dir", tiny_dir, "--cells", "S001", "--holdout_cell", "all",
                   "--save_dir", save)  # fmt: skip
    assert_one_line_error(res, "--holdout_cell S001 leaves no cell to pre-train on")
    assert not save.exists()
    # A data folder whose every cell is incomplete: each is skipped, so none is left.
    partial = tmp_path / "partial"
    for cell in ("E001", "E002"):
        (partial / cell / "classification").mkdir(parents=True)
        (partial / cell / "classification" / "train.csv").write_text("")
    res = run_main("--data_dir", partial, "--save_dir", save)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no cell folders found" in res.stderr.strip().splitlines()[-1]
    assert not save.exists()
    assert data.list_cells(tiny_dir)  # the fixture itself is untouched
