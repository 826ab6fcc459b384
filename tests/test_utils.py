"""utils.py: training curves, the data and model pictures, its command; the README's images
(images/make_images.py)."""

import shutil

import numpy as np
import pandas as pd
import pytest

import data
import synth
import utils
from conftest import run_script

PNG = b"\x89PNG\r\n\x1a\n"


def run_utils(*args):
    return run_script("utils.py", *args)


def write_log(folder):
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "epoch": [0, 1],
            "loss": [0.7, 0.6],
            "accuracy": [0.5, 0.6],
            "auc": [0.6, 0.7],
            "val_loss": [0.7, 0.65],
            "val_accuracy": [0.5, 0.55],
            "val_auc": [0.55, 0.6],
            "learning_rate": [1e-3, 9e-4],
        }
    ).to_csv(folder / "log.csv", index=False)


def test_plot_subcommand_and_bare_paths(tmp_path, capsys):
    write_log(tmp_path / "run" / "S001")
    write_log(tmp_path / "run" / "S002")
    assert utils.main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "run" / "S002" / "log.png").read_bytes()[:8] == PNG
    assert (tmp_path / "o.png").read_bytes()[:8] == PNG
    (tmp_path / "run" / "S001" / "log.png").unlink()
    assert utils.main([str(tmp_path / "run" / "S001" / "log.csv")]) == 0  # the old usage
    assert (tmp_path / "run" / "S001" / "log.png").stat().st_size > 10_000
    capsys.readouterr()
    assert utils.main([str(tmp_path)]) == 2
    assert "no log.csv" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", "log.csv: empty file"),
        ("epoch,accuracy,auc,loss,val_accuracy,val_auc,val_loss\n", "no epoch logged"),
        (bytes(range(256)) * 8, "log.csv: not a CSV table (not UTF-8 text)"),
        ("hello world\nnot a log\n", "log.csv: not a training log (no 'epoch' column"),
        ("epoch,loss\n0,0.7\n1,abc\n", "log.csv:3: loss 'abc' is not a number"),
        ("epoch,loss\n0,0.7\n1\n", "log.csv:3: 1 field where the header has 2"),
        ("epoch,loss\nfirst,0.7\n", "log.csv:2: epoch 'first' is not an epoch number"),
    ],
)
def test_plot_refuses_a_bad_log_one_line_exit_2(tmp_path, capsys, content, problem):
    write_log(tmp_path / "run" / "S001")
    bad = tmp_path / "run" / "S002" / "log.csv"
    bad.parent.mkdir()
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert utils.main(["plot", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and err.count("\n") == 1, err
    assert problem in err
    # Every log is read before any figure is drawn: the good cell's is not redrawn either.
    assert not (tmp_path / "run" / "S001" / "log.png").exists()
    assert not bad.with_name("log.png").exists()


def test_plot_accepts_undefined_values_in_a_log(tmp_path, capsys):
    # An AUC undefined at an epoch: nan (this project's log), NA (Keras' CSVLogger) or nothing.
    folder = tmp_path / "S001"
    folder.mkdir()
    (folder / "log.csv").write_text("epoch,auc,loss,val_auc\n0,nan,0.7,NA\n1,0.6,0.6,\n")
    log = utils.read_log(folder)
    assert log["epoch"].tolist() == [1, 2]
    assert log["auc"].isna().tolist() == [True, False]
    assert log["val_auc"].isna().all()
    assert utils.main(["plot", str(folder)]) == 0
    assert (folder / "log.png").read_bytes()[:8] == PNG


def test_typical_genes_picks_the_gene_nearest_its_class_mean():
    rng = np.random.default_rng(0)
    counts = rng.poisson(3, (6, 100, 5)).astype(np.float32)
    labels = np.array([1, 0, 1, 0, 1, 0])
    counts[4] = counts[[0, 2]].mean(axis=0)  # the mean of the other two high genes...
    counts[[0, 2]] += rng.poisson(2, (2, 100, 5))  # ...pushed apart, so 4 is the typical one
    high, low = utils.typical_genes(counts, labels)
    assert labels[high] == 1 and labels[low] == 0
    group = counts[labels == 1]
    dist = [float(((g - group.mean(axis=0)) ** 2).sum()) for g in group]
    assert high == np.flatnonzero(labels == 1)[int(np.argmin(dist))] == 4


def test_data_picture_from_generated_data(tmp_path, capsys):
    synth.synthesize(tmp_path / "d", names=["E003"], n_genes=30, seed=2)
    png, high, low = utils.plot_data(tmp_path / "d", tmp_path / "data.png")
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 30_000
    counts, labels, ids = data._parse_split(tmp_path / "d/E003/classification/test.csv")
    label = dict(zip(ids, labels))
    assert label[high] == 1 and label[low] == 0
    # Chosen genes, through the command line.
    out = tmp_path / "chosen.png"
    assert (
        utils.main(
            [
                "data",
                "--data_dir",
                str(tmp_path / "d"),
                "--cell",
                "E003",
                "--split",
                "train",
                "--genes",
                f"{ids[0]},{ids[1]}",
                "--out",
                str(out),
            ]
        )
        == 2
    )  # test-split ids are not in the train split
    assert "no gene" in capsys.readouterr().err and not out.exists()
    assert (
        utils.main(
            [
                "data",
                "--data_dir",
                str(tmp_path / "d"),
                "--genes",
                f"{ids[0]},{ids[1]}",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert f"genes {ids[0]} and {ids[1]}" in capsys.readouterr().out
    assert (
        utils.main(["data", "--data_dir", str(tmp_path / "d"), "--cell", "E999", "--out", str(out)])
        == 2
    )
    assert "E999" in capsys.readouterr().err


def test_model_picture_shows_each_layers_output_shape(tmp_path):
    import Convnet

    model = Convnet.Conv1DNet()
    rows = utils.layer_rows(model)
    assert [r["shape"] for r in rows] == [
        (505, 1),
        (489, 64),
        (163, 64),
        (163, 64),
        (151, 128),
        (141, 256),
        (35, 256),
        (35, 256),
        (8960,),
        (35,),
        (35,),
        (16,),
        (8,),
        (2,),
    ]
    assert rows[1]["settings"] == "64 filters, kernel 17, valid, tanh"
    assert sum(r["params"] for r in rows) == model.count_params()
    png = utils.plot_model(model, tmp_path / "model.png", style="matplotlib")
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 30_000
    # Without pydot and Graphviz, "auto" falls back to the drawing instead of giving up.
    assert utils.plot_model(model, tmp_path / "auto.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_images_command_reruns_the_example_and_draws_all_three(tmp_path):
    """The README's one command, on a tiny example: 2 cells, 20 genes, 1 epoch."""
    res = run_script(
        "images/make_images.py",
        "--rerun",
        "--outdir",
        tmp_path / "img",
        "--example_dir",
        tmp_path / "ex",
        "--example_cells",
        2,
        "--example_genes",
        20,
        "--example_epochs",
        1,
        "--example_mix_epochs",
        1,
        "--style",
        "matplotlib",
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    for name in ("data.png", "model.png", "auc.png"):
        assert (tmp_path / "img" / name).read_bytes()[:8] == PNG, name
    runs = tmp_path / "img" / "example_runs"
    assert sorted(p.name for p in (runs / "percell").iterdir()) == ["args.json", "output.csv"]
    assert sorted(p.name for p in (runs / "mix").iterdir()) == ["args.json", "output-mix.csv"]
    percell = pd.read_csv(runs / "percell" / "output.csv", dtype={"cell": str})
    assert list(percell.cell) == ["E003", "E004"] and (percell.n_test == 20).all()
    summary = pd.read_csv(tmp_path / "img" / "auc.csv").set_index("line")
    assert summary.loc["per-cell (full), generated data", "cells"] == 2
    assert summary.loc["mixed (full), generated data", "vs_deepchrome"] == 2
    np.testing.assert_allclose(
        summary.loc["per-cell (full), generated data", "mean"], percell.auc.mean(), atol=1e-6
    )
    # Redrawing alone (no --rerun) reads the copied tables; a second outdir stays separate.
    shutil.rmtree(tmp_path / "ex")
    res = run_script("images/make_images.py", "--outdir", tmp_path / "img", "--style", "matplotlib")
    assert res.returncode == 0, res.stderr[-2000:]
