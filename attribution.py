"""Attributions of a trained model's prediction to the 505 inputs of each gene, and their
tables: per group of genes (mean and standard error per mark and bin) and per mark.

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
  quadrature error, which explain.py reports per cell.
- saliency: gradient x input, x_i * dF/dx_i at the gene itself; one gradient per gene, so about
  ``steps`` times faster, but it sees only the local slope of a saturating tanh network.

The command that runs them over a run's cells, and their figures, are explain.py's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import data

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
