"""Plots and small file helpers: training curves from log.csv, ROC curves, the model picture.

Command line::

    python utils.py logs/RUN                 # redraw log.png of the run (and of each cell in it)
    python utils.py logs/RUN1 logs/RUN2 --out curves.png   # overlay the curves of several runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# (log.csv column, label) per panel; validation columns are the same names with "val_".
PANELS = (("loss", "Loss (binary cross-entropy)"), ("accuracy", "Accuracy"), ("auc", "ROC AUC"))


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
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


def plot_model(model, out: str | os.PathLike) -> Path | None:
    """The architecture via keras.utils.plot_model; None, with a one-line notice, without
    pydot/graphviz."""
    import keras

    try:
        keras.utils.plot_model(model, to_file=str(out), show_shapes=True, show_layer_names=True)
    except (ImportError, OSError) as e:
        print(f"note: model.png not drawn ({str(e).splitlines()[0][:100]})")
        return None
    return Path(out)


def find_logs(path: Path) -> list[Path]:
    """Folders holding a log.csv: the path itself and/or its immediate subfolders (cells)."""
    found = [path] if (path / "log.csv").is_file() else []
    if path.is_dir():
        found += sorted(p for p in path.iterdir() if (p / "log.csv").is_file())
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="utils.py",
        description="Redraw training curves (log.png) from the log.csv files of runs or cells.")
    parser.add_argument("paths", nargs="+", help="run folders, cell folders or log.csv files")
    parser.add_argument("--out", default=None,
                        help="with several logs, the overlay figure to write "
                             "[Default: curves.png in the current folder]")
    args = parser.parse_args(argv)
    folders = []
    for p in map(Path, args.paths):
        if p.name == "log.csv":
            p = p.parent
        logs = find_logs(p)
        if not logs:
            print(f"error: {p}: no log.csv here or in its subfolders", file=sys.stderr)
            return 2
        folders += logs
    for folder in folders:
        print(f"redrew {plot_log(folder)}")
    if len(folders) > 1 or args.out:
        print(f"overlay {plot_logs(folders, args.out or 'curves.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
