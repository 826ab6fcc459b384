"""Plots and small file helpers: training curves, ROC curves, the model and data pictures, and
the per-cell AUC comparison with the published baselines.

Command line::

    python utils.py plot logs/RUN            # redraw log.png of the run (and of each cell in it)
    python utils.py plot logs/RUN1 logs/RUN2 --out curves.png   # overlay the curves of runs
    python utils.py logs/RUN                 # the same as "plot" (the original usage)
    python utils.py compare logs/RUN1 logs/RUN2 --out auc.png   # AUC per cell vs. DeepChrome
    python utils.py data --data_dir sample_data --cell S001     # the marks of two genes
    python utils.py model --out model.png                       # the network, layer by layer
    python utils.py images                   # redraw images/{data,model,auc}.png

Only ``model`` and ``images`` import TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# (log.csv column, label) per panel; validation columns are the same names with "val_".
PANELS = (("loss", "Loss (binary cross-entropy)"), ("accuracy", "Accuracy"), ("auc", "ROC AUC"))


_UMASK = os.umask(0o022)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); results should follow the user's umask like
        # any file they write.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_csv(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """A results or predictions table, written atomically, floats to 6 decimals."""
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))


def save_figure(fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def read_log(folder_or_csv: str | os.PathLike) -> pd.DataFrame:
    """A run's per-epoch log (log.csv) with 1-based epochs."""
    path = Path(folder_or_csv)
    if path.is_dir():
        path = path / "log.csv"
    log = pd.read_csv(path)
    if "epoch" in log:
        log["epoch"] = log["epoch"] + 1  # Keras counts from 0
    return log


def _curves(axes, log: pd.DataFrame, label: str | None, color=None) -> None:
    for ax, (key, title) in zip(axes, PANELS):
        for prefix, style in (("", "-"), ("val_", "--")):
            column = prefix + key
            if column in log and log[column].notna().any():
                name = ("train" if not prefix else "validation")
                ax.plot(log["epoch"], log[column], style, color=color, marker=".",
                        label=f"{label}: {name}" if label else name)
        ax.set_title(title)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(title.split(" (")[0])
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)


def plot_log(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Redraw ``log.png`` (loss, accuracy, AUC; train vs validation) from ``folder/log.csv``."""
    folder = Path(folder)
    log = read_log(folder)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 3.8))
    _curves(axes, log, None)
    fig.suptitle(f"Training curves: {folder.resolve().name}")
    return save_figure(fig, out or folder / "log.png")


def plot_logs(folders: list[Path], out: str | os.PathLike) -> Path:
    """Overlay the curves of several logs, one colour per log."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(14, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    common = os.path.commonpath([str(f.resolve()) for f in folders]) if len(folders) > 1 else ""
    for i, folder in enumerate(folders):
        label = os.path.relpath(folder.resolve(), common) if common else folder.name
        _curves(axes, read_log(folder), label, colors[i % len(colors)])
    fig.suptitle("Training curves (solid: train, dashed: validation)")
    return save_figure(fig, out)


def plot_roc(labels: np.ndarray, proba: np.ndarray, out: str | os.PathLike,
             title: str = "ROC curve") -> Path:
    """ROC curve of class-1 probabilities against 0/1 labels, AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, proba)
        ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(labels, proba):.3f}")
    else:
        ax.text(0.5, 0.5, "AUC undefined: one class only", ha="center")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right")
    return save_figure(fig, out)


def find_logs(path: Path) -> list[Path]:
    """Folders holding a log.csv: the path itself and/or its immediate subfolders (cells)."""
    found = [path] if (path / "log.csv").is_file() else []
    if path.is_dir():
        found += sorted(p for p in path.iterdir() if (p / "log.csv").is_file())
    return found


class InputError(Exception):
    """A bad file or argument; reported in one line with exit status 2."""


ROOT = Path(__file__).resolve().parent
BASELINES = ROOT / "baselines" / "published_auc.csv"
IMAGES = ROOT / "images"
SAMPLE_DATA = ROOT / "sample_data"
# What the published columns are, for legends and tables (see baselines/README.md).
BASELINE_LABELS = {"deepchrome": "DeepChrome (published)",
                   "attentivechrome": "AttentiveChrome (official models)"}
VARIANT_LABELS = {"full": "full", "no_spatial_dropout": "no spatial dropout",
                  "no_additional_features": "no additional features"}


def _display(path: Path) -> str:
    """A path as the user would type it: relative to the current folder where possible."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Like save_figure, but keeps legends and labels placed outside the axes in the image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                                      bbox_inches="tight", pad_inches=0.15))
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------
# The model picture


def layer_rows(model) -> list[dict]:
    """One row per layer of a functional Keras model, in order.

    Returns dicts with name, type (class name), settings (str, e.g. "64 filters, kernel 17,
    tanh"), shape (output shape without the batch axis, tuple of int) and params (int).
    """
    rows = []
    for layer in model.layers:
        cfg = layer.get_config()
        kind = type(layer).__name__
        if kind == "Conv1D":
            settings = f"{cfg['filters']} filters, kernel {cfg['kernel_size'][0]}"
            if tuple(cfg["strides"]) != (1,):
                settings += f", stride {cfg['strides'][0]}"
            settings += f", {cfg['padding']}, {cfg['activation']}"
        elif kind.startswith("MaxPooling"):
            settings = f"pool {cfg['pool_size'][0]}"
        elif "Dropout" in kind:
            settings = f"rate {cfg['rate']:g}"
        elif kind == "Dense":
            settings = f"{cfg['units']} units, {cfg['activation']}"
        else:
            settings = ""
        rows.append({"name": layer.name, "type": kind, "settings": settings,
                     "shape": tuple(int(d) for d in layer.output.shape[1:]),
                     "params": int(layer.count_params())})
    return rows


# Box colours by kind of layer, so the convolutional and dense stages read as blocks.
_LAYER_COLORS = {"Conv1D": "#cfe2f3", "MaxPooling1D": "#d9ead3", "SpatialDropout1D": "#eeeeee",
                 "Dropout": "#eeeeee", "Dense": "#fce5cd"}


def draw_model(model, out: str | os.PathLike, title: str | None = None) -> Path:
    """The architecture drawn with matplotlib: one box per layer with its name, type,
    settings, output shape and parameter count, top (input) to bottom (output)."""
    from matplotlib.patches import FancyBboxPatch

    rows = layer_rows(model)
    n = len(rows)
    fig = plt.figure(figsize=(7.6, 1.5 + 0.56 * n))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(n + 0.1, -1.75)
    ax.axis("off")
    total = model.count_params()
    head, _, rest = (title or f"{model.name}: {total:,} parameters").partition("\n")
    ax.text(0.5, -1.4 if rest else -1.0, head, ha="center", va="center", fontsize=13,
            weight="bold")
    if rest:
        ax.text(0.5, -0.95, rest, ha="center", va="center", fontsize=11)
    for x, text, ha in ((0.06, "layer: type (settings)", "left"),
                        (0.77, "output shape per gene", "right"), (0.94, "parameters", "right")):
        ax.text(x, -0.35, text, fontsize=9.5, color="#555555", va="center", ha=ha)
    for i, row in enumerate(rows):
        top = i + 0.1
        ax.add_patch(FancyBboxPatch((0.04, top), 0.92, 0.72, linewidth=1, edgecolor="#666666",
                                    facecolor=_LAYER_COLORS.get(row["type"], "white"),
                                    boxstyle="round,pad=0,rounding_size=0.015",
                                    mutation_aspect=0.05))
        ax.text(0.06, top + 0.36, f"{row['name']}: {row['type']}" +
                (f"  ({row['settings']})" if row["settings"] else ""),
                fontsize=10.5, va="center")
        ax.text(0.77, top + 0.36, " x ".join(map(str, row["shape"])), fontsize=10.5,
                va="center", ha="right", family="monospace")
        ax.text(0.94, top + 0.36, f"{row['params']:,}" if row["params"] else "-", fontsize=10.5,
                va="center", ha="right", family="monospace")
        if i + 1 < n:
            ax.annotate("", xy=(0.5, i + 1.1), xytext=(0.5, top + 0.72),
                        arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1})
    return _save_png(fig, out)


def model_title(model, variant: str) -> str:
    """A two-line title for the network's picture: name, variant, size, and what goes in."""
    length = model.input_shape[1]
    extra = f" + {length - 500} additional features" if length > 500 else ""
    return (f"{model.name} ({VARIANT_LABELS.get(variant, variant)}): "
            f"{model.count_params():,} parameters\n"
            f"input: one gene, 100 bins x 5 marks{extra} = {length} values")


def plot_model(model, out: str | os.PathLike, style: str = "auto",
               title: str | None = None) -> Path:
    """Draw the architecture with each layer's output shape.

    style: "keras" (keras.utils.plot_model; needs pydot and Graphviz's ``dot``), "matplotlib"
    (draw_model, with ``title``) or "auto": keras when both are installed, else matplotlib.
    """
    if style not in ("auto", "keras", "matplotlib"):
        raise ValueError(f"style must be auto, keras or matplotlib, got {style!r}")
    has_graphviz = importlib.util.find_spec("pydot") is not None and shutil.which("dot")
    if style == "keras" and not has_graphviz:
        raise InputError("--style keras needs pydot (pip install pydot) and Graphviz's dot")
    if style != "matplotlib" and has_graphviz:
        import keras

        try:
            keras.utils.plot_model(model, to_file=str(out), show_shapes=True,
                                   show_layer_names=True)
            return Path(out)
        except Exception:  # pydot and Graphviz fail in many ways; the drawing below does not
            if style == "keras":
                raise
    return draw_model(model, out, title)


# ---------------------------------------------------------------------------------------------
# The data picture

# One colour per mark, in the data's mark order, the same in every picture.
MARK_COLORS = ("#7b3294", "#008837", "#e66101", "#d7191c", "#636363")


def typical_genes(counts: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """Indices of a typical highly (label 1) and lowly (label 0) expressed gene: in each class
    the gene whose counts are closest (least squares) to the class's mean counts.

    counts: (n_genes, 100, 5); labels: (n_genes,) 0/1. Raises InputError if a class is empty.
    """
    picked = []
    for label in (1, 0):
        members = np.flatnonzero(labels == label)
        if members.size == 0:
            raise InputError(f"no gene with label {label} to draw")
        group = counts[members].astype(np.float32)
        dist = ((group - group.mean(axis=0)) ** 2).sum(axis=(1, 2))
        picked.append(int(members[np.argmin(dist)]))
    return picked[0], picked[1]


def plot_data(data_dir: str | os.PathLike = SAMPLE_DATA, out: str | os.PathLike = "data.png",
              cell: str | None = None, split: str = "test", genes: list[str] | None = None,
              title: str | None = None) -> tuple[Path, str, str]:
    """The five marks' read counts along the 100 bins of a highly and a lowly expressed gene.

    cell: default the first cell of data_dir; genes: [high_id, low_id], default the most
    typical gene of each class (typical_genes). Returns (png path, high id, low id).
    Raises data.DataError for unreadable data, InputError for unknown cells or genes.
    """
    import data

    data_dir = Path(data_dir)
    cell = cell or data.list_cells(data_dir)[0]
    if split not in data.SPLITS:
        raise InputError(f"split must be one of {', '.join(data.SPLITS)}, got {split!r}")
    cell = data.select_cells(data_dir, [cell])[0]
    path = data.classification_dir(data_dir / cell) / f"{split}.csv"
    planes, labels, ids = data._parse_split(path)
    counts = planes.transpose(1, 2, 0)  # (genes, bins, marks)
    if genes:
        where = {g: i for i, g in enumerate(ids)}
        missing = [g for g in genes if g not in where]
        if missing:
            raise InputError(f"{path}: no gene {', '.join(missing)}")
        high, low = (where[g] for g in genes)
    else:
        if len(np.unique(labels)) < 2:
            raise InputError(f"{path}: every gene has label {labels[0]}; a high and a low "
                             "expression gene are needed")
        high, low = typical_genes(counts, labels)

    # Bin b (1..100) covers [-5000 + 100 (b - 1), -5000 + 100 b) bp around the TSS: its centre.
    kb = (np.arange(1, data.N_BINS + 1) - 0.5) * 0.1 - 5.0
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.4), sharex=True)
    for ax, gene in zip(axes, (high, low)):
        for m, mark in enumerate(data.MARKS):
            ax.plot(kb, counts[gene, :, m], drawstyle="steps-mid", color=MARK_COLORS[m],
                    lw=1.4, label=mark)
        ax.axvline(0, color="black", ls=":", lw=1)
        ax.text(0.05, 0.97, "TSS", transform=ax.get_xaxis_transform(), va="top", fontsize=9)
        expression = "high" if labels[gene] == 1 else "low"
        ax.set_title(f"Gene {ids[gene]}: label {labels[gene]} ({expression} expression)",
                     fontsize=11)
        ax.set_ylabel("Reads per 100-bp bin")
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlim(-5, 5)
        ax.grid(alpha=0.3)
    axes[1].set_xlabel("Position relative to the TSS (kb)")
    axes[0].xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(1))
    # The model sees bins, the biologist base pairs: both scales on one axis.
    top = axes[0].secondary_xaxis("top", functions=(lambda x: (x + 5.0) * 10 + 0.5,
                                                    lambda b: (b - 0.5) * 0.1 - 5.0))
    top.set_xticks([1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    top.set_xlabel("Bin")
    axes[0].legend(title="Histone mark (data order)", fontsize=9, title_fontsize=9,
                   loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or f"Histone marks around the TSS: cell {cell}, {split} split of "
                          f"{_display(data_dir)}", fontsize=12)
    fig.tight_layout()
    return _save_png(fig, out), str(ids[high]), str(ids[low])


# ---------------------------------------------------------------------------------------------
# Comparing runs with the published AUCs


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
        raise InputError(f"{path}: no 'cell' column (expected a header like "
                         "cell,auc,accuracy,n_test,best_epoch)")
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
            raise InputError(f"--labels gives {len(labels)} names for {len(lines)} lines "
                             f"({'; '.join(f'{_display(l.table)}: {l.column}' for l in lines)})")
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
        how.append(("then cells without a published AUC " if known else "") +
                   "by mean AUC of the runs")
    return known + unknown, ", ".join(how)


def summarize(lines: list[Line], baselines: pd.DataFrame | None, cells: list[str],
              baselines_path: str = "") -> pd.DataFrame:
    """Per line (runs first, then the baselines on the cells drawn): cells, mean, median, min,
    max AUC, and for each baseline on how many of the common cells its AUC is strictly higher
    (beats_<baseline>) out of how many (vs_<baseline>)."""
    rows = []
    references = {} if baselines is None else {
        name: baselines[name].reindex([c for c in cells if c in baselines.index]).dropna()
        for name in baselines.columns}
    entries = [(line.label, _display(line.table), line.column, line.auc) for line in lines]
    entries += [(BASELINE_LABELS.get(name, name), baselines_path, name, auc)
                for name, auc in references.items() if len(auc)]
    for label, table, column, auc in entries:
        values = auc.to_numpy(dtype=float)
        row = {"line": label, "table": table, "column": column, "cells": len(values),
               "mean": values.mean(), "median": np.median(values), "min": values.min(),
               "max": values.max()}
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
    names = [c[len("beats_"):] for c in summary.columns if c.startswith("beats_")]
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


def compare(runs: list, out: str | os.PathLike = "auc.png", labels: list[str] | None = None,
            baselines: str | os.PathLike | None = BASELINES, title: str | None = None,
            notes=print) -> tuple[Path, pd.DataFrame]:
    """Draw test AUC per cell for each run next to the published baselines (the paper's AUC
    figure), and write the summary table beside the PNG as .csv and .md.

    runs: run folders (their output*.csv) or results tables. Every input is read and checked
    before anything is written. ``notes`` receives one line per skipped or unknown cell set.
    Returns (png path, summary table).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--out {out}: expected a .png file name")
    lines = read_runs(runs, labels)
    ref = read_baselines(baselines) if baselines else None
    cells, how = cell_order(lines, ref)
    if ref is not None:
        known = [c for c in cells if c in ref.index]
        if not known:
            notes(f"note: none of the {len(cells)} cells is in {_display(Path(baselines))}; "
                  "the published lines are not drawn")
    for line in lines:
        missing = [c for c in cells if c not in line.auc.index]
        if missing:
            notes(f"note: {line.label}: no AUC for {len(missing)} of the {len(cells)} cells "
                  f"drawn ({_clip(missing)}); skipped on that line and in its counts")
        unknown = [c for c in line.auc.index if ref is None or c not in ref.index]
        if unknown and ref is not None:
            notes(f"note: {line.label}: {len(unknown)} cell(s) without a published AUC "
                  f"({_clip(unknown)}); drawn, not compared")
    summary = summarize(lines, ref, cells, _display(Path(baselines)) if baselines else "")

    x = np.arange(len(cells))
    fig, ax = plt.subplots(figsize=(min(max(7.0, 0.16 * len(cells) + 3.0), 13.0), 5.6))
    stats = summary.set_index("line")
    styles = {"deepchrome": dict(color="black", ls="--", marker="s"),
              "attentivechrome": dict(color="#888888", ls=":", marker="^")}
    if ref is not None:
        for name in ref.columns:
            label = BASELINE_LABELS.get(name, name)
            if label in stats.index:
                ax.plot(x, ref[name].reindex(cells), ms=3.5, lw=1.4,
                        label=_legend(label, stats.loc[label], len(cells)),
                        **styles.get(name, dict(ls="--", marker="s")))
    colors = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
              "#17becf", "#bcbd22", "#7f7f7f"]
    for i, line in enumerate(lines):
        ax.plot(x, line.auc.reindex(cells), "-o", ms=3.5, lw=1.6, color=colors[i % len(colors)],
                label=_legend(line.label, stats.loc[line.label], len(cells)))
    ax.set_xticks(x, cells, rotation=90, fontsize=8 if len(cells) > 30 else 9.5)
    ax.set_xlim(-0.7, len(cells) - 0.3)
    ax.set_xlabel(f"Cell type (sorted {how})")
    ax.set_ylabel("Test ROC AUC")
    ax.grid(alpha=0.3)
    fig.set_layout_engine("constrained")
    # Below the axes: inside, it would hide points wherever the lines happen to run.
    fig.legend(loc="outside lower center", ncol=2 if fig.get_figwidth() >= 10 else 1,
               fontsize=9.5, frameon=False)
    fig.suptitle(title or "Test AUC per cell type", fontsize=12)

    table_csv, table_md = out.with_suffix(".csv"), out.with_suffix(".md")
    png = _save_png(fig, out)
    write_csv(table_csv, summary)
    atomic_write(table_md, lambda tmp: Path(tmp).write_text(summary_markdown(summary)))
    return png, summary


def _legend(label: str, row, n_drawn: int) -> str:
    over = f" over {row['cells']} cells" if row["cells"] != n_drawn else ""
    return f"{label}: mean {row['mean']:.3f}{over}"


def _clip(names: list[str], k: int = 6) -> str:
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


# ---------------------------------------------------------------------------------------------
# The README's images, and the example runs behind images/auc.png

EXAMPLE_TITLE = ("Test AUC per cell type: example runs on GENERATED data vs. published AUCs on "
                 "the real data\nThe generated cells only borrow the real cell ids: their AUCs "
                 "say nothing about the real cells")


def rerun_example(runs_dir: Path, work: Path, n_cells: int = 56, genes: int = 200,
                  epochs: int = 4, mix_epochs: int = 3, seed: int = 0) -> list[Path]:
    """Regenerate the example behind images/auc.png: generated data whose cells are named
    after the first ``n_cells`` published cells, a per-cell and a mixed run of main.py, and
    copies of their results tables and args.json in ``runs_dir/{percell,mix}``.
    Models and logs stay in ``work``."""
    import data

    cells = list(read_baselines().index[:n_cells])
    data_dir = work / "data"
    data.synthesize(data_dir, names=cells, n_genes=genes, seed=seed)
    runs = []
    for name, extra, n_epochs, table in (("percell", [], epochs, "output.csv"),
                                         ("mix", ["--mix"], mix_epochs, "output-mix.csv")):
        save = work / name
        cmd = [sys.executable, str(ROOT / "main.py"), "--data_dir", str(data_dir),
               "--epochs", str(n_epochs), "--seed", str(seed), "--save_dir", str(save),
               "--overwrite", *extra]
        print("running: python " + " ".join(cmd[1:]), flush=True)
        res = subprocess.run(cmd)  # its per-epoch lines go straight to the terminal
        if res.returncode != 0:
            raise InputError(f"example run failed with exit status {res.returncode}: "
                             f"{' '.join(cmd[1:])}")
        dest = runs_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in (table, "args.json"):
            shutil.copyfile(save / file, dest / file)
        runs.append(dest)
    return runs


def make_images(outdir: Path = IMAGES, runs: list | None = None,
                data_dir: str | os.PathLike = SAMPLE_DATA, cell: str | None = None,
                style: str = "auto", notes=print) -> list[Path]:
    """images/data.png, model.png and auc.png (+ auc.csv, auc.md); runs default to
    ``outdir/example_runs/*``, drawn with the generated-data title."""
    example = runs is None
    if example:
        runs = sorted(p for p in (outdir / "example_runs").glob("*") if p.is_dir())
        if not runs:
            raise InputError(f"{outdir / 'example_runs'}: no example runs; make them with "
                             "python utils.py images --rerun")
    outdir.mkdir(parents=True, exist_ok=True)
    # The comparison first: it reads the most user-supplied input, so it fails before any
    # image is replaced.
    labels = [f"{line.label}, generated data" for line in read_runs(runs)] if example else None
    auc, _ = compare(runs, outdir / "auc.png", labels=labels,
                     title=EXAMPLE_TITLE if example else None, notes=notes)
    import data

    cell = cell or data.list_cells(data_dir)[0]
    generated = Path(data_dir).resolve() == SAMPLE_DATA
    picture, _, _ = plot_data(
        data_dir, outdir / "data.png", cell=cell,
        title=None if not generated else
        f"Histone marks around the TSS of two genes\ncell {cell} of the bundled sample data "
        "(GENERATED, not measured)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import Convnet

    model = plot_model(Convnet.Conv1DNet(), outdir / "model.png", style=style,
                       title=model_title(Convnet.Conv1DNet(), "full"))
    return [picture, model, auc]


# ---------------------------------------------------------------------------------------------
# Command line

COMMANDS = ("plot", "compare", "data", "model", "images")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="utils.py",
        description="Figures from runs and data. A bare list of paths means 'plot'.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plot", help="redraw training curves (log.png) from log.csv files",
                       description="Redraw training curves (log.png) from the log.csv files "
                                   "of runs or cells.")
    p.add_argument("paths", nargs="+", help="run folders, cell folders or log.csv files")
    p.add_argument("--out", default=None,
                   help="with several logs, the overlay figure to write "
                        "[Default: curves.png in the current folder]")

    p = sub.add_parser("compare", help="AUC per cell of runs vs. the published baselines",
                       description="Draw the test AUC per cell of one or more runs next to "
                                   "DeepChrome and AttentiveChrome (the paper's AUC figure) "
                                   "and write a summary table (.csv and .md beside the PNG).")
    p.add_argument("runs", nargs="+",
                   help="run folders (their output.csv / output-mix.csv) or results tables; "
                        "every auc* column of a table is one line")
    p.add_argument("--out", default="auc.png",
                   help="the figure; the summary goes to the same name with .csv and .md "
                        "[Default: %(default)s]")
    p.add_argument("--labels", nargs="+", default=None,
                   help="one name per line, in order [Default: from each run's args.json, "
                        "e.g. 'per-cell (full)', 'mixed (full)']")
    p.add_argument("--baselines", default=_display(BASELINES),
                   help="published per-cell AUCs (cell + one column per method), or 'none' "
                        "[Default: %(default)s]")
    p.add_argument("--title", default=None, help="figure title [Default: Test AUC per cell type]")

    p = sub.add_parser("data", help="the marks of a high and a low expression gene",
                       description="Draw the five marks' read counts along the 100 bins "
                                   "(+/-5 kb around the TSS) of a highly and a lowly "
                                   "expressed gene of one cell.")
    p.add_argument("--data_dir", default=_display(SAMPLE_DATA),
                   help="<data_dir>/<cell>/classification/{train,valid,test}.csv "
                        "[Default: %(default)s]")
    p.add_argument("--cell", default=None, help="cell to draw [Default: the first cell]")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"),
                   help="split to draw from [Default: %(default)s]")
    p.add_argument("--genes", default=None,
                   help="HIGH,LOW gene ids to draw [Default: the gene of each class closest "
                        "to its class's mean counts]")
    p.add_argument("--out", default="data.png", help="figure [Default: %(default)s]")
    p.add_argument("--title", default=None, help="figure title [Default: names cell and data]")

    p = sub.add_parser("model", help="the network with each layer's output shape",
                       description="Draw the network with each layer's output shape.")
    p.add_argument("--variant", default="full",
                   choices=("full", "no_spatial_dropout", "no_additional_features"),
                   help="network variant [Default: %(default)s]")
    p.add_argument("--style", default="auto", choices=("auto", "keras", "matplotlib"),
                   help="keras.utils.plot_model (needs pydot and Graphviz), a matplotlib "
                        "drawing, or auto: keras when those are installed [Default: %(default)s]")
    p.add_argument("--out", default="model.png", help="figure [Default: %(default)s]")

    p = sub.add_parser("images", help="redraw the README's images in one go",
                       description="Redraw images/data.png (sample data), images/model.png "
                                   "and images/auc.png (+ auc.csv, auc.md) from the example "
                                   "runs in images/example_runs.")
    p.add_argument("--outdir", default=_display(IMAGES),
                   help="where the images go; example runs in OUTDIR/example_runs "
                        "[Default: %(default)s]")
    p.add_argument("--runs", nargs="+", default=None,
                   help="runs to compare instead of the example runs "
                        "[Default: OUTDIR/example_runs/*]")
    p.add_argument("--data_dir", default=_display(SAMPLE_DATA),
                   help="data for data.png [Default: %(default)s]")
    p.add_argument("--cell", default=None, help="cell for data.png [Default: the first cell]")
    p.add_argument("--style", default="auto", choices=("auto", "keras", "matplotlib"),
                   help="model.png drawing, as for 'model' [Default: %(default)s]")
    p.add_argument("--rerun", action="store_true",
                   help="first regenerate the example: generated data named after the "
                        "published cells, then a per-cell and a mixed run of main.py (about "
                        "5 to 20 minutes on 2 CPU cores) [Default: off]")
    p.add_argument("--example_dir", default="logs/example",
                   help="with --rerun, where the generated data, models and logs go "
                        "[Default: %(default)s]")
    p.add_argument("--example_cells", type=int, default=56,
                   help="with --rerun, how many cells [Default: %(default)s]")
    p.add_argument("--example_genes", type=int, default=200,
                   help="with --rerun, genes per split [Default: %(default)s]")
    p.add_argument("--example_epochs", type=int, default=4,
                   help="with --rerun, epochs of the per-cell run [Default: %(default)s]")
    p.add_argument("--example_mix_epochs", type=int, default=3,
                   help="with --rerun, epochs of the mixed run [Default: %(default)s]")
    return parser


def _plot_command(args) -> int:
    folders = []
    for p in map(Path, args.paths):
        if p.name == "log.csv":
            p = p.parent
        logs = find_logs(p)
        if not logs:
            raise InputError(f"{p}: no log.csv here or in its subfolders")
        folders += logs
    for folder in folders:
        print(f"redrew {plot_log(folder)}")
    if len(folders) > 1 or args.out:
        print(f"overlay {plot_logs(folders, args.out or 'curves.png')}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "plot")  # the original usage: python utils.py PATH... [--out]
    args = build_parser().parse_args(argv)
    import data

    def note(text):
        print(text, file=sys.stderr)

    try:
        if args.command == "plot":
            return _plot_command(args)
        if args.command == "compare":
            baselines = None if args.baselines.lower() == "none" else args.baselines
            png, summary = compare(args.runs, args.out, args.labels, baselines, args.title,
                                   notes=note)
            print(summary_markdown(summary), end="")
            print(f"wrote {png}, {png.with_suffix('.csv')}, {png.with_suffix('.md')}")
        elif args.command == "data":
            genes = None
            if args.genes:
                genes = [g.strip() for g in args.genes.split(",")]
                if len(genes) != 2:
                    raise InputError(f"--genes {args.genes}: expected two ids, HIGH,LOW")
            png, high, low = plot_data(args.data_dir, args.out, args.cell, args.split, genes,
                                       args.title)
            print(f"wrote {png} (genes {high} and {low})")
        elif args.command == "model":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import Convnet

            model = Convnet.Conv1DNet(variant=args.variant)
            title = model_title(model, args.variant)
            print(f"wrote {plot_model(model, args.out, args.style, title)}")
        elif args.command == "images":
            outdir = Path(args.outdir)
            if args.rerun:
                for flag in ("example_cells", "example_genes", "example_epochs",
                             "example_mix_epochs"):
                    if getattr(args, flag) < 1:
                        raise InputError(f"--{flag} must be at least 1")
                rerun_example(outdir / "example_runs", Path(args.example_dir),
                              args.example_cells, args.example_genes, args.example_epochs,
                              args.example_mix_epochs)
            written = make_images(outdir, args.runs, args.data_dir, args.cell, args.style,
                                  notes=note)
            print(f"wrote {', '.join(map(str, written))}")
    except (InputError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
