"""Benchmarks on full-size synthetic data, written to bench/RESULTS.md.

    python bench/bench.py            # full mode
    python bench/bench.py --quick    # fewer repeats

Loading: one full-size cell (6,601 / 6,601 / 6,600 genes) through data.load_data, next to a
bare CSV parse of the same three files with pyarrow (the fastest parser installed) and next
to a naive per-gene, float64 implementation of the same preprocessing; plus the cached reload.
Targets: load_data <= 1.5x the bare parse; cached reload <= 0.1x the bare parse.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402


def timed(fn, repeats: int, setup=None) -> float:
    """Median wall seconds of fn() over repeats (setup() runs untimed before each)."""
    times = []
    for _ in range(repeats):
        if setup:
            setup()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def naive_load(cls: Path):
    """The straightforward way: csv module, per-gene Python loop, float64."""
    import csv

    out = []
    for split in data.SPLITS:
        rows = list(csv.reader(open(cls / f"{split}.csv")))
        xs, ys = [], []
        for g in range(len(rows) // 100):
            block = np.array([[float(v) for v in r[2:7]] for r in rows[g * 100:(g + 1) * 100]])
            norm = np.zeros_like(block)
            for b in range(100):
                m = block[b].max()
                if m > 0:
                    norm[b] = block[b] / m
            sums = norm.sum(axis=0)
            extra = sums / sums.max() if sums.max() > 0 else sums
            xs.append(np.concatenate([norm.ravel(), extra]))
            ys.append(int(rows[g * 100][7]))
        out.append((np.array(xs)[:, :, None], np.eye(2)[ys]))
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import pyarrow

    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__}, pyarrow {pyarrow.__version__}")


def bench_loading(tmp: Path, repeats: int) -> list[str]:
    import pyarrow.csv as pacsv

    data.synthesize(tmp, n_cells=1, n_genes=6601, seed=0)
    cell = tmp / "S001"
    cls = cell / "classification"
    for split, n in (("test", 6600),):  # the real test split has one gene fewer
        lines = (cls / f"{split}.csv").read_bytes().splitlines(keepends=True)
        (cls / f"{split}.csv").write_bytes(b"".join(lines[: n * 100]))
    clear = lambda: shutil.rmtree(cls / ".cache", ignore_errors=True)  # noqa: E731

    def bare():
        for split in data.SPLITS:
            pacsv.read_csv(cls / f"{split}.csv",
                           read_options=pacsv.ReadOptions(autogenerate_column_names=True))

    t_bare = timed(bare, repeats)
    t_load = timed(lambda: data.load_data(cell, cache=False), repeats)
    t_first = timed(lambda: data.load_data(cell), repeats, setup=clear)
    data.load_data(cell)
    t_cached = timed(lambda: data.load_data(cell), repeats)
    t_naive = timed(lambda: naive_load(cls), 1)
    # the naive baseline computes the same numbers
    ours = data.load_data(cell, cache=False)
    for (x, y), (xn, yn) in zip(ours, naive_load(cls)):
        np.testing.assert_allclose(x, xn, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(y, yn)
    return [
        "| what | seconds | x bare parse | target |",
        "|---|---|---|---|",
        f"| bare pyarrow parse of the 3 CSVs | {t_bare:.3f} | 1.00 | |",
        f"| `load_data`, parse + check + preprocess (no cache) | {t_load:.3f} | "
        f"{t_load / t_bare:.2f} | <= 1.5 |",
        f"| `load_data`, first load writing the cache | {t_first:.3f} | {t_first / t_bare:.2f} | |",
        f"| `load_data`, cached reload | {t_cached:.4f} | {t_cached / t_bare:.3f} | <= 0.1 |",
        f"| naive per-gene loop, float64 | {t_naive:.2f} | {t_naive / t_bare:.1f} | |",
        "",
        f"Naive baseline / `load_data`: {t_naive / t_load:.0f}x. Median of {repeats} runs "
        f"(naive: 1 run).",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"),
                        help="Markdown file to write [Default: bench/RESULTS.md]")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 7
    lines = ["# Benchmark results", "", f"Machine: {machine()}.", "",
             f"Command: `python bench/bench.py{' --quick' if args.quick else ''}`", "",
             "## Loading one full-size cell (6,601 / 6,601 / 6,600 genes)", ""]
    with tempfile.TemporaryDirectory() as tmp:
        lines += bench_loading(Path(tmp), repeats)
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
