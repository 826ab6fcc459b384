"""Benchmarks on full-size synthetic data, written to bench/RESULTS.md.

    python bench/bench.py            # full mode: about 12 minutes on 2 cores
    python bench/bench.py --quick    # a few minutes: fewer repeats, subsets, 2 epochs
    python bench/bench.py --tiny     # seconds of work, small data: for the test suite only

Everything is measured side by side in one process (the mixed-data memory in child
processes), and targets are ratios, because absolute times drift on a shared machine. Times
are the best of several alternated runs, so that both sides of a ratio see the same load.

1. Loading one full-size cell (6,601 / 6,601 / 6,600 genes): data.load_data next to a bare
   pyarrow parse of the same three files and a naive per-gene float64 loop; the cached reload.
   Targets: load_data <= 1.5x the bare parse; cached reload <= 0.1x.
2. Training and inference throughput of the paper's network (batch 100), as FLOP/s, in float32
   and under the mixed_bfloat16 policy, each next to a 4096^2 tf.linalg.matmul of its own
   dtype. Targets (CPU): float32 training >= 65% of the float32 matmul's FLOP/s, bfloat16
   training >= 60% of the bfloat16 matmul's.
2c. One per-cell epoch as Convnet.train runs it (training, then the validation pass), in both
   precisions. Targets on a CPU with AMX: bfloat16 >= 2x float32's speed and >= 0.6x the
   bfloat16 matmul's FLOP/s; elsewhere the figures are reported.
3. Epoch time with and without the AUC callback. Target: the callback adds <= 10%.
4. One per-cell experiment (20 epochs with the callback and checkpoint, then the test) in both
   precisions, and the estimate for 56 cells.
5. Peak resident memory of pooling.load_data_mix over N full-size cells, next to the bytes of
   the arrays it returns. Target: <= 1.5x.

The generated part of RESULTS.md ends at NOTES_MARK; the notes below it are kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import data  # noqa: E402
import files  # noqa: E402
import pooling  # noqa: E402
import synth  # noqa: E402

NOTES_MARK = "<!-- notes below are written by hand and kept when bench.py rewrites this file -->"
FULL_GENES = (6601, 6601, 6600)  # train, valid, test genes of a real cell
MATMUL_N = 4096
# The CPU flags (/proc/cpuinfo) that decide float32 and bfloat16 speed, named in the report.
CPU_FEATURES = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


def write_block(out: Path, script: str, label: str, lines: list[str]) -> None:
    """Print a benchmark's report and put it into the Markdown file `out` (put_block)."""
    print("\n".join(lines))
    old = out.read_text() if out.is_file() else ""
    files.write_text(out, put_block(old, script, label, lines))
    print(f"wrote {out}")


def put_block(text: str, script: str, label: str, lines: list[str]) -> str:
    """`text` with the block of `script` (e.g. "explain_speed.py") and `label` replaced, or
    appended after NOTES_MARK (added if missing), between ``<!-- SCRIPT: LABEL begin -->`` and
    ``<!-- SCRIPT: LABEL end -->``; everything else is kept, as bench/stalls.py keeps it."""
    begin = f"<!-- {script}: {label} begin -->"
    end = f"<!-- {script}: {label} end -->"
    block = "\n".join([begin, *lines, end])
    notes = text.find(NOTES_MARK)
    start = text.find(begin, notes) if notes >= 0 else -1
    stop = text.find(end, start) if start >= 0 else -1
    if start >= 0 and stop >= 0:
        return text[:start] + block + text[stop + len(end) :]
    if notes < 0:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + NOTES_MARK + "\n"
    return text.rstrip("\n") + "\n\n" + block + "\n"


@dataclasses.dataclass
class Sizing:
    genes: tuple = FULL_GENES  # genes per split of the benchmark cell
    repeats: int = 7  # loading: alternated runs of each contender
    fit_genes: int = 6601  # training genes for throughput and callback timings
    rounds: int = 4  # timed rounds of the throughput / callback comparisons
    cell_epochs: int = 20  # epochs of the per-cell experiment (>= 2; else estimated)
    mix_cells: int = 56  # cells pooled for the memory measurement
    mix_distinct: int = 4  # distinct generated cells; the others are hard links to them


MODES = {
    "full": Sizing(),
    "quick": Sizing(
        repeats=3, fit_genes=1000, rounds=2, cell_epochs=2, mix_cells=12, mix_distinct=2
    ),
    "tiny": Sizing(
        genes=(300, 300, 300),
        repeats=1,
        fit_genes=300,
        rounds=1,
        cell_epochs=2,
        mix_cells=3,
        mix_distinct=1,
    ),
}


# ---------------------------------------------------------------------------------------------
# Helpers


def best_of(contenders: dict, repeats: int, setup: dict | None = None) -> dict:
    """Alternate the contenders `repeats` times; per contender: (best, median) wall seconds."""
    times = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            if setup and name in setup:
                setup[name]()
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def loadavg() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def machine() -> str:
    import keras
    import pyarrow
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import distribute

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    features = sorted(distribute.cpu_flags() & CPU_FEATURES)
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, numpy {np.__version__}, "
        f"pyarrow {pyarrow.__version__}; GPU: {', '.join(gpus) if gpus else 'none'}; CPU "
        f"features: {', '.join(features) if features else 'none of ' + ', '.join(sorted(CPU_FEATURES))}"
    )


def make_cell(out: Path, name: str, genes: tuple, seed: int) -> Path:
    """Generate one cell with genes = (train, valid, test) genes; returns its folder."""
    synth.synthesize(out, n_genes=max(genes), seed=seed, names=[name])
    cls = out / name / "classification"
    for split, n in zip(data.SPLITS, genes):
        if n < max(genes):  # the real test split has one gene fewer: cut whole genes off
            path = cls / f"{split}.csv"
            with open(path, "rb") as f:
                lines = f.readlines()
            path.write_bytes(b"".join(lines[: n * data.N_BINS]))
    return out / name


def rss_bytes(field: str) -> int:
    """VmRSS or VmHWM (peak) of this process from /proc, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.3f}"


# ---------------------------------------------------------------------------------------------
# 1. Loading


def naive_load(cls: Path):
    """The straightforward way: csv module, per-gene Python loop, float64."""
    import csv

    out = []
    for split in data.SPLITS:
        with open(cls / f"{split}.csv") as f:
            rows = list(csv.reader(f))
        xs, ys = [], []
        for g in range(len(rows) // 100):
            block = np.array([[float(v) for v in r[2:7]] for r in rows[g * 100 : (g + 1) * 100]])
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


def bench_loading(cell: Path, size: Sizing) -> tuple[list[str], dict]:
    import pyarrow.csv as pacsv

    cls = cell / "classification"

    def bare():
        for split in data.SPLITS:
            pacsv.read_csv(
                cls / f"{split}.csv", read_options=pacsv.ReadOptions(autogenerate_column_names=True)
            )

    def clear():
        shutil.rmtree(cls / ".cache", ignore_errors=True)

    t = best_of(
        {
            "bare": bare,
            "load": lambda: data.load_data(cell, cache=False),
            "first": lambda: data.load_data(cell),
        },
        size.repeats,
        setup={"first": clear},
    )
    data.load_data(cell)
    t.update(best_of({"cached": lambda: data.load_data(cell), "bare2": bare}, size.repeats))
    bare_t = min(t["bare"][0], t["bare2"][0])
    start = time.perf_counter()
    naive = naive_load(cls)
    t_naive = time.perf_counter() - start
    # The naive baseline computes the same numbers.
    for (x, y), (xn, yn) in zip(data.load_data(cell, cache=False), naive):
        np.testing.assert_allclose(x, xn, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(y, yn)
    load_t, cached_t = t["load"][0], t["cached"][0]
    lines = [
        "| what | seconds | x bare parse | target | met |",
        "|---|---|---|---|---|",
        f"| bare pyarrow parse of the 3 CSVs (type inference) | {bare_t:.3f} | 1.00 | | |",
        f"| `load_data`: parse + check + preprocess, no cache | {load_t:.3f} | "
        f"{load_t / bare_t:.2f} | <= 1.5 | {'yes' if load_t <= 1.5 * bare_t else 'NO'} |",
        f"| `load_data`, first load writing the cache | {t['first'][0]:.3f} | "
        f"{t['first'][0] / bare_t:.2f} | | |",
        f"| `load_data`, cached reload | {cached_t:.4f} | {cached_t / bare_t:.3f} | <= 0.1 | "
        f"{'yes' if cached_t <= 0.1 * bare_t else 'NO'} |",
        f"| naive per-gene loop, float64 (1 run) | {t_naive:.2f} | {t_naive / bare_t:.1f} | | |",
        "",
        f"Naive baseline / `load_data`: {t_naive / load_t:.0f}x. Best of {size.repeats} "
        f"alternated runs (medians: bare {t['bare'][1]:.3f} s, `load_data` {t['load'][1]:.3f} s).",
    ]
    return lines, {"load_data_s": load_t}


# ---------------------------------------------------------------------------------------------
# 2. Throughput


def layer_macs(model) -> list[tuple[str, str, int, int]]:
    """(layer, output shape, parameters, multiply-adds per gene) from the layers' shapes."""
    from keras import layers

    rows = []
    for layer in model.layers:
        shape = tuple(layer.output.shape[1:])
        macs = 0
        if isinstance(layer, layers.Conv1D):
            kernel = layer.kernel.shape  # (k, c_in, c_out)
            macs = shape[0] * kernel[0] * kernel[1] * kernel[2]
        elif isinstance(layer, layers.Dense):
            macs = layer.kernel.shape[0] * layer.kernel.shape[1]
        rows.append((layer.name, "x".join(map(str, shape)), layer.count_params(), macs))
    return rows


def epoch_timer():
    """A Keras callback recording each epoch's wall seconds in `.times` (and each training
    step's in `.steps`, a list per epoch). Put it last in the callback list, so an epoch's
    time includes the other callbacks' on_epoch_end."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times, self.steps = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.steps.append([])
            self._start = time.perf_counter()

        def on_train_batch_begin(self, batch, logs=None):
            self._step = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps[-1].append(time.perf_counter() - self._step)

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start)

    return EpochTimer()


def matmul_flops(repeats: int = 3, dtype: str = "float32") -> float:
    """Best FLOP/s of a MATMUL_N^2 matrix product in `dtype` (tf.linalg.matmul, warmed up)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((MATMUL_N, MATMUL_N), seed=1), dtype)
    b = tf.cast(tf.random.normal((MATMUL_N, MATMUL_N), seed=2), dtype)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * MATMUL_N**3 / best


def precisions() -> dict[str, tuple[str, str]]:
    """The compute precisions compared: {name: (Keras dtype policy, matmul dtype)}."""
    return {"float32": ("float32", "float32"), "bfloat16": ("mixed_bfloat16", "bfloat16")}


def compiled_models() -> dict:
    """A fresh seeded Conv1DNet per precision, built and compiled under its dtype policy as
    Convnet.train compiles it: {name: model}."""
    import keras

    import Convnet
    import distribute

    models = {}
    for name, (policy, _) in precisions().items():
        with distribute.dtype_policy(policy):
            keras.utils.set_random_seed(0)
            models[name] = Convnet.compile_model(Convnet.Conv1DNet(), train_auc=True)
    return models


def auto_precision() -> tuple[str, str]:
    """What main.py --mixed_precision auto picks on this machine, and why."""
    import distribute

    chosen, reason = distribute.auto_precision(
        distribute.gpu_capabilities(), distribute.cpu_flags()
    )
    return ("float32" if chosen == "off" else chosen), reason


def bench_throughput(cell_data, size: Sizing) -> tuple[list[str], dict]:
    """model.fit and model.predict in float32 and under the mixed_bfloat16 policy, each as a
    fraction of its own dtype's matmul, alternated round by round."""

    (x, y), (xv, _), _ = cell_data
    x, y, xv = x[: size.fit_genes], y[: size.fit_genes], xv[: size.fit_genes]
    models, timers = compiled_models(), {}
    for name, (_, dtype) in precisions().items():
        timers[name] = epoch_timer()
        matmul_flops(1, dtype)
        models[name].fit(x, y, batch_size=100, epochs=1, verbose=0)  # traces the step
        models[name].predict(xv, batch_size=1000, verbose=0)
    rows = layer_macs(models["float32"])
    macs = sum(r[3] for r in rows)
    fit_gps = {k: [] for k in models}
    pred_gps = {k: [] for k in models}
    mm = {k: [] for k in models}
    for _ in range(size.rounds):
        for name, (_, dtype) in precisions().items():
            models[name].fit(x, y, batch_size=100, epochs=1, verbose=0, callbacks=[timers[name]])
            fit_gps[name].append(len(x) / timers[name].times[-1])
            mm[name].append(matmul_flops(dtype=dtype))
            start = time.perf_counter()
            models[name].predict(xv, batch_size=1000, verbose=0)
            pred_gps[name].append(len(xv) / (time.perf_counter() - start))
    table = []
    for name in models:
        mm_best = max(mm[name])
        train_flops = 6 * macs * max(fit_gps[name])
        # Whole batches only: the last one of an epoch may hold a single gene.
        steps = [t for epoch in timers[name].steps for t in epoch[: len(x) // 100]]
        step_flops = 6 * macs * 100 / min(steps or [np.inf])
        pred_flops = 2 * macs * max(pred_gps[name])
        target = {"float32": 0.65, "bfloat16": 0.6}[name]
        table += [
            f"| `tf.linalg.matmul` {MATMUL_N}^2 {name} | | {mm_best / 1e9:.0f} | 1.00 | | |",
            f"| `model.fit` {name}, batch 100, {len(x):,} genes | {max(fit_gps[name]):.0f} | "
            f"{train_flops / 1e9:.0f} | {train_flops / mm_best:.2f} | >= {target} | "
            f"{'yes' if train_flops >= target * mm_best else 'NO'} |",
            f"| `model.fit` {name}, its fastest single step of 100 genes | "
            f"{100 / min(steps or [np.inf]):.0f} | {step_flops / 1e9:.0f} | "
            f"{step_flops / mm_best:.2f} | | |",
            f"| `model.predict` {name}, batch 1000, {len(xv):,} genes | "
            f"{max(pred_gps[name]):.0f} | {pred_flops / 1e9:.0f} | "
            f"{pred_flops / mm_best:.2f} | | |",
        ]
    ratio = {
        what: max(d["bfloat16"]) / max(d["float32"])
        for what, d in (("fit", fit_gps), ("predict", pred_gps), ("matmul", mm))
    }
    lines = [
        "Per gene, from the layers' shapes (multiply-adds; the other layers have none):",
        "",
        "| layer | output | parameters | multiply-adds |",
        "|---|---|---|---|",
        *[f"| {n} | {s} | {p:,} | {m:,} |" for n, s, p, m in rows if m or p],
        f"| total | | {sum(r[2] for r in rows):,} | {macs:,} |",
        "",
        "FLOP per gene: training 6 x multiply-adds (forward 2, backward 4), inference 2 x. "
        "bfloat16 is Keras' mixed_bfloat16 policy (`--mixed_precision bfloat16`): conv2 and "
        "conv3 compute in bfloat16; their bias and tanh, conv1 (one input channel), the dense "
        "layers, the softmax output and the weights stay float32. Each row's x matmul is "
        "against the matmul of its own dtype.",
        "",
        "| what | genes/s | GFLOP/s | x matmul | target | met |",
        "|---|---|---|---|---|---|",
        *table,
        "",
        f"bfloat16 / float32: fit {ratio['fit']:.2f}x, predict {ratio['predict']:.2f}x, matmul "
        f"{ratio['matmul']:.2f}x. Best of {size.rounds} alternated rounds (fit epoch, matmul, "
        "predict; float32 then bfloat16) after a warm-up; medians: "
        + "; ".join(
            f"{k} fit {statistics.median(fit_gps[k]):.0f} genes/s, predict "
            f"{statistics.median(pred_gps[k]):.0f} genes/s, matmul "
            f"{statistics.median(mm[k]) / 1e9:.0f} GFLOP/s"
            for k in models
        )
        + ".",
    ]
    return lines, {"macs": macs, "fit_gps": max(fit_gps["float32"])}


def profile_training(cell_data, size: Sizing, logdir: Path) -> list[str]:
    """TensorFlow's profiler over one epoch of model.fit: op time per training step by layer,
    forward and backward, and each convolution's FLOP/s while its ops run."""
    import collections

    import keras
    import tensorflow as tf

    import Convnet

    (x, y), _, _ = cell_data
    x, y = x[: size.fit_genes], y[: size.fit_genes]
    keras.utils.set_random_seed(0)
    model = Convnet.compile_model(Convnet.Conv1DNet(), train_auc=True)
    model.fit(x, y, batch_size=100, epochs=1, verbose=0)
    tf.profiler.experimental.start(str(logdir))
    model.fit(x, y, batch_size=100, epochs=1, verbose=0)
    tf.profiler.experimental.stop()
    steps = -(-len(x) // 100)
    try:  # the trace format is TensorFlow's own: read it, or say it could not be read
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

        space = xplane_pb2.XSpace()
        space.ParseFromString(next(logdir.rglob("*.xplane.pb")).read_bytes())
    except (ImportError, StopIteration, OSError) as e:
        return [f"(profile not available: {e})"]
    names = [layer.name for layer in model.layers]
    ps = collections.Counter()
    for plane in space.planes:
        meta = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = meta.get(event.metadata_id, "")
                if ":" not in name or "/" not in name:  # TensorFlow ops are "scope/op:Type"
                    continue
                path = name.split(":")[0].split("/")
                layer = next(
                    (n for n in names for part in path if part == n or part.startswith(n + "_")),
                    None,
                )
                if layer is None:  # Keras numbers a process's later optimizers: adam_1, ...
                    optimizer = any(part.split("_")[0] == "adam" for part in path)
                    layer = "optimizer" if optimizer else "other (metrics, loss, data)"
                key = (layer, "backward" if "gradient_tape" in path else "forward")
                ps[key] += event.duration_ps
    total = sum(ps.values())
    macs = {n: m for n, _, _, m in layer_macs(model)}
    rows = []
    for layer in [*names, "optimizer", "other (metrics, loss, data)"]:
        fwd, bwd = ps[(layer, "forward")], ps[(layer, "backward")]
        if not fwd + bwd:
            continue
        flops = ""
        if macs.get(layer, 0) > 1e6:
            gflops = [
                2 * 100 * macs[layer] / (fwd / steps * 1e-12) / 1e9,
                4 * 100 * macs[layer] / (bwd / steps * 1e-12) / 1e9,
            ]
            flops = f"{gflops[0]:.0f} / {gflops[1]:.0f}"
        rows.append(
            f"| {layer} | {fwd / steps / 1e9:.1f} | {bwd / steps / 1e9:.1f} | "
            f"{(fwd + bwd) / total:.0%} | {flops} |"
        )
    return [
        "| layer | forward ms/step | backward ms/step | share of op time | GFLOP/s while "
        "running, fwd / bwd |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"TensorFlow profiler over one epoch of `model.fit` ({len(x):,} genes, batch 100, "
        f"{steps} steps), after a warm-up epoch. Op time is summed over the threads that ran "
        "the ops, so concurrent ops count each their own duration.",
    ]


def bench_epoch(cell_data, size: Sizing, macs: int) -> list[str]:
    """A per-cell epoch as Convnet.train runs it (training with the streamed training AUC,
    then the callback's one validation pass) in float32 and in bfloat16, on their own models
    taking turns of two epochs (the second timed), next to each dtype's matmul."""

    import distribute
    from roc_auc_callback import RocAucCallback

    (x, y), (xv, yv), _ = cell_data
    train = (x[: size.fit_genes], y[: size.fit_genes])
    valid = (xv[: size.fit_genes], yv[: size.fit_genes])
    models = compiled_models()
    # One callback per model for all its epochs, as Convnet.train has: its validation step is
    # traced in the first epoch only (a new callback per epoch would trace it every time).
    scorers = {k: RocAucCallback(None, valid) for k in models}
    times = {k: [] for k in models}
    switched = {k: [] for k in models}  # the first epoch of a turn, right after the other dtype
    mm = {k: [] for k in models}
    for round_ in range(size.rounds + 1):  # round 0 traces and is not counted
        for name, (_, dtype) in precisions().items():
            # Two epochs a turn, the second timed: in a per-cell run every epoch follows one
            # of its own precision; the first after the other precision's was seen slower.
            timer = epoch_timer()
            models[name].fit(
                *train,
                batch_size=100,
                epochs=2,
                verbose=0,
                callbacks=[scorers[name], timer],
            )
            if round_:
                times[name].append(timer.times[1])
                switched[name].append(timer.times[0])
                mm[name].append(matmul_flops(dtype=dtype))
    best = {k: min(v) for k, v in times.items()}
    flop = 6 * macs * len(train[0]) + 2 * macs * len(valid[0])
    auto, reason = auto_precision()
    speedup = best["float32"] / best["bfloat16"]
    fraction = {k: flop / best[k] / max(mm[k]) for k in models}
    amx = "amx_bf16" in distribute.cpu_flags() and not distribute.gpu_capabilities()
    faster = "bfloat16" if speedup > 1 else "float32"
    rows = []
    for name in models:
        mark = " (auto's choice here)" if name == auto else ""
        ratio, goals = "1.00x", ["", "", "", ""]  # speed-up: target, met; x matmul: target, met
        if name == "bfloat16":
            ratio = f"{speedup:.2f}x"
            goals = ["(reported)", "", "(reported)", ""]
            if amx:
                goals = [
                    ">= 2x (AMX)",
                    "yes" if speedup >= 2 else "NO",
                    ">= 0.6 (AMX)",
                    "yes" if fraction[name] >= 0.6 else "NO",
                ]
        rows.append(
            f"| {name}{mark} | {best[name]:.2f} ({statistics.median(times[name]):.2f}) | "
            f"{ratio} | {goals[0]} | {goals[1]} | {flop / best[name] / 1e9:.0f} | "
            f"{fraction[name]:.2f} | {goals[2]} | {goals[3]} |"
        )
    return [
        "| precision | epoch seconds (median) | speed-up | target | met | GFLOP/s | x its "
        "matmul | target | met |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"One epoch as `Convnet.train` runs it: {len(train[0]):,} training genes (batch 100, "
        f"streamed training AUC), then the callback's one pass over {len(valid[0]):,} validation "
        f"genes (batch 1,000; val_loss, val_accuracy, val_auc); {flop / 1e9:.0f} GFLOP per "
        f"epoch. Best (and median) of {size.rounds} epochs per precision: the precisions take "
        "turns of two epochs, after a traced turn, and the second epoch of each turn is timed "
        "(a per-cell run's epochs all follow one of their own precision; the first epoch "
        "after the other precision's turn took, median, "
        + ", ".join(f"{statistics.median(switched[k]):.2f} s in {k}" for k in models)
        + "); each turn is followed by its own dtype's matmul; one AUC callback per model, "
        "whose validation step is traced once, as in `Convnet.train`. "
        f"`--mixed_precision auto`, main.py's default, chooses {auto} here ({reason}); the "
        f"faster here is {faster}."
        + ("" if amx else " The targets apply on a CPU with AMX; this machine has none."),
    ]


# ---------------------------------------------------------------------------------------------
# 3. Callback overhead


def bench_callback(cell_data, size: Sizing) -> list[str]:
    """Epoch time of three wirings, alternated epoch by epoch on their own models."""
    import keras

    import Convnet
    from roc_auc_callback import RocAucCallback

    (x, y), (xv, yv), _ = cell_data
    train = (x[: size.fit_genes], y[: size.fit_genes])
    valid = (xv[: size.fit_genes], yv[: size.fit_genes])
    keras.utils.set_random_seed(0)
    configs = {
        # The protocol's minimum without AUCs: Keras evaluates the validation split itself.
        "none": (Convnet.compile_model(Convnet.Conv1DNet()), True, []),
        # As Convnet.train wires it now: no validation_data to fit; the callback's one pass
        # gives val_loss, val_accuracy and val_auc; the training AUC is streamed.
        "now": (
            Convnet.compile_model(Convnet.Conv1DNet(), train_auc=True),
            False,
            [RocAucCallback(None, valid)],
        ),
        # As it was wired before: Keras' validation pass, then the callback predicted the
        # validation split again and the whole training split.
        "before": (
            Convnet.compile_model(Convnet.Conv1DNet()),
            True,
            [RocAucCallback(train, valid)],
        ),
    }
    times = {k: [] for k in configs}
    for round_ in range(size.rounds + 1):  # round 0 traces and is not counted
        for name, (model, keras_val, callbacks) in configs.items():
            timer = epoch_timer()
            model.fit(
                *train,
                validation_data=valid if keras_val else None,
                batch_size=100,
                epochs=1,
                verbose=0,
                callbacks=callbacks + [timer],
            )
            if round_:
                times[name].append(timer.times[0])
    best = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    over_now = best["now"] / best["none"] - 1
    over_before = best["before"] / best["none"] - 1
    return [
        "| wiring | epoch seconds (median) | overhead | target | met |",
        "|---|---|---|---|---|",
        f"| no AUC callback, `fit(validation_data=...)` | {best['none']:.2f} ({med['none']:.2f}) "
        "| | | |",
        f"| callback as `Convnet.train` wires it now (one validation pass, streamed training "
        f"AUC) | {best['now']:.2f} ({med['now']:.2f}) | {over_now:+.1%} | <= +10% | "
        f"{'yes' if over_now <= 0.10 else 'NO'} |",
        f"| callback as wired before (Keras' validation pass + callback predicts validation "
        f"and training splits) | {best['before']:.2f} ({med['before']:.2f}) | "
        f"{over_before:+.1%} | | |",
        "",
        f"{len(train[0]):,} training and {len(valid[0]):,} validation genes, batch 100; best "
        f"(and median) of {size.rounds} epochs per wiring, alternated epoch by epoch, after a "
        "traced one. Keras' own validation pass predicts in batches of 100 (the fit batch "
        "size), the callback's in batches of 1,000: hence an overhead that can be below zero.",
    ]


# ---------------------------------------------------------------------------------------------
# 4. One per-cell experiment


def bench_cell(cell: Path, save: Path, size: Sizing, load_s: float) -> list[str]:
    """The per-cell experiment, end to end, in float32 and in bfloat16."""
    runs = {
        name: run_cell(cell, save / name, size, policy)
        for name, (policy, _) in precisions().items()
    }
    auto, _ = auto_precision()
    rows = [
        "| step | " + " | ".join(f"{k} seconds" for k in runs) + " |",
        "|---|" + "---|" * len(runs),
        "| load the cell from CSV (`load_data`, section 1) | "
        + " | ".join(f"{load_s:.2f}" for _ in runs)
        + " |",
    ]
    measured = (
        "measured"
        if size.cell_epochs == 20
        else f"estimated from {size.cell_epochs} epochs: first + 19 x later"
    )
    for label, key, fmt in (
        (f"`Convnet.train`, 20 epochs, callback + checkpoint ({measured})", "train", ".1f"),
        ("`Convnet.test` of the best epoch on the test split", "test", ".2f"),
    ):
        rows.append(f"| {label} | " + " | ".join(f"{r[key]:{fmt}}" for r in runs.values()) + " |")
    per_cell = {k: load_s + r["train"] + r["test"] for k, r in runs.items()}
    rows += [
        "| one cell | " + " | ".join(f"{v:.1f}" for v in per_cell.values()) + " |",
        "| 56 cells (x56, estimate) | "
        + " | ".join(f"{56 * v:.0f} ({56 * v / 3600:.2f} h)" for v in per_cell.values())
        + " |",
    ]
    c = next(iter(runs.values()))["sizes"]
    return [
        *rows,
        "",
        f"Cell of {c[0]:,} / {c[1]:,} / {c[2]:,} genes (synthetic data), seed 0, the float32 "
        "run first. "
        + "; ".join(
            f"{k}: test AUC {r['auc']:.3f} after {size.cell_epochs} epochs, epoch seconds first "
            f"{r['first']:.1f}, median of the others {r['median']:.1f}"
            for k, r in runs.items()
        )
        + f". One cell in bfloat16 takes {per_cell['bfloat16'] / per_cell['float32']:.2f}x the "
        f"float32 time; `--mixed_precision auto` chooses {auto} here.",
    ]


def run_cell(cell: Path, save: Path, size: Sizing, policy: str) -> dict:
    """Train and test one cell under a dtype policy, timed, as main.py's per-cell run does:
    seconds of training ("train", 20 epochs or estimated) and testing ("test"), the test AUC,
    the first and median epoch seconds, and the split sizes."""
    import keras

    import Convnet
    import distribute

    c = data.load_cell(cell)
    keras.utils.set_random_seed(0)
    with distribute.dtype_policy(policy):
        model = Convnet.Conv1DNet()
        # Time each epoch without changing Convnet.train: its model.fit call gets our timer.
        timer, fit = epoch_timer(), model.fit
        model.fit = lambda *a, **k: fit(*a, **{**k, "callbacks": [*k["callbacks"], timer]})
        start = time.perf_counter()
        result = Convnet.train(
            model,
            (c.train.x, c.train.y),
            (c.valid.x, c.valid.y),
            save,
            epochs=size.cell_epochs,
            verbose=0,
            seed=0,
        )
        t_train = time.perf_counter() - start
    if size.cell_epochs < 20:  # outside the epochs (compile, saving) + first + 19 later ones
        t_train = (
            t_train - sum(timer.times) + timer.times[0] + 19 * statistics.median(timer.times[1:])
        )
    start = time.perf_counter()
    scores = Convnet.test(Convnet.load_model(result.best_model_path), c.test.x, c.test.y)
    t_test = time.perf_counter() - start
    return {
        "train": t_train,
        "test": t_test,
        "auc": scores["auc"],
        "first": timer.times[0],
        "median": statistics.median(timer.times[1:]),
        "sizes": (len(c.train.x), len(c.valid.x), len(c.test.x)),
    }


# ---------------------------------------------------------------------------------------------
# 5. Mixed-experiment memory


def mix_child(data_dir: str) -> None:
    """Run in a fresh process: load the mixed experiment, print its memory figures as JSON."""
    import pyarrow.csv  # noqa: F401  imported before the baseline, as load_data_mix would

    before = rss_bytes("VmRSS")
    start = time.perf_counter()
    mix = pooling.load_data_mix(data_dir)
    seconds = time.perf_counter() - start
    splits = [mix.train, mix.valid, *mix.tests.values()]
    arrays = sum(a.nbytes for s in splits for a in s if a is not None)
    dtypes = sorted({str(s.x.dtype) for s in splits} | {str(s.y.dtype) for s in splits})
    print(
        json.dumps(
            {
                "before": before,
                "peak": rss_bytes("VmHWM"),
                "arrays": arrays,
                "x_bytes": sum(s.x.nbytes for s in splits),
                "seconds": seconds,
                "genes": sum(len(s.x) for s in splits),
                "dtypes": dtypes,
            }
        )
    )


def bench_mix(tmp: Path, size: Sizing) -> list[str]:
    mix_dir = tmp / "mix"
    names = [f"C{i + 1:03d}" for i in range(size.mix_cells)]
    start = time.perf_counter()
    for i, name in enumerate(names[: size.mix_distinct]):
        make_cell(mix_dir, name, size.genes, seed=100 + i)
    for i, name in enumerate(names[size.mix_distinct :]):
        src = mix_dir / names[i % size.mix_distinct] / "classification"
        dst = mix_dir / name / "classification"
        dst.mkdir(parents=True)
        for split in data.SPLITS:
            os.link(src / f"{split}.csv", dst / f"{split}.csv")
    t_gen = time.perf_counter() - start
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import bench; bench.mix_child({str(mix_dir)!r})"
    )
    rows = []
    for label in ("from CSV (parse, check, write caches)", "from the caches"):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        grown = r["peak"] - r["before"]
        rows.append(
            f"| {label} | {r['seconds']:.1f} | {gb(r['arrays'])} | {gb(r['before'])} | "
            f"{gb(r['peak'])} | {grown / r['arrays']:.2f} | <= 1.5 | "
            f"{'yes' if grown <= 1.5 * r['arrays'] else 'NO'} |"
        )
    shutil.rmtree(mix_dir, ignore_errors=True)
    return [
        "| load | seconds | arrays GB | RSS before GB | peak RSS GB | (peak - before) / arrays "
        "| target | met |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"{size.mix_cells} cells of {'/'.join(f'{g:,}' for g in size.genes)} genes, "
        f"{r['genes']:,} genes in all (pooled train + validation, and each cell's test); "
        f"array dtypes {', '.join(r['dtypes'])} (x is {gb(r['x_bytes'])} GB; the rest are "
        f"labels, gene ids and cell names). Each load runs in a fresh process; peak = VmHWM. "
        f"{size.mix_distinct} distinct cells were generated and the others hard-linked to "
        f"them (every file is still parsed and cached on its own) in {t_gen:.0f} s.",
    ]


# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats, training subsets, 2 epochs, 12 pooled cells [Default: full mode]",
    )
    mode.add_argument(
        "--tiny",
        action="store_true",
        help="300 genes per split, 1 repeat: checks the benchmark runs, for "
        "tests; its figures mean little [Default: full mode]",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "bench" / "RESULTS.md"),
        help="Markdown file to write [Default: bench/RESULTS.md]",
    )
    parser.add_argument(
        "--tmp",
        default=None,
        help="folder for the generated data, removed afterwards "
        "[Default: the system's temporary folder]",
    )
    args = parser.parse_args(argv)
    import tensorflow as tf

    # Keras warns when a new model traces its step: expected here, with a model per wiring.
    tf.get_logger().setLevel("ERROR")
    name = "quick" if args.quick else "tiny" if args.tiny else "full"
    size = MODES[name]
    started = time.perf_counter()
    load_start = loadavg()
    sections = []

    def section(title, lines):
        sections.append((title, lines))
        print(f"## {title}\n\n" + "\n".join(lines) + "\n", flush=True)

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-") as tmp:
        tmp = Path(tmp)
        cell = make_cell(tmp / "one", "S001", size.genes, seed=0)
        genes = " / ".join(f"{g:,}" for g in size.genes)
        lines, info = bench_loading(cell, size)
        section(f"1. Loading one cell ({genes} genes)", lines)
        cell_data = data.load_data(cell)
        lines, info2 = bench_throughput(cell_data, size)
        section("2. Training and inference throughput, float32 and bfloat16", lines)
        section(
            "2b. Where a training step's time goes",
            profile_training(cell_data, size, tmp / "profile"),
        )
        section(
            "2c. A per-cell epoch, float32 against bfloat16",
            bench_epoch(cell_data, size, info2["macs"]),
        )
        section("3. Callback overhead", bench_callback(cell_data, size))
        section(
            "4. One per-cell experiment, float32 and bfloat16",
            bench_cell(cell, tmp / "run", size, info["load_data_s"]),
        )
        section("5. Mixed-experiment memory", bench_mix(tmp, size))

    command = "python bench/bench.py" + {"full": "", "quick": " --quick", "tiny": " --tiny"}[name]
    head = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}.",
        "",
        f"Command: `{command}` ({name} mode), {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{time.perf_counter() - started:.0f} s. Load average (1/5/15 min) at the start "
        f"{load_start}, at the end {loadavg()}: the machine is shared, which is why every "
        "target is a ratio measured side by side.",
        "",
    ]
    body = [line for title, lines in sections for line in (f"## {title}", "", *lines, "")]
    out = Path(args.out)
    notes = ""
    if out.is_file():
        old = out.read_text()
        if NOTES_MARK in old:
            notes = old[old.index(NOTES_MARK) :]
    out.write_text("\n".join(head + body) + ("\n" + notes if notes else NOTES_MARK + "\n"))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
