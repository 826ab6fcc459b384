"""Generated cells unlike synth.synthesize's, for the wide stall benchmark (bench/wide_stalls.py).

synth.synthesize makes every cell from one model (negative-binomial counts around smooth mark
profiles, bivalent genes, neighbour promoters), so a recipe tuned on its cells may be tuned to
that model. This module is a second, independent generator with other statistics, in the real
on-disk format (data.py reads its cells like any other):

- a gene's latent expression is logistic-distributed (heavier tails than synth.synthesize's
  normal), and the label is the cell's median split of it;
- each mark's reads per bin are Poisson around ``background`` (reads in every bin of every
  mark, as in a deeply sequenced input-rich cell) plus ``depth`` times a mark profile whose
  height grows or falls with what the marks see of the expression (the expression plus noise of
  standard deviation ``noise``): H3K4me3 two peaks flanking the TSS, H3K36me3 a plateau over
  the gene body from bin 55 on, H3K4me1 a broad hump upstream, H3K27me3 a wide domain that
  falls with expression, H3K9me3 a flat low level unrelated to it;
- the profiles are shifted per gene by a TSS offset of up to +-8 bins, and their widths vary
  per gene.

A cell is described by a CellSpec; WIDE lists the six cells of the benchmark: reads in nearly
every bin, very sparse reads, a weak cell (logistic regression about 0.68, like the weakest real
cells), an ordinary one, and two 2,000-gene cells.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import data

FULL = (6601, 6601, 6600)  # train, valid, test genes: the real cells' split sizes
SMALL = (2000, 2000, 2000)


@dataclasses.dataclass(frozen=True)
class CellSpec:
    name: str
    what: str  # one phrase for the report
    genes: tuple = FULL  # train, valid, test
    depth: float = 4.0  # reads per bin at a profile's top, for a gene of average expression
    background: float = 0.0  # reads per bin in every bin and mark, whatever the gene
    noise: float = 1.0  # standard deviation between expression and what the marks see
    seed: int = 0


WIDE = (
    CellSpec("W1", "reads in nearly every bin (background 3 per bin)", background=3.0, noise=1.2),
    CellSpec("W2", "very sparse (depth 0.25: most bins empty)", depth=0.25, noise=1.6, seed=1),
    CellSpec("W3", "weak (logistic regression about 0.68)", noise=3.0, seed=2),
    CellSpec("W4", "ordinary", noise=1.4, seed=3),
    CellSpec("W5", "2,000 genes a split", genes=SMALL, noise=1.2, seed=4),
    CellSpec(
        "W6", "2,000 genes, weak, with background", genes=SMALL, background=1.0, noise=2.4, seed=5
    ),
)


def _profiles(n: int, rng) -> np.ndarray:
    """(n, 100, 5) mark shapes, heights about 1, per gene shifted and widened."""
    offset = rng.integers(-8, 9, n)[:, None]
    scale = rng.uniform(0.7, 1.4, n)[:, None]
    b = np.arange(1, data.N_BINS + 1)[None, :] - offset  # bins relative to the gene's TSS
    bump = lambda c, w: np.exp(-0.5 * ((b - c) / (w * scale)) ** 2)  # noqa: E731
    k27 = 0.2 + 0.8 * bump(50, 25)
    k36 = 1 / (1 + np.exp(-(b - 58) / 3.0))
    k4me1 = 0.1 + bump(38, 10)
    k4me3 = bump(48, 2.5) + 0.7 * bump(54, 3.0)
    k9 = np.full(b.shape, 0.3)
    return np.stack([k27, k36, k4me1, k4me3, k9], axis=2)


def make(spec: CellSpec, out_dir: Path) -> None:
    """Write spec's cell into out_dir/<name>/classification/{train,valid,test}.csv."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(1000 + spec.seed)
    total = sum(spec.genes)
    ids = np.char.zfill(rng.permutation(np.arange(1, 3 * total))[:total].astype(str), 6)
    expression = rng.logistic(0, 1, total)
    label = (expression > np.median(expression)).astype(np.int8)
    seen = expression + rng.normal(0, spec.noise, total)
    seen = (seen - seen.mean()) / seen.std()
    # How each mark's height follows what the marks see (H3K9me3 not at all).
    slope = np.array([-0.6, 0.8, 0.4, 1.0, 0.0]) * rng.uniform(0.8, 1.2, data.N_MARKS)
    height = np.exp(seen[:, None] * slope[None, :] + rng.normal(0, 0.3, (total, data.N_MARKS)))
    mean = spec.background + spec.depth * _profiles(total, rng) * height[:, None, :]
    counts = rng.poisson(mean).astype(np.int32)
    cls = out_dir / spec.name / "classification"
    cls.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, n in zip(data.SPLITS, spec.genes):
        genes = slice(start, start + n)
        start += n
        c = counts[genes].reshape(-1, data.N_MARKS)
        cols = {
            "gene_id": np.repeat(ids[genes], data.N_BINS),
            "bin_id": np.tile(np.arange(1, data.N_BINS + 1, dtype=np.int32), n),
        }
        cols.update({m: c[:, j] for j, m in enumerate(data.MARKS)})
        cols["label"] = np.repeat(label[genes], data.N_BINS)
        pacsv.write_csv(
            pa.table(cols),
            cls / f"{split}.csv",
            write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
        )
