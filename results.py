"""The results-table format: written cell by cell during a run (``Results``) and read back to
compare runs with each other and with the published DeepChrome and AttentiveChrome AUCs.

Columns, reading and writing tables and predictions, the published baselines, run labels, summary
statistics and their markdown; no figures (utils.py draws them) and no training.
"""

from __future__ import annotations

import csv
import math
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import files
from data import DataError

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


class InputError(Exception):
    """A bad file or argument; reported in one line with exit status 2."""


def exit_status(work) -> int:
    """Run a command's `work`; 0 when it ends, 2 with one line on stderr when it meets bad
    input (InputError, DataError) or cannot write (a read-only folder, a full disk: what it
    writes is whole or not there). For utils.py, compare.py and images/make_images.py."""
    try:
        work()
    except (InputError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {files.write_problem(e)}", file=sys.stderr)
        return 2
    return 0


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


def print_summary(table_rows) -> None:
    """One line per AUC column of the results table: cells, mean and median AUC."""
    rows = table_rows.values()
    for key in [k for k in table_rows.columns if k.startswith("auc")]:
        aucs = np.array([r.get(key) for r in rows], dtype=float)
        if np.isnan(aucs).all():
            if rows and "predicted_high" not in table_rows.columns:
                print(
                    f"Results: {table_rows.path}: {len(rows)} cells, no AUC defined (each "
                    "test split holds one class, or every model diverged)"
                )
            continue  # predicted cells without labels have no AUC
        what = key.replace("auc_", "") + " " if key != "auc" else ""
        sound = key.replace("auc", "sound")
        judged = [r.get(sound) for r in rows if r.get(sound) is not None]
        unsound = sum(v is False or v == "False" for v in judged)
        verdict = (
            f", {unsound} of {len(rows)} not sound (see the table's {sound} column)"
            if unsound
            else f", all {len(judged)} judged sound"
            if judged and len(judged) == len(rows)
            else ""
        )
        print(
            f"Results: {table_rows.path}: {len(rows)} cells, {what}mean AUC "
            f"{np.nanmean(aucs):.4f}, median AUC {np.nanmedian(aucs):.4f}{verdict}"
        )


# ---------------------------------------------------------------------------------------------
# Reading runs back, and the published AUCs


# How a CSV may write a missing value (pandas' usual spellings): a gap in a baselines file (a
# method published on some cells only) or in log.csv (an AUC undefined that epoch); never
# accepted in a run's results table.
GAPS = {"", "nan", "na", "n/a", "#n/a", "<na>", "null", "none"}


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
