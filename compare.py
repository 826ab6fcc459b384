"""Comparing runs with each other and with the published DeepChrome and AttentiveChrome AUCs:
reading runs' results tables back, the published baselines, run labels, summary statistics and
their markdown, and the paper's AUC-per-cell figure (Chaubey et al. 2019, Fig. 4), with its
command.

    python compare.py logs/RUN1 logs/RUN2 --out auc.png     # AUC per cell vs. DeepChrome
    python utils.py compare logs/RUN1 --out auc.png          # the same

The results-table format itself and the CSV reading it shares are results.py's; file writing is
files.py's. Nothing here trains a model or imports TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import config  # noqa: E402
import files  # noqa: E402
from data import VARIANT_LABELS  # noqa: E402
from results import (  # noqa: E402
    GAPS,
    ROOT,
    InputError,
    display_path,
    exit_status,
    field_count_problem,
    read_csv_rows,
)

BASELINES = ROOT / "baselines" / "published_auc.csv"
# What the published columns are, for legends and tables (see baselines/README.md).
BASELINE_LABELS = {
    "deepchrome": "DeepChrome (published)",
    "attentivechrome": "AttentiveChrome (official models)",
}


@dataclass
class Line:
    """One line of the comparison: one AUC column of one results table."""

    label: str
    table: Path
    column: str
    auc: pd.Series  # float AUC indexed by cell name, every one defined (_read_auc_table)


def read_baselines(path: str | os.PathLike = BASELINES) -> pd.DataFrame:
    """The published per-cell AUCs: float columns (deepchrome, attentivechrome) by cell.

    Gaps (an empty field, or nan / NA / N/A / null / none) are read as NaN: a method may be
    published for some cells only. baselines/published_auc.csv has none, but --baselines FILE
    may; a run's own table may not (see _read_auc_table).
    """
    path = Path(path)
    table = _read_auc_table(path, lambda c: c != "cell", gaps=True)
    return table.set_index("cell").astype(float)


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
    held_out = settings.get("holdout_cell")
    if config.several_held_out(held_out):
        experiment = "leave one out"
    elif held_out:
        experiment = f"leave {held_out} out"
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


# ---------------------------------------------------------------------------------------------
# The figure


def compare(
    runs: list,
    out: str | os.PathLike = "auc.png",
    labels: list[str] | None = None,
    baselines: str | os.PathLike | None = BASELINES,
    title: str | None = None,
    notes=print,
) -> tuple[Path, pd.DataFrame]:
    """Draw test AUC per cell for each run next to the published baselines (the paper's AUC
    figure), and write the summary table beside the PNG as .csv and .md.

    runs: run folders (their output*.csv) or results tables. Every input is read and checked
    before anything is written. ``notes`` receives one line per skipped or unknown cell set.
    Returns (png path, summary table).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out {out}: expected a .png file name")
    files.writable(out.parent)  # before the work: OSError naming the folder
    lines = read_runs(runs, labels)
    ref = read_baselines(baselines) if baselines else None
    cells, how = cell_order(lines, ref)
    if ref is not None:
        known = [c for c in cells if c in ref.index]
        if not known:
            notes(
                f"note: none of the {len(cells)} cells is in {display_path(Path(baselines))}; "
                "the published lines are not drawn"
            )
    for line in lines:
        missing = [c for c in cells if c not in line.auc.index]
        if missing:
            notes(
                f"note: {line.label}: no AUC for {len(missing)} of the {len(cells)} cells "
                f"drawn ({_clip(missing)}); skipped on that line and in its counts"
            )
        unknown = [c for c in line.auc.index if ref is None or c not in ref.index]
        if unknown and ref is not None:
            notes(
                f"note: {line.label}: {len(unknown)} cell(s) without a published AUC "
                f"({_clip(unknown)}); drawn, not compared"
            )
    summary = summarize(lines, ref, cells, display_path(Path(baselines)) if baselines else "")

    x = np.arange(len(cells))
    fig, ax = plt.subplots(figsize=(min(max(7.0, 0.16 * len(cells) + 3.0), 13.0), 5.6))
    stats = summary.set_index("line")
    styles = {
        "deepchrome": dict(color="black", ls="--", marker="s"),
        "attentivechrome": dict(color="#888888", ls=":", marker="^"),
    }
    if ref is not None:
        for name in ref.columns:
            label = BASELINE_LABELS.get(name, name)
            if label in stats.index:
                ax.plot(
                    x,
                    ref[name].reindex(cells),
                    ms=3.5,
                    lw=1.4,
                    label=_legend(label, stats.loc[label], len(cells)),
                    **styles.get(name, dict(ls="--", marker="s")),
                )
    colors = [
        "#d62728",
        "#1f77b4",
        "#2ca02c",
        "#ff7f0e",
        "#9467bd",
        "#8c564b",
        "#e377c2",
        "#17becf",
        "#bcbd22",
        "#7f7f7f",
    ]
    for i, line in enumerate(lines):
        ax.plot(
            x,
            line.auc.reindex(cells),
            "-o",
            ms=3.5,
            lw=1.6,
            color=colors[i % len(colors)],
            label=_legend(line.label, stats.loc[line.label], len(cells)),
        )
    ax.set_xticks(x, cells, rotation=90, fontsize=8 if len(cells) > 30 else 9.5)
    ax.set_xlim(-0.7, len(cells) - 0.3)
    ax.set_xlabel(f"Cell type (sorted {how})")
    ax.set_ylabel("Test ROC AUC")
    ax.grid(alpha=0.3)
    fig.set_layout_engine("constrained")
    # Below the axes: inside, it would hide points wherever the lines happen to run.
    fig.legend(
        loc="outside lower center",
        ncol=2 if fig.get_figwidth() >= 10 else 1,
        fontsize=9.5,
        frameon=False,
    )
    fig.suptitle(title or "Test AUC per cell type", fontsize=12)

    # The figure and its two tables replace earlier ones together, or not at all.
    text = summary_markdown(summary)
    try:
        png, _, _ = files.atomic_writes(
            [
                (
                    out,
                    lambda tmp: fig.savefig(
                        tmp, dpi=110, format="png", bbox_inches="tight", pad_inches=0.15
                    ),
                ),  # fmt: skip
                (
                    out.with_suffix(".csv"),
                    lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6f"),
                ),  # fmt: skip
                (out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(text)),
            ]
        )
    finally:
        plt.close(fig)
    return png, summary


def _legend(label: str, row, n_drawn: int) -> str:
    over = f" over {row['cells']} cells" if row["cells"] != n_drawn else ""
    return f"{label}: mean {row['mean']:.3f}{over}"


def _clip(names: list[str], k: int = 6) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The comparison's arguments (this command's, and ``utils.py compare``'s)."""
    p.add_argument(
        "runs",
        nargs="+",
        help="run folders (their output.csv / output-mix.csv) or results tables; "
        "every auc* column of a table is one line",
    )
    p.add_argument(
        "--out",
        default="auc.png",
        help="the figure; the summary goes to the same name with .csv and .md "
        "[Default: %(default)s]",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="one name per line, in order [Default: from each run's args.json, "
        "e.g. 'per-cell (full)', 'mixed (full)']",
    )
    p.add_argument(
        "--baselines",
        default=display_path(BASELINES),
        help="published per-cell AUCs (cell + one column per method), or 'none' "
        "[Default: %(default)s]",
    )
    p.add_argument("--title", default=None, help="figure title [Default: Test AUC per cell type]")
    return p


DESCRIPTION = (
    "Draw the test AUC per cell of one or more runs next to DeepChrome and AttentiveChrome "
    "(the paper's AUC figure) and write a summary table (.csv and .md beside the PNG)."
)


def command(args, notes) -> None:
    """Run the parsed command: the figure and tables written, the summary printed."""
    baselines = None if args.baselines.lower() == "none" else args.baselines
    png, summary = compare(args.runs, args.out, args.labels, baselines, args.title, notes=notes)
    print(summary_markdown(summary), end="")
    print(f"wrote {png}, {png.with_suffix('.csv')}, {png.with_suffix('.md')}")


def main(argv=None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="compare.py", description=DESCRIPTION))
    args = args.parse_args(argv)
    return exit_status(lambda: command(args, notes=lambda text: print(text, file=sys.stderr)))


if __name__ == "__main__":
    sys.exit(main())
