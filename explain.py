"""What a trained model looks at: attributions of its prediction to the 505 inputs of each test
gene, averaged over groups of genes, written per cell and compared across the cells of a run.

Command line::

    python explain.py logs/RUN                         # every tested cell of a run
    python explain.py logs/RUN --cells E003,E005 --genes 000003,000017
    python explain.py logs/RUN --method saliency       # gradient x input: fast, rougher

What is attributed: the log-odds of high expression, z1 - z0, the difference of the output
layer's two logits (before its softmax), which is exactly log(p1 / p0) for the class-1
probability p1 the results report. Not p1 itself: the softmax saturates (p1 close to 0 or 1 for
a confident gene), so the gradients of p1 vanish precisely for the genes the model is surest
about and their maps fade; log-odds do not saturate, add up along the network's last layer, and
p1 = 1 / (1 + exp(-(z1 - z0))) still reads them as probabilities.

Methods (``attributions``):

- integrated_gradients (default; Sundararajan et al., 2017): attribution_i = x_i * the integral
  over alpha from 0 to 1 of dF/dx_i at alpha * x, on the straight path from the baseline,
  computed by Gauss-Legendre quadrature with ``steps`` nodes (the weighted sum of the gradients
  at those points). On a full-size trained model and 300 test genes, 16 nodes left a largest
  completeness gap of 0.049 log-odds (mean 0.004), where the midpoint rule with 16 points left
  0.56 (mean 0.10) and with 32 points 0.17: the path crosses the tanh units' steep
  transitions, which a uniform grid samples poorly. Baseline: the all-zero input, which
  after data.py's preprocessing is a gene without a single read (every bin divided by its
  largest mark leaves an all-zero bin 0, and the five additional features of a gene without
  reads are 0 too). Completeness: a gene's attributions add up to F(x) - F(0), up to the
  quadrature error, which this command reports per cell.
- saliency: gradient x input, x_i * dF/dx_i at the gene itself; one gradient per gene, so about
  ``steps`` times faster, but it sees only the local slope of a saturating tanh network.

Output, per cell (default in ``<run>/<cell>/explain/``, or ``--out DIR/<cell>/``):
``explain.csv`` (the mean attribution and its standard error per group, mark and bin, and per
additional feature), ``explain.png`` (the marks x position heatmaps, one panel per group) and,
with --genes, ``gene-<id>.png`` (one gene's marks with its attributions underneath); for the run,
``explain-marks.csv`` and ``explain-marks.png`` beside the cells: how much each mark matters
in every cell.

Attribution is not causation: a map says what this model's output is sensitive to on these
genes, not what regulates expression. No module imports this one; it reads run folders
(experiments.py's layout), data (data.py), models (Convnet.py, loaded in Keras safe mode) and
draws with utils.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import data
import distribute
import experiments
import files
import results

METHODS = ("integrated_gradients", "saliency")
METHOD_LABELS = {"integrated_gradients": "integrated gradients", "saliency": "gradient x input"}
DEFAULT_STEPS = 16
# Rows (genes x path points) per gradient batch: the conv layers' activations of 1,024 rows
# take about 1 GB with their gradients; larger batches are no faster on a CPU.
BATCH_ROWS = 1024
# The most path points: one gene's path then fills one gradient batch (about 1 GB); past it the
# batch, and Gauss-Legendre's eigenvalue problem (steps x steps), would grow without bound.
MAX_STEPS = BATCH_ROWS
# Groups of test genes, in the order of the table and of the figure's panels.
GROUPS = ("high", "low", "all", "high_correct", "low_correct", "all_correct")
GROUP_LABELS = {
    "high": "high-expression genes",
    "low": "low-expression genes",
    "all": "all genes",
    "high_correct": "high-expression genes, correctly predicted",
    "low_correct": "low-expression genes, correctly predicted",
    "all_correct": "all genes, correctly predicted",
}
TABLE_COLUMNS = ["cell", "method", "group", "n_genes", "mark", "feature", "bin", "mean", "sem"]
MARKS_COLUMNS = ["cell", "mark", "importance", "share", "mean", "n_genes"]


class ExplainError(Exception):
    """A run, cell, gene or model that cannot be explained as asked; said in one line."""


# ---------------------------------------------------------------------------------------------
# Attributions (TensorFlow is imported here, not at module import)


def logit_function(model):
    """The log-odds of high expression of a Conv1DNet, z1 - z0 of its output layer's logits,
    as a TensorFlow function: float32 (n, L, 1) -> float32 (n,), dropout off.

    Built from the penultimate layer and the output layer's weights, since the network's last
    layer applies its softmax inside: z1 - z0 = h . (w1 - w0) + (b1 - b0)."""
    import keras
    import tensorflow as tf

    out = model.get_layer("output")
    hidden = keras.Model(model.inputs, out.input)
    kernel = tf.cast(out.kernel, tf.float32)
    bias = tf.cast(out.bias, tf.float32)
    w = kernel[:, 1] - kernel[:, 0]
    b = bias[1] - bias[0]

    def log_odds(x):
        h = tf.cast(hidden(x, training=False), tf.float32)
        return tf.linalg.matvec(h, w) + b

    return log_odds


def path_points(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes on (0, 1) and their weights (summing to 1): the integral over alpha
    of g(alpha) is about sum(weights * g(nodes)), exactly so for polynomials of degree up to
    2 * steps - 1."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def attributions(
    model,
    x: np.ndarray,
    method: str = "integrated_gradients",
    steps: int = DEFAULT_STEPS,
    batch_rows: int = BATCH_ROWS,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Attributions of the log-odds of high expression to every input of every gene.

    Args:
        model: a Conv1DNet (any variant).
        x: float32 (n, L, 1), preprocessed genes (L = 505, or 500 without additional features).
        method: "integrated_gradients" (all-zero baseline, ``steps`` Gauss-Legendre nodes) or
            "saliency"
            (gradient x input).
        batch_rows: genes x path points per gradient batch; the genes of a batch are
            evaluated at all their path points in one forward and backward pass.

    Returns:
        (attributions float32 (n, L), log_odds float32 (n,) at x, log-odds of the all-zero
        input (float)). For integrated gradients each row adds up to log_odds - that float,
        up to the quadrature error.
    """
    import tensorflow as tf

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    x = np.asarray(x, dtype=np.float32)
    n, length = x.shape[0], x.shape[1]
    f = logit_function(model)
    ig = method == "integrated_gradients"
    points = steps if ig else 1
    nodes, weights = path_points(steps) if ig else (np.ones(1), np.ones(1))
    alphas = tf.constant(nodes, tf.float32)
    weights = tf.constant(weights, tf.float32)
    spec = tf.TensorSpec((None, length, 1), tf.float32)

    @tf.function(input_signature=[spec], reduce_retracing=True)
    def batch(xb):
        # Every gene at every path point alpha * x (baseline 0), as one batch of rows.
        g = tf.shape(xb)[0]
        path = tf.reshape(alphas[None, :, None, None] * xb[:, None], (g * points, length, 1))
        with tf.GradientTape() as tape:
            tape.watch(path)
            z = f(path)
        # Rows are independent, so the gradient of their sum is each row's own gradient.
        grads = tf.reshape(tape.gradient(z, path), (g, points, length))
        at_x = z[points - 1 :: points] if not ig else f(xb)
        return tf.einsum("gpl,p->gl", grads, weights) * xb[:, :, 0], at_x

    genes_per_batch = max(1, batch_rows // points)
    attr = np.empty((n, length), dtype=np.float32)
    log_odds = np.empty(n, dtype=np.float32)
    for start in range(0, n, genes_per_batch):
        stop = min(n, start + genes_per_batch)
        a, z = batch(tf.constant(x[start:stop]))
        attr[start:stop], log_odds[start:stop] = a.numpy(), z.numpy()
    zero = float(f(tf.zeros((1, length, 1), tf.float32)).numpy()[0])
    return attr, log_odds, zero


# ---------------------------------------------------------------------------------------------
# Summaries (numpy only)


def split_inputs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-input values (..., L) as (..., 100 bins, 5 marks) and the additional features
    (..., 5), or None when L is 500: the inverse of data.py's bin-major flattening."""
    values = np.asarray(values)
    n_bin_values = data.N_BINS * data.N_MARKS
    bins = values[..., :n_bin_values].reshape(*values.shape[:-1], data.N_BINS, data.N_MARKS)
    extra = values[..., n_bin_values:] if values.shape[-1] > n_bin_values else None
    return bins, extra


def group_masks(labels: np.ndarray, predicted: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (n,) masks of the GROUPS: by label (1 high, 0 low, both) and each restricted to
    the genes whose predicted class (0/1) is their label."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    correct = labels == predicted
    by_label = {"high": labels == 1, "low": labels == 0, "all": np.ones(len(labels), bool)}
    masks = dict(by_label)
    masks.update({f"{k}_correct": m & correct for k, m in by_label.items()})
    return {g: masks[g] for g in GROUPS}


def mean_sem(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 0 and its standard error (sample standard deviation / sqrt(n)); NaN for
    an empty group, and a standard error of NaN for a group of one gene."""
    n = len(values)
    if n == 0:
        nan = np.full(values.shape[1:], np.nan, dtype=np.float32)
        return nan, nan.copy()
    mean = values.mean(axis=0, dtype=np.float64)
    if n < 2:
        return mean.astype(np.float32), np.full_like(mean, np.nan, dtype=np.float32)
    sem = values.std(axis=0, ddof=1, dtype=np.float64) / np.sqrt(n)
    return mean.astype(np.float32), sem.astype(np.float32)


def summary_table(
    cell: str, method: str, attr: np.ndarray, labels: np.ndarray, predicted: np.ndarray
) -> pd.DataFrame:
    """explain.csv's rows: per group (GROUPS), the mean attribution and its standard error of
    each mark in each bin (feature "bin", bin 1..100) and of each additional feature (feature
    "additional", bin empty: that mark's normalized sum over the bins).

    attr: float32 (n, L) attributions; labels, predicted: (n,) 0/1."""
    n_marks = data.N_MARKS
    n_bins_values = data.N_BINS * n_marks
    length = attr.shape[1]
    # Input i of the flattened gene: bin i // 5 + 1 and mark i % 5 (data.py's bin-major order).
    index = np.arange(length)
    is_bin = index < n_bins_values
    mark = np.array(data.MARKS)[index % n_marks]
    bin_no = pd.array(np.where(is_bin, index // n_marks + 1, 0), dtype="Int64")
    bin_no[~is_bin] = pd.NA
    parts = []
    for group, mask in group_masks(labels, predicted).items():
        mean, sem = mean_sem(attr[mask])
        parts.append(
            pd.DataFrame(
                {
                    "cell": cell,
                    "method": method,
                    "group": group,
                    "n_genes": int(mask.sum()),
                    "mark": mark,
                    "feature": np.where(is_bin, "bin", "additional"),
                    "bin": bin_no,
                    "mean": mean,
                    "sem": sem,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[TABLE_COLUMNS]


def mark_totals(cell: str, attr: np.ndarray) -> pd.DataFrame:
    """explain-marks.csv's rows for one cell: per mark, its total attribution in a gene (its 100
    bins plus its additional feature), as ``importance`` (the mean over the genes of its absolute
    value: how much the mark moves the log-odds, either way), ``share`` (importance / the sum of
    the five marks' importances) and ``mean`` (the signed mean: + towards high expression)."""
    bins, extra = split_inputs(attr)
    total = bins.sum(axis=1, dtype=np.float64)  # (n, 5)
    if extra is not None:
        total = total + extra
    importance = np.abs(total).mean(axis=0)
    share = importance / max(importance.sum(), np.finfo(np.float64).tiny)
    return pd.DataFrame(
        {
            "cell": cell,
            "mark": list(data.MARKS),
            "importance": importance,
            "share": share,
            "mean": total.mean(axis=0),
            "n_genes": len(attr),
        }
    )[MARKS_COLUMNS]


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
        chosen = list(dict.fromkeys(c.strip() for c in cells.split(",") if c.strip()))
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
        choices=METHODS,
        help="integrated_gradients (all-zero baseline: a gene without reads) or saliency "
        "(gradient x input, about --steps times faster) [Default: %(default)s]",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="integrated gradients: points on the path from the baseline (Gauss-Legendre "
        f"nodes), 1 to {MAX_STEPS} [Default: %(default)s]",
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
    args = parser.parse_args(argv)
    if not 1 <= args.steps <= MAX_STEPS:
        parser.error(f"--steps must be 1 to {MAX_STEPS}, got {args.steps}")
    return args


def explain_cell(target: Target, args, settings: dict) -> pd.DataFrame:
    """Attributions of one cell's test split: writes its explain.csv, explain.png and gene
    figures, prints one line; returns its explain-marks.csv rows."""
    import utils

    model = experiments.load_saved_model(target.model)
    split = target.split
    if model.input_shape[1] != split.x.shape[1]:
        raise ExplainError(
            f"{target.model}: the model reads {model.input_shape[1]} values per gene, the test "
            f"split gives {split.x.shape[1]} (variant {settings.get('variant')})"
        )
    start = time.perf_counter()
    attr, log_odds, zero = attributions(model, split.x, args.method, args.steps)
    seconds = time.perf_counter() - start
    predicted = (log_odds > 0).astype(np.int8)  # the argmax of the softmax
    table = summary_table(target.cell, args.method, attr, split.labels, predicted)
    target.out.mkdir(parents=True, exist_ok=True)
    files.write_csv(target.out / "explain.csv", table)
    label = METHOD_LABELS[args.method]
    if args.method == "integrated_gradients":
        label += f", {args.steps} steps from a gene without reads"
    utils.plot_attribution_map(
        table, target.out / "explain.png", title=f"{target.cell}: {label}", labels=GROUP_LABELS
    )
    bins, extra = split_inputs(attr)
    if target.genes:
        counts = _counts(target.test_csv, target.genes)
        for row, gene_counts in zip(target.genes, counts):
            utils.plot_gene_attribution(
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
        f"{target.cell}: {len(split.ids)} test genes, {METHOD_LABELS[args.method]} in "
        f"{seconds:.1f} s{gap}; wrote {target.out}",
        flush=True,
    )
    return mark_totals(target.cell, attr)


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
    import utils

    try:
        totals = [explain_cell(t, args, settings) for t in targets]
        marks = pd.concat(totals, ignore_index=True)
        files.write_csv(where / "explain-marks.csv", marks)
        png = utils.plot_mark_summary(
            marks,
            where / "explain-marks.png",
            title=f"{results.run_label(table)} run {run.resolve().name}: "
            f"{METHOD_LABELS[args.method]}",
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
