"""The mixed model in float32 and in bfloat16 (issue 17): `main.py --mix` trained in both
precisions from the same seeds, its test AUC on each cell paired, written into bench/RESULTS.md.

    python bench/mixed_precision.py            # 4 cells x 1,500 genes per split, 6 seeds, 20
                                               # epochs: 12 runs, about 35 minutes on 2 cores
    python bench/mixed_precision.py --work W   # keeps the data and runs, resumes where it stopped
    python bench/mixed_precision.py --tiny     # 2 cells x 40 genes, 2 seeds, 1 epoch: for the
                                               # tests only, its figures mean nothing

The cells are the stall benchmark's (bench/stalls.py: synth.synthesize with data seed 0, noise
evenly from 0.6 to 1.5), smaller: pooled, their train and valid splits make 8,400 training
genes, about one full-size cell. For every seed, one run per precision, one after the other,
each in its own process:

    python main.py --data_dir DATA --mix --seed SEED --epochs E --save_dir RUN --mixed_precision P

with P = off (float32) and bfloat16. Both runs of a seed draw the same mixed split, start from
the same initial weights and see the genes in the same order. Reported per cell: each
precision's mean and spread of test AUC over the seeds, and the paired difference (bfloat16
minus float32) with its 95% Student t interval; over all cells, the difference of each run's
mean AUC over the cells (one model per run scores every cell, so a run's cells are not
independent pairs), with its interval; and the attempts each run took (main.py --restarts).

The report is a Markdown block between ``<!-- mixed_precision.py: LABEL begin -->`` and
``<!-- mixed_precision.py: LABEL end -->`` after bench.py's NOTES_MARK, as bench/stalls.py
writes its blocks: a re-run with the same label replaces its own block.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402
import stalls  # noqa: E402

PRECISIONS = ("off", "bfloat16")  # main.py --mixed_precision values; off is float32


@dataclasses.dataclass
class Sizing:
    cells: int = 4
    genes: int = 1500  # per split and cell
    seeds: int = 6
    epochs: int = 20


MODES = {"full": Sizing(), "tiny": Sizing(cells=2, genes=40, seeds=2, epochs=1)}


def name(precision: str) -> str:
    return "float32" if precision == "off" else precision


def run(data_dir: Path, save: Path, seed: int, epochs: int, precision: str) -> dict:
    """One mixed run in its own process (or the one finished in `save` earlier): per cell
    test AUC, the attempts and the seconds."""
    record = save / "seconds.json"
    if not record.is_file():
        cmd = ["main.py", "--data_dir", str(data_dir), "--mix", "--seed", str(seed)]
        cmd += ["--epochs", str(epochs), "--save_dir", str(save), "--mixed_precision", precision]
        stalls.run_main(cmd, save)
    table = pd.read_csv(save / "output-mix.csv")
    return {
        "auc": dict(zip(table.cell, table.auc, strict=True)),
        "attempts": int(table.attempts.iloc[0]),  # one mixed model: the same on every row
        "seconds": json.loads(record.read_text())["seconds"],
    }


def report(
    runs: dict, cells: list[str], sizing: Sizing, argv: list[str], started, label: str
) -> list[str]:
    """The Markdown block: per cell and overall, both precisions and their paired difference."""
    seeds = sorted({seed for _, seed in runs})

    def aucs(precision, cell):
        return [runs[(precision, s)]["auc"][cell] for s in seeds]

    def spread(values):
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.fmean(values):.4f} ({sd:.4f})"

    def diff_cells(diffs):
        mean, low, high = stalls.interval(diffs)
        lower = sum(d < 0 for d in diffs)
        return f"{mean:+.4f} | {low:+.4f} to {high:+.4f} | {lower} of {len(diffs)}"

    rows = []
    for cell in cells:
        f32, bf16 = aucs("off", cell), aucs("bfloat16", cell)
        diffs = [b - f for b, f in zip(bf16, f32, strict=True)]
        rows.append(f"| {cell} | {spread(f32)} | {spread(bf16)} | {diff_cells(diffs)} |")
    means = {p: [statistics.fmean(runs[(p, s)]["auc"].values()) for s in seeds] for p in PRECISIONS}
    diffs = [b - f for b, f in zip(means["bfloat16"], means["off"], strict=True)]
    rows.append(
        f"| all cells (mean per run) | {spread(means['off'])} | {spread(means['bfloat16'])} | "
        f"{diff_cells(diffs)} |"
    )
    per_run = [
        f"| {s} | "
        + " | ".join(
            f"{statistics.fmean(runs[(p, s)]['auc'].values()):.4f} | {runs[(p, s)]['attempts']} | "
            f"{runs[(p, s)]['seconds']:.0f}"
            for p in PRECISIONS
        )
        + " |"
        for s in seeds
    ]
    return [
        f"## Mixed model, float32 against bfloat16 ({label})",
        "",
        f"Machine: {bench.machine()}.",
        "",
        f"Command: `{shlex.join(['python', 'bench/mixed_precision.py', *argv])}`, {started}. "
        f"{sizing.cells} generated cells (bench/stalls.py's, noise "
        f"{', '.join(str(n) for n in stalls.noise_levels(sizing.cells))}) of {sizing.genes:,} "
        f"genes per split, {len(seeds)} seeds, {sizing.epochs} epochs; per seed `python main.py "
        "--mix --seed SEED` with `--mixed_precision off` and with `bfloat16`, otherwise the "
        "defaults (restarts on).",
        "",
        "| cell | float32 test AUC, mean (std) | bfloat16 | mean difference | 95% interval | "
        "pairs lower |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "| seed | float32 mean AUC | attempts | seconds | bfloat16 mean AUC | attempts | seconds |",
        "|---|---|---|---|---|---|---|",
        *per_run,
        "",
        "The difference is bfloat16's test AUC minus float32's for the same seed (same mixed "
        "split, initial weights and gene order), with a 95% Student t interval over the seeds. "
        "Over all cells the pairs are the runs' mean AUCs over the cells: one model scores "
        "every cell, so a run's cells are not independent pairs. Seconds include each "
        "process's start and loading.",
    ]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="2 cells x 40 genes, 2 seeds, 1 epoch")
    p.add_argument("--seeds", type=int, help="seeds 0 .. N-1 [Default: the mode's, 6]")
    p.add_argument("--work", help="folder kept for the data and runs, resumed [Default: temp]")
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"), help="Markdown file")
    p.add_argument(
        "--label",
        help="names the measurement in the report; a re-run with the same label replaces its "
        "block [Default: the mode, full or tiny]",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    sizing = MODES["tiny" if args.tiny else "full"]
    if args.seeds:
        sizing = dataclasses.replace(sizing, seeds=args.seeds)
    started = time.strftime("%Y-%m-%d %H:%M")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="mixed-precision-"))
    try:
        genes = (sizing.genes,) * 3
        cells = stalls.cells_in(work / "data", stalls.noise_levels(sizing.cells), genes)
        runs = {}
        for seed in range(sizing.seeds):
            for precision in PRECISIONS:
                save = work / "runs" / f"{name(precision)}-seed{seed}"
                runs[(precision, seed)] = got = run(
                    work / "data", save, seed, sizing.epochs, precision
                )
                print(
                    f"seed {seed} {name(precision)}: mean test AUC "
                    f"{statistics.fmean(got['auc'].values()):.4f}, {got['attempts']} "
                    f"attempt(s), {got['seconds']:.0f} s",
                    flush=True,
                )
        label = args.label or ("tiny" if args.tiny else "full")
        lines = report(runs, cells, sizing, argv, started, label)
        bench.write_block(Path(args.out), "mixed_precision.py", label, lines)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
