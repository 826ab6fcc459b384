"""Speed of the attributions (attribution.py, run by explain.py) on one full-size test split,
written into bench/RESULTS.md.

    python bench/explain_speed.py            # 6,600 test genes: about 2 to 4 minutes on 2 cores
    python bench/explain_speed.py --tiny     # 60 genes: seconds, for the tests only

One cell is generated (synth.synthesize, seed 0, 6,601 genes per split, the test split cut to
6,600 as in the real data) and its test split loaded; the network is a fresh, untrained
Conv1DNet (seed 0): the time of a gradient does not depend on the weights' values, so no
training is needed to time it. Timed, after a warm-up on a few genes (tracing): the default
attributions (integrated gradients, attribution.DEFAULT_STEPS steps, attribution.BATCH_ROWS
rows per batch) of the whole test split, and gradient x input. Target: integrated gradients on 6,600
genes in under 120 s.

The report is a Markdown block between ``<!-- explain_speed.py: LABEL begin -->`` and
``<!-- explain_speed.py: LABEL end -->`` after bench.py's NOTES_MARK (so bench.py, which
rewrites everything above the mark, keeps it), as bench/stalls.py writes its blocks: a re-run
with the same label replaces its own block and touches nothing else.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import attribution
import bench
import data

TARGET_S = 120.0
FULL_TEST_GENES = bench.FULL_GENES[2]


def timed(model, x, method: str, steps: int) -> tuple[float, float]:
    """Seconds for the attributions of x, and the largest completeness error (NaN for saliency)."""
    start = time.perf_counter()
    attr, log_odds, zero = attribution.attributions(model, x, method, steps)
    seconds = time.perf_counter() - start
    if method != "integrated_gradients":
        return seconds, float("nan")
    return seconds, float(abs(attr.sum(axis=1) - (log_odds - zero)).max())


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="explain_speed.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="60 test genes, for the tests [Default: off]"
    )
    parser.add_argument(
        "--genes",
        type=int,
        default=None,
        help=f"test genes [Default: {FULL_TEST_GENES}, or 60 with --tiny]",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=attribution.DEFAULT_STEPS,
        help="integrated gradients steps [Default: %(default)s, explain.py's default]",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "bench" / "RESULTS.md"),
        help="the Markdown file to write into [Default: bench/RESULTS.md]",
    )
    parser.add_argument("--label", default=None, help="block label [Default: the mode]")
    parser.add_argument(
        "--tmp", default=None, help="where the generated cell goes [Default: TMPDIR]"
    )
    args = parser.parse_args(argv)
    genes = args.genes or (60 if args.tiny else FULL_TEST_GENES)
    label = args.label or (
        "tiny" if args.tiny else "explain speed" if genes == FULL_TEST_GENES else f"{genes} genes"
    )
    out = Path(args.out)

    tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="explain-speed-"))
    try:
        cell = bench.make_cell(tmp, "S001", (genes + 1, genes + 1, genes), seed=0)
        split = data.load_split(data.classification_dir(cell) / "test.csv")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import keras

    import Convnet

    keras.utils.set_random_seed(0)
    model = Convnet.Conv1DNet()
    attribution.attributions(model, split.x[:8], steps=args.steps)  # tracing, outside the clock
    attribution.attributions(model, split.x[:8], method="saliency")
    load = bench.loadavg()
    ig_s, ig_error = timed(model, split.x, "integrated_gradients", args.steps)
    sal_s, _ = timed(model, split.x, "saliency", args.steps)
    load_end = bench.loadavg()
    n = len(split.ids)
    rows = [
        (f"integrated gradients, {args.steps} steps", ig_s, n * (args.steps + 1)),
        ("gradient x input (saliency)", sal_s, n),
    ]
    met = "yes" if ig_s <= TARGET_S * n / FULL_TEST_GENES else "NO"
    lines = [
        f"## Attribution speed ({label})",
        "",
        f"Machine: {bench.machine()}.",
        "",
        f"Command: `{shlex.join(['python', 'bench/explain_speed.py', *argv])}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Load average (1/5/15 min) before the timed runs "
        f"{load}, after {load_end}.",
        "",
        "| method | genes | seconds | genes/s | gradient evaluations/s |",
        "|---|---|---|---|---|",
        *(
            f"| {what} | {n:,} | {s:.1f} | {n / s:,.0f} | {evals / s:,.0f} |"
            for what, s, evals in rows
        ),
        "",
        f"Target: integrated gradients at the default settings on {FULL_TEST_GENES:,} genes in "
        f"<= {TARGET_S:.0f} s (scaled to {n:,} genes: {TARGET_S * n / FULL_TEST_GENES:.1f} s): "
        f"{met}. Completeness of integrated gradients on this untrained network: largest "
        f"|sum of attributions - (F(x) - F(0))| {ig_error:.2g} (log-odds). "
        f"{attribution.BATCH_ROWS} rows (genes x steps) per gradient batch; one more forward pass "
        "per gene gives F(x). A fresh, untrained Conv1DNet: a gradient's time does not depend "
        "on the weights.",
    ]
    bench.write_block(out, "explain_speed.py", label, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
