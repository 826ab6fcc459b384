"""Wide stall benchmark (issue 27): the default recipe against --recipe paper on cells unlike
the project's own generator's, in float32 and bfloat16, written into bench/RESULTS.md.

    python bench/wide_stalls.py --work W --precisions bfloat16          # one part: 72 runs
    python bench/wide_stalls.py --work W --precisions float32           # the other part
    python bench/wide_stalls.py --work W --report                       # the block from all
    python bench/wide_stalls.py --work W --seeds 100-105 --label "fresh seeds"   # confirmation
    python bench/wide_stalls.py --tiny                                  # for the tests only

The cells come from bench/other_cells.py (a generator independent of synth.synthesize; WIDE:
reads in nearly every bin, very sparse, weak, ordinary, and two of 2,000 genes a split). Each
run is the per-cell experiment end to end in its own process, with the defaults but for:

    python main.py --data_dir DATA --cells CELL --seed SEED --save_dir RUN --epochs 20 \\
        --recipe {default,paper} --mixed_precision {bfloat16,off}

(restarts left at their default). With --jobs N, N runs go at a time, TensorFlow and oneDNN
in each at the cores / N threads (TF_NUM_INTRAOP_THREADS, TF_NUM_INTEROP_THREADS,
OMP_NUM_THREADS): on 2 cores two runs of 1 thread finish more runs an hour than one of 2 (the
engine benchmark's finding). A run's thread count changes only the order of its sums, so its
numbers are other draws of the same recipe, not a different recipe.

Runs finished earlier are kept: those in --work (their seconds.json) and those recorded in the
per-run CSV (bench/RESULTS-wide.csv, written after every run) under the same --label, so a part
interrupted or split over sessions and machines goes on where it stopped, and --report writes
the block from whatever has finished. Next to the runs, a logistic regression on the same 505
features (bench/stalls.py's) says how learnable each cell is.

Per run, from output.csv, attempts.csv and the logs (epochs counted from 1):

- failed attempts: attempts that stalled, collapsed, gave one class or diverged (restarts.py);
- false verdicts: failed attempts whose val AUC in the epoch they were judged was at or above
  restarts.LEARNED (the network ranked the genes when it was stopped);
- stalled final: the tested model's val AUC at its tested epoch is below restarts.LEARNED;
  untrained final: the tested model gave one class on the validation split (val_accuracy
  within restarts.MAJORITY_TOL of either class's rate) at its tested epoch;
- not sound: the results table's sound column is False (every attempt failed).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402
import files  # noqa: E402
import other_cells  # noqa: E402
import restarts  # noqa: E402
import stalls  # noqa: E402

SCRIPT = "wide_stalls.py"
PRECISIONS = {"bfloat16": "bfloat16", "float32": "off"}  # name -> --mixed_precision
RECIPES = ("default", "paper")
CSV_COLUMNS = [
    "label",
    "precision",
    "recipe",
    "cell",
    "seed",
    "test_auc",
    "sound",
    "attempts",
    "failed_attempts",
    "false_verdicts",
    "tested_val_auc",
    "stalled_final",
    "untrained_final",
    "seconds",
]


@dataclasses.dataclass
class Result:
    precision: str
    recipe: str
    cell: str
    seed: int
    test_auc: float
    sound: bool | None
    attempts: int
    failed_attempts: int
    false_verdicts: int
    tested_val_auc: float
    stalled_final: bool
    untrained_final: bool
    seconds: float


def seeds_of(text: str) -> list[int]:
    """ "0-5" or "0,3,7" as a list of seeds."""
    if "-" in text:
        low, high = (int(v) for v in text.split("-"))
        return list(range(low, high + 1))
    return [int(v) for v in text.split(",")]


def make_data(work: Path, specs) -> Path:
    """The cells in work/data, made once (work/data/cells.json records their specs)."""
    out = work / "data"
    made = [dataclasses.asdict(s) for s in specs]
    record = out / "cells.json"
    if record.is_file() and json.loads(record.read_text()) == json.loads(json.dumps(made)):
        return out
    shutil.rmtree(out, ignore_errors=True)
    for spec in specs:
        other_cells.make(spec, out)
    files.write_json(record, made)
    return out


def baselines(work: Path, data_dir: Path, specs) -> dict[str, float]:
    """Each cell's logistic-regression test AUC, computed once (work/baselines.json)."""
    path = work / "baselines.json"
    found = json.loads(path.read_text()) if path.is_file() else {}
    for spec in specs:
        if spec.name not in found:
            found[spec.name] = stalls.logistic_auc(data_dir / spec.name)[0]
            files.write_json(path, found)
    return found


def run_folder(work: Path, precision, recipe, cell, seed) -> Path:
    return work / "runs" / f"{precision}-{recipe}" / f"{cell}-seed{seed}"


def train(data_dir, save, precision, recipe, cell, seed, epochs, extra, threads=None) -> float:
    """One run in its own process; with `threads`, TensorFlow (and oneDNN) in it use that many
    threads (--jobs: several runs at a time share the cores)."""
    cmd = stalls.main_command(data_dir, cell, seed, save, epochs, extra)
    cmd += ["--recipe", recipe, "--mixed_precision", PRECISIONS[precision]]
    env = None
    if threads is not None:
        names = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
        env = {**os.environ, **dict.fromkeys(names, str(threads))}
    return stalls.run_main(cmd, save, env)


def train_and_judge(data_dir, save, precision, recipe, cell, seed, epochs, threads) -> Result:
    seconds = train(data_dir, save, precision, recipe, cell, seed, epochs, [], threads)
    return judge(data_dir, save, precision, recipe, cell, seed, seconds)


def judge(data_dir: Path, save: Path, precision, recipe, cell, seed, seconds) -> Result:
    """A finished run, read back (see the module docstring for the definitions)."""
    with open(save / "output.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["cell"] == cell)
    labels = stalls.valid_labels(data_dir / cell)
    majority = restarts.majority_rate(labels)
    folder = save / cell
    log = stalls.read_log(folder / "log.csv")
    tested = int(float(row["best_epoch"]))
    tested_auc = log["val_auc"][tested - 1]
    tested_acc = log["val_accuracy"][tested - 1]
    failed = false = 0
    table = folder / "attempts.csv"
    if table.is_file():
        with open(table, newline="") as f:
            for a in csv.DictReader(f):
                if a["outcome"] in ("learned", "trained on"):
                    continue
                failed += 1
                judged = stalls.read_log(folder / a["folder"] / "log.csv")["val_auc"][-1]
                false += judged >= restarts.LEARNED
    return Result(
        precision,
        recipe,
        cell,
        seed,
        stalls.number(row["auc"]),
        {"True": True, "False": False}.get(row.get("sound", "")),
        int(float(row["attempts"])),
        failed,
        false,
        tested_auc,
        not tested_auc >= restarts.LEARNED,
        bool(restarts.one_class([tested_acc], majority)[0]),
        seconds,
    )


def finished(data_dir, save, precision, recipe, cell, seed, recorded) -> Result | None:
    """The run finished earlier: in its run folder (seconds.json), or, when that folder is gone
    (a part run in another session, on another machine), as recorded in the per-run CSV under
    the same label; None when it has not run."""
    record = save / "seconds.json"
    if record.is_file():
        seconds = json.loads(record.read_text())["seconds"]
        return judge(data_dir, save, precision, recipe, cell, seed, seconds)
    return recorded.get((precision, recipe, cell, seed))


def recorded_runs(path: Path, label: str) -> dict[tuple, Result]:
    """The per-run CSV's rows of `label`, as Results by (precision, recipe, cell, seed)."""
    if not path.is_file():
        return {}
    found = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] != label:
                continue
            values = {}
            for field in dataclasses.fields(Result):
                text = row[field.name]
                if field.name in ("precision", "recipe", "cell"):
                    values[field.name] = text
                elif field.name == "sound":
                    values[field.name] = {"True": True, "False": False}.get(text)
                elif field.name in ("stalled_final", "untrained_final"):
                    values[field.name] = text == "True"
                elif field.name in ("seed", "attempts", "failed_attempts", "false_verdicts"):
                    values[field.name] = int(text)
                else:
                    values[field.name] = float(text)
            r = Result(**values)
            found[(r.precision, r.recipe, r.cell, r.seed)] = r
    return found


# ---------------------------------------------------------------------------------------------
# The report


def signed(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.4f}"


def summary_table(results: list[Result], specs, base: dict) -> list[str]:
    lines = [
        "| precision | recipe | cell | what | LR AUC | runs | failed attempts | false verdicts | "
        "stalled / untrained final | not sound | test AUC mean (std) | min | mean - LR |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({(r.precision, r.recipe) for r in results})
    for precision, recipe in groups:
        mine = [r for r in results if (r.precision, r.recipe) == (precision, recipe)]
        for spec in [*specs, None]:
            rs = [r for r in mine if spec is None or r.cell == spec.name]
            if not rs:
                continue
            aucs = [r.test_auc for r in rs]
            lr = (
                base[spec.name] if spec else statistics.fmean(base[c] for c in {r.cell for r in rs})
            )
            gap = statistics.fmean(r.test_auc - base[r.cell] for r in rs)
            std = statistics.stdev(aucs) if len(aucs) > 1 else math.nan
            lines.append(
                f"| {precision} | {recipe} | {spec.name if spec else '**all**'} | "
                f"{spec.what if spec else ''} | {stalls.f3(lr)} | {len(rs)} | "
                f"{sum(r.failed_attempts for r in rs)} | {sum(r.false_verdicts for r in rs)} | "
                f"{sum(r.stalled_final for r in rs)} / {sum(r.untrained_final for r in rs)} | "
                f"{sum(r.sound is False for r in rs)} | {stalls.f3(statistics.fmean(aucs))} "
                f"({stalls.f3(std)}) | {stalls.f3(min(aucs))} | {signed(gap)} |"
            )
    return lines


def pair_columns(pairs: list[tuple[float, float]]) -> tuple[str, float]:
    """A paired table's last columns for (value, reference) pairs: "pairs | reference mean |
    mean | mean difference | 95% interval |"; and the interval's lower end."""
    mean, low, high = stalls.interval([a - b for a, b in pairs])
    columns = (
        f"{len(pairs)} | {stalls.f3(statistics.fmean(b for _, b in pairs))} | "
        f"{stalls.f3(statistics.fmean(a for a, _ in pairs))} | {signed(mean)} | "
        f"{signed(low)} to {signed(high)} |"
    )
    return columns, low


def pair_rows(keyed: list[tuple[str, tuple[float, float]]], specs) -> list[tuple[str, list]]:
    """A paired table's rows from (cell, pair) items: (cell name, its pairs) for each cell of
    specs that has pairs, then ("**all**", every pair) last; rows without pairs left out."""
    rows = [(spec.name, [p for c, p in keyed if c == spec.name]) for spec in specs]
    rows.append(("**all**", [p for _, p in keyed]))
    return [(label, pairs) for label, pairs in rows if pairs]


def paired_table(results: list[Result], specs) -> list[str]:
    """Default against paper, run by run (same precision, cell and seed): the paper's runs
    that ended sound only, as the issue's bar asks."""
    by = {(r.precision, r.recipe, r.cell, r.seed): r for r in results}
    lines = [
        "| precision | cell | pairs (paper sound) | paper mean | default mean | mean difference | "
        "95% interval |",
        "|---|---|---|---|---|---|---|",
    ]
    for precision in sorted({r.precision for r in results}):
        keyed = [
            (c, (by[(precision, "default", c, s)].test_auc, p.test_auc))
            for (pr, rc, c, s), p in by.items()
            if pr == precision
            and rc == "paper"
            and p.sound is not False
            and (precision, "default", c, s) in by
        ]
        for label, pairs in pair_rows(keyed, specs):
            lines.append(f"| {precision} | {label} | {pair_columns(pairs)[0]}")
    return lines


# Whether bfloat16 stays the default on AMX, stated before the float32 part ran (bench/RESULTS.md,
# the wide benchmark's plan): the default recipe's test AUC in bfloat16 minus float32, paired by
# cell and seed over all 36 pairs, has a 95% interval whose lower end is above -BF16_BAR.
BF16_BAR = 0.003
PAIRS_PER_PRECISION = 36


def precision_table(results: list[Result], specs) -> list[str]:
    """The default recipe in bfloat16 against float32, run by run (same cell and seed), per
    cell and over all, and the verdict on bfloat16 as the default on AMX (BF16_BAR)."""
    by = {(r.precision, r.cell, r.seed): r for r in results if r.recipe == "default"}
    lines = [
        "| cell | pairs | float32 mean | bfloat16 mean | mean difference | 95% interval |",
        "|---|---|---|---|---|---|",
    ]
    keyed = [
        (c, (r.test_auc, by[("float32", c, s)].test_auc))
        for (pr, c, s), r in by.items()
        if pr == "bfloat16" and ("float32", c, s) in by
    ]
    rows = [(label, *pair_columns(pairs)) for label, pairs in pair_rows(keyed, specs)]
    lines += [f"| {label} | {columns}" for label, columns, _ in rows]
    low = rows[-1][2] if rows else math.nan  # the all-cells row, last, decides
    held = not math.isnan(low) and low > -BF16_BAR
    verdict = (
        ("stays the default on AMX" if held else "does **not** stay the default on AMX")
        if len(keyed) >= PAIRS_PER_PRECISION
        else f"is not decided yet ({len(keyed)} of {PAIRS_PER_PRECISION} pairs)"
    )
    return [
        *lines,
        "",
        f"Criterion stated before the float32 part: bfloat16 stays the default on AMX if the "
        f"lower end of the 95% interval over all {PAIRS_PER_PRECISION} pairs is above "
        f"-{BF16_BAR}. bfloat16 **{verdict}**.",
    ]


def report(label, command, results, specs, base, planned, wall) -> list[str]:
    lines = [
        f"## Stall benchmark, wide cells: {label}",
        "",
        f"Machine: {bench.machine()}.",
        "",
        f"Last command: `{command}`, {time.strftime('%Y-%m-%d %H:%M')} ({planned} runs asked "
        f"for, {wall / 60:.0f} min of training in this part); the tables hold every run of "
        f"this label so far: {len(results)}, the per-run rows in RESULTS-wide.csv. The seconds "
        "there are wall-clock times, some taken beside other work: not speed measurements.",
        "",
        "Each run: `python main.py --data_dir DATA --cells CELL --seed SEED --save_dir RUN "
        "--epochs 20 --recipe RECIPE --mixed_precision {bfloat16,off}`, otherwise the "
        f"defaults (--restarts {restarts.DEFAULT_RESTARTS}). Cells: bench/other_cells.py "
        "(a second generator, unlike synth.synthesize). LR AUC: a logistic regression on the "
        "same 505 features. Definitions: bench/wide_stalls.py's docstring.",
        "",
        *summary_table(results, specs, base),
        "",
    ]
    if {r.recipe for r in results} == {"paper", "default"}:
        lines += [
            "Paired (same precision, cell and seed; the paper recipe's sound runs), default "
            "minus paper test AUC, with a 95% Student t interval:",
            "",
            *paired_table(results, specs),
        ]
        if {r.precision for r in results if r.recipe == "default"} == {"bfloat16", "float32"}:
            lines += [
                "",
                "The default recipe, bfloat16 minus float32 test AUC, paired by cell and seed, "
                "with a 95% Student t interval:",
                "",
                *precision_table(results, specs),
            ]
    else:  # the default alone: the confirmation on fresh seeds
        runs = [sum(r.cell == spec.name for r in results) for spec in specs]
        lines += confirmation(results, specs, base, min(runs) >= CONFIRMATION_SEEDS)
    return lines


# The confirmation's margin and seeds per cell, stated before its runs (bench/RESULTS.md, the
# wide benchmark's plan: seeds 100-105).
MARGIN = 0.005
CONFIRMATION_SEEDS = 6


def confirmation(results: list[Result], specs, base: dict, complete: bool) -> list[str]:
    """The confirmation's two criteria, as stated before its runs: (a) no final model stalled
    or untrained and no row not sound, (b) every cell's mean test AUC at least its logistic
    regression's minus MARGIN; the verdict, or where it stands while runs are missing."""
    bad = [r for r in results if r.stalled_final or r.untrained_final or r.sound is not True]
    below = []
    for spec in specs:
        aucs = [r.test_auc for r in results if r.cell == spec.name]
        if aucs and statistics.fmean(aucs) < base[spec.name] - MARGIN:
            below.append(f"{spec.name} ({stalls.f3(statistics.fmean(aucs))})")
    holds = not bad and not below
    verdict = (
        ("passes" if holds else "fails")
        if complete
        else ("holds so far" if holds else "fails already")
    )
    return [
        f"Criteria stated in advance: (a) stalled, untrained or not-sound final models: "
        f"{len(bad)}; (b) cells whose mean test AUC is below their logistic regression's "
        f"minus {MARGIN}: {', '.join(below) if below else 'none'}. The confirmation "
        f"**{verdict}**" + ("." if complete else f" ({len(results)} runs finished)."),
    ]


def write_csv(path: Path, label: str, results: list[Result]) -> None:
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["label"] != label]
    rows += [{"label": label, **dataclasses.asdict(r)} for r in results]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            w.writeheader()
            w.writerows(rows)

    files.atomic_write(path, write)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", help="folder of the data and runs, kept between parts")
    p.add_argument("--precisions", default="bfloat16,float32")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--seeds", default="0-5", help='"0-5" or "0,3,7"')
    p.add_argument("--cells", default=",".join(s.name for s in other_cells.WIDE))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--label", default="default against paper")
    p.add_argument("--report", action="store_true", help="train nothing: report what finished")
    p.add_argument(
        "--jobs", type=int, default=1, help="runs at a time, each with its share of the cores"
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    p.add_argument("--tiny", action="store_true", help="1 small cell, 1 seed, 1 epoch: tests")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    specs = [s for s in other_cells.WIDE if s.name in args.cells.split(",")]
    if args.tiny:
        specs = [dataclasses.replace(other_cells.WIDE[4], genes=(60, 60, 60))]
        args.epochs, args.seeds, args.precisions = 1, "0", "float32"
    temp = None
    if not args.work:
        temp = tempfile.mkdtemp(prefix="wide-stalls-")
        args.work = temp
    work = Path(args.work)
    data_dir = make_data(work, specs)
    base = baselines(work, data_dir, specs)
    combos = [
        (precision, recipe, spec.name, seed)
        for precision in args.precisions.split(",")
        for seed in seeds_of(args.seeds)
        for spec in specs
        for recipe in args.recipes.split(",")  # pairs finish together: a part may stop early
    ]
    out = Path(args.out)
    table = out.with_name(f"{out.stem}-wide.csv")
    recorded = recorded_runs(table, args.label)
    results, wall, todo = [], 0.0, []
    number = {combo: i for i, combo in enumerate(combos, 1)}

    def say(combo, done):
        results.append(done)
        precision, recipe, cell, seed = combo
        print(
            f"[{number[combo]}/{len(combos)}] {precision} {recipe} {cell} seed {seed}: test "
            f"AUC {done.test_auc:.3f}, attempts {done.attempts}, sound {done.sound}, "
            f"{done.seconds:.0f}s",
            flush=True,
        )

    for combo in combos:
        done = finished(data_dir, run_folder(work, *combo), *combo, recorded)
        if done is not None:
            say(combo, done)
        elif not args.report:
            todo.append(combo)
    # --jobs runs at a time, the cores shared out between them; each run's row is recorded as
    # it finishes, so a stopped part keeps it.
    threads = max(1, os.cpu_count() // args.jobs) if args.jobs > 1 else None
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        running = {
            pool.submit(
                train_and_judge, data_dir, run_folder(work, *combo), *combo, args.epochs, threads
            ): combo
            for combo in todo
        }
        try:
            for future in concurrent.futures.as_completed(running):
                combo, done = running[future], future.result()
                wall += done.seconds
                recorded[combo] = done
                write_csv(table, args.label, list(recorded.values()))
                say(combo, done)
        except BaseException:  # a run failed: the runs not yet started are not started
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    # The report covers every run of this label: this part's and the parts before it.
    for r in results:
        recorded[(r.precision, r.recipe, r.cell, r.seed)] = r
    everything = sorted(recorded.values(), key=lambda r: (r.precision, r.seed, r.cell, r.recipe))
    command = "python bench/wide_stalls.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = report(args.label, command.strip(), everything, specs, base, len(combos), wall)
    bench.write_block(out, SCRIPT, args.label, lines)
    write_csv(table, args.label, everything)
    if temp:
        shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
