"""Plots: training curves, ROC curves, the model and data pictures, the per-cell AUC comparison
with the published baselines (the paper's figure) and the README's images.

It draws only: the results-table format and the baselines are results.py's, file writing is
files.py's, and nothing here trains a model (``images --rerun`` runs main.py for that).

Command line::

    python utils.py plot logs/RUN            # redraw log.png of the run (and of each cell in it)
    python utils.py plot logs/RUN1 logs/RUN2 --out curves.png   # overlay the curves of runs
    python utils.py logs/RUN                 # the same as "plot" (the original usage)
    python utils.py compare logs/RUN1 logs/RUN2 --out auc.png   # AUC per cell vs. DeepChrome
    python utils.py data --data_dir sample_data --cell S001     # the marks of two genes
    python utils.py model --out model.png                       # the network, layer by layer
    python utils.py images                   # redraw images/{data,model,auc}.png

Only ``model`` and ``images`` import TensorFlow. Attribution maps of a run's models (what the
model looks at) are computed by ``python explain.py RUN`` and drawn here.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import data  # noqa: E402
import files  # noqa: E402
import synth  # noqa: E402
from results import (  # noqa: E402
    BASELINE_LABELS,
    BASELINES,
    GAPS,
    ROOT,
    InputError,
    cell_order,
    display_path,
    field_count_problem,
    read_baselines,
    read_csv_rows,
    read_runs,
    summarize,
    summary_markdown,
)

# (log.csv column, label) per panel; validation columns are the same names with "val_".
PANELS = (("loss", "Loss (binary cross-entropy)"), ("accuracy", "Accuracy"), ("auc", "ROC AUC"))


def save_figure(fig, path: str | os.PathLike) -> Path:
    fig.tight_layout()
    out = files.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out


def read_log(folder_or_csv: str | os.PathLike) -> pd.DataFrame:
    """A run's per-epoch log (log.csv) with 1-based epochs: float columns, NaN where the log
    has nan, NA or nothing (an AUC undefined that epoch; Keras' CSVLogger writes NA).

    Raises InputError naming the file (and line) when it is not such a log: empty, only a
    header (no epoch logged), not a CSV table, no ``epoch`` column, a line with too few or too
    many fields, or a value that is not a number.
    """
    path = Path(folder_or_csv)
    if path.is_dir():
        path = path / "log.csv"
    header, rows = read_csv_rows(path)
    if "epoch" not in header:
        raise InputError(
            f"{path}: not a training log (no 'epoch' column; expected a header like "
            "epoch,accuracy,auc,learning_rate,loss,val_accuracy,val_auc,val_loss)"
        )
    repeated = [c for i, c in enumerate(header) if c in header[:i]]
    if repeated:
        raise InputError(f"{path}:1: column {repeated[0]!r} appears more than once")
    if not rows:
        raise InputError(f"{path}: no epoch logged, only a header")
    columns = {name: [] for name in header}
    for line, fields in rows:
        problem = field_count_problem(fields, header)
        if problem:
            raise InputError(f"{path}:{line}: {problem}")
        for name, text in zip(header, fields):
            try:
                value = float(text)
            except ValueError:
                value = np.nan
            if name == "epoch":
                if not (np.isfinite(value) and value >= 0 and value.is_integer()):
                    raise InputError(f"{path}:{line}: epoch {text!r} is not an epoch number")
            elif np.isnan(value) and text.strip().lower() not in GAPS:
                raise InputError(f"{path}:{line}: {name} {text!r} is not a number")
            columns[name].append(value)
    log = pd.DataFrame(columns)
    log["epoch"] = log["epoch"].astype(int) + 1  # Keras counts from 0
    return log


def _curves(axes, log: pd.DataFrame, label: str | None, color=None) -> None:
    for ax, (key, title) in zip(axes, PANELS):
        for prefix, style in (("", "-"), ("val_", "--")):
            column = prefix + key
            if column in log and log[column].notna().any():
                name = "train" if not prefix else "validation"
                ax.plot(
                    log["epoch"],
                    log[column],
                    style,
                    color=color,
                    marker=".",
                    label=f"{label}: {name}" if label else name,
                )
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


def plot_roc(
    labels: np.ndarray, proba: np.ndarray, out: str | os.PathLike, title: str = "ROC curve"
) -> Path:
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


IMAGES = ROOT / "images"
SAMPLE_DATA = ROOT / "sample_data"


def _save_png(fig, path: str | os.PathLike) -> Path:
    """Like save_figure, but keeps legends and labels placed outside the axes in the image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = files.atomic_write(
        path,
        lambda tmp: fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight", pad_inches=0.15),
    )
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
        rows.append(
            {
                "name": layer.name,
                "type": kind,
                "settings": settings,
                "shape": tuple(int(d) for d in layer.output.shape[1:]),
                "params": int(layer.count_params()),
            }
        )
    return rows


# Box colours by kind of layer, so the convolutional and dense stages read as blocks.
_LAYER_COLORS = {
    "Conv1D": "#cfe2f3",
    "MaxPooling1D": "#d9ead3",
    "SpatialDropout1D": "#eeeeee",
    "Dropout": "#eeeeee",
    "Dense": "#fce5cd",
}


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
    ax.text(0.5, -1.4 if rest else -1.0, head, ha="center", va="center", fontsize=13, weight="bold")
    if rest:
        ax.text(0.5, -0.95, rest, ha="center", va="center", fontsize=11)
    for x, text, ha in (
        (0.06, "layer: type (settings)", "left"),
        (0.77, "output shape per gene", "right"),
        (0.94, "parameters", "right"),
    ):
        ax.text(x, -0.35, text, fontsize=9.5, color="#555555", va="center", ha=ha)
    for i, row in enumerate(rows):
        top = i + 0.1
        ax.add_patch(
            FancyBboxPatch(
                (0.04, top),
                0.92,
                0.72,
                linewidth=1,
                edgecolor="#666666",
                facecolor=_LAYER_COLORS.get(row["type"], "white"),
                boxstyle="round,pad=0,rounding_size=0.015",
                mutation_aspect=0.05,
            )
        )
        ax.text(
            0.06,
            top + 0.36,
            f"{row['name']}: {row['type']}" + (f"  ({row['settings']})" if row["settings"] else ""),
            fontsize=10.5,
            va="center",
        )
        ax.text(
            0.77,
            top + 0.36,
            " x ".join(map(str, row["shape"])),
            fontsize=10.5,
            va="center",
            ha="right",
            family="monospace",
        )
        ax.text(
            0.94,
            top + 0.36,
            f"{row['params']:,}" if row["params"] else "-",
            fontsize=10.5,
            va="center",
            ha="right",
            family="monospace",
        )
        if i + 1 < n:
            ax.annotate(
                "",
                xy=(0.5, i + 1.1),
                xytext=(0.5, top + 0.72),
                arrowprops={"arrowstyle": "-|>", "color": "#444444", "lw": 1},
            )
    return _save_png(fig, out)


def model_title(model, variant: str) -> str:
    """A two-line title for the network's picture: name, variant, size, and what goes in."""
    length = model.input_shape[1]
    extra = f" + {length - 500} additional features" if length > 500 else ""
    return (
        f"{model.name} ({data.VARIANT_LABELS.get(variant, variant)}): "
        f"{model.count_params():,} parameters\n"
        f"input: one gene, 100 bins x 5 marks{extra} = {length} values"
    )


def plot_model(
    model, out: str | os.PathLike, style: str = "auto", title: str | None = None
) -> Path:
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
            keras.utils.plot_model(model, to_file=str(out), show_shapes=True, show_layer_names=True)
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


def plot_data(
    data_dir: str | os.PathLike = SAMPLE_DATA,
    out: str | os.PathLike = "data.png",
    cell: str | None = None,
    split: str = "test",
    genes: list[str] | None = None,
    title: str | None = None,
) -> tuple[Path, str, str]:
    """The five marks' read counts along the 100 bins of a highly and a lowly expressed gene.

    cell: default the first cell of data_dir; genes: [high_id, low_id], default the most
    typical gene of each class (typical_genes). Returns (png path, high id, low id).
    Raises data.DataError for unreadable data, InputError for unknown cells or genes.
    """
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
            raise InputError(
                f"{path}: every gene has label {labels[0]}; a high and a low "
                "expression gene are needed"
            )
        high, low = typical_genes(counts, labels)

    # Bin b (1..100) covers [-5000 + 100 (b - 1), -5000 + 100 b) bp around the TSS: its centre.
    kb = (np.arange(1, data.N_BINS + 1) - 0.5) * 0.1 - 5.0
    fig, axes = plt.subplots(2, 1, figsize=(9, 6.4), sharex=True)
    for ax, gene in zip(axes, (high, low)):
        for m, mark in enumerate(data.MARKS):
            ax.plot(
                kb,
                counts[gene, :, m],
                drawstyle="steps-mid",
                color=MARK_COLORS[m],
                lw=1.4,
                label=mark,
            )
        ax.axvline(0, color="black", ls=":", lw=1)
        ax.text(0.05, 0.97, "TSS", transform=ax.get_xaxis_transform(), va="top", fontsize=9)
        expression = "high" if labels[gene] == 1 else "low"
        ax.set_title(
            f"Gene {ids[gene]}: label {labels[gene]} ({expression} expression)", fontsize=11
        )
        ax.set_ylabel("Reads per 100-bp bin")
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlim(-5, 5)
        ax.grid(alpha=0.3)
    axes[1].set_xlabel("Position relative to the TSS (kb)")
    axes[0].xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(1))
    # The model sees bins, the biologist base pairs: both scales on one axis.
    top = axes[0].secondary_xaxis(
        "top", functions=(lambda x: (x + 5.0) * 10 + 0.5, lambda b: (b - 0.5) * 0.1 - 5.0)
    )
    top.set_xticks([1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100])
    top.set_xlabel("Bin")
    axes[0].legend(
        title="Histone mark (data order)",
        fontsize=9,
        title_fontsize=9,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.suptitle(
        title
        or f"Histone marks around the TSS: cell {cell}, {split} split of {display_path(data_dir)}",
        fontsize=12,
    )
    fig.tight_layout()
    return _save_png(fig, out), str(ids[high]), str(ids[low])


# ---------------------------------------------------------------------------------------------
# Attribution maps (explain.py computes them; drawn here)

# Bin b (1..100) covers [-5000 + 100 (b - 1), -5000 + 100 b) bp around the TSS.
BIN_EDGES_KB = (-5.0, 5.0)


def _bin_centres_kb() -> np.ndarray:
    """float (100,): each bin's centre in kb relative to the TSS."""
    return (np.arange(1, data.N_BINS + 1) - 0.5) * 0.1 - 5.0


def _group_maps(table: pd.DataFrame, group: str) -> tuple[np.ndarray, np.ndarray | None, int]:
    """One group of an explain.csv table as (mean attribution float (5 marks, 100 bins) in the
    data's mark order, the additional features' float (5,) or None, its number of genes)."""
    rows = table[table["group"] == group]
    order = {m: i for i, m in enumerate(data.MARKS)}
    on_bins = rows[rows["feature"] == "bin"]
    grid = np.full((data.N_MARKS, data.N_BINS), np.nan)
    grid[on_bins["mark"].map(order).to_numpy(), on_bins["bin"].to_numpy(dtype=int) - 1] = on_bins[
        "mean"
    ].to_numpy(dtype=float)
    extra_rows = rows[rows["feature"] == "additional"]
    extra = None
    if len(extra_rows):
        extra = np.full(data.N_MARKS, np.nan)
        extra[extra_rows["mark"].map(order).to_numpy()] = extra_rows["mean"].to_numpy(dtype=float)
    return grid, extra, int(rows["n_genes"].iloc[0]) if len(rows) else 0


def _symmetric_limit(values) -> float:
    """The largest absolute finite value of arrays, for a colour scale centred at 0 (1 if none)."""
    finite = [np.abs(v[np.isfinite(v)]) for v in values if v is not None]
    top = max((float(f.max()) for f in finite if f.size), default=0.0)
    return top if top > 0 else 1.0


def plot_attribution_map(
    table: pd.DataFrame,
    out: str | os.PathLike,
    title: str = "Attribution",
    labels: dict[str, str] | None = None,
) -> Path:
    """Heatmaps of an explain.csv table: per group, the marks (rows, in the data's order) x
    position relative to the TSS (columns, kb), mean attribution on a diverging scale centred
    at 0 (red: towards high expression, blue: towards low), the TSS dotted; the additional
    features in a strip of their own (own scale) at the right of each map. Groups whose name
    ends in "_correct" go in a second column beside their group.

    table: columns group, n_genes, mark, feature ("bin" / "additional"), bin, mean."""
    groups = list(dict.fromkeys(table["group"]))
    bases = [g for g in groups if not g.endswith("_correct")]
    paired = any(f"{g}_correct" in groups for g in bases)
    maps = {g: _group_maps(table, g) for g in groups}
    limit = _symmetric_limit([m[0] for m in maps.values()])
    has_extra = any(m[1] is not None for m in maps.values())
    extra_limit = _symmetric_limit([m[1] for m in maps.values()])
    columns = 2 if paired else 1
    ratios = ([24, 1.3] if has_extra else [24]) * columns
    fig, axes = plt.subplots(
        len(bases),
        len(ratios),
        figsize=(7.2 * columns + 1.6, 1.75 * len(bases) + 1.3),
        gridspec_kw={"width_ratios": ratios},
        squeeze=False,
        layout="constrained",
    )
    per = 2 if has_extra else 1
    image = strip = None
    for r, base in enumerate(bases):
        for c, group in enumerate([base, f"{base}_correct"][:columns]):
            ax = axes[r, c * per]
            if group not in maps:
                ax.axis("off")
                if has_extra:
                    axes[r, c * per + 1].axis("off")
                continue
            grid, extra, n = maps[group]
            image = ax.imshow(
                grid,
                aspect="auto",
                cmap="RdBu_r",
                vmin=-limit,
                vmax=limit,
                extent=(*BIN_EDGES_KB, data.N_MARKS - 0.5, -0.5),
                interpolation="nearest",
            )
            ax.axvline(0, color="black", ls=":", lw=1)
            ax.set_yticks(range(data.N_MARKS), data.MARKS, fontsize=8.5)
            ax.set_xticks(np.arange(-5, 6), [f"{k:+d}" if k else "TSS" for k in range(-5, 6)])
            ax.tick_params(axis="x", labelsize=8.5)
            name = (labels or {}).get(group, group.replace("_", ", "))
            ax.set_title(f"{name} (n = {n})", fontsize=9.5)
            if r == len(bases) - 1:
                ax.set_xlabel("Position relative to the TSS (kb)", fontsize=9)
            if has_extra:
                side = axes[r, c * per + 1]
                values = extra if extra is not None else np.full(data.N_MARKS, np.nan)
                strip = side.imshow(
                    values[:, None],
                    aspect="auto",
                    cmap="PuOr_r",
                    vmin=-extra_limit,
                    vmax=extra_limit,
                    interpolation="nearest",
                )
                side.set_xticks([0], ["sums"], fontsize=7.5)
                side.set_yticks([])
    if strip is not None:
        fig.colorbar(
            strip,
            ax=axes.ravel().tolist(),
            label="Additional features (mark sums)",
            shrink=0.8,
            pad=0.01,
        )
    if image is not None:
        fig.colorbar(
            image,
            ax=axes.ravel().tolist(),
            label="Mean attribution per bin\n(log-odds of high expression)",
            shrink=0.8,
            pad=0.01,
        )
    fig.suptitle(
        f"{title}\nred: pushes towards high expression, blue: towards low; dotted: TSS",
        fontsize=11,
    )
    return _save_png(fig, out)


def plot_gene_attribution(
    counts: np.ndarray,
    attribution: np.ndarray,
    extra: np.ndarray | None,
    out: str | os.PathLike,
    title: str = "One gene",
) -> Path:
    """One gene: its five marks' read counts along the bins (as images/data.png) and, underneath,
    one row per mark with its attribution per bin (above 0: towards high expression) and its
    additional feature's attribution in the row's corner.

    counts: (100, 5) reads; attribution: (100, 5); extra: (5,) or None."""
    kb = _bin_centres_kb()
    fig, axes = plt.subplots(
        1 + data.N_MARKS,
        1,
        figsize=(9, 8.4),
        sharex=True,
        gridspec_kw={"height_ratios": [2.4] + [1] * data.N_MARKS},
        layout="constrained",
    )
    top = axes[0]
    for m, mark in enumerate(data.MARKS):
        top.plot(kb, counts[:, m], drawstyle="steps-mid", color=MARK_COLORS[m], lw=1.3, label=mark)
    top.set_ylabel("Reads per\n100-bp bin")
    top.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    top.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, 1.22), frameon=False)
    limit = _symmetric_limit([attribution]) * 1.1
    for m, mark in enumerate(data.MARKS):
        ax = axes[1 + m]
        ax.fill_between(kb, attribution[:, m], step="mid", color=MARK_COLORS[m], alpha=0.75, lw=0)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_ylim(-limit, limit)
        ax.set_ylabel(mark, rotation=0, ha="right", va="center", fontsize=8.5)
        ax.tick_params(axis="y", labelsize=7)
        if extra is not None:
            ax.text(
                0.995,
                0.92,
                f"additional feature {extra[m]:+.3g}",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7.5,
            )
    for ax in axes:
        ax.axvline(0, color="black", ls=":", lw=1)
        ax.grid(alpha=0.25)
        ax.set_xlim(*BIN_EDGES_KB)
    axes[1].set_title(
        "Attribution per bin (log-odds of high expression; + towards high)", fontsize=9
    )
    axes[-1].set_xlabel("Position relative to the TSS (kb)")
    axes[-1].xaxis.set_major_locator(matplotlib.ticker.MultipleLocator(1))
    fig.suptitle(title, fontsize=10.5)
    return _save_png(fig, out)


def cluster_order(rows: np.ndarray) -> np.ndarray:
    """Row order of a hierarchical clustering (average linkage, Euclidean) of rows (n, k), so
    that similar rows sit together; the given order for fewer than 3 rows."""
    if len(rows) < 3:
        return np.arange(len(rows))
    from scipy.cluster.hierarchy import leaves_list, linkage

    return leaves_list(linkage(np.nan_to_num(rows), method="average"))


def plot_mark_summary(
    marks: pd.DataFrame, out: str | os.PathLike, title: str = "Attribution per mark"
) -> Path:
    """The cross-cell summary of an explain-marks.csv table: cells (rows, clustered by their
    shares) x marks (columns, data order); left, each mark's share of the cell's importance
    (mean absolute total attribution of the mark per gene); right, its signed mean total
    attribution (red: towards high expression).

    marks: columns cell, mark, share, mean."""
    share = marks.pivot(index="cell", columns="mark", values="share")[list(data.MARKS)]
    mean = marks.pivot(index="cell", columns="mark", values="mean")[list(data.MARKS)]
    order = cluster_order(share.to_numpy())
    share, mean = share.iloc[order], mean.iloc[order]
    n = len(share)
    fig, axes = plt.subplots(
        1, 2, figsize=(10.5, 1.6 + 0.32 * max(n, 3)), sharey=True, layout="constrained"
    )
    limit = _symmetric_limit([mean.to_numpy()])
    for ax, values, cmap, vmin, vmax, label in (
        (axes[0], share, "Purples", 0.0, max(float(share.max().max()), 1e-12), "share"),
        (axes[1], mean, "RdBu_r", -limit, limit, "mean"),
    ):
        image = ax.imshow(values.to_numpy(), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_xticks(range(data.N_MARKS), data.MARKS, rotation=30, ha="right", fontsize=9)
        ax.set_yticks(range(n), values.index, fontsize=8 if n > 30 else 9)
        if n <= 40:
            for (i, j), v in np.ndenumerate(values.to_numpy()):
                strong = (
                    abs(v - vmin) > 0.6 * (vmax - vmin)
                    if label == "share"
                    else abs(v) > 0.6 * limit
                )
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white" if strong else "black",
                )
        fig.colorbar(image, ax=ax, shrink=0.9)
    axes[0].set_title(
        "Share of the cell's importance\n(mean |total attribution| per gene)", fontsize=10
    )
    axes[1].set_title(
        "Mean total attribution per gene\n(log-odds; + towards high expression)", fontsize=10
    )
    axes[0].set_ylabel("Cell" + (" (clustered)" if n >= 3 else ""))
    fig.suptitle(title, fontsize=11)
    return _save_png(fig, out)


# ---------------------------------------------------------------------------------------------
# Comparing runs with the published AUCs


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
# The README's images, and the example runs behind images/auc.png

EXAMPLE_TITLE = (
    "Test AUC per cell type: example runs on GENERATED data vs. published AUCs on "
    "the real data\nThe generated cells only borrow the real cell ids: their AUCs "
    "say nothing about the real cells"
)


def rerun_example(
    runs_dir: Path,
    work: Path,
    n_cells: int = 56,
    genes: int = 200,
    epochs: int = 4,
    mix_epochs: int = 3,
    seed: int = 0,
) -> list[Path]:
    """Regenerate the example behind images/auc.png: generated data whose cells are named
    after the first ``n_cells`` published cells, a per-cell and a mixed run of main.py, and
    copies of their results tables and args.json in ``runs_dir/{percell,mix}``.
    Models and logs stay in ``work``."""
    cells = list(read_baselines().index[:n_cells])
    data_dir = work / "data"
    synth.synthesize(data_dir, names=cells, n_genes=genes, seed=seed)
    runs = []
    for name, extra, n_epochs, table in (
        ("percell", [], epochs, "output.csv"),
        ("mix", ["--mix"], mix_epochs, "output-mix.csv"),
    ):
        save = work / name
        cmd = [
            sys.executable,
            str(ROOT / "main.py"),
            "--data_dir",
            str(data_dir),
            "--epochs",
            str(n_epochs),
            "--seed",
            str(seed),
            "--save_dir",
            str(save),
            "--overwrite",
            *extra,
        ]
        print("running: python " + " ".join(cmd[1:]), flush=True)
        res = subprocess.run(cmd)  # its per-epoch lines go straight to the terminal
        if res.returncode != 0:
            raise InputError(
                f"example run failed with exit status {res.returncode}: {' '.join(cmd[1:])}"
            )
        dest = runs_dir / name
        dest.mkdir(parents=True, exist_ok=True)
        for file in (table, "args.json"):
            shutil.copyfile(save / file, dest / file)
        runs.append(dest)
    return runs


def make_images(
    outdir: Path = IMAGES,
    runs: list | None = None,
    data_dir: str | os.PathLike = SAMPLE_DATA,
    cell: str | None = None,
    style: str = "auto",
    notes=print,
) -> list[Path]:
    """images/data.png, model.png and auc.png (+ auc.csv, auc.md); runs default to
    ``outdir/example_runs/*``, drawn with the generated-data title."""
    example = runs is None
    if example:
        runs = sorted(p for p in (outdir / "example_runs").glob("*") if p.is_dir())
        if not runs:
            raise InputError(
                f"{outdir / 'example_runs'}: no example runs; make them with "
                "python utils.py images --rerun"
            )
    outdir.mkdir(parents=True, exist_ok=True)
    # The comparison first: it reads the most user-supplied input, so it fails before any
    # image is replaced.
    labels = [f"{line.label}, generated data" for line in read_runs(runs)] if example else None
    auc, _ = compare(
        runs,
        outdir / "auc.png",
        labels=labels,
        title=EXAMPLE_TITLE if example else None,
        notes=notes,
    )
    cell = cell or data.list_cells(data_dir)[0]
    generated = Path(data_dir).resolve() == SAMPLE_DATA
    picture, _, _ = plot_data(
        data_dir,
        outdir / "data.png",
        cell=cell,
        title=None
        if not generated
        else f"Histone marks around the TSS of two genes\ncell {cell} of the bundled sample data "
        "(GENERATED, not measured)",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import Convnet

    model = plot_model(
        Convnet.Conv1DNet(),
        outdir / "model.png",
        style=style,
        title=model_title(Convnet.Conv1DNet(), "full"),
    )
    return [picture, model, auc]


# ---------------------------------------------------------------------------------------------
# Command line

COMMANDS = ("plot", "compare", "data", "model", "images")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="utils.py",
        description="Figures from runs and data. A bare list of paths means 'plot'.",
        epilog="What a run's models look at (attribution maps over marks and bins, per cell and "
        "across cells): python explain.py RUN (see python explain.py -h).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "plot",
        help="redraw training curves (log.png) from log.csv files",
        description="Redraw training curves (log.png) from the log.csv files of runs or cells.",
    )
    p.add_argument("paths", nargs="+", help="run folders, cell folders or log.csv files")
    p.add_argument(
        "--out",
        default=None,
        help="with several logs, the overlay figure to write "
        "[Default: curves.png in the current folder]",
    )

    p = sub.add_parser(
        "compare",
        help="AUC per cell of runs vs. the published baselines",
        description="Draw the test AUC per cell of one or more runs next to "
        "DeepChrome and AttentiveChrome (the paper's AUC figure) "
        "and write a summary table (.csv and .md beside the PNG).",
    )
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

    p = sub.add_parser(
        "data",
        help="the marks of a high and a low expression gene",
        description="Draw the five marks' read counts along the 100 bins "
        "(+/-5 kb around the TSS) of a highly and a lowly "
        "expressed gene of one cell.",
    )
    p.add_argument(
        "--data_dir",
        default=display_path(SAMPLE_DATA),
        help="<data_dir>/<cell>/classification/{train,valid,test}.csv [Default: %(default)s]",
    )
    p.add_argument("--cell", default=None, help="cell to draw [Default: the first cell]")
    p.add_argument(
        "--split",
        default="test",
        choices=("train", "valid", "test"),
        help="split to draw from [Default: %(default)s]",
    )
    p.add_argument(
        "--genes",
        default=None,
        help="HIGH,LOW gene ids to draw [Default: the gene of each class closest "
        "to its class's mean counts]",
    )
    p.add_argument("--out", default="data.png", help="figure [Default: %(default)s]")
    p.add_argument("--title", default=None, help="figure title [Default: names cell and data]")

    p = sub.add_parser(
        "model",
        help="the network with each layer's output shape",
        description="Draw the network with each layer's output shape.",
    )
    p.add_argument(
        "--variant",
        default="full",
        choices=data.VARIANTS,
        help="network variant [Default: %(default)s]",
    )
    p.add_argument(
        "--style",
        default="auto",
        choices=("auto", "keras", "matplotlib"),
        help="keras.utils.plot_model (needs pydot and Graphviz), a matplotlib "
        "drawing, or auto: keras when those are installed [Default: %(default)s]",
    )
    p.add_argument("--out", default="model.png", help="figure [Default: %(default)s]")

    p = sub.add_parser(
        "images",
        help="redraw the README's images in one go",
        description="Redraw images/data.png (sample data), images/model.png "
        "and images/auc.png (+ auc.csv, auc.md) from the example "
        "runs in images/example_runs.",
    )
    p.add_argument(
        "--outdir",
        default=display_path(IMAGES),
        help="where the images go; example runs in OUTDIR/example_runs [Default: %(default)s]",
    )
    p.add_argument(
        "--runs",
        nargs="+",
        default=None,
        help="runs to compare instead of the example runs [Default: OUTDIR/example_runs/*]",
    )
    p.add_argument(
        "--data_dir",
        default=display_path(SAMPLE_DATA),
        help="data for data.png [Default: %(default)s]",
    )
    p.add_argument("--cell", default=None, help="cell for data.png [Default: the first cell]")
    p.add_argument(
        "--style",
        default="auto",
        choices=("auto", "keras", "matplotlib"),
        help="model.png drawing, as for 'model' [Default: %(default)s]",
    )
    p.add_argument(
        "--rerun",
        action="store_true",
        help="first regenerate the example: generated data named after the "
        "published cells, then a per-cell and a mixed run of main.py (about "
        "5 to 20 minutes on 2 CPU cores) [Default: off]",
    )
    p.add_argument(
        "--example_dir",
        default="logs/example",
        help="with --rerun, where the generated data, models and logs go [Default: %(default)s]",
    )
    p.add_argument(
        "--example_cells",
        type=int,
        default=56,
        help="with --rerun, how many cells [Default: %(default)s]",
    )
    p.add_argument(
        "--example_genes",
        type=int,
        default=200,
        help="with --rerun, genes per split [Default: %(default)s]",
    )
    p.add_argument(
        "--example_epochs",
        type=int,
        default=4,
        help="with --rerun, epochs of the per-cell run [Default: %(default)s]",
    )
    p.add_argument(
        "--example_mix_epochs",
        type=int,
        default=3,
        help="with --rerun, epochs of the mixed run [Default: %(default)s]",
    )
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
        read_log(folder)  # every log checked before any figure is redrawn
        files.writable(folder)
    if len(folders) > 1 or args.out:
        files.writable(Path(args.out or "curves.png").absolute().parent)
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

    def note(text):
        print(text, file=sys.stderr)

    try:
        if args.command == "plot":
            return _plot_command(args)
        if args.command == "compare":
            baselines = None if args.baselines.lower() == "none" else args.baselines
            png, summary = compare(
                args.runs, args.out, args.labels, baselines, args.title, notes=note
            )
            print(summary_markdown(summary), end="")
            print(f"wrote {png}, {png.with_suffix('.csv')}, {png.with_suffix('.md')}")
        elif args.command == "data":
            genes = None
            if args.genes:
                genes = [g.strip() for g in args.genes.split(",")]
                if len(genes) != 2:
                    raise InputError(f"--genes {args.genes}: expected two ids, HIGH,LOW")
            png, high, low = plot_data(
                args.data_dir, args.out, args.cell, args.split, genes, args.title
            )
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
                for flag in (
                    "example_cells",
                    "example_genes",
                    "example_epochs",
                    "example_mix_epochs",
                ):
                    if getattr(args, flag) < 1:
                        raise InputError(f"--{flag} must be at least 1")
                rerun_example(
                    outdir / "example_runs",
                    Path(args.example_dir),
                    args.example_cells,
                    args.example_genes,
                    args.example_epochs,
                    args.example_mix_epochs,
                )
            written = make_images(
                outdir, args.runs, args.data_dir, args.cell, args.style, notes=note
            )
            print(f"wrote {', '.join(map(str, written))}")
    except (InputError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a read-only folder, a full disk: nothing half written is left
        print(f"error: {files.write_problem(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
