"""The command line end to end, through subprocess, on tiny generated data (1 epoch)."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import data
import distribute
import main
from conftest import ROOT, assert_one_line_error

PER_CELL_FILES = [
    "log.csv",
    "log.png",
    "roc.png",
    "predictions.csv",
    "best_model.keras",
    "final_model.keras",
    "tensorboard",
]


def run(*args, check=True):
    res = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    if check:
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def per_cell_run(tiny_dir, tmp_path_factory):
    save = tmp_path_factory.mktemp("runs") / "percell"
    res = run(
        "--data_dir",
        tiny_dir,
        "--epochs",
        1,
        "--batch_size",
        16,
        "--seed",
        3,
        "--save_dir",
        save,
        "--mix",
        "false",
    )
    return save, res


@pytest.fixture(scope="module")
def mix_run(tiny_dir, tmp_path_factory):
    save = tmp_path_factory.mktemp("runs") / "mix"
    res = run(
        "--data_dir",
        tiny_dir,
        "--epochs",
        1,
        "--batch_size",
        16,
        "--seed",
        3,
        "--save_dir",
        save,
        "--mix",
    )
    return save, res


def test_per_cell_run_writes_everything(per_cell_run, tiny_dir):
    save, res = per_cell_run
    assert "Cell 1/3: S001" in res.stdout and "Cell 3/3: S003" in res.stdout
    assert "mean AUC" in res.stdout and "median AUC" in res.stdout
    # TensorFlow's start-up INFO lines (oneDNN, CUDA) are kept off the terminal.
    assert not [x for x in res.stderr.splitlines() if distribute.TF_INFO_LINE.match(x)], res.stderr
    args = pd.read_json(save / "args.json", typ="series")
    assert args["epochs"] == 1 and args["seed"] == 3 and not args["mix"]
    assert args["recipe"] == "default"  # which recipe ran is recorded
    assert not (save / "output-mix.csv").exists()  # --mix false does not mix
    table = pd.read_csv(save / "output.csv", dtype={"cell": str})
    assert list(table.columns) == [
        "cell",
        "auc",
        "accuracy",
        "n_test",
        "best_epoch",
        "attempts",
        "sound",
    ]
    assert list(table.cell) == ["S001", "S002", "S003"]
    assert (table.n_test == 40).all() and (table.best_epoch == 1).all()
    # 40 validation genes are too few to tell a stall: one attempt each, and it is said once.
    assert (table.attempts == 1).all() and res.stdout.count("No restarts:") == 1
    assert not list(save.glob("*/attempts*"))
    for cell in table.cell:
        for name in PER_CELL_FILES:
            assert (save / cell / name).exists(), f"{cell}/{name} missing"
        log = pd.read_csv(save / cell / "log.csv")
        for column in (
            "epoch",
            "loss",
            "accuracy",
            "auc",
            "val_loss",
            "val_accuracy",
            "val_auc",
            "learning_rate",
        ):
            assert column in log
        pred = pd.read_csv(save / cell / "predictions.csv", dtype={"gene_id": str})
        test = data.load_cell(tiny_dir / cell).test
        np.testing.assert_array_equal(pred.gene_id, test.ids)  # the cell's test split
        np.testing.assert_array_equal(pred.label, test.labels)


def test_mix_run_tests_each_cells_own_test_split(mix_run, tiny_dir):
    from sklearn.metrics import roc_auc_score

    import Convnet

    save, res = mix_run
    assert "pooled from 3 cells" in res.stdout
    for name in (
        "log.csv",
        "log.png",
        "best_model.keras",
        "final_model.keras",
        "tensorboard",
        "args.json",
        "output-mix.csv",
    ):
        assert (save / name).exists(), name
    table = pd.read_csv(save / "output-mix.csv", dtype={"cell": str})
    assert list(table.cell) == ["S001", "S002", "S003"]
    # One split for all cells: no test gene is in the pool, and the paper's split by row.
    assert list(table.test_in_pool) == [0, 0, 0] and list(table.test_seen) == [0, 0, 0]
    assert "Test genes in the pooled data: none, in all 3 tested cells" in res.stdout
    assert "split by row, the paper's" in res.stdout
    trained = pd.read_json(save / "trained.json", typ="series")
    assert trained["pooling"] == "held_out" and trained["genes_on_both_sides"] > 0
    model = Convnet.load_model(str(save / "best_model.keras"))
    for row in table.itertuples():
        assert (save / row.cell / "roc.png").exists()
        cell = data.load_cell(tiny_dir / row.cell)
        pred = pd.read_csv(save / row.cell / "predictions.csv", dtype={"gene_id": str})
        np.testing.assert_array_equal(pred.gene_id, cell.test.ids)
        test_auc = roc_auc_score(cell.test.labels, Convnet.predict_proba(model, cell.test.x))
        valid_auc = roc_auc_score(cell.valid.labels, Convnet.predict_proba(model, cell.valid.x))
        assert row.auc == pytest.approx(test_auc, abs=1e-5)
        assert abs(row.auc - valid_auc) > 1e-4  # the released code's bug would give this one


def test_weights_reproduce_the_saved_models_auc(per_cell_run, tiny_dir, tmp_path):
    save, _ = per_cell_run
    res = run(
        "--data_dir",
        tiny_dir,
        "--weights",
        save / "S002" / "best_model.keras",
        "--cells",
        "S002",
        "--save_dir",
        tmp_path / "w",
    )
    again = pd.read_csv(tmp_path / "w" / "output.csv", dtype={"cell": str})
    first = pd.read_csv(save / "output.csv", dtype={"cell": str}).set_index("cell")
    assert list(again.cell) == ["S002"]
    assert again.auc[0] == pytest.approx(first.loc["S002", "auc"], abs=1e-6)
    assert "Epoch" not in res.stdout  # no training
    # a run folder works too: each cell gets its own best model
    run("--data_dir", tiny_dir, "--weights", save, "--save_dir", tmp_path / "w2")
    table = pd.read_csv(tmp_path / "w2" / "output.csv", dtype={"cell": str}).set_index("cell")
    np.testing.assert_allclose(table.auc, first.auc, atol=1e-6)


def test_seed_gives_identical_aucs(per_cell_run, tiny_dir, tmp_path):
    save, _ = per_cell_run
    run(
        "--data_dir",
        tiny_dir,
        "--epochs",
        1,
        "--batch_size",
        16,
        "--seed",
        3,
        "--save_dir",
        tmp_path / "again",
        "--cells",
        "S001,S003",
    )
    first = pd.read_csv(save / "output.csv", dtype={"cell": str}).set_index("cell")
    again = pd.read_csv(tmp_path / "again" / "output.csv", dtype={"cell": str}).set_index("cell")
    np.testing.assert_array_equal(again.auc, first.loc[["S001", "S003"], "auc"])


one_line_error = assert_one_line_error


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--mix", "maybe"], "expected true or false"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--lr", "abc"], "invalid float value"),
        (["--variant", "big"], "invalid choice"),
        (["--cells", "E999"], "E999"),
        (["--weights", "/nonexistent/model.keras"], "no such file"),
        (["--pooling", "paper"], "--pooling applies to training a pooled model"),
        (["--mix", "--pool_split", "cell"], "invalid choice"),
    ],
)
def test_bad_command_lines(tiny_dir, tmp_path, argv, fragment):
    one_line_error(
        run("--data_dir", tiny_dir, "--save_dir", tmp_path / "s", *argv, check=False), fragment
    )


def test_only_tensorflows_info_lines_are_held_back():
    info = (
        "I0000 00:00:1795573233.450325   32190 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1795573233.451296   32190 cudart_stub.cc:31] Could not find cuda drivers",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    )
    kept = (
        "E0000 00:00:1795573221.507637   32086 cuda_platform.cc:52] failed call to cuInit",
        "W0000 00:00:1795573221.507637   32086 cpu_feature_guard.cc:12] slow build",
        "ImportError: libcudart.so.12: cannot open shared object file",
        "  I0000 00:00:1.2   1 a.cc:1] quoted, not a log line",
    )
    assert all(distribute.TF_INFO_LINE.match(x) for x in info)
    assert not any(distribute.TF_INFO_LINE.match(x) for x in kept)


def test_no_data_says_how_to_get_it(tmp_path):
    res = subprocess.run(
        [sys.executable, str(ROOT / "main.py")], capture_output=True, text=True, cwd=tmp_path
    )
    one_line_error(res, "zenodo", "--data_dir sample_data")


@pytest.mark.slow
def test_bad_data_and_bad_model_exit_2(tiny_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_dir / "S001", bad / "E001", ignore=shutil.ignore_patterns(".cache"))
    path = bad / "E001" / "classification" / "valid.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:150]) + "\n")  # truncated: 1.5 genes
    one_line_error(
        run("--data_dir", bad, "--epochs", 1, "--save_dir", tmp_path / "s", check=False),
        str(path),
        "not a multiple of 100",
    )
    assert not (tmp_path / "s").exists()  # bad data leaves no empty save folder behind
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model at all")
    one_line_error(
        run("--data_dir", tiny_dir, "--weights", junk, "--save_dir", tmp_path / "s2", check=False),
        "cannot load as a Keras model",
    )


def test_existing_results_are_not_overwritten(per_cell_run, tiny_dir):
    save, _ = per_cell_run
    before = (save / "output.csv").read_bytes()
    one_line_error(
        run("--data_dir", tiny_dir, "--save_dir", save, check=False),
        "already holds an earlier run",
        "--overwrite",
    )
    assert (save / "output.csv").read_bytes() == before


def test_mix_flag_parsing_and_default_save_dir(tmp_path, monkeypatch):

    monkeypatch.chdir(tmp_path)
    assert main.parse_args(["--mix"]).mix is True
    assert main.parse_args(["--mix", "true"]).mix is True
    assert main.parse_args(["--mix", "False"]).mix is False  # the released code mixed here
    assert main.parse_args([]).mix is False
    first = main.parse_args(["--epochs", "3", "--mix"]).save_dir
    assert first == "logs/mix-full-e3-b100-lr0.001-d0.9"
    (tmp_path / first).mkdir(parents=True)
    (tmp_path / first / "args.json").write_text("{}")
    # an earlier default run is never overwritten: the next default folder gets a suffix
    assert main.parse_args(["--epochs", "3", "--mix"]).save_dir == first + "-2"


def test_help_answers_at_once_and_states_defaults():
    res = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "main.py"), "-h"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0
    assert "tensorflow" not in res.stderr  # -X importtime lists every module imported
    for flag, default in (
        ("--epochs", "20"),
        ("--batch_size", "100"),
        ("--lr ", "0.001"),
        ("--lr_decay", "0.9"),
        ("--data_dir", "./data"),
    ):
        options = res.stdout.split("options:", 1)[1]
        block = options.split("\n  " + flag.strip(), 1)[1].split("\n  --", 1)[0]
        assert f"(default: {default})" in " ".join(block.split()), flag


def test_utils_redraws_curves_from_logs(per_cell_run, tmp_path):
    save, _ = per_cell_run
    for cell in ("S001", "S002", "S003"):
        (save / cell / "log.png").unlink()
    out = tmp_path / "overlay.png"
    res = subprocess.run(
        [sys.executable, str(ROOT / "utils.py"), str(save), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for cell in ("S001", "S002", "S003"):
        assert (save / cell / "log.png").stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = subprocess.run(
        [sys.executable, str(ROOT / "utils.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and "no log.csv" in res.stderr


def test_summary_says_when_no_auc_is_defined(tmp_path, capsys):
    import results

    table = results.Results(tmp_path / "output.csv", ["A", "B"], resume=False)
    for cell in ("A", "B"):
        table.add({"cell": cell, "auc": float("nan"), "accuracy": 1.0, "n_test": 5})
    results.print_summary(table)
    out = capsys.readouterr().out
    assert "2 cells, no AUC defined (each test split holds one class" in out, out
