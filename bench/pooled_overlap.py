"""How much a misaligned split inflates the mixed model's AUC: --pooling paper against the
default (--pooling held_out) on cells that share one gene set, written into bench/RESULTS.md.

    python bench/pooled_overlap.py --work W            # 4 cells x 1,000 genes a split, seeds 0-2
    python bench/pooled_overlap.py --tiny              # for the tests only

Data: synth.synthesize's cells (one gene set, one split for all cells: "aligned"), and a copy
in which half of the genes (the same half in every cell) are dealt again among the three splits
of each cell, by a random draw of its own ("misaligned"): a gene of that half tested in one cell
is, in most other cells, in train or valid. The other half keeps the shared split, so its test
genes are in no pool.

Runs, each the mixed experiment end to end in its own process:

    python main.py --data_dir DATA --mix --seed SEED --epochs E --save_dir RUN \\
        --pooling {paper,held_out}

on the aligned cells with one seed (the two poolings must give the same numbers, byte for byte)
and on the misaligned cells with every seed. Reported per cell: its test genes in the pool
(the table's test_in_pool), the pooled rows of each pooling, the test AUC of each (mean over
seeds) and the paired difference with a 95% Student t interval; and, inside the paper-pooled
models, the AUC on the test genes the pool held against those it did not (the same model and
cell: what the leak alone is worth, free of the smaller pool the default trains on).
Runs finished earlier in --work are kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench  # noqa: E402
import data  # noqa: E402
import pooling  # noqa: E402
import stalls  # noqa: E402
import synth  # noqa: E402

SCRIPT = "pooled_overlap.py"
POOLINGS = ("paper", "held_out")


def make_data(work: Path, cells: int, genes: int, seed: int = 0) -> tuple[Path, Path]:
    """work/aligned (synth.synthesize) and work/misaligned (half the genes dealt again per
    cell), made once."""
    aligned, misaligned = work / "aligned", work / "misaligned"
    if (misaligned / "done.json").is_file():
        return aligned, misaligned
    shutil.rmtree(aligned, ignore_errors=True)
    shutil.rmtree(misaligned, ignore_errors=True)
    names = synth.synthesize(aligned, n_cells=cells, n_genes=genes, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for name in names:
        src = data.classification_dir(aligned / name)
        # Each gene is 100 consecutive lines; blocks of every split, in split order.
        blocks = []
        for split in data.SPLITS:
            lines = (src / f"{split}.csv").read_text().splitlines(keepends=True)
            blocks += [lines[i : i + data.N_BINS] for i in range(0, len(lines), data.N_BINS)]
        if name == names[0]:  # the half dealt again: the same genes in every cell
            ids = [b[0].split(",", 1)[0] for b in blocks]
            free = set(rng.choice(ids, len(ids) // 2, replace=False))
        slots = [i for i, b in enumerate(blocks) if b[0].split(",", 1)[0] in free]
        dealt = list(blocks)
        for slot, source in zip(slots, rng.permutation(slots)):
            dealt[slot] = blocks[source]
        out = misaligned / name / "classification"
        out.mkdir(parents=True)
        for k, split in enumerate(data.SPLITS):
            part = dealt[k * genes : (k + 1) * genes]
            (out / f"{split}.csv").write_text("".join(line for b in part for line in b))
    (misaligned / "done.json").write_text(json.dumps({"cells": names, "genes": genes}))
    return aligned, misaligned


def run(data_dir: Path, save: Path, pooling_: str, seed: int, epochs: int) -> Path:
    """One mixed run into `save`, unless one finished there earlier."""
    if not (save / "seconds.json").is_file():
        cmd = ["main.py", "--data_dir", str(data_dir), "--mix", "--seed", str(seed)]
        cmd += ["--epochs", str(epochs), "--save_dir", str(save), "--pooling", pooling_]
        seconds = stalls.run_main(cmd, save)
        print(f"{save.relative_to(save.parents[1])}: {seconds:.0f}s", flush=True)
    return save


def table(save: Path) -> pd.DataFrame:
    return pd.read_csv(save / "output-mix.csv", dtype={"cell": str}).set_index("cell")


def pooled_rows(save: Path) -> int:
    return sum(json.loads((save / "trained.json").read_text())["genes"].values())


def leak_aucs(data_dir: Path, save: Path, cells: list[str]) -> dict[str, tuple[float, float]]:
    """Per cell, the paper-pooled model's test AUC on the test genes the pool held and on
    those it did not."""
    from sklearn.metrics import roc_auc_score

    pooled = set()
    for c in cells:
        for s in pooling.POOLED_SPLITS:
            pooled |= set(data.split_ids(data.classification_dir(data_dir / c) / f"{s}.csv"))
    found = {}
    for c in cells:
        pred = pd.read_csv(save / c / "predictions.csv", dtype={"gene_id": str})
        held = pred.gene_id.isin(pooled).to_numpy()
        found[c] = tuple(
            roc_auc_score(pred.label[sel], pred.probability[sel])
            if pred.label[sel].nunique() == 2
            else float("nan")
            for sel in (held, ~held)
        )
    return found


def f3(x: float) -> str:
    return "n/a" if x != x else f"{x:.3f}"


def signed(x: float) -> str:
    return "n/a" if x != x else f"{x:+.4f}"


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ± {'n/a' if sd != sd else f'{sd:.3f}'}"


def report(args, aligned, misaligned, cells, seeds, wall) -> list[str]:
    runs = args.work / "runs"
    a = {p: runs / f"aligned-{p}-seed{seeds[0]}" for p in POOLINGS}
    same = table(a["paper"]).equals(table(a["held_out"])) and all(
        (a["paper"] / c / "predictions.csv").read_bytes()
        == (a["held_out"] / c / "predictions.csv").read_bytes()
        for c in cells
    )
    m = {(p, s): runs / f"misaligned-{p}-seed{s}" for p in POOLINGS for s in seeds}
    tables = {k: table(v) for k, v in m.items()}
    lines = [
        "## Pooled experiments: a misaligned split against the default pooling",
        "",
        f"Machine: {bench.machine()}.",
        "",
        f"Command: `python bench/pooled_overlap.py --work W --cells {args.cells} --genes "
        f"{args.genes} --epochs {args.epochs} --seeds {args.seeds}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')} ({wall / 60:.0f} min of training in this part). "
        f"{args.cells} cells of synth.synthesize, {args.genes:,} genes a split; each run "
        f"`python main.py --data_dir DATA --mix --seed SEED --epochs {args.epochs} "
        "--pooling {paper,held_out}`, otherwise the defaults (bfloat16 where the CPU has "
        "AMX). Misaligned: half of the genes dealt again among each cell's splits "
        "(bench/pooled_overlap.py's docstring).",
        "",
        f"Aligned cells (one split for all), seed {seeds[0]}: paper and held_out pooled "
        f"{pooled_rows(a['paper']):,} and {pooled_rows(a['held_out']):,} rows; results tables "
        f"and every predictions.csv identical: **{'yes' if same else 'NO'}** "
        f"(mean test AUC {table(a['paper']).auc.mean():.4f} and "
        f"{table(a['held_out']).auc.mean():.4f}).",
        "",
        f"Misaligned cells, seeds {args.seeds}: pooled rows paper "
        f"{pooled_rows(m['paper', seeds[0]]):,}, held_out {pooled_rows(m['held_out', seeds[0]]):,}. "
        "Test AUC mean ± sd over seeds; paired difference paper minus held_out, 95% interval:",
        "",
        "| cell | test genes | in the pool | paper | held_out | paper minus held_out | 95% interval |",
        "|---|---|---|---|---|---|---|",
    ]
    diffs_all = []
    for c in [*cells, None]:
        pick = cells if c is None else [c]
        paper = [tables["paper", s].loc[pick, "auc"].mean() for s in seeds]
        held = [tables["held_out", s].loc[pick, "auc"].mean() for s in seeds]
        diffs = [p - h for p, h in zip(paper, held)]
        mean, low, high = stalls.interval(diffs)
        t = tables["paper", seeds[0]].loc[pick]
        if c is not None:
            diffs_all += diffs
        lines.append(
            f"| {c or '**mean of cells**'} | {int(t.n_test.sum()):,} | "
            f"{int(t.test_in_pool.sum()):,} | {spread(paper)} | {spread(held)} | "
            f"{signed(mean)} | {signed(low)} to {signed(high)} |"
        )
    leaks = {s: leak_aucs(misaligned, m["paper", s], cells) for s in seeds}
    lines += [
        "",
        "Inside the paper-pooled models (same model, same cell): test AUC on the test genes "
        "the pool held against those it did not, mean over seeds; the paired difference is "
        "what the leak alone is worth:",
        "",
        "| cell | held by the pool | not in the pool | difference | 95% interval |",
        "|---|---|---|---|---|",
    ]
    for c in [*cells, None]:
        pick = cells if c is None else [c]
        inside = [statistics.fmean(leaks[s][x][0] for x in pick) for s in seeds]
        outside = [statistics.fmean(leaks[s][x][1] for x in pick) for s in seeds]
        mean, low, high = stalls.interval([i - o for i, o in zip(inside, outside)])
        lines.append(
            f"| {c or '**mean of cells**'} | {spread(inside)} | {spread(outside)} | "
            f"{signed(mean)} | {signed(low)} to {signed(high)} |"
        )
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, help="folder of the data and runs, kept between parts")
    p.add_argument("--cells", type=int, default=4)
    p.add_argument("--genes", type=int, default=1000, help="genes a split")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0-2", help='"0-2" or "0,3,7"')
    p.add_argument("--label", default="misaligned split")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    p.add_argument("--tiny", action="store_true", help="3 cells of 40 genes, 1 epoch: tests")
    args = p.parse_args(argv)
    if args.tiny:
        args.cells, args.genes, args.epochs, args.seeds = 3, 40, 1, "0"
    if args.work is None:
        import tempfile

        args.work = Path(tempfile.mkdtemp(prefix="pooled-overlap-"))
    seeds = [
        int(v)
        for part in args.seeds.split(",")
        for v in (
            range(int(part.split("-")[0]), int(part.split("-")[1]) + 1) if "-" in part else [part]
        )
    ]
    aligned, misaligned = make_data(args.work, args.cells, args.genes)
    cells = data.list_cells(aligned)
    start = time.perf_counter()
    for p_ in POOLINGS:
        run(aligned, args.work / "runs" / f"aligned-{p_}-seed{seeds[0]}", p_, seeds[0], args.epochs)
    for s in seeds:
        for p_ in POOLINGS:
            run(misaligned, args.work / "runs" / f"misaligned-{p_}-seed{s}", p_, s, args.epochs)
    wall = time.perf_counter() - start
    lines = report(args, aligned, misaligned, cells, seeds, wall)
    bench.write_block(args.out, SCRIPT, args.label, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
