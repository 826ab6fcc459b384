"""The results-table format: written cell by cell during a run (``Results``) and read back to
compare runs with each other and with the published DeepChrome and AttentiveChrome AUCs.

Columns, reading and writing tables and predictions, the published baselines, run labels, summary
statistics and their markdown; no figures (utils.py draws them) and no training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import files
from data import VARIANT_LABELS

RESULT_COLUMNS = ["cell", "auc", "accuracy", "n_test", "best_epoch"]
# Fine-tuning: per cell, the mixed model alone and the same model fine-tuned on the cell.
FINETUNE_COLUMNS = [
    "cell",
    "auc_mixed",
    "auc_finetuned",
    "accuracy_mixed",
    "accuracy_finetuned",
    "n_test",
    "best_epoch_mixed",
    "best_epoch_finetuned",
]
TABLES = ("output.csv", "output-mix.csv", "output-finetune.csv")

ROOT = Path(__file__).resolve().parent
BASELINES = ROOT / "baselines" / "published_auc.csv"
# What the published columns are, for legends and tables (see baselines/README.md).
BASELINE_LABELS = {
    "deepchrome": "DeepChrome (published)",
    "attentivechrome": "AttentiveChrome (official models)",
}


class InputError(Exception):
    """A bad file or argument; reported in one line with exit status 2."""


def display_path(path: Path) -> str:
    """A path as the user would type it: relative to the current folder where possible."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


# ---------------------------------------------------------------------------------------------
# A run's own table, written as it goes


def table_name(args) -> str:
    """The run's results table: output.csv (per cell), output-mix.csv or output-finetune.csv."""
    return TABLES[2] if args.finetune else TABLES[1] if args.mix else TABLES[0]


def holds_results(save: Path) -> list[str]:
    """Names of an earlier run's record files in ``save``."""
    return [p.name for p in [save / "args.json", *(save / t for t in TABLES)] if p.exists()]


def write_table(path: Path, rows: list[dict], columns=RESULT_COLUMNS) -> None:
    files.write_csv(path, pd.DataFrame(rows, columns=columns))


def write_predictions(folder: Path, split, proba) -> None:
    """predictions.csv: gene_id, label and the class-1 probability of each test gene."""
    files.write_csv(
        folder / "predictions.csv",
        pd.DataFrame({"gene_id": split.ids, "label": split.labels, "probability": proba}),
    )


def read_table(path: Path) -> dict[str, dict]:
    """The rows of a results table, by cell ({} when there is none yet)."""
    if not path.exists():
        return {}
    rows = pd.read_csv(path, dtype={"cell": str}, keep_default_na=False, na_values=[""])
    rows = rows.astype(object).where(rows.notna(), None)
    return {r["cell"]: r for r in rows.to_dict("records")}


class Results:
    """A run's results table, rewritten (atomically) as each cell finishes, rows in cell order.

    A cell is finished exactly when its row is in the table: its other files are written first.
    """

    def __init__(self, path: Path, cells: list[str], resume: bool, columns=RESULT_COLUMNS):
        self.path, self.cells, self.columns = path, cells, columns
        self.rows = {c: r for c, r in read_table(path).items() if c in cells} if resume else {}

    def done(self, cell: str) -> bool:
        return cell in self.rows

    def add(self, row: dict) -> None:
        self.rows[row["cell"]] = row
        write_table(self.path, [self.rows[c] for c in self.cells if c in self.rows], self.columns)

    def values(self) -> list[dict]:
        return [self.rows[c] for c in self.cells if c in self.rows]


# ---------------------------------------------------------------------------------------------
# Reading runs back, and the published AUCs


@dataclass
class Line:
    """One line of the comparison: one AUC column of one results table."""

    label: str
    table: Path
    column: str
    auc: pd.Series  # float AUC indexed by cell name; cells with an undefined AUC left out


def read_baselines(path: str | os.PathLike = BASELINES) -> pd.DataFrame:
    """The published per-cell AUCs: float columns (deepchrome, attentivechrome) by cell."""
    path = Path(path)
    table = _read_auc_table(path, lambda c: c != "cell")
    return table.set_index("cell").astype(float)


def _read_auc_table(path: Path, is_auc) -> pd.DataFrame:
    """A CSV with a ``cell`` column and AUC columns (``is_auc(name)``), checked."""
    try:
        table = pd.read_csv(path, dtype={"cell": str})
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a CSV table ({str(e).splitlines()[0][:100]})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if "cell" not in table:
        raise InputError(
            f"{path}: no 'cell' column (expected a header like cell,auc,accuracy,n_test,best_epoch)"
        )
    columns = [c for c in table.columns if is_auc(c)]
    if not columns:
        raise InputError(f"{path}: no AUC column (a column named auc or auc_...)")
    if table["cell"].isna().any():
        line = int(np.flatnonzero(table["cell"].isna())[0]) + 2  # + header, 1-based
        raise InputError(f"{path}:{line}: empty cell name")
    duplicated = table["cell"][table["cell"].duplicated()]
    if len(duplicated):
        raise InputError(f"{path}: cell {duplicated.iloc[0]} appears more than once")
    for column in columns:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = (values.isna() & table[column].notna()) | (values < 0) | (values > 1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raw = table[column].iloc[row]
            text = raw if isinstance(raw, str) else f"{raw:g}"
            raise InputError(f"{path}:{row + 2}: {column} {text!r} is not an AUC between 0 and 1")
        table[column] = values
    return table[["cell", *columns]]


def results_tables(path: str | os.PathLike) -> list[Path]:
    """The results tables of a run: the path itself if a file, else the folder's output*.csv."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        tables = sorted(path.glob("output*.csv"))
        if not tables:
            raise InputError(f"{path}: no results table here (output.csv or output-mix.csv)")
        return tables
    raise InputError(f"{path}: no such file or folder")


def run_label(table: Path) -> str:
    """A line's name from the run's args.json: "per-cell (full)", "mixed (full)", ...; the
    folder's name when there is no args.json."""
    try:
        settings = json.loads((table.parent / "args.json").read_text())
    except (OSError, ValueError):
        settings = None
    if not isinstance(settings, dict):
        return table.parent.name if table.name.startswith("output") else table.stem
    if settings.get("holdout_cell"):
        experiment = f"leave {settings['holdout_cell']} out"
    elif settings.get("finetune"):
        experiment = "fine-tune"
    elif settings.get("weights"):
        experiment = "saved model"
    elif settings.get("mix", table.name == "output-mix.csv"):
        experiment = "mixed"
    else:
        experiment = "per-cell"
    variant = settings.get("variant")
    return f"{experiment} ({VARIANT_LABELS.get(variant, variant)})" if variant else experiment


def read_runs(paths: list, labels: list[str] | None = None) -> list[Line]:
    """One Line per AUC column (``auc``, ``auc_*``) of each run's results table(s).

    A table with several AUC columns (e.g. auc_mixed, auc_finetuned) gives one line each,
    named "<run label>: mixed", ... ``labels`` (one per line, in order) replaces the names.
    """
    lines = []
    for path in paths:
        for table_path in results_tables(path):
            table = _read_auc_table(table_path, lambda c: str(c).lower().startswith("auc"))
            name = run_label(table_path)
            columns = list(table.columns[1:])
            for column in columns:
                auc = table.set_index("cell")[column].dropna()
                suffix = column[3:].lstrip("_- ")
                label = f"{name}: {suffix}" if len(columns) > 1 and suffix else name
                lines.append(Line(label, table_path, column, auc))
    if labels is not None:
        if len(labels) != len(lines):
            raise InputError(
                f"--labels gives {len(labels)} names for {len(lines)} lines "
                f"({'; '.join(f'{display_path(x.table)}: {x.column}' for x in lines)})"
            )
        for line, label in zip(lines, labels):
            line.label = label
    else:
        # Two runs with the same settings (e.g. two seeds): tell them apart by folder.
        names = [line.label for line in lines]
        for line in lines:
            if names.count(line.label) > 1:
                line.label = f"{line.label} [{line.table.parent.name}]"
    return lines


def cell_order(lines: list[Line], baselines: pd.DataFrame | None) -> tuple[list[str], str]:
    """The x axis: the runs' cells known to the baselines sorted by DeepChrome's AUC (the
    paper's order), then the unknown ones by their mean AUC over the lines. Returns the cells
    and a phrase saying how they are sorted."""
    cells = list(dict.fromkeys(c for line in lines for c in line.auc.index))
    known = [c for c in cells if baselines is not None and c in baselines.index]
    unknown = [c for c in cells if c not in known]
    how = []
    if known:
        key = "deepchrome" if "deepchrome" in baselines else baselines.columns[0]
        known.sort(key=lambda c: (baselines.at[c, key], c))
        how.append(f"by {BASELINE_LABELS.get(key, key).split(' (')[0]}'s published AUC")
    if unknown:
        mean = pd.concat([line.auc for line in lines], axis=1).mean(axis=1)
        unknown.sort(key=lambda c: (mean[c], c))
        how.append(
            ("then cells without a published AUC " if known else "") + "by mean AUC of the runs"
        )
    return known + unknown, ", ".join(how)


def summarize(
    lines: list[Line], baselines: pd.DataFrame | None, cells: list[str], baselines_path: str = ""
) -> pd.DataFrame:
    """Per line (runs first, then the baselines on the cells drawn): cells, mean, median, min,
    max AUC, and for each baseline on how many of the common cells its AUC is strictly higher
    (beats_<baseline>) out of how many (vs_<baseline>)."""
    rows = []
    references = (
        {}
        if baselines is None
        else {
            name: baselines[name].reindex([c for c in cells if c in baselines.index]).dropna()
            for name in baselines.columns
        }
    )
    entries = [(line.label, display_path(line.table), line.column, line.auc) for line in lines]
    entries += [
        (BASELINE_LABELS.get(name, name), baselines_path, name, auc)
        for name, auc in references.items()
        if len(auc)
    ]
    for label, table, column, auc in entries:
        values = auc.to_numpy(dtype=float)
        row = {
            "line": label,
            "table": table,
            "column": column,
            "cells": len(values),
            "mean": values.mean(),
            "median": np.median(values),
            "min": values.min(),
            "max": values.max(),
        }
        for name, ref in references.items():
            if table == baselines_path and column == name:
                row[f"beats_{name}"] = row[f"vs_{name}"] = pd.NA  # itself
                continue
            common = auc.index.intersection(ref.index)
            row[f"beats_{name}"] = int((auc[common] > ref[common]).sum())
            row[f"vs_{name}"] = len(common)
        rows.append(row)
    summary = pd.DataFrame(rows)
    counts = [c for c in summary.columns if c.startswith(("beats_", "vs_"))]
    return summary.astype({c: "Int64" for c in counts})


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a Markdown table; "beats" cells read "k / n" (k of n common cells)."""
    names = [c[len("beats_") :] for c in summary.columns if c.startswith("beats_")]
    header = ["line", "cells", "mean AUC", "median", "min", "max"]
    header += [f"beats {BASELINE_LABELS.get(n, n).split(' (')[0]}" for n in names]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in summary.iterrows():
        cells = [str(row["line"]), str(row["cells"])]
        cells += [f"{row[k]:.3f}" for k in ("mean", "median", "min", "max")]
        for n in names:
            if pd.isna(row[f"vs_{n}"]) or not row[f"vs_{n}"]:
                cells.append("-")
            else:
                cells.append(f"{int(row[f'beats_{n}'])} / {int(row[f'vs_{n}'])}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
