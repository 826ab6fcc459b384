"""utils.py: the comparison with the published AUCs, the data and model pictures, the CLI."""

import csv
import json
import math
import shutil
import statistics

import numpy as np
import pandas as pd
import pytest

import data
import results
import synth
import utils
from conftest import ROOT, run_script

PNG = b"\x89PNG\r\n\x1a\n"


def published() -> dict:
    """The baselines read without pandas or utils: {method: {cell: auc}}."""
    with open(ROOT / "baselines" / "published_auc.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {m: {r["cell"]: float(r[m]) for r in rows} for m in ("deepchrome", "attentivechrome")}


def write_run(folder, cells, aucs, mix=False, variant="full", extra=None):
    """A run folder as main.py leaves it: args.json and output.csv / output-mix.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "args.json").write_text(json.dumps({"mix": mix, "variant": variant, "epochs": 2}))
    table = pd.DataFrame(
        {
            "cell": cells,
            "auc": aucs,
            "accuracy": 0.7,
            "n_test": 50,
            "best_epoch": 1,
            **(extra or {}),
        }
    )
    table.to_csv(folder / ("output-mix.csv" if mix else "output.csv"), index=False)
    return folder


def run_utils(*args):
    return run_script("utils.py", *args)


def test_compare_two_runs_summary_equals_independent_computation(tmp_path):
    truth = published()
    rng = np.random.default_rng(5)
    cells_a = ["E003", "E004", "E005", "E112", "E123", "E057"]
    cells_b = ["E003", "E005", "E112", "E016"]
    aucs_a = np.round(rng.uniform(0.68, 0.93, len(cells_a)), 4)
    aucs_a[1] = truth["deepchrome"]["E004"]  # a tie does not beat the baseline
    aucs_b = np.round(rng.uniform(0.68, 0.93, len(cells_b)), 4)
    a = write_run(tmp_path / "run_a", cells_a, aucs_a)
    b = write_run(tmp_path / "run_b", cells_b, aucs_b, mix=True)
    out = tmp_path / "figs" / "auc.png"

    res = run_utils("compare", a, b, "--out", out)
    assert res.returncode == 0, res.stderr
    assert out.read_bytes()[:8] == PNG and out.stat().st_size > 20_000
    summary = pd.read_csv(out.with_suffix(".csv"))
    assert list(summary.line) == [
        "per-cell (full)",
        "mixed (full)",
        "DeepChrome (published)",
        "AttentiveChrome (official models)",
    ]

    for label, cells, aucs in (
        ("per-cell (full)", cells_a, aucs_a),
        ("mixed (full)", cells_b, aucs_b),
    ):
        row = summary.set_index("line").loc[label]
        values = [float(v) for v in aucs]
        assert row["cells"] == len(values)
        np.testing.assert_allclose(
            [row["mean"], row["median"], row["min"], row["max"]],
            [statistics.mean(values), statistics.median(values), min(values), max(values)],
            atol=1e-6,
        )
        for method, ref in truth.items():
            beats = sum(1 for c, v in zip(cells, values) if v > ref[c])
            assert row[f"beats_{method}"] == beats, (label, method)
            assert row[f"vs_{method}"] == len(cells)
    # The baselines are summarized on the cells drawn (the union of the runs' cells).
    drawn = sorted(set(cells_a) | set(cells_b))
    row = summary.set_index("line").loc["DeepChrome (published)"]
    ref = [truth["deepchrome"][c] for c in drawn]
    np.testing.assert_allclose(
        [row["mean"], row["min"], row["max"]], [statistics.mean(ref), min(ref), max(ref)], atol=1e-6
    )
    assert row["beats_attentivechrome"] == sum(
        truth["deepchrome"][c] > truth["attentivechrome"][c] for c in drawn
    )

    md = out.with_suffix(".md").read_text()
    beats_a = sum(1 for c, v in zip(cells_a, aucs_a) if v > truth["deepchrome"][c])
    assert f"| per-cell (full) | 6 | {statistics.mean(aucs_a):.3f} |" in md
    assert f"| {beats_a} / 6 |" in md
    assert md in res.stdout  # the table is printed too


def test_compare_orders_cells_by_deepchrome_then_unknown_cells():
    lines = [
        results.Line(
            "x", ROOT, "auc", pd.Series({"S002": 0.9, "E123": 0.8, "S001": 0.7, "E112": 0.6})
        )
    ]
    cells, how = results.cell_order(lines, results.read_baselines())
    assert cells == ["E112", "E123", "S001", "S002"]  # E112 0.69 < E123 0.92; then by AUC
    assert "DeepChrome" in how


def test_compare_missing_and_unknown_cells(tmp_path):
    a = write_run(tmp_path / "a", ["E003", "E004", "S001", "S002"], [0.8, 0.9, 0.6, 0.7])
    b = write_run(tmp_path / "b", ["E003"], [0.5], variant="no_spatial_dropout")
    out = tmp_path / "auc.png"
    res = run_utils("compare", a, b, "--out", out)
    assert res.returncode == 0, res.stderr
    assert "per-cell (no spatial dropout): no AUC for 3 of the 4 cells drawn" in res.stderr
    assert "(E004, S001, S002)" in res.stderr
    assert "per-cell (full): 2 cell(s) without a published AUC (S001, S002)" in res.stderr
    summary = pd.read_csv(out.with_suffix(".csv")).set_index("line")
    assert summary.loc["per-cell (full)", "cells"] == 4
    assert summary.loc["per-cell (full)", "vs_deepchrome"] == 2  # S001, S002 not compared
    assert summary.loc["per-cell (full)", "beats_deepchrome"] == 2  # 0.8 > 0.77, 0.9 > 0.81
    assert summary.loc["per-cell (no spatial dropout)", "vs_deepchrome"] == 1
    assert summary.loc["per-cell (no spatial dropout)", "beats_deepchrome"] == 0
    assert summary.loc["DeepChrome (published)", "cells"] == 2

    # Only generated cells: the run still gets its line and its row; no published lines.
    synth = write_run(tmp_path / "synth", ["S001", "S002", "S003"], [0.6, 0.7, 0.95], mix=True)
    res = run_utils("compare", synth, "--out", tmp_path / "synth.png")
    assert res.returncode == 0, res.stderr
    assert "none of the 3 cells is in" in res.stderr
    summary = pd.read_csv(tmp_path / "synth.csv")
    assert list(summary.line) == ["mixed (full)"] and summary.loc[0, "cells"] == 3
    np.testing.assert_allclose(
        summary.loc[0, ["mean", "median", "min", "max"]].astype(float), [0.75, 0.7, 0.6, 0.95]
    )
    assert summary.loc[0, "vs_deepchrome"] == 0
    assert (tmp_path / "synth.png").read_bytes()[:8] == PNG


def test_compare_one_line_per_auc_column_and_labels(tmp_path, capsys):
    run = write_run(
        tmp_path / "ft",
        ["E003", "E004"],
        [0.7, 0.75],
        extra={"auc_mixed": [0.78, 0.8], "auc_finetuned": [0.79, 0.85]},
    )
    lines = results.read_runs([run])
    assert [(line.label, line.column) for line in lines] == [
        ("per-cell (full)", "auc"),
        ("per-cell (full): mixed", "auc_mixed"),
        ("per-cell (full): finetuned", "auc_finetuned"),
    ]
    assert lines[2].auc.to_dict() == {"E003": 0.79, "E004": 0.85}
    out = tmp_path / "ft.png"
    assert (
        utils.main(
            ["compare", str(run), "--out", str(out), "--labels", "own", "mixed", "fine-tuned"]
        )
        == 0
    )
    summary = pd.read_csv(out.with_suffix(".csv"))
    assert list(summary.line[:3]) == ["own", "mixed", "fine-tuned"]
    assert summary.loc[2, "beats_deepchrome"] == 2  # 0.79 > 0.77, 0.85 > 0.81
    assert utils.main(["compare", str(run), "--out", str(out), "--labels", "one"]) == 2
    assert "--labels gives 1 names for 3 lines" in capsys.readouterr().err


def test_compare_same_settings_told_apart_by_folder(tmp_path):
    a = write_run(tmp_path / "seed1", ["E003"], [0.8])
    b = write_run(tmp_path / "seed2", ["E003"], [0.7])
    assert [line.label for line in results.read_runs([a, b])] == [
        "per-cell (full) [seed1]",
        "per-cell (full) [seed2]",
    ]


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "no such file or folder"),
        ("", "empty file"),
        ("cell,accuracy\nE003,0.7\n", "no AUC column"),
        ("name,auc\nE003,0.7\n", "no 'cell' column"),
        ("cell,auc\nE003,0.7\nE004,high\n", "output.csv:3: auc 'high' is not an AUC"),
        ("cell,auc\nE003,1.7\n", "output.csv:2: auc '1.7' is not an AUC"),
        ("cell,auc\nE003,0.7\nE003,0.8\n", "output.csv:3: cell E003 appears more than once"),
        # No AUC is left out silently: NaN, empty or missing values are refused.
        ("cell,auc\nE003,0.7\nE004,nan\n", "output.csv:3: auc 'nan' is not an AUC"),
        ("cell,auc\nE003,0.7\nE004,NA\n", "output.csv:3: auc 'NA' is not an AUC"),
        ("cell,auc\nE003,\nE004,0.7\n", "output.csv:2: cell E003: auc is empty"),
        ("cell,auc,accuracy\nE003,0.7,0.6\nE004\n", "output.csv:3: 1 field where the header"),
        ("cell,auc\nE003,0.7,5\n", "output.csv:2: 3 fields where the header has 2"),
        ("cell,auc,accuracy,n_test,best_epoch\n", "output.csv: no rows, only a header"),
        ("cell,auc,auc\nE003,0.7,0.7\n", "output.csv:1: column 'auc' appears more than once"),
    ],
)
def test_compare_bad_input_one_line_exit_2_nothing_overwritten(tmp_path, capsys, content, problem):
    run = tmp_path / "run"
    if content is not None:
        run.mkdir()
        (run / "output.csv").write_text(content)
    out = tmp_path / "auc.png"
    out.write_bytes(b"an earlier figure")
    assert utils.main(["compare", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert problem in err and str(run) in err
    assert out.read_bytes() == b"an earlier figure"
    assert not out.with_suffix(".csv").exists()


def test_compare_refuses_a_cell_whose_auc_main_could_not_compute(tmp_path, capsys):
    # main.py writes an undefined AUC (a test split of one class: roc_auc gives NaN) as an
    # empty field; compare names the file, line and cell instead of dropping the cell.
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"cell": "E003", "auc": 0.8, "accuracy": 0.7, "n_test": 50, "best_epoch": 2},
        {"cell": "E004", "auc": math.nan, "accuracy": 0.5, "n_test": 50, "best_epoch": 1},
    ]
    results.write_table(run / "output.csv", rows)
    assert (run / "output.csv").read_text().splitlines()[2].startswith("E004,,")
    assert utils.main(["compare", str(run), "--out", str(tmp_path / "auc.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"error: {run / 'output.csv'}:3: cell E004: auc is empty: its AUC is undefined" in err
    assert not (tmp_path / "auc.png").exists()


def test_baselines_may_have_gaps(tmp_path):
    # A --baselines file may leave cells out (a method published on some cells only); the
    # bundled one has none (test_baselines_file). Gaps sort last and are not compared.
    path = tmp_path / "other.csv"
    path.write_text("cell,deepchrome,lstm\nE003,0.9,\nE004,NA,0.8\nE005,0.7,nan\nE006,0.8,0.85\n")
    table = results.read_baselines(path)
    assert table.loc["E004"].isna().tolist() == [True, False]
    assert table["lstm"].isna().sum() == 2
    line = results.Line("x", path, "auc", pd.Series({"E003": 0.5, "E004": 0.9, "E005": 0.8}))
    cells, _ = results.cell_order([line], table)
    assert cells == ["E005", "E003", "E004"]  # 0.7, 0.9, then the gap
    summary = results.summarize([line], table, cells, str(path)).set_index("line")
    assert summary.loc["x", "vs_deepchrome"] == 2 and summary.loc["x", "beats_deepchrome"] == 1
    assert summary.loc["x", "vs_lstm"] == 1 and summary.loc["x", "beats_lstm"] == 1
    assert summary.loc["lstm", "cells"] == 1


def test_compare_folder_without_table(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert utils.main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no results table here" in capsys.readouterr().err


def test_baselines_file():
    table = pd.read_csv(ROOT / "baselines" / "published_auc.csv", dtype={"cell": str})
    assert list(table.columns) == ["cell", "deepchrome", "attentivechrome"]
    assert len(table) == 56 and table.cell.is_unique
    assert table.cell.str.fullmatch(r"E\d{3}").all()
    assert round(table.deepchrome.mean(), 3) == 0.801
    assert round(table.attentivechrome.mean(), 3) == 0.812
    assert table.notna().all().all()  # no gaps (other --baselines files may have some)
    readme = (ROOT / "baselines" / "README.md").read_text()
    assert "10.1093/bioinformatics/btw427" in readme and "1708.00339" in readme


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
    res = run_utils(
        "images",
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
    res = run_utils("images", "--outdir", tmp_path / "img", "--style", "matplotlib")
    assert res.returncode == 0, res.stderr[-2000:]
