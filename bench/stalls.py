"""Stall benchmark (issue 15): how often the per-cell protocol stalls or collapses, written
into bench/RESULTS.md.

    python bench/stalls.py            # full mode: 4 cells x 6 seeds x 20 epochs, full size
                                      # (24 runs: 40 minutes on 2 cores with AMX, where the
                                      # default is bfloat16; 2 hours in float32)
    python bench/stalls.py --quick    # 2 cells x 2 seeds x 3 epochs, 600 genes: a few minutes
    python bench/stalls.py --tiny     # 1 cell x 1 seed x 1 epoch, 60 genes: for the tests only
    python bench/stalls.py --extra "--restarts 2" --label "restarts 2"   # measure a cure
    python bench/stalls.py --keep --extra "--restarts 0" ...   # the plain recipe, kept; then
    python bench/stalls.py --reuse KEPT --extra "--restarts 2" # trains only what restarts change
    python bench/stalls.py --extra "--mixed_precision bfloat16" --label bf16 \
        --paired "restarts (default)"           # test AUC paired with another label's runs

The cells are generated (synth.synthesize, data seed 0) in the real on-disk format, at full
size 6,601 / 6,601 / 6,600 genes per split, and differ in signal strength only: ``noise``, the
standard deviation of the noise between a gene's expression and what its marks see, goes
evenly from 0.6 (easy) to 1.5 (hard) over the cells (one cell: 0.9, the generator's default).
Each run is the default per-cell protocol end to end, in its own process, one after the other:

    python main.py --data_dir DATA --cells CELL --seed SEED --save_dir RUN --epochs E [EXTRA]

with seeds 0 .. S-1 for every cell, EXTRA being ``--extra``'s flags passed through untouched.
Next to the runs, a logistic regression (scikit-learn, default settings, max_iter raised) on
the same 505 preprocessed features (data.load_cell), fit on the train split and scored on the
test split, says how learnable each cell is.

Per run, from its log.csv (one row per epoch; epochs are counted from 1 here, as output.csv's
best_epoch) and output.csv:

- test AUC: output.csv's AUC, of the model main.py tested (its best epoch by val_accuracy);
- best val AUC: the largest val_auc over the epochs (and its epoch); final val AUC: the last
  epoch's;
- learned at: the first epoch with val_auc >= 0.6, or "never";
- stalled: the best val AUC is below 0.6 ("low AUC"), or val_accuracy is within 0.01 of the
  rate of either class of the validation split in every epoch ("one class": the model never
  beat predicting one class, whatever its AUC);
- collapsed: at some epoch val_auc is more than 0.2 below the best val_auc of the epochs
  before it (it learned, then fell back); "collapsed at" is the first such epoch;
- at chance: the tested model's test AUC is below 0.6 (or could not be computed).

Per cell, over its seeds: the test AUC's mean, min, max and standard deviation (n - 1), the
number of stalled, collapsed and at-chance runs, and the mean test AUC of the runs that did not
stall.

With --reuse (a folder kept by a plain-recipe benchmark of the same sizing), the restart rule
of restarts.py is replayed on each kept run's log, epoch by epoch: where it never fires,
main.py with restarts would train that run bit for bit as the plain recipe did (its guard only
reads the logs), so the kept run is taken as it is ("reused"); the others are trained. --verify
N trains N reusable runs anyway and stops unless their log.csv and predictions.csv are byte
for byte the kept ones.

The report is a Markdown block between ``<!-- stalls.py: LABEL begin -->`` and
``<!-- stalls.py: LABEL end -->``, placed after bench.py's NOTES_MARK (so that bench.py, which
rewrites everything above the mark, keeps it): a re-run with the same --label replaces its own
block and touches nothing else; a new label is appended at the end. The per-run numbers also
go to ``<out stem>-stalls.csv`` next to the Markdown file (rows of the same label replaced).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # for main.py's processes, and machine()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402  (imports data only: no TensorFlow at import time)
import data  # noqa: E402
import files  # noqa: E402
import restarts  # noqa: E402  (numpy only)
import synth  # noqa: E402

# The thresholds are those main.py's restarts use (restarts.py): LEARNED, val_auc at or above
# it: learned, below it: near chance; restarts.one_class, val_accuracy within MAJORITY_TOL of
# either class's rate: one class predicted; COLLAPSE_DROP, val_auc this far below its best so
# far: a collapse.
from restarts import COLLAPSE_DROP, EPS, LEARNED, MAJORITY_TOL  # noqa: E402

NOISE_RANGE = (0.6, 1.5)  # easiest and hardest cell: logistic regression 0.90 to 0.73 test AUC
DATA_SEED = 0
MAX_ITER = 5000  # logistic regression: lbfgs needs about 150 iterations at full size
# main.py flags the harness sets itself: --extra may not set them again (the last would win).
HARNESS_FLAGS = ("--data_dir", "--cells", "--seed", "--save_dir", "--epochs")
CSV_COLUMNS = [
    "label",
    "cell",
    "noise",
    "seed",
    "epochs",
    "extra",
    "test_auc",
    "tested_epoch",
    "best_val_auc",
    "best_val_auc_epoch",
    "final_val_auc",
    "learned_epoch",
    "stalled",
    "stall_reason",
    "collapsed",
    "collapse_epoch",
    "at_chance",
    "attempts",
    "reused",
    "seconds",
]


@dataclasses.dataclass
class Sizing:
    cells: int = 4  # generated cells, noise evenly spaced over NOISE_RANGE
    seeds: int = 6  # main.py --seed 0 .. seeds - 1, for every cell
    epochs: int = 20  # main.py --epochs
    genes: tuple = bench.FULL_GENES  # train, valid, test genes per cell


MODES = {
    "full": Sizing(),
    "quick": Sizing(cells=2, seeds=2, epochs=3, genes=(600, 600, 600)),
    "tiny": Sizing(cells=1, seeds=1, epochs=1, genes=(60, 60, 60)),
}


@dataclasses.dataclass
class Run:
    """One main.py run, judged. Epochs are 1-based; None where there is none."""

    cell: str
    noise: float
    seed: int
    epochs: int
    test_auc: float
    tested_epoch: int | None  # the epoch main.py tested (best val_accuracy)
    best_val_auc: float
    best_val_auc_epoch: int | None
    final_val_auc: float
    learned_epoch: int | None  # first epoch with val_auc >= LEARNED
    stalled: bool
    stall_reason: str  # "low AUC" (best val AUC < LEARNED), "one class", both, or ""
    collapsed: bool
    collapse_epoch: int | None
    at_chance: bool
    seconds: float
    attempts: int | None = None  # output.csv's attempts (None: a table from before restarts)
    reused: bool = False  # taken from --reuse's plain run, which restarts would not change


# ---------------------------------------------------------------------------------------------
# Judging one run


def judge(log: dict[str, list[float]], test_auc: float, majority: float) -> dict:
    """Stall and collapse verdicts of one run (see the module docstring for the definitions).

    log: log.csv's columns, key -> one float per epoch (val_auc and val_accuracy needed; NaN
    where undefined); test_auc: the tested model's test AUC; majority: the fraction of the
    validation split's majority class.
    """
    val_auc = np.asarray(log["val_auc"], dtype=np.float64)
    val_acc = np.asarray(log["val_accuracy"], dtype=np.float64)
    defined = ~np.isnan(val_auc)
    best = float(np.nanmax(val_auc)) if defined.any() else math.nan
    learned = np.flatnonzero(val_auc >= LEARNED)
    # The best of the epochs before each one (-inf before the first defined AUC).
    before = np.maximum.accumulate(np.where(defined, val_auc, -np.inf))
    before = np.concatenate([[-np.inf], before[:-1]])
    # EPS: a difference of exactly the threshold, as written, is not "more than" it in floats.
    fell = np.flatnonzero(before - val_auc > COLLAPSE_DROP + EPS)
    one_class = bool(len(val_acc)) and bool(np.all(restarts.one_class(val_acc, majority)))
    low_auc = not best >= LEARNED
    return {
        "best_val_auc": best,
        "best_val_auc_epoch": int(np.nanargmax(val_auc)) + 1 if defined.any() else None,
        "final_val_auc": float(val_auc[-1]) if len(val_auc) else math.nan,
        "learned_epoch": int(learned[0]) + 1 if len(learned) else None,
        "stalled": low_auc or one_class,
        "stall_reason": " and ".join(
            w for w, on in (("low AUC", low_auc), ("one class", one_class)) if on
        ),
        "collapsed": bool(len(fell)),
        "collapse_epoch": int(fell[0]) + 1 if len(fell) else None,
        "at_chance": bool(not test_auc >= LEARNED),
    }


def read_log(path: Path) -> dict[str, list[float]]:
    """log.csv as key -> one float per epoch ("nan" and empty fields read as NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise RuntimeError(f"{path}: no epochs logged")
    return {k: [number(r[k]) for r in rows] for k in rows[0]}


def number(text: str | None) -> float:
    return float(text) if text not in (None, "") else math.nan


def read_result(path: Path, cell: str) -> tuple[float, int | None, int | None]:
    """(test AUC, best epoch, attempts) of `cell` in a results table written by main.py."""
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["cell"] == cell:
                epoch, attempts = row.get("best_epoch", ""), row.get("attempts", "")
                return (
                    number(row["auc"]),
                    int(float(epoch)) if epoch else None,
                    int(float(attempts)) if attempts else None,
                )
    raise RuntimeError(f"{path}: no row for cell {cell}")


# ---------------------------------------------------------------------------------------------
# Data, baseline and runs


def noise_levels(n_cells: int) -> list[float]:
    """n_cells noise values evenly spaced over NOISE_RANGE; one cell gets the default, 0.9."""
    if n_cells == 1:
        return [0.9]
    return [round(float(v), 3) for v in np.linspace(*NOISE_RANGE, n_cells)]


def make_cells(out: Path, noises: list[float], genes: tuple) -> list[str]:
    """Generate one cell per noise value, genes = (train, valid, test) per cell; returns the
    cell names (S001, S002, ...)."""
    names = [f"S{i + 1:03d}" for i in range(len(noises))]
    synth.synthesize(out, n_genes=max(genes), seed=DATA_SEED, names=names, noise=noises)
    for name in names:
        for split, n in zip(data.SPLITS, genes):
            if n < max(genes):  # the real test split has one gene fewer: cut whole genes off
                path = out / name / "classification" / f"{split}.csv"
                with open(path, "rb") as f:
                    lines = f.readlines()
                path.write_bytes(b"".join(lines[: n * data.N_BINS]))
    return names


def logistic_auc(cell_dir: Path) -> tuple[float, bool]:
    """(test AUC, converged) of a logistic regression on the cell's 505 features, fit on its
    train split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    c = data.load_cell(cell_dir)
    flat = lambda split: split.x.reshape(len(split.x), -1)  # noqa: E731
    model = LogisticRegression(max_iter=MAX_ITER).fit(flat(c.train), c.train.labels)
    auc = roc_auc_score(c.test.labels, model.predict_proba(flat(c.test))[:, 1])
    return float(auc), bool(model.n_iter_.max() < MAX_ITER)


@functools.cache
def valid_labels(cell_dir: Path) -> np.ndarray:
    """The cell's validation labels, read once per cell (every run of it is judged by them)."""
    return data.load_cell(cell_dir).valid.labels


def main_command(data_dir, cell, seed, save, epochs, extra: list[str]) -> list[str]:
    return [
        "main.py",
        "--data_dir",
        str(data_dir),
        "--cells",
        cell,
        "--seed",
        str(seed),
        "--save_dir",
        str(save),
        "--epochs",
        str(epochs),
        *extra,
    ]


def run_one(data_dir: Path, cell: str, noise: float, seed: int, save: Path, epochs: int, extra):
    """One main.py run in its own process, into the folder `save` (what an interrupted run
    left there is removed first); returns it judged. Its time goes to save/seconds.json: a
    finished run is known by that file."""
    cmd = main_command(data_dir, cell, seed, save, epochs, extra)
    return judged(data_dir, cell, noise, seed, save, run_main(cmd, save))


def run_main(cmd: list[str], save: Path, env: dict | None = None) -> float:
    """Run `python CMD` (main.py and its arguments) from the repository root into the folder
    `save`, after removing what an interrupted run left there, in the environment `env` (this
    one's by default); RuntimeError with the output's tail when it fails. Its seconds go to
    save/seconds.json (with the command) and are returned."""
    shutil.rmtree(save, ignore_errors=True)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *cmd], cwd=ROOT, capture_output=True, text=True, env=env or os.environ
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(
            f"python {shlex.join(cmd)} ended with exit status {proc.returncode}:\n{tail}"
        )
    files.write_json(save / "seconds.json", {"seconds": seconds, "command": cmd})
    return seconds


def finished(data_dir: Path, cell, noise, seed, save: Path) -> Run | None:
    """The run finished earlier in `save` (--work), judged; None when there is none."""
    record = save / "seconds.json"
    if not record.is_file():
        return None
    return judged(data_dir, cell, noise, seed, save, json.loads(record.read_text())["seconds"])


def cells_in(out: Path, noises: list[float], genes: tuple) -> list[str]:
    """The generated cells in `out`: made there, or the ones made earlier (--work) when they
    were made with the same noise values and sizes (recorded in out/cells.json)."""
    made = {"noise": noises, "genes": list(genes), "data_seed": DATA_SEED}
    record = out / "cells.json"
    if record.is_file():
        if json.loads(record.read_text()) != made:
            raise RuntimeError(f"{out}: its cells were made with other settings ({record})")
        return [f"S{i + 1:03d}" for i in range(len(noises))]
    shutil.rmtree(out, ignore_errors=True)
    names = make_cells(out, noises, genes)
    files.write_json(record, made)
    return names


def judged(data_dir: Path, cell, noise, seed, save: Path, seconds: float) -> Run:
    """The run main.py left in `save`, judged."""
    test_auc, tested_epoch, attempts = read_result(save / "output.csv", cell)
    log = read_log(save / cell / "log.csv")
    verdict = judge(log, test_auc, restarts.majority_rate(valid_labels(data_dir / cell)))
    return Run(
        cell,
        noise,
        seed,
        len(log["epoch"]),
        test_auc,
        tested_epoch,
        **verdict,
        seconds=seconds,
        attempts=attempts,
    )


# ---------------------------------------------------------------------------------------------
# --reuse: the plain runs that restarts leave as they were


def restart_trigger(data_dir: Path, cell: str, save: Path, epochs: int) -> str | None:
    """Why main.py with restarts would not repeat the plain run kept in `save` (a run of the
    plain recipe: no --restarts, or --restarts 0), or None when it would, bit for bit.

    The guard (restarts.failure, called after every epoch) only reads the logs and stops a
    training the first time it fires; a run it never stops trains exactly as without it. So
    the plain run's log says what the guard would have done: it is replayed epoch by epoch,
    with the validation split's majority-class rate, as the callback sees it. A diverged
    epoch (NaN or infinite loss) restarts too."""
    recorded = json.loads((save / "args.json").read_text())
    if recorded.get("restarts"):
        raise RuntimeError(f"{save}: ran with --restarts {recorded['restarts']}, not plain")
    labels = valid_labels(data_dir / cell)
    if restarts.guard_applies(labels):
        return None
    log = read_log(save / cell / "log.csv")
    if not all(math.isfinite(v) for v in log["loss"] + log["val_loss"]):
        return "diverged"
    majority = restarts.majority_rate(labels)
    for e in range(1, len(log["epoch"]) + 1):
        failure = restarts.failure(log["val_auc"][:e], log["val_accuracy"][:e], majority, epochs)
        if failure is not None:
            return f"{failure.kind} at epoch {failure.epoch}"
    return None


def same_files(a: Path, b: Path, cell: str) -> list[str]:
    """The training's files that differ between two runs of one cell."""
    names = [f"{cell}/log.csv", f"{cell}/predictions.csv"]
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]


# ---------------------------------------------------------------------------------------------
# The report


def f3(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def epoch_text(epoch: int | None) -> str:
    return "never" if epoch is None else str(epoch)


def yes(flag: bool) -> str:
    return "**yes**" if flag else "no"


def cell_summary(runs: list[Run]) -> dict:
    """Over one cell's runs: test AUC mean, min, max, std (n - 1), the counts, and the mean of
    the runs that did not stall."""
    aucs = [r.test_auc for r in runs if not math.isnan(r.test_auc)]
    kept = [r.test_auc for r in runs if not r.stalled and not math.isnan(r.test_auc)]
    return {
        "n": len(runs),
        "mean": statistics.fmean(aucs) if aucs else math.nan,
        "min": min(aucs, default=math.nan),
        "max": max(aucs, default=math.nan),
        "std": statistics.stdev(aucs) if len(aucs) > 1 else math.nan,
        "stalled": sum(r.stalled for r in runs),
        "collapsed": sum(r.collapsed for r in runs),
        "at_chance": sum(r.at_chance for r in runs),
        "mean_not_stalled": statistics.fmean(kept) if kept else math.nan,
    }


def definitions() -> list[str]:
    return [
        f"- **learned at**: the first epoch (counted from 1, as best_epoch) with val_auc >= "
        f"{LEARNED}, or never.",
        f"- **stalled**: the best val_auc over all epochs is below {LEARNED} (low AUC), or "
        f"val_accuracy is within {MAJORITY_TOL} of the rate of either class of the validation "
        "split in every epoch (one class: the model never beat predicting one class, whatever its "
        "AUC).",
        f"- **collapsed**: at some epoch val_auc is more than {COLLAPSE_DROP} below the best "
        "val_auc of the epochs before it; **collapsed at** is the first such epoch.",
        f"- **at chance**: the tested model (main.py's best epoch by val_accuracy) has test AUC "
        f"below {LEARNED} (or none could be computed).",
        "- **tested epoch**: the epoch main.py tested; **best val AUC (epoch)**: the largest "
        "val_auc and its epoch; **final val AUC**: the last epoch's.",
        "- Per cell: test AUC over the seeds (std with n - 1); **not stalled**: the mean test "
        "AUC of the runs that did not stall. **logistic regression**: scikit-learn's "
        f"LogisticRegression (default settings, max_iter {MAX_ITER}) on the same 505 features, "
        "fit on the train split, AUC on the test split.",
    ]


def report(
    label,
    command,
    mode,
    size,
    noises,
    names,
    baseline,
    runs,
    extra,
    wall,
    loads,
    reuse,
    planned,
    paired=None,
):
    genes = " / ".join(f"{g:,}" for g in size.genes)
    extra_text = f" {shlex.join(extra)}" if extra else ""
    seeds = f"seeds 0 to {size.seeds - 1}" if size.seeds > 1 else "seed 0"
    lines = [
        f"## Stall benchmark: {label}",
        "",
        f"Machine: {bench.machine()}.",
        "",
        f"Command: `{command}` ({mode} mode), {time.strftime('%Y-%m-%d %H:%M')}, {wall:.0f} s "
        f"({wall / 60:.1f} min). Load average (1/5/15 min) at the start {loads[0]}, at the end "
        f"{loads[1]}.",
        "",
        f"Each run is one per-cell experiment end to end in its own process, one after the "
        f"other: `python main.py --data_dir DATA --cells CELL --seed SEED --save_dir RUN "
        f"--epochs {size.epochs}{extra_text}` (otherwise the defaults: the paper's tanh "
        "network, batch 100, Adam at 0.001 decayed 0.9 per epoch, the best epoch by "
        f"val_accuracy tested), {seeds}. Data: {len(names)} generated "
        f"cell{'s' if len(names) > 1 else ''} of {genes} genes (synth.synthesize, seed {DATA_SEED}) that differ only in "
        "`noise`, the standard deviation of the noise between a gene's expression and what "
        "its marks see (larger is harder).",
        "",
        *reuse_text(reuse, runs),
        *(
            [
                f"**Partial**: {len(runs)} of the {planned} planned runs had finished; the "
                "others are left out of every figure below.",
                "",
            ]
            if len(runs) < planned
            else []
        ),
        *(paired_text(label, paired[0], paired[1], runs, names) if paired else []),
        "| cell | noise | logistic regression | runs | CNN test AUC mean | min | max | std | "
        "stalled | collapsed | at chance | mean, not stalled |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    all_runs = cell_summary(runs)
    for name, noise in zip(names, noises):
        s = cell_summary([r for r in runs if r.cell == name])
        auc, converged = baseline[name]
        lines.append(
            f"| {name} | {noise:g} | {f3(auc)}{'' if converged else ' (not converged)'} | "
            f"{s['n']} | {f3(s['mean'])} | {f3(s['min'])} | {f3(s['max'])} | {f3(s['std'])} | "
            f"{s['stalled']} | {s['collapsed']} | {s['at_chance']} | "
            f"{f3(s['mean_not_stalled'])} |"
        )
    lines += [
        f"| all | | {f3(statistics.fmean(a for a, _ in baseline.values()))} | {all_runs['n']} | "
        f"{f3(all_runs['mean'])} | {f3(all_runs['min'])} | {f3(all_runs['max'])} | "
        f"{f3(all_runs['std'])} | {all_runs['stalled']} | {all_runs['collapsed']} | "
        f"{all_runs['at_chance']} | {f3(all_runs['mean_not_stalled'])} |",
        "",
        f"{all_runs['stalled']} of {len(runs)} runs stalled, {all_runs['collapsed']} "
        f"collapsed, {all_runs['at_chance']} tested at chance; "
        f"{sum((r.attempts or 1) > 1 for r in runs)} restarted (more than one attempt).",
        "",
        "| cell | noise | seed | test AUC | tested epoch | best val AUC (epoch) | "
        "final val AUC | learned at | stalled (why) | collapsed (at) | at chance | attempts | "
        "seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        collapsed = f"**yes** ({r.collapse_epoch})" if r.collapsed else "no"
        stalled = f"**yes** ({r.stall_reason})" if r.stalled else "no"
        lines.append(
            f"| {r.cell} | {r.noise:g} | {r.seed} | {f3(r.test_auc)} | "
            f"{epoch_text(r.tested_epoch)} | {f3(r.best_val_auc)} "
            f"({epoch_text(r.best_val_auc_epoch)}) | {f3(r.final_val_auc)} | "
            f"{epoch_text(r.learned_epoch)} | {stalled} | {collapsed} | "
            f"{yes(r.at_chance)} | {'' if r.attempts is None else r.attempts} | "
            f"{'reused' if r.reused else f'{r.seconds:.0f}'} |"
        )
    lines += ["", "Definitions (epochs counted from 1; log.csv counts from 0):", ""]
    lines += definitions()
    return lines


def reuse_text(reuse, runs: list[Run]) -> list[str]:
    folder, verified = reuse
    if not folder:
        return []
    reused = sum(r.reused for r in runs)
    checked = f" ({', '.join(verified)})" if verified else ""
    return [
        f'With `--reuse`: {reused} of the {len(runs)} runs ("reused" below) are the kept '
        "plain-recipe runs of the same cells and seeds, because the restart rule, replayed on "
        "their logs epoch by epoch, never fires on them: main.py would have trained them "
        "bit for bit as they were (the guard only reads the logs). The other "
        f"{len(runs) - reused} were trained with this configuration. {len(verified)} reusable "
        f"run(s){checked} were trained again anyway and gave byte-identical log.csv and "
        "predictions.csv.",
        "",
    ]


def reference_runs(path: Path, label: str) -> dict[tuple[str, int], float]:
    """Test AUC by (cell, seed) of the CSV rows under `label` (empty when there are none)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {
            (r["cell"], int(r["seed"])): number(r["test_auc"])
            for r in csv.DictReader(f)
            if r.get("label") == label
        }


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean of `diffs` and its two-sided 95% Student t confidence interval."""
    from scipy import stats

    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def paired_text(label: str, ref_label: str, ref: dict, runs: list[Run], names) -> list[str]:
    """Each run's test AUC against the run of the same cell and seed under ref_label: per
    cell and over all pairs, both means and spreads and the paired difference with its 95%
    confidence interval."""

    def signed(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{x:+.4f}"

    pairs = [(r.cell, r.test_auc, ref[(r.cell, r.seed)]) for r in runs if (r.cell, r.seed) in ref]
    lines = [
        f'Paired with the runs of "{ref_label}" (in the per-run CSV) of the same cell '
        "and seed, which start from the same initial weights and see the genes in the same "
        "order; the difference is this configuration's test AUC minus the other's, with a "
        "95% Student t interval over the pairs.",
        "",
        f"| cell | pairs | {ref_label}: mean (std) | {label}: mean (std) | mean difference | "
        "95% interval | pairs lower |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in [*names, "all"]:
        chosen = [p for p in pairs if name in ("all", p[0])]
        if not chosen:
            continue
        mine, theirs = [p[1] for p in chosen], [p[2] for p in chosen]
        mean, low, high = interval([a - b for a, b in zip(mine, theirs)])
        spread = [statistics.stdev(v) if len(v) > 1 else math.nan for v in (theirs, mine)]
        lines.append(
            f"| {name} | {len(chosen)} | {f3(statistics.fmean(theirs))} ({f3(spread[0])}) | "
            f"{f3(statistics.fmean(mine))} ({f3(spread[1])}) | {signed(mean)} | "
            f"{signed(low)} to {signed(high)} | {sum(a < b for a, b in zip(mine, theirs))} |"
        )
    unpaired = len(runs) - len(pairs)
    if unpaired:
        lines += ["", f'{unpaired} run(s) have no run of "{ref_label}" to pair with.']
    return lines + [""]


# ---------------------------------------------------------------------------------------------
# Writing the block into RESULTS.md and the rows into the CSV


def markers(label: str) -> tuple[str, str]:
    return f"<!-- stalls.py: {label} begin -->", f"<!-- stalls.py: {label} end -->"


def block_span(text: str, label: str) -> tuple[int, int] | None:
    """Where this label's block (markers included) lies after NOTES_MARK, or None.

    Raises ValueError for a begin marker without its end marker: a hand edit to mend first."""
    begin, end = markers(label)
    notes = text.find(bench.NOTES_MARK)
    start = text.find(begin, max(notes, 0)) if notes >= 0 else -1
    if start < 0:
        return None
    stop = text.find(end, start)
    if stop < 0:
        raise ValueError(f"it has {begin!r} but no {end!r} after it: mend or remove the block")
    return start, stop + len(end)


def put_block(text: str, label: str, lines: list[str]) -> str:
    """`text` with this label's block replaced, or appended after NOTES_MARK (added if
    missing); everything else is kept as it is."""
    begin, end = markers(label)
    block = "\n".join([begin, *lines, end])
    span = block_span(text, label)
    if span:
        return text[: span[0]] + block + text[span[1] :]
    if bench.NOTES_MARK not in text:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + bench.NOTES_MARK + "\n"
    return text.rstrip("\n") + "\n\n" + block + "\n"


def csv_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}-stalls.csv")


def write_csv(path: Path, label: str, runs: list[Run], extra: list[str]) -> None:
    """The runs' rows, replacing those of the same label; other labels' rows are kept."""
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("label") != label]
    for r in runs:
        row = dataclasses.asdict(r)
        row.update(label=label, extra=shlex.join(extra), seconds=f"{r.seconds:.1f}")
        row["reused"] = "yes" if r.reused else ""
        for k in ("test_auc", "best_val_auc", "final_val_auc"):
            row[k] = f"{row[k]:.6f}"
        rows.append({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    files.atomic_write(path, write)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="2 cells x 2 seeds x 3 epochs, 600 genes per split: checks the benchmark end to "
        "end in a few minutes [Default: full mode, 4 cells x 6 seeds x 20 epochs, full size]",
    )
    mode.add_argument(
        "--tiny",
        action="store_true",
        help="1 cell x 1 seed x 1 epoch, 60 genes per split: seconds of work, for the tests; "
        "its figures mean nothing [Default: full mode]",
    )
    cells = parser.add_mutually_exclusive_group()
    cells.add_argument(
        "--cells",
        type=int,
        default=None,
        help=f"number of cells, noise evenly spaced from {NOISE_RANGE[0]} to {NOISE_RANGE[1]} "
        "[Default: the mode's, 4 in full mode]",
    )
    cells.add_argument(
        "--noise",
        default=None,
        help="the cells' noise values, comma-separated, one cell each [Default: from --cells]",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds 0 .. N-1 per cell [Default: the mode's]"
    )
    parser.add_argument(
        "--first_seeds",
        default=None,
        help="comma-separated seeds (of 0 .. N-1) to run before the others, e.g. 3,4,5: the "
        "order only, the report is the same; with --work, a benchmark stopped early has "
        "covered these seeds [Default: seed order]",
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="main.py --epochs [Default: the mode's]"
    )
    parser.add_argument(
        "--genes",
        default=None,
        help="genes per split: N, or TRAIN,VALID,TEST [Default: the mode's, "
        "6601,6601,6600 in full mode]",
    )
    parser.add_argument(
        "--extra",
        default="",
        help="more main.py flags for every run, passed through untouched, e.g. --extra "
        "'--mixed_precision bfloat16' (a single flag: --extra=--jit) [Default: none]",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="names the configuration in the report; a re-run with the same label replaces "
        "its block [Default: 'plain recipe', or 'with EXTRA'; ' (quick)' or ' (tiny)' added "
        "outside full mode]",
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "bench" / "RESULTS.md"),
        help="Markdown file to write the block into; the per-run CSV goes next to it as "
        "<stem>-stalls.csv [Default: bench/RESULTS.md]",
    )
    parser.add_argument(
        "--tmp",
        default=None,
        help="folder for the generated data and run folders, removed afterwards "
        "[Default: the system's temporary folder]",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the generated data and run folders (their path is printed) [Default: off]",
    )
    parser.add_argument(
        "--work",
        default=None,
        help="a folder for the generated data and run folders that is kept and resumed: a "
        "run finished there earlier (by the same command) is judged from its files, not "
        "trained again; an interrupted one is redone [Default: a temporary folder, removed]",
    )
    parser.add_argument(
        "--report_only",
        action="store_true",
        help="with --work: write the report from the runs finished there so far and train "
        "nothing (the runs left out are listed) [Default: off]",
    )
    parser.add_argument(
        "--reuse",
        default=None,
        help="a folder kept (--keep) by a plain-recipe benchmark of the same sizing: its data "
        "is used, and each of its runs that restarts would leave as it was (the guard never "
        "fires on its log) is taken as this configuration's run instead of being trained "
        "again; only the others are run [Default: none, every run is trained]",
    )
    parser.add_argument(
        "--paired",
        default=None,
        metavar="LABEL",
        help="compare each run with the run of the same cell and seed under LABEL in the "
        "CSV (e.g. --paired 'restarts (default)' for a --mixed_precision benchmark): per "
        "cell and overall, the paired difference of test AUC with a 95%% confidence "
        "interval [Default: none]",
    )
    parser.add_argument(
        "--verify",
        type=int,
        default=1,
        help="with --reuse: train this many of the reused runs again anyway, and stop with an "
        "error unless their log.csv and predictions.csv are byte for byte the kept ones "
        "[Default: 1]",
    )
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else "tiny" if args.tiny else "full"
    size = dataclasses.replace(MODES[args.mode])
    for name in ("cells", "seeds", "epochs"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be at least 1")
            setattr(size, name, value)
    if args.genes is not None:
        try:
            genes = tuple(int(g) for g in args.genes.split(","))
        except ValueError:
            parser.error(f"--genes {args.genes!r}: not N or TRAIN,VALID,TEST")
        if len(genes) == 1:
            genes *= 3
        if len(genes) != 3 or min(genes) < 2:
            parser.error("--genes must be N or TRAIN,VALID,TEST, each at least 2")
        size.genes = genes
    if args.noise is not None:
        try:
            args.noises = [float(v) for v in args.noise.split(",")]
        except ValueError:
            parser.error(f"--noise {args.noise!r}: not comma-separated numbers")
        if not all(math.isfinite(v) and v >= 0 for v in args.noises):
            parser.error("--noise values must be finite and >= 0")
        size.cells = len(args.noises)
    else:
        args.noises = noise_levels(size.cells)
    try:
        args.extra_flags = shlex.split(args.extra)
    except ValueError as e:
        parser.error(f"--extra {args.extra!r}: {e}")
    for token in args.extra_flags:
        name = token.split("=", 1)[0]
        # main.py takes unambiguous abbreviations too: --epoch would be --epochs.
        if len(name) > 2 and any(flag.startswith(name) for flag in HARNESS_FLAGS):
            parser.error(
                f"--extra may not set {name}: the benchmark sets {', '.join(HARNESS_FLAGS)}"
            )
    if args.label is None:
        args.label = f"with {args.extra.strip()}" if args.extra_flags else "plain recipe"
        if args.mode != "full":
            args.label += f" ({args.mode})"
    if not args.label.strip() or "\n" in args.label:
        parser.error("--label must be one non-empty line")
    if "-->" in args.label or "<!--" in args.label:
        parser.error("--label may not hold '-->' or '<!--' (it goes into an HTML comment)")
    args.seed_order = list(range(size.seeds))
    if args.first_seeds is not None:
        try:
            first = [int(v) for v in args.first_seeds.split(",")]
        except ValueError:
            parser.error(f"--first_seeds {args.first_seeds!r}: not comma-separated seeds")
        if len(set(first)) != len(first) or not all(0 <= v < size.seeds for v in first):
            parser.error(f"--first_seeds must be distinct seeds from 0 to {size.seeds - 1}")
        args.seed_order = first + [s for s in args.seed_order if s not in first]
    if args.report_only and not args.work:
        parser.error("--report_only needs --work, the folder whose finished runs it reports")
    if args.verify < 0:
        parser.error("--verify must be 0 or more")
    if args.reuse and not all((Path(args.reuse) / d).is_dir() for d in ("data", "runs")):
        parser.error(f"--reuse {args.reuse}: not a folder kept by --keep (no data/ and runs/)")
    args.size = size
    return args, parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, parser = parse_args(argv)
    size, out = args.size, Path(args.out)
    # A broken file is found now, not after an hour of runs.
    if out.is_dir():
        parser.error(f"--out {out}: is a folder")
    if out.exists():
        try:
            block_span(out.read_text(), args.label)
        except ValueError as e:
            parser.error(f"--out {out}: {e}")
    # The runs to pair with, read once, now: a wrong label is found before any training.
    paired = (args.paired, reference_runs(csv_path(out), args.paired)) if args.paired else None
    if paired and not paired[1]:
        parser.error(f"--paired {args.paired!r}: {csv_path(out)} has no runs of that label")
    command = shlex.join(["python", "bench/stalls.py", *argv])
    started, load_start = time.perf_counter(), bench.loadavg()
    if args.work:
        tmp = Path(args.work)
        tmp.mkdir(parents=True, exist_ok=True)
    else:
        tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="stalls-"))
    verified = []
    try:
        if args.reuse:
            data_dir = Path(args.reuse) / "data"
            names = [f"S{i + 1:03d}" for i in range(len(args.noises))]
        else:
            data_dir = tmp / "data"
            names = cells_in(data_dir, args.noises, size.genes)
        genes = " / ".join(f"{g:,}" for g in size.genes)
        print(
            f"{args.label}: {len(names)} cells of {genes} genes (noise "
            f"{', '.join(f'{n:g}' for n in args.noises)}) x {size.seeds} seeds x "
            f"{size.epochs} epochs = {len(names) * size.seeds} runs",
            flush=True,
        )
        baseline = {}
        for name, noise in zip(names, args.noises):
            baseline[name] = logistic_auc(data_dir / name)
            print(f"{name} (noise {noise:g}): logistic regression test AUC {baseline[name][0]:.3f}")
        # Seed by seed, every cell: a benchmark stopped early has covered every cell alike.
        plan = []  # (cell, noise, seed, save, kept plain run or None, action)
        for seed in args.seed_order:
            for name, noise in zip(names, args.noises):
                save = tmp / "runs" / f"{name}-seed{seed}"
                kept = Path(args.reuse) / "runs" / save.name if args.reuse else None
                if kept and not (kept / "seconds.json").is_file():
                    print(f"{name} seed {seed}: no finished plain run in {kept}: left out")
                    continue
                trigger = kept and restart_trigger(data_dir, name, kept, size.epochs)
                if kept and not trigger:
                    verify = sum(p[-1] == "verify" for p in plan) < args.verify
                    action = "verify" if verify else "reuse"
                else:
                    if kept:
                        print(f"{name} seed {seed}: the plain run {trigger}: trained", flush=True)
                    action = "train"
                plan.append((name, noise, seed, save, kept, action))

        def execute(item):
            name, noise, seed, save, kept, action = item
            if action == "reuse":
                r = judged(data_dir, name, noise, seed, kept, math.nan)
                r.reused = True
                return r
            r = finished(data_dir, name, noise, seed, save)
            if r is None and args.report_only:
                return None
            if r is None:
                r = run_one(data_dir, name, noise, seed, save, size.epochs, args.extra_flags)
            if action == "verify":
                differ = same_files(kept, save, name)
                if differ:
                    raise RuntimeError(
                        f"{save}: not the plain run {kept} although no restart happened: "
                        f"{', '.join(differ)} differ"
                    )
            return r

        # One run at a time: main.py's TensorFlow uses every core, and two runs at once on 2
        # cores went at about 50 s per full-size epoch each (their thread pools fight).
        runs = []
        for item, r in zip(plan, map(execute, plan)):
            name, noise, seed, _, _, action = item
            if r is None:
                print(f"{name} seed {seed}: not finished in {tmp}: left out", flush=True)
                continue
            if action == "verify":
                verified.append(f"{name} seed {seed}")
            runs.append(r)
            verdicts = [f"STALLED ({r.stall_reason})"] if r.stalled else []
            verdicts += [f"COLLAPSED at epoch {r.collapse_epoch}"] if r.collapsed else []
            print(
                f"run {len(runs)}/{len(plan)}: {name} (noise {noise:g}) seed "
                f"{seed}: test AUC {f3(r.test_auc)} (epoch {epoch_text(r.tested_epoch)}), "
                f"best val AUC {f3(r.best_val_auc)}, final {f3(r.final_val_auc)}, learned "
                f"at {epoch_text(r.learned_epoch)}"
                f"{''.join(', ' + v for v in verdicts)}, "
                f"{r.attempts or 1} attempt(s), "
                f"{'reused' if r.reused else f'{r.seconds:.0f} s'}",
                flush=True,
            )
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep or args.work:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    planned = len(names) * size.seeds
    runs.sort(key=lambda r: (names.index(r.cell), r.seed))
    lines = report(
        args.label,
        command,
        args.mode,
        size,
        args.noises,
        names,
        baseline,
        runs,
        args.extra_flags,
        wall,
        (load_start, bench.loadavg()),
        (args.reuse, verified),
        planned,
        paired,
    )
    print("\n" + "\n".join(lines) + "\n")
    old = out.read_text() if out.is_file() else ""
    files.write_text(out, put_block(old, args.label, lines))
    write_csv(csv_path(out), args.label, runs, args.extra_flags)
    print(f"wrote {out} and {csv_path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
