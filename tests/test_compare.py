"""compare.py: the runs' AUCs per cell against the published baselines (the paper's figure),
its summary tables and its command (also python utils.py compare)."""

import csv
import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest

import compare
import results
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


def run_compare(*args):
    return run_script("compare.py", *args)


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

    res = run_compare(a, b, "--out", out)
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
        compare.Line(
            "x", ROOT, "auc", pd.Series({"S002": 0.9, "E123": 0.8, "S001": 0.7, "E112": 0.6})
        )
    ]
    cells, how = compare.cell_order(lines, compare.read_baselines())
    assert cells == ["E112", "E123", "S001", "S002"]  # E112 0.69 < E123 0.92; then by AUC
    assert "DeepChrome" in how


def test_compare_missing_and_unknown_cells(tmp_path):
    a = write_run(tmp_path / "a", ["E003", "E004", "S001", "S002"], [0.8, 0.9, 0.6, 0.7])
    b = write_run(tmp_path / "b", ["E003"], [0.5], variant="no_spatial_dropout")
    out = tmp_path / "auc.png"
    res = run_compare(a, b, "--out", out)
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
    res = run_compare(synth, "--out", tmp_path / "synth.png")
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
    lines = compare.read_runs([run])
    assert [(line.label, line.column) for line in lines] == [
        ("per-cell (full)", "auc"),
        ("per-cell (full): mixed", "auc_mixed"),
        ("per-cell (full): finetuned", "auc_finetuned"),
    ]
    assert lines[2].auc.to_dict() == {"E003": 0.79, "E004": 0.85}
    out = tmp_path / "ft.png"
    assert (
        compare.main([str(run), "--out", str(out), "--labels", "own", "mixed", "fine-tuned"]) == 0
    )
    summary = pd.read_csv(out.with_suffix(".csv"))
    assert list(summary.line[:3]) == ["own", "mixed", "fine-tuned"]
    assert summary.loc[2, "beats_deepchrome"] == 2  # 0.79 > 0.77, 0.85 > 0.81
    assert compare.main([str(run), "--out", str(out), "--labels", "one"]) == 2
    assert "--labels gives 1 names for 3 lines" in capsys.readouterr().err


def test_compare_same_settings_told_apart_by_folder(tmp_path):
    a = write_run(tmp_path / "seed1", ["E003"], [0.8])
    b = write_run(tmp_path / "seed2", ["E003"], [0.7])
    assert [line.label for line in compare.read_runs([a, b])] == [
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
    assert compare.main([str(run), "--out", str(out)]) == 2
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
    assert compare.main([str(run), "--out", str(tmp_path / "auc.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"error: {run / 'output.csv'}:3: cell E004: auc is empty: its AUC is undefined" in err
    assert not (tmp_path / "auc.png").exists()


def test_baselines_may_have_gaps(tmp_path):
    # A --baselines file may leave cells out (a method published on some cells only); the
    # bundled one has none (test_baselines_file). Gaps sort last and are not compared.
    path = tmp_path / "other.csv"
    path.write_text("cell,deepchrome,lstm\nE003,0.9,\nE004,NA,0.8\nE005,0.7,nan\nE006,0.8,0.85\n")
    table = compare.read_baselines(path)
    assert table.loc["E004"].isna().tolist() == [True, False]
    assert table["lstm"].isna().sum() == 2
    line = compare.Line("x", path, "auc", pd.Series({"E003": 0.5, "E004": 0.9, "E005": 0.8}))
    cells, _ = compare.cell_order([line], table)
    assert cells == ["E005", "E003", "E004"]  # 0.7, 0.9, then the gap
    summary = compare.summarize([line], table, cells, str(path)).set_index("line")
    assert summary.loc["x", "vs_deepchrome"] == 2 and summary.loc["x", "beats_deepchrome"] == 1
    assert summary.loc["x", "vs_lstm"] == 1 and summary.loc["x", "beats_lstm"] == 1
    assert summary.loc["lstm", "cells"] == 1


def test_compare_folder_without_table(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert compare.main([str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
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


def test_utils_compare_is_the_same_command(tmp_path, capsys):
    run = write_run(tmp_path / "run", ["E003", "E004"], [0.8, 0.7])
    assert compare.main([str(run), "--out", str(tmp_path / "a.png")]) == 0
    first = capsys.readouterr().out
    import utils

    assert utils.main(["compare", str(run), "--out", str(tmp_path / "b.png")]) == 0
    assert capsys.readouterr().out == first.replace("a.png", "b.png").replace(
        "a.csv", "b.csv"
    ).replace("a.md", "b.md")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
