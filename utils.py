"""The figures of one run: training curves, ROC curves, the model and data pictures, and their
command.

It draws only: the results-table format is results.py's, file writing is files.py's, and nothing
here trains a model. The comparison with the published baselines (the paper's figure) is
compare.py's, reached here as ``compare``; attribution maps are explain.py's; the README's
images are remade by images/make_images.py.

Command line::

    python utils.py plot logs/RUN            # redraw log.png of the run (and of each cell in it)
    python utils.py plot logs/RUN1 logs/RUN2 --out curves.png   # overlay the curves of runs
    python utils.py logs/RUN                 # the same as "plot" (the original usage)
    python utils.py compare logs/RUN1 logs/RUN2 --out auc.png   # AUC per cell vs. DeepChrome
    python utils.py data --data_dir sample_data --cell S001     # the marks of two genes
    python utils.py model --out model.png                       # the network, layer by layer

Only ``model`` imports TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import compare  # noqa: E402
import data  # noqa: E402
import files  # noqa: E402
from results import (  # noqa: E402
    GAPS,
    ROOT,
    InputError,
    display_path,
    exit_status,
    field_count_problem,
    read_csv_rows,
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


SAMPLE_DATA = ROOT / "sample_data"


def save_png(fig, path: str | os.PathLike) -> Path:
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
    return save_png(fig, out)


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
    return save_png(fig, out), str(ids[high]), str(ids[low])


# ---------------------------------------------------------------------------------------------
# Command line

COMMANDS = ("plot", "compare", "data", "model")


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

    compare.add_arguments(
        sub.add_parser(
            "compare",
            help="AUC per cell of runs vs. the published baselines (as python compare.py)",
            description=compare.DESCRIPTION,
        )
    )

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

    def work():
        if args.command == "plot":
            _plot_command(args)
        elif args.command == "compare":
            compare.command(args, notes=note)
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

    return exit_status(work)


if __name__ == "__main__":
    sys.exit(main())
