"""Generated cells in the real on-disk format: a data_dir for main.py, the tests and the
benchmarks, with a known amount of signal per cell.

    python synth.py --out DIR --cells 3 --genes 200 --seed 0

The model behind the genes is ``synthesize``'s docstring; the format and its reading are
data.py's (sample_data/ was written by this generator).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import files
from data import MARKS, N_BINS, N_MARKS, SPLITS, DataError, run_command

_TSS = 50.5  # the TSS lies between bins 50 and 51


def _gauss(b: np.ndarray, centre, width) -> np.ndarray:
    return np.exp(-0.5 * ((b - centre) / width) ** 2)


def _mark_profiles(offset: np.ndarray) -> np.ndarray:
    """Relative shape of each mark along the bins, per gene, shifted by the gene's TSS offset.

    offset: (n,) bins. Returns float64 (n, 100, 5) in the data's mark order.
    """
    b = np.arange(1, N_BINS + 1)[None, :] - offset[:, None]  # (n, 100)
    k27 = 0.4 + 0.6 * _gauss(b, _TSS, 30)  # broad repressive domain
    k36 = 0.05 + 1.0 / (1.0 + np.exp(-(b - _TSS - 12) / 6))  # rises along the gene body
    k4me1 = 0.15 + _gauss(b, _TSS - 12, 6) + _gauss(b, _TSS + 14, 7)  # flanks the promoter
    k4me3 = 0.05 + _gauss(b, _TSS + 1.5, 3.5)  # sharp peak at the TSS
    k9 = np.ones_like(b, dtype=float)  # flat background
    return np.stack([k27, k36, k4me1, k4me3, k9], axis=2)


def synthesize(
    out_dir: str | os.PathLike,
    n_cells: int = 3,
    n_genes: int = 200,
    seed: int = 0,
    names: list[str] | None = None,
    noise: float | list[float] = 0.9,
) -> list[str]:
    """Write a data_dir in exactly the real format; returns the cell names.

    The model behind it: every gene has a latent expression level (partly shared across
    cells, partly cell-specific); the label is its median split within the cell. Marks follow
    a noisy view of it with cell-specific strengths: H3K4me3 peaks at the TSS and H3K36me3
    covers the gene body more the higher the expression, H3K4me1 a little too, H3K27me3 falls
    with it, H3K9me3 is noise. What a linear model on fixed positions finds hard: a third of
    the silent genes are bivalent (a TSS H3K4me3 peak like an active gene's, with a focal
    H3K27me3 peak on top), TSS positions are off by several bins, and half of the genes have an
    unrelated active neighbour promoter 20-40 bins away. Counts are over-dispersed (negative
    binomial, as gamma-Poisson). ``n_genes`` is per split (train, valid, test).

    ``noise`` is the standard deviation of the noise between a gene's expression and what its
    marks see, one value for every cell or a list of one per cell: the larger, the harder the
    cell (bench/stalls.py uses 0.6 to 1.5). The default, 0.9, writes the same bytes as before
    the option existed.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    names = list(names) if names else [f"S{i + 1:03d}" for i in range(n_cells)]
    noises = [float(v) for v in noise] if np.ndim(noise) else [float(noise)] * len(names)
    if len(noises) != len(names):
        raise ValueError(f"noise: {len(noises)} values for {len(names)} cells")
    if not all(np.isfinite(v) and v >= 0 for v in noises):
        raise ValueError(f"noise: {noises} must be finite and >= 0")
    total = 3 * n_genes
    # Same genes and the same split for every cell, as in the real data.
    ids = np.char.zfill(
        rng.choice(np.arange(1, 10 * total + 100), total, replace=False).astype(str), 6
    )
    housekeeping = rng.standard_normal(total)
    offset = np.clip(np.round(rng.normal(0, 6, total)), -15, 15)
    profiles = _mark_profiles(offset)
    bins = np.arange(1, N_BINS + 1)[None, :]
    shifted = bins - offset[:, None]
    base_strength = np.array([-0.9, 0.9, 0.35, 1.1, 0.0])
    depth = np.array([2.0, 3.0, 3.0, 8.0, 1.5])
    for name, cell_noise in zip(names, noises):
        z = np.sqrt(0.6) * housekeeping + np.sqrt(0.4) * rng.standard_normal(total)
        label = (z > np.median(z)).astype(np.int8)
        strength = base_strength * rng.uniform(0.5, 1.5, N_MARKS)
        cell_depth = depth * rng.uniform(0.6, 1.6, N_MARKS)
        # What the marks see is a noisy version of expression: limits the achievable AUC.
        seen = z + rng.normal(0, cell_noise, total)
        level = seen[:, None] * strength[None, :] + rng.normal(0, 0.4, (total, N_MARKS))
        mean = cell_depth * profiles * np.exp(level)[:, None, :]  # (genes, bins, marks)
        poised = (label == 0) & (rng.random(total) < 0.35)
        mean[poised, :, 3] += cell_depth[3] * np.exp(0.8) * _gauss(shifted[poised], _TSS + 1.5, 3.5)
        mean[poised, :, 0] += cell_depth[0] * 3.0 * _gauss(shifted[poised], _TSS, 5)
        # A neighbouring gene's promoter, pointing away from ours, active at its own level.
        near = rng.random(total) < 0.5
        side = rng.choice([-1.0, 1.0], total)
        centre = (_TSS + offset + side * rng.uniform(20, 40, total))[:, None]
        amp = np.exp(rng.normal(0, 1, total))[:, None]
        away = side[:, None] * (bins - centre)
        mean[near, :, 3] += (cell_depth[3] * amp * _gauss(bins, centre, 3.5))[near]
        mean[near, :, 1] += (cell_depth[1] * amp * (away > 0) / (1 + np.exp(-(away - 12) / 6)))[
            near
        ]
        dispersion = 2.0
        counts = rng.poisson(rng.gamma(dispersion, mean / dispersion)).astype(np.int32)

        cls = out_dir / name / "classification"
        cls.mkdir(parents=True, exist_ok=True)
        for k, split in enumerate(SPLITS):
            genes = slice(k * n_genes, (k + 1) * n_genes)
            c = counts[genes].reshape(-1, N_MARKS)
            cols = {
                "gene_id": np.repeat(ids[genes], N_BINS),
                "bin_id": np.tile(np.arange(1, N_BINS + 1, dtype=np.int32), n_genes),
            }
            cols.update({m: c[:, j] for j, m in enumerate(MARKS)})
            cols["label"] = np.repeat(label[genes], N_BINS)
            table = pa.table(cols)
            pacsv.write_csv(
                table,
                cls / f"{split}.csv",
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )
    return names


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv=None) -> int:
    p = parser = argparse.ArgumentParser(
        prog="synth.py",
        description="Write generated cells in the real on-disk format (a data_dir for main.py; "
        "your own cells from histone tracks: python build.py -h; the real data: python "
        "download.py -h).",
    )
    p.add_argument("--out", required=True, help="data_dir to write (cells become subfolders)")
    p.add_argument("--cells", type=int, default=3, help="number of cells [Default: %(default)s]")
    p.add_argument(
        "--genes",
        type=int,
        default=200,
        help="genes per split (train, valid, test) [Default: %(default)s]",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed [Default: %(default)s]")
    p.add_argument(
        "--names", default=None, help="comma-separated cell names [Default: S001, S002, ...]"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace cells of the same names already in --out (default: refuse)",
    )
    p.add_argument(
        "--noise",
        default="0.9",
        help="standard deviation of the noise between a gene's expression and its marks: one "
        "value, or one per cell comma-separated; larger is harder [Default: %(default)s]",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.cells < 1 or args.genes < 1:
        parser.error("--cells and --genes must be positive")
    names = args.names.split(",") if args.names else None
    if names and len(names) != args.cells:
        parser.error("--names must give one name per cell")
    try:
        noise = [float(v) for v in args.noise.split(",")]
    except ValueError:
        parser.error(f"--noise {args.noise!r}: not a number or comma-separated numbers")
    if len(noise) not in (1, args.cells) or not all(np.isfinite(v) and v >= 0 for v in noise):
        parser.error("--noise must give one value, or one per cell, each finite and >= 0")
    noise = noise if len(noise) > 1 else noise[0]
    out = Path(args.out)
    check_room(out, args.cells, args.genes)
    names = names or [f"S{i + 1:03d}" for i in range(args.cells)]
    there = [n for n in names if (out / n).exists()]
    if there and not args.overwrite:
        raise DataError(
            f"{out}: already holds {', '.join(there[:3])}{' ...' if len(there) > 3 else ''}; "
            "add --overwrite to replace them, or write to another --out"
        )
    written = synthesize(args.out, args.cells, args.genes, args.seed, names, noise=noise)
    print(
        f"wrote {len(written)} cells x 3 splits x {args.genes} genes to {args.out}: "
        f"{', '.join(written)}"
    )
    return 0


# What synth.synthesize needs, measured (synth.synthesize of 1 cell, 2,000 and 20,000 genes a
# split): about 54 KiB of memory a gene a split, whatever the number of cells (one cell is made
# at a time), and 6.7 KB of disk a gene a split a cell.
SYNTH_MEMORY_PER_GENE = 60 * 2**10
SYNTH_DISK_PER_GENE = 7_000


def check_room(out: Path, cells: int, genes: int) -> None:
    """Refuse a synthetic data_dir that would not fit in the memory or on the disk left."""
    memory = genes * SYNTH_MEMORY_PER_GENE + 2**28
    disk = cells * genes * SYNTH_DISK_PER_GENE
    free_memory, free = files.available_memory(), files.free_disk(out)
    if free_memory is not None and memory > free_memory:
        raise DataError(
            f"{out}: {genes:,} genes a split need about {files.gib(memory)} of memory to "
            f"generate, more than the {files.gib(free_memory)} available; ask for fewer --genes"
        )
    if free is not None and disk > free:
        raise DataError(
            f"{out}: {cells:,} cells of {genes:,} genes a split take about {files.gib(disk)} "
            f"on disk, more than the {files.gib(free)} free there; ask for fewer --cells or "
            "--genes"
        )


if __name__ == "__main__":
    run_command(main)
