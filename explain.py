"""What a trained model looks at: attributions of its prediction to the 505 inputs of each test
gene, averaged over groups of genes, written per cell and compared across the cells of a run.

Command line::

    python explain.py logs/RUN                         # every tested cell of a run
    python explain.py logs/RUN --cells E003,E005 --genes 000003,000017
    python explain.py logs/RUN --method saliency       # gradient x input: fast, rougher

Output, per cell (default in ``<run>/<cell>/explain/``, or ``--out DIR/<cell>/``):
``explain.csv`` (the mean attribution and its standard error per group, mark and bin, and per
additional feature), ``explain.png`` (the marks x position heatmaps, one panel per group) and,
with --genes, ``gene-<id>.png`` (one gene's marks with its attributions underneath); for the run,
``explain-marks.csv`` and ``explain-marks.png`` beside the cells: how much each mark matters
in every cell.

Attribution is not causation: a map says what this model's output is sensitive to on these
genes, not what regulates expression. No module imports this one; it reads run folders
(experiments.py's layout), data (data.py) and models (Convnet.py, loaded in Keras safe mode),
computes the attributions and their tables with attribution.py, and draws them here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import attribution  # noqa: E402
import compare  # noqa: E402
import data  # noqa: E402
import distribute  # noqa: E402
import engine  # noqa: E402
import experiments  # noqa: E402
import files  # noqa: E402
import results  # noqa: E402
import utils  # noqa: E402


class ExplainError(Exception):
    """A run, cell, gene or model that cannot be explained as asked; said in one line."""


# ---------------------------------------------------------------------------------------------
# Run folders


@dataclass
class Target:
    """One cell to explain: its tested model and its test split (checked, before TensorFlow)."""

    cell: str
    model: Path
    test_csv: Path
    split: data.Split
    out: Path
    genes: list[int]  # rows of split of the --genes, in the order asked
    counts: np.ndarray | None = None  # their read counts, read ahead for a Dask worker


def read_settings(run: Path) -> dict:
    """The run's args.json, checked to be one this project writes."""
    if not run.is_dir():
        raise ExplainError(f"{run}: no such run folder")
    path = run / "args.json"
    if not path.is_file():
        raise ExplainError(
            f"{run}: not a run folder (no args.json; give the folder main.py saved to)"
        )
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ExplainError(f"{path}: cannot read the run's settings ({e})") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("cells"), list):
        raise ExplainError(f"{path}: not a run's settings (no list of cells)")
    return settings


def tested_cells(run: Path, settings: dict) -> tuple[list[str], Path]:
    """The run's cells with a tested model, in args.json's order, read from its results table
    (a cell is tested once its row is written); and that table."""
    kind = argparse.Namespace(
        finetune=bool(settings.get("finetune")),
        mix=settings.get("mix"),
        weights=settings.get("weights"),
    )
    table = run / results.table_name(kind)
    if not table.is_file():
        raise ExplainError(f"{table}: not found, so no cell of this run was tested yet")
    try:
        rows = results.read_table(table, results.table_columns(kind))
    except data.DataError as e:
        raise ExplainError(str(e).replace("; fix or remove", "; fix")) from None
    return [c for c in settings["cells"] if c in rows], table


def model_paths(run: Path, settings: dict, cells: list[str]) -> dict[str, Path]:
    """Each cell's tested model: the cell's own best_model.keras (per-cell and fine-tuned runs),
    the run's one best_model.keras (mixed runs), or what --weights named (saved-model runs)."""
    if settings.get("weights") and not settings.get("finetune"):
        ns = argparse.Namespace(weights=settings["weights"], finetune=False)
        try:
            return dict(zip(cells, experiments.weights_paths(ns, cells)))
        except experiments.ExperimentError as e:
            raise ExplainError(f"the run tested saved models: {e}") from None
    if settings.get("mix") and not settings.get("finetune"):
        return {c: run / "best_model.keras" for c in cells}
    return {c: run / c / "best_model.keras" for c in cells}


def plan(
    run: Path,
    cells: str | None = None,
    genes: str | None = None,
    out: Path | None = None,
    data_dir: Path | None = None,
) -> tuple[dict, Path, list[Target]]:
    """Check everything a run's explanation needs before TensorFlow starts: the run folder,
    the cells, their models' files, their test splits and the --genes. Returns (the run's
    settings, its results table, one Target per cell). Raises ExplainError or data.DataError in
    one line."""
    settings = read_settings(run)
    done, table = tested_cells(run, settings)
    if cells is None:
        chosen = done
        if not chosen:
            raise ExplainError(f"{table}: no tested cell to explain")
    else:
        chosen = data.names(cells)
        if not chosen:
            raise ExplainError("--cells: no cell named")
        unknown = [c for c in chosen if c not in settings["cells"]]
        if unknown:
            raise ExplainError(
                f"{run}: cell(s) not in this run: {', '.join(unknown)} "
                f"(its cells: {', '.join(settings['cells'])})"
            )
        untested = [c for c in chosen if c not in done]
        if untested:
            raise ExplainError(f"{table}: cell(s) {', '.join(untested)} not tested yet")
    paths = model_paths(run, settings, chosen)
    for cell, path in paths.items():
        if not path.is_file():
            raise ExplainError(f"{path}: model not found (the tested model of cell {cell})")
    if data_dir is None:
        if not settings.get("data_dir"):
            raise ExplainError(f"{run / 'args.json'}: no data_dir recorded; give --data_dir")
        data_dir = Path(settings["data_dir"])
    if not data_dir.is_dir():
        raise ExplainError(
            f"{data_dir}: the run's data folder is not found from here; give --data_dir"
        )
    features = settings.get("variant") != "no_additional_features"
    wanted = [g.strip() for g in genes.split(",") if g.strip()] if genes else []
    targets = []
    for cell in chosen:
        test_csv = data.classification_dir(data_dir / cell) / "test.csv"
        split = data.load_split(test_csv, additional_features=features)
        where = {g: i for i, g in enumerate(split.ids)}
        missing = [g for g in wanted if g not in where]
        if missing:
            raise ExplainError(f"{test_csv}: no gene {', '.join(missing)} in the test split")
        folder = (out / cell) if out else run / cell / "explain"
        targets.append(
            Target(cell, paths[cell], test_csv, split, folder, [where[g] for g in wanted])
        )
    return settings, table, targets


# ---------------------------------------------------------------------------------------------
# The figures

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
    return utils.save_png(fig, out)


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
        top.plot(
            kb, counts[:, m], drawstyle="steps-mid", color=utils.MARK_COLORS[m], lw=1.3, label=mark
        )
    top.set_ylabel("Reads per\n100-bp bin")
    top.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    top.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, 1.22), frameon=False)
    limit = _symmetric_limit([attribution]) * 1.1
    for m, mark in enumerate(data.MARKS):
        ax = axes[1 + m]
        ax.fill_between(
            kb, attribution[:, m], step="mid", color=utils.MARK_COLORS[m], alpha=0.75, lw=0
        )
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
    return utils.save_png(fig, out)


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
    return utils.save_png(fig, out)


# ---------------------------------------------------------------------------------------------
# Command line


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line and exit status 2, as main.py: the usage is what -h is for.
        self.exit(2, f"error: {message} (see python explain.py -h)\n")


def parse_args(argv) -> argparse.Namespace:
    parser = Parser(
        prog="explain.py",
        description="Attribution maps of a run's tested models: which histone marks, and where "
        "around the TSS, drive the predicted log-odds of high expression, per cell (groups of "
        "test genes) and across the run's cells.",
        epilog="Writes <run>/<cell>/explain/{explain.csv,explain.png,gene-<id>.png} and "
        "<run>/explain-marks.{csv,png}. Attribution is not causation: see "
        "docs/interpretation.md.",
    )
    parser.add_argument("run", help="a run folder of main.py: per-cell, --mix or --finetune")
    parser.add_argument(
        "--cells", default=None, help="comma-separated cells [Default: every tested cell]"
    )
    parser.add_argument(
        "--method",
        default="integrated_gradients",
        choices=attribution.METHODS,
        help="integrated_gradients (all-zero baseline: a gene without reads) or saliency "
        "(gradient x input, about --steps times faster) [Default: %(default)s]",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=attribution.DEFAULT_STEPS,
        help="integrated gradients: points on the path from the baseline (Gauss-Legendre "
        f"nodes), 1 to {attribution.MAX_STEPS} [Default: %(default)s]",
    )
    parser.add_argument(
        "--genes",
        default=None,
        help="comma-separated gene ids of the test split: one figure per gene and cell, its "
        "marks with their attributions [Default: none]",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="write into OUT/<cell>/ and OUT/explain-marks.* [Default: <run>/<cell>/explain/ "
        "and <run>/explain-marks.*]",
    )
    parser.add_argument(
        "--data_dir",
        default=None,
        help="where the run's cells are [Default: the data_dir in the run's args.json]",
    )
    engine.add_arguments(parser, ("each cell's attributions", ""))
    args = parser.parse_args(argv)
    if not 1 <= args.steps <= attribution.MAX_STEPS:
        parser.error(f"--steps must be 1 to {attribution.MAX_STEPS}, got {args.steps}")
    problem = engine.check_settings(args)
    if problem is None and args.engine == "dask" and engine.scheduler_address(args):
        problem = engine.check_reachable(engine.scheduler_address(args))
    if problem:
        parser.error(problem)
    return args


def explain_cell(target: Target, args, settings: dict) -> pd.DataFrame:
    """Attributions of one cell's test split: writes its explain.csv, explain.png and gene
    figures, prints one line; returns its explain-marks.csv rows."""
    import Convnet

    model = Convnet.load_checked(target.model)
    split = target.split
    if model.input_shape[1] != split.x.shape[1]:
        raise ExplainError(
            f"{target.model}: the model reads {model.input_shape[1]} values per gene, the test "
            f"split gives {split.x.shape[1]} (variant {settings.get('variant')})"
        )
    start = time.perf_counter()
    attr, log_odds, zero = attribution.attributions(model, split.x, args.method, args.steps)
    seconds = time.perf_counter() - start
    predicted = (log_odds > 0).astype(np.int8)  # the argmax of the softmax
    table = attribution.summary_table(target.cell, args.method, attr, split.labels, predicted)
    target.out.mkdir(parents=True, exist_ok=True)
    files.write_csv(target.out / "explain.csv", table)
    label = attribution.METHOD_LABELS[args.method]
    if args.method == "integrated_gradients":
        label += f", {args.steps} steps from a gene without reads"
    plot_attribution_map(
        table,
        target.out / "explain.png",
        title=f"{target.cell}: {label}",
        labels=attribution.GROUP_LABELS,
    )
    bins, extra = attribution.split_inputs(attr)
    if target.genes:
        counts = target.counts
        if counts is None:
            counts = _counts(target.test_csv, target.genes)
        for row, gene_counts in zip(target.genes, counts):
            plot_gene_attribution(
                gene_counts,
                bins[row],
                None if extra is None else extra[row],
                target.out / f"gene-{split.ids[row]}.png",
                title=f"{target.cell}, gene {split.ids[row]}: label {split.labels[row]}, "
                f"p(high) {1 / (1 + np.exp(-log_odds[row])):.3f}; {label}",
            )
    gap = ""
    if args.method == "integrated_gradients":
        error = np.abs(attr.sum(axis=1, dtype=np.float64) - (log_odds - zero))
        gap = (
            f"; completeness: attributions sum to F(x) - F(0) within {error.max():.3g} (max; "
            f"mean |F(x) - F(0)| {np.abs(log_odds - zero).mean():.3g}, log-odds)"
        )
    print(
        f"{target.cell}: {len(split.ids)} test genes, {attribution.METHOD_LABELS[args.method]} in "
        f"{seconds:.1f} s{gap}; wrote {target.out}",
        flush=True,
    )
    return attribution.mark_totals(target.cell, attr)


def explain_spread(args, settings: dict, targets: list[Target], where: Path) -> list:
    """--engine dask: each cell's explain_cell a Dask task (engine.connect: a local cluster or
    the one at --scheduler), its test split, gene counts and, where the workers do not share
    the run folder, its model sent with it; the files land where the sequential run writes
    them, a line is printed per finished cell, and the mark totals come back in the cells'
    order. A cell whose worker died engine.MAX_TRIES times fails the run, in one line."""
    from distributed import as_completed

    threads = args.threads_per_worker or engine.default_threads()
    tasks = where / engine.TASKS
    shutil.rmtree(tasks, ignore_errors=True)  # what an interrupted run's tasks left
    tasks.mkdir(parents=True)
    totals, failed = {}, []
    try:
        with engine.connect(args) as client:
            shared, _ = engine.check_cluster(client, tasks, None, [])
            futures = {}
            for t in targets:
                key = f"explain-{t.cell}-{secrets.token_hex(4)}"
                if t.genes:
                    t = dataclasses.replace(t, counts=_counts(t.test_csv, t.genes))
                blob = None if shared else t.model.read_bytes()
                task = (t, blob, str(tasks / key) if shared else None, args, settings, threads)
                futures[client.submit(explain_task, *task, key=key, pure=False)] = t
            for future in as_completed(futures):
                t = futures[future]
                try:
                    rows, line, payload = future.result()
                except Exception as e:
                    if not engine.worker_died(e):
                        raise
                    failed.append(t.cell)
                    continue
                engine.place(where, t.cell, future.key, payload, shared, target=t.out)
                totals[t.cell] = rows
                print(f"{line} ({len(totals)} of {len(targets)} done)", flush=True)
    finally:
        shutil.rmtree(tasks, ignore_errors=True)
    if failed:
        raise ExplainError(
            f"cell(s) {', '.join(failed)}: their workers died {engine.MAX_TRIES} times; the "
            f"other cells' maps are written, but not {where / 'explain-marks.csv'}"
        )
    return [totals[t.cell] for t in targets]


def explain_task(target: Target, blob, where, args, settings: dict, threads: int):
    """One cell's explain_cell in a Dask worker, into `where`/<cell> or a temporary folder whose
    files go back as bytes; returns (its mark totals, its console line, the bytes or None)."""
    engine.start_tensorflow(threads, deterministic=False)
    own = None if where else Path(tempfile.mkdtemp(prefix="explain-"))
    folder = Path(where or own) / target.cell
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    model = target.model
    if blob is not None:  # the run folder is not shared: a copy here
        model = folder.parent / "model.keras"
        model.write_bytes(blob)
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            rows = explain_cell(
                dataclasses.replace(target, model=model, out=folder), args, settings
            )
        payload = None if where else engine.pack(folder)
    finally:
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
    # The line names where the driver puts the files, not this worker's folder.
    return rows, said.getvalue().strip().replace(str(folder), str(target.out)), payload


def _counts(test_csv: Path, rows: list[int]) -> np.ndarray:
    """The raw read counts (len(rows), 100, 5) of these genes of a test split, to draw."""
    planes, _, _ = data._parse_split(test_csv)
    return planes[:, rows, :].transpose(1, 2, 0)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    run = Path(args.run)
    try:
        settings, table, targets = plan(
            run,
            args.cells,
            args.genes,
            Path(args.out) if args.out else None,
            Path(args.data_dir) if args.data_dir else None,
        )
        where = Path(args.out) if args.out else run
        for folder in [*(t.out for t in targets), where]:
            files.writable(folder)  # before the maps are computed, not after
        # What a killed earlier explain.py left half written: its hidden temporary files.
        for t in targets:
            files.remove_leftovers(t.out, ".*.tmp")
        files.remove_leftovers(where, ".explain-marks.*.tmp")
    except (ExplainError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {files.write_problem(e)}", file=sys.stderr)
        return 2
    distribute.import_tensorflow_quietly()

    try:
        if args.engine == "dask":
            totals = explain_spread(args, settings, targets, where)
        else:
            totals = [explain_cell(t, args, settings) for t in targets]
        marks = pd.concat(totals, ignore_index=True)
        files.write_csv(where / "explain-marks.csv", marks)
        png = plot_mark_summary(
            marks,
            where / "explain-marks.png",
            title=f"{compare.run_label(table)} run {run.resolve().name}: "
            f"{attribution.METHOD_LABELS[args.method]}",
        )
        print(f"wrote {where / 'explain-marks.csv'} and {png}")
    except (ExplainError, experiments.ExperimentError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk: each file is whole or not there
        print(f"error: {files.write_problem(e)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
