"""Cells per hour of the per-cell experiment, sequential against --engine dask, written into
bench/RESULTS.md.

    python bench/engine_speed.py           # 6 full-size cells x 5 epochs, twice: ~15 min on 2 cores
    python bench/engine_speed.py --tiny    # 2 cells of 100 genes, 1 epoch: for the tests only

Generated: CELLS cells of 6,601/6,601/6,600 genes (bench.make_cell, seeds 0..), preprocessed and
cached once before anything is timed. Timed, each in its own process, start-up included, one
after the other on an otherwise idle machine:

    python main.py --data_dir DATA --epochs 5 --seed 0 --save_dir RUN              (sequential)
    python main.py ... --engine dask --workers W --threads_per_worker T            (dask)

with the default precision (auto: bfloat16 on a CPU with AMX). Then the engine's own cost per
task, measured apart from training: starting the local cluster, a task that does nothing
(submit to result), and a task carrying one full-size cell's arrays (as when --data_dir is not
shared). The expected throughput on bigger machines is the measured throughput per worker
times the workers such a machine holds, an upper bound: it assumes the cores, memory bandwidth
and AMX units scale with the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402
import data  # noqa: E402
import engine  # noqa: E402

TARGET = 1.3  # dask's cells per hour over the sequential run's, on 2 cores


def prepare(work: Path, cells: int, genes: tuple) -> Path:
    """The benchmark's cells in work/data, generated and cached once (kept between calls)."""
    out = work / "data"
    for i in range(cells):
        name = f"B{i + 1}"
        if not (out / name / "classification" / "test.csv").exists():
            bench.make_cell(out, name, genes, seed=i)
        data.load_cell(out / name)  # parsed and cached: no run below pays for it
    return out


def timed_run(args: list[str], log: Path) -> float:
    """Wall seconds of one main.py run, its output kept in `log`."""
    start = time.perf_counter()
    with open(log, "w") as f:
        res = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), *args], stdout=f, stderr=subprocess.STDOUT
        )
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        raise SystemExit(f"main.py failed ({res.returncode}); see {log}")
    return seconds


def _nothing():
    return None


def _size(cell) -> int:
    return int(cell.train.x.nbytes + cell.valid.x.nbytes + cell.test.x.nbytes)


def overhead(data_dir: Path, workers: int, threads: int, repeats: int = 20) -> dict:
    """The engine's own costs: the local cluster's start, a no-op task, a task carrying one
    cell's arrays (submit to result, median of `repeats`)."""
    import warnings

    from distributed import Client

    start = time.perf_counter()
    cluster = engine.local_cluster(workers, threads)
    started = time.perf_counter() - start
    cell = data.load_cell(data_dir / "B1")
    with cluster, Client(cluster) as client:
        client.submit(_nothing, pure=False).result()  # the first contact
        noop, ship = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            client.submit(_nothing, pure=False).result()
            noop.append(time.perf_counter() - t)
        for _ in range(max(3, repeats // 4)):
            t = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                client.submit(_size, cell, pure=False).result()
            ship.append(time.perf_counter() - t)
    return {
        "cluster_s": started,
        "noop_ms": 1000 * statistics.median(noop),
        "ship_s": statistics.median(ship),
        "cell_mb": _size(cell) / 1e6,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=None, help="folder of the cells and runs, kept")
    p.add_argument("--cells", type=int, default=6)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads_per_worker", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--tiny", action="store_true", help="2 cells of 100 genes, 1 epoch: tests")
    args = p.parse_args(argv)
    genes = bench.FULL_GENES
    if args.tiny:
        args.cells, args.epochs, genes = 2, 1, (100, 100, 100)
    work = Path(args.work or tempfile.mkdtemp(prefix="engine-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir = prepare(work, args.cells, genes)
    n = engine.cores()
    threads = args.threads_per_worker or engine.default_threads(n)
    workers = args.workers or engine.default_workers(threads, n)
    common = ["--data_dir", str(data_dir), "--epochs", str(args.epochs), "--seed", "0"]
    runs = {}
    for name, extra in (
        ("sequential", []),
        ("dask", ["--engine", "dask", "--workers", str(workers)]),
    ):
        save = work / name
        shutil.rmtree(save, ignore_errors=True)
        extra = [*extra, "--threads_per_worker", str(threads)] if name == "dask" else extra
        runs[name] = timed_run([*common, "--save_dir", str(save), *extra], work / f"{name}.log")
        print(f"{name}: {runs[name]:.1f} s", flush=True)
    same = (work / "sequential" / "output.csv").read_text() == (
        work / "dask" / "output.csv"
    ).read_text()
    cost = overhead(data_dir, workers, threads, repeats=5 if args.tiny else 20)
    per_hour = {k: args.cells * 3600 / s for k, s in runs.items()}
    ratio = per_hour["dask"] / per_hour["sequential"]
    per_worker = per_hour["dask"] / workers
    settings = json.loads((work / "dask" / "args.json").read_text())
    lines = [
        f"## Many cells at once: --engine dask ({args.cells} cells of {genes[0]:,} genes, "
        f"{args.epochs} epochs)",
        "",
        f"Machine: {bench.machine()}; load before: {bench.loadavg()}; precision: "
        f"{settings['mixed_precision']}.",
        "",
        "| engine | wall s | cells per hour |",
        "|---|---|---|",
        f"| sequential (1 process, all {n} cores) | {runs['sequential']:.0f} | "
        f"{per_hour['sequential']:.1f} |",
        f"| dask, {workers} workers x {threads} thread(s) | {runs['dask']:.0f} | "
        f"{per_hour['dask']:.1f} |",
        "",
        f"dask over sequential: **{ratio:.2f}x** the cells per hour (target {TARGET}x on 2 "
        f"cores: {'met' if ratio >= TARGET else 'NOT met'}). The two results tables are "
        f"{'identical' if same else 'different: the sequential run used more threads per model, so its sums were rounded in another order'}.",
        "",
        f"The engine's own cost: starting the local cluster {cost['cluster_s']:.1f} s; a task "
        f"that does nothing {cost['noop_ms']:.0f} ms from submit to result; a task carrying "
        f"one cell's arrays ({cost['cell_mb']:.0f} MB, as when --data_dir is not shared) "
        f"{cost['ship_s']:.2f} s. Each worker also imports TensorFlow once, on its first cell.",
        "",
        f"Measured per worker: {per_worker:.1f} cells per hour at {threads} thread(s). Expected, "
        "as an upper bound (workers scaling with the cores, nothing shared slowing them): "
        + ", ".join(
            f"{c} cores: {c // threads} workers x {threads}, about "
            f"{per_worker * (c // threads):.0f} cells per hour (56 cells in "
            f"{56 / (per_worker * (c // threads)) * 60:.0f} min)"
            for c in (16, 64)
        )
        + ".",
    ]
    label = "tiny" if args.tiny else "full"
    bench.write_block(Path(args.out), "engine_speed.py", label, lines)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
