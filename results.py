"""The results-table format: written cell by cell during a run (``Results``) and read back to
compare runs with each other and with the published DeepChrome and AttentiveChrome AUCs.

Columns, reading and writing tables and predictions, the published baselines, run labels, summary
statistics and their markdown; no figures (utils.py draws them) and no training.
"""

from __future__ import annotations

import csv
import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import files
from data import VARIANT_LABELS, DataError

# attempts: how many times the tested model was trained (restarts.py); empty where no training
# happened (a saved model tested) or in tables written before it existed. sound: whether the
# tested model was judged sound on its validation split (restarts.py: it learned and did not
# collapse), True or False; empty where it could not be judged (a validation split too small or
# of one class, a saved model without its training record, a table written before it existed).
RESULT_COLUMNS = ["cell", "auc", "accuracy", "n_test", "best_epoch", "attempts", "sound"]
# A pooled model's tables add, per tested cell, its test genes that the pooled cells' train and
# valid splits hold, and those of them the model trained or validated on (pooling.py).
POOL_COLUMNS = ("test_in_pool", "test_seen")
MIX_COLUMNS = [*RESULT_COLUMNS, *POOL_COLUMNS]
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
    "attempts_mixed",
    "attempts_finetuned",
    "sound_mixed",
    "sound_finetuned",
    *POOL_COLUMNS,
]
# Columns added after the first tables were written, newest first: a table written before one
# of them existed is still resumed (their fields left empty).
LATER_COLUMNS = (
    POOL_COLUMNS,
    ("sound", "sound_mixed", "sound_finetuned"),
    ("attempts", "attempts_mixed", "attempts_finetuned"),
)
# Predicting with a saved model (main.py --predict): per cell, the genes predicted, the share
# predicted high (probability >= 0.5), the test split's genes and, where the cell has labels,
# their AUC.
PREDICT_COLUMNS = ["cell", "n_genes", "predicted_high", "auc", "n_test", "model", "sound"]
TABLES = ("output.csv", "output-mix.csv", "output-finetune.csv", "output-predict.csv")

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
    """The run's results table: output.csv (per cell), output-mix.csv, output-finetune.csv or
    output-predict.csv."""
    if getattr(args, "predict", None) is not None:
        return TABLES[3]
    return TABLES[2] if args.finetune else TABLES[1] if args.mix else TABLES[0]


def table_columns(args) -> list[str]:
    """The run's results-table columns: RESULT_COLUMNS, MIX_COLUMNS when training a mixed
    model, FINETUNE_COLUMNS when fine-tuning, PREDICT_COLUMNS when predicting."""
    if getattr(args, "predict", None) is not None:
        return PREDICT_COLUMNS
    if args.finetune:
        return FINETUNE_COLUMNS
    return MIX_COLUMNS if args.mix and not getattr(args, "weights", None) else RESULT_COLUMNS


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


def write_cell_predictions(folder: Path, cell) -> None:
    """predictions.csv of main.py --predict: gene_id, split, label (empty for a cell without
    labels) and the class-1 probability of every gene of the cell, split by split.

    cell: dict split name -> (data.Split, float (n,) probabilities), in split order.
    """
    parts = []
    for name, (split, proba) in cell.items():
        labels = (
            pd.array(split.labels, dtype="Int8")
            if split.y is not None
            else pd.array([None] * len(split.ids), dtype="Int8")
        )
        parts.append(
            pd.DataFrame(
                {"gene_id": split.ids, "split": name, "label": labels, "probability": proba}
            )
        )
    files.write_csv(folder / "predictions.csv", pd.concat(parts, ignore_index=True))


def read_table(path: Path, columns=RESULT_COLUMNS) -> dict[str, dict]:
    """The rows of a run's results table, by cell ({} when there is none yet), to resume it.

    Values as pandas reads them back (floats, ints; None for an empty field). Every line is
    checked first, since a row kept here passes for a finished cell: a table that is not one
    this project writes (another header, a line with too few or too many fields, a value that
    is not a number in its range, a cell listed twice) raises data.DataError naming the file
    and line, as main.py reports bad data. An empty AUC is accepted (the AUC was undefined),
    and so is a table with only its header (no cell finished).
    """
    if not path.exists():
        return {}
    try:
        header, rows = read_csv_rows(path)
    except InputError as e:
        raise DataError(f"{e}; fix or remove the file, then resume") from None
    redo = "fix or remove that line, then resume (a removed cell is run again)"
    # A table written before the later columns is resumed too, those fields left empty.
    accepted, left_out = [list(columns)], set()
    for added in LATER_COLUMNS:
        left_out |= set(added)
        accepted.append([c for c in columns if c not in left_out])
    if header not in accepted:
        raise DataError(
            f"{path}:1: header {','.join(header)!r}, expected {','.join(columns)!r}; fix it, "
            "then resume"
        )
    seen = {}
    for line, fields in rows:
        problem = field_count_problem(fields, header)
        if problem:
            raise DataError(f"{path}:{line}: {problem}; {redo}")
        row = dict(zip(header, fields))
        if not row["cell"]:
            raise DataError(f"{path}:{line}: empty cell name; {redo}")
        if row["cell"] in seen:
            raise DataError(
                f"{path}:{line}: cell {row['cell']} is also on line {seen[row['cell']]}; {redo}"
            )
        seen[row["cell"]] = line
        for column, text in row.items():
            problem = _result_field_problem(column, text)
            if problem:
                raise DataError(f"{path}:{line}: {column} {text!r} is not {problem}; {redo}")
    table = pd.read_csv(path, dtype={"cell": str}, keep_default_na=False, na_values=[""])
    table = table.astype(object).where(table.notna(), None)
    return {r["cell"]: r for r in table.to_dict("records")}


def _result_field_problem(column: str, text: str) -> str | None:
    """What a results table's field should be, when it is not; None when it is fine.

    AUCs may be empty (undefined: one class in the test split, or a diverged model), and so may
    best epochs (a saved model tested without training has none); integers may be written as
    floats ("3.000000": pandas writes a column holding empty fields as floats).
    """
    if column == "cell":
        return None
    if column.startswith(("auc", "accuracy")):
        what, lowest, highest, integer = "a number between 0 and 1", 0, 1, False
    elif column in ("n_test", "n_genes"):
        what, lowest, highest, integer = "a count of genes", 1, math.inf, True
    elif column == "predicted_high":
        what, lowest, highest, integer = "a fraction between 0 and 1", 0, 1, False
    elif column.startswith("best_epoch"):
        what, lowest, highest, integer = "an epoch number", 0, math.inf, True
    elif column.startswith("attempts"):
        what, lowest, highest, integer = "a number of attempts", 1, math.inf, True
    elif column in POOL_COLUMNS:
        if not text.strip():
            return None  # unknown: a saved model whose pool is not in the data folder
        what, lowest, highest, integer = "a count of genes", 0, math.inf, True
    elif column.startswith("sound"):
        return None if text.strip() in ("", "True", "False") else "True, False or empty"
    else:
        return None
    if not text.strip() and column.startswith(("auc", "best_epoch", "attempts")):
        return None
    try:
        value = float(text)
    except ValueError:
        return what
    if not lowest <= value <= highest or (integer and value != int(value)):
        return what
    return None


class Results:
    """A run's results table, rewritten (atomically) as each cell finishes, rows in cell order.

    A cell is finished exactly when its row is in the table: its other files are written first.
    """

    def __init__(self, path: Path, cells: list[str], resume: bool, columns=RESULT_COLUMNS):
        self.path, self.cells, self.columns = path, cells, columns
        rows = read_table(path, columns) if resume else {}
        self.rows = {c: r for c, r in rows.items() if c in cells}

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
    auc: pd.Series  # float AUC indexed by cell name, every one defined (_read_auc_table)


# How a CSV may write a missing value (pandas' usual spellings): a gap in a baselines file (a
# method published on some cells only) or in log.csv (an AUC undefined that epoch); never
# accepted in a run's results table.
GAPS = {"", "nan", "na", "n/a", "#n/a", "<na>", "null", "none"}


def read_baselines(path: str | os.PathLike = BASELINES) -> pd.DataFrame:
    """The published per-cell AUCs: float columns (deepchrome, attentivechrome) by cell.

    Gaps (an empty field, or nan / NA / N/A / null / none) are read as NaN: a method may be
    published for some cells only. baselines/published_auc.csv has none, but --baselines FILE
    may; a run's own table may not (see _read_auc_table).
    """
    path = Path(path)
    table = _read_auc_table(path, lambda c: c != "cell", gaps=True)
    return table.set_index("cell").astype(float)


def field_count_problem(fields: list[str], header: list[str]) -> str | None:
    """ "N fields where the header has M" when a row's length is not the header's, else None."""
    if len(fields) == len(header):
        return None
    return (
        f"{len(fields)} field{'s' if len(fields) != 1 else ''} where the header has {len(header)}"
    )


def read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the non-blank rows of a small CSV table, each row with its 1-based line.

    Raises InputError naming the file when it is missing, a folder or special file (only
    stat'ed: a FIFO is never opened, so this never blocks), unreadable, not UTF-8 text, not
    CSV, or empty. Rows are not checked against the header: the callers say what they expect.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not a CSV table")
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: is a FIFO or other special file, not a CSV table")
    rows = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            for fields in reader:
                if len(fields) > 1 or (fields and fields[0].strip()):  # not a blank line
                    rows.append((reader.line_num, fields))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a CSV table (not UTF-8 text)") from None
    except csv.Error as e:
        raise InputError(f"{path}:{reader.line_num}: not a CSV table ({e})") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if not rows:
        raise InputError(f"{path}: empty file")
    return rows[0][1], rows[1:]


def _read_auc_table(path: Path, is_auc, gaps: bool = False) -> pd.DataFrame:
    """A CSV with a ``cell`` column and AUC columns (``is_auc(name)``), checked: a ``cell``
    column of float AUC columns, one row per cell. Raises InputError naming the file and line.

    Every AUC must be a number between 0 and 1. A run's table (``gaps`` False) may have no
    empty or NaN AUC: dropping the cell would hide it from the line's counts and mean, and a
    cell whose AUC main.py could not compute (written as an empty field) is a result to look
    at, not to average over. A baselines file (``gaps``) may leave cells out (NaN).
    """
    header, rows = read_csv_rows(path)
    if "cell" not in header:
        raise InputError(
            f"{path}: no 'cell' column (expected a header like cell,auc,accuracy,n_test,best_epoch)"
        )
    columns = [c for c in header if is_auc(c)]
    if not columns:
        raise InputError(f"{path}: no AUC column (a column named auc or auc_...)")
    repeated = [c for i, c in enumerate(header) if c in header[:i]]
    if repeated:
        raise InputError(f"{path}:1: column {repeated[0]!r} appears more than once")
    if not rows:
        raise InputError(f"{path}: no rows, only a header")
    seen = {}
    for line, fields in rows:
        problem = field_count_problem(fields, header)
        if problem:
            raise InputError(f"{path}:{line}: {problem}")
        cell = fields[header.index("cell")]
        if not cell:
            raise InputError(f"{path}:{line}: empty cell name")
        if cell in seen:
            raise InputError(
                f"{path}:{line}: cell {cell} appears more than once (line {seen[cell]})"
            )
        seen[cell] = line
    table = pd.DataFrame([fields for _, fields in rows], columns=header, dtype=str)
    for column in columns:
        values = []
        for (line, _), cell, text in zip(rows, table["cell"], table[column]):
            if gaps and text.strip().lower() in GAPS:
                values.append(math.nan)
                continue
            if not text.strip():
                raise InputError(
                    f"{path}:{line}: cell {cell}: {column} is empty: its AUC is undefined "
                    "(main.py leaves it empty when the test split holds one class only or "
                    "the model's outputs are not finite); remove that row to compare the "
                    "other cells"
                )
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not 0 <= value <= 1:  # NaN too
                raise InputError(f"{path}:{line}: {column} {text!r} is not an AUC between 0 and 1")
            values.append(value)
        table[column] = np.array(values, dtype=float)
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
                auc = table.set_index("cell")[column]
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
        # A gap in that column (a --baselines file may have some) sorts last, not at random.
        order = baselines[key].fillna(np.inf)
        known.sort(key=lambda c: (order[c], c))
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
