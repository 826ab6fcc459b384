"""What a pooled experiment (--mix, --finetune, --holdout_cell) trains, validates and tests on.

The paper's mixed experiment (Section IV-B) pools the train and valid splits of every cell,
shuffles the pool, splits it 70/30 by row into training and validation, and tests the one model
on each cell's own test split. Genes are shared between cells, and so are their marks and
labels, closely: when the cells' splits disagree, a gene tested in one cell can be trained on in
another, and that cell's AUC is inflated. Nothing in the released data promises one split for
all cells, so every pooled run counts, for each tested cell, its test genes that the pool holds.

Poolings (``--pooling``):

- ``held_out`` (the default): rows of those genes, from every cell, stay out of the pool, so no
  tested gene is trained or validated on; fine-tuning also keeps out the genes that validate a
  fine-tuned cell (its best epoch and its restarts are judged on them).
- ``paper``: every train/valid row is pooled, as the paper did; the counts are still reported.

Splits of the pool (``--pool_split``): ``row``, the paper's, or ``gene``, every row of a gene
on one side, so the pooled validation that picks the best epoch holds no gene trained on; the
default is ``row`` for --mix and ``gene`` for fine-tuning and leave-one-out.

When the cells share one split (the generator's cells; the splits built by build.py), the
tested genes are in no cell's train or valid split, nothing is left out, and ``held_out``
pools exactly what ``paper`` pools.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import data

POOLINGS = ("held_out", "paper")
POOL_SPLITS = ("row", "gene")
POOLED_SPLITS = ("train", "valid")  # of each pooled cell
# What a results table says per tested cell: its test genes the pooled data held before any
# was left out, and those the model trained or validated on.
COUNT_COLUMNS = ("test_in_pool", "test_seen")


@dataclass
class Plan:
    """One pooled training: the cells pooled, the cells tested and the genes kept out.

    counts: tested cell -> {"<split>_in_pool": genes of the cell's split that the pooled cells'
    train/valid splits hold (before any is left out), "<split>_seen": those the model trains or
    validates on}, for each counted split (test; fine-tuning: valid too); None where it cannot
    be told (a saved model whose pool is not in this data folder).
    """

    pool: list[str]
    targets: list[str]
    splits: tuple[str, ...]
    pooling: str
    split: str
    guarded: list[str] = field(default_factory=list)
    guarded_splits: tuple[str, ...] = ()
    counts: dict[str, dict[str, int | None]] = field(default_factory=dict)
    left_out: np.ndarray = field(default_factory=lambda: np.array([], dtype=str))
    rows: int = 0
    rows_left_out: int = 0
    genes_kept: int = 0

    def check(self, data_dir) -> None:
        """Refuse a held-out pooling that leaves too little to train and validate on."""
        if self.pooling != "held_out" or self.rows >= 2 and self.genes_kept >= 2:
            return
        raise data.DataError(
            f"{data_dir}: --pooling held_out leaves {self.rows:,} of "
            f"{self.rows + self.rows_left_out:,} pooled rows, since {len(self.left_out):,} genes "
            f"of the pool are {self._what()} in the chosen cells (the cells' splits disagree); "
            "choose other --cells, or --pooling paper to pool them anyway as the paper did "
            "(the counts are still reported)"
        )

    def _what(self) -> str:
        return " or ".join({"valid": "validated", "test": "tested"}[s] for s in self.splits)

    def row_counts(self, cell: str) -> dict[str, int | None]:
        """A results-table row's counts for one tested cell."""
        found = self.counts.get(cell, {})
        return {c: found.get(c) for c in COUNT_COLUMNS}

    def record(self) -> dict:
        """What trained.json keeps of the plan, for reading back with --weights."""
        return {
            "pooling": self.pooling,
            "pool_split": self.split,
            "left_out": {
                "cells": self.guarded,
                "splits": list(self.guarded_splits),
                "genes": len(self.left_out),
                "rows": self.rows_left_out,
            },
            "overlap": self.counts,
        }

    def describe(self) -> list[str]:
        """The console's lines on what the pool holds of the tested cells' genes."""
        lines = []
        for s in self.splits:
            known = {c: n for c, n in self.counts.items() if n.get(f"{s}_in_pool") is not None}
            if not known:
                lines.append(f"{s.capitalize()} genes in the pooled data: unknown (pool not here)")
                continue
            found = {c: n[f"{s}_in_pool"] for c, n in known.items() if n[f"{s}_in_pool"]}
            seen = sum(n[f"{s}_seen"] or 0 for n in known.values())
            what = "test genes" if s == "test" else "validation genes"
            cells = "tested cells" if s == "test" else "fine-tuned cells"
            if not found:
                lines.append(
                    f"{what.capitalize()} in the pooled data: none, in all {len(known)} {cells}"
                )
                continue
            most = max(found, key=found.get)
            fate = (
                "none trained or validated on: their rows are left out (--pooling held_out)"
                if not seen
                else f"{seen:,} trained or validated on"
                + (" (--pooling paper, the paper's protocol)" if self.pooling == "paper" else "")
            )
            lines.append(
                f"{what.capitalize()} in the pooled data: {sum(found.values()):,} in "
                f"{len(found)} of {len(known)} {cells} (most: {most}, {found[most]:,}); {fate}"
            )
        if self.rows_left_out:
            lines.append(
                f"Left out of the pool: {self.rows_left_out:,} rows of {len(self.left_out):,} "
                f"genes; {self.rows:,} rows pooled"
                + (
                    " (warning: most of the pool; the cells' splits disagree)"
                    if self.rows_left_out > self.rows
                    else ""
                )
            )
        return lines


def plan(
    data_dir,
    pool: list[str],
    targets: list[str],
    splits: tuple[str, ...],
    pooling: str,
    split: str,
    features: bool = True,
    guarded: list[str] | None = None,
    guarded_splits: tuple[str, ...] | None = None,
) -> Plan:
    """Count the targets' genes (of `splits`) that the pool's train/valid splits hold, and with
    pooling "held_out" the genes to leave out: those of the `guarded` cells' `guarded_splits`
    (by default the targets' counted splits). Gene ids are read from the split caches."""
    data_dir = Path(data_dir)
    guarded = list(targets if guarded is None else guarded) if pooling == "held_out" else []
    guarded_splits = tuple(splits if guarded_splits is None else guarded_splits)

    def ids(cell, s):
        path = data.classification_dir(data_dir / cell) / f"{s}.csv"
        return data.split_ids(path, features)

    pooled = [ids(c, s) for c in pool for s in POOLED_SPLITS]
    genes = np.unique(np.concatenate(pooled)) if pooled else np.array([], dtype=str)
    own = {(c, s): np.unique(ids(c, s)) for c in dict.fromkeys(targets + guarded) for s in splits}
    for c in guarded:
        for s in guarded_splits:
            if (c, s) not in own:
                own[c, s] = np.unique(ids(c, s))
    kept_out = [own[c, s] for c in guarded for s in guarded_splits]
    left_out = (
        np.intersect1d(np.concatenate(kept_out), genes)
        if kept_out
        else np.array([], dtype=genes.dtype)
    )
    counts = {}
    for c in targets:
        counts[c] = {}
        for s in splits:
            found = int(np.isin(own[c, s], genes).sum())
            covered = c in guarded and s in guarded_splits
            counts[c][f"{s}_in_pool"] = found
            counts[c][f"{s}_seen"] = 0 if covered else found
    total = sum(len(i) for i in pooled)
    gone = sum(int(np.isin(i, left_out).sum()) for i in pooled) if len(left_out) else 0
    return Plan(
        pool=list(pool),
        targets=list(targets),
        splits=tuple(splits),
        pooling=pooling,
        split=split,
        guarded=guarded,
        guarded_splits=guarded_splits if guarded else (),
        counts=counts,
        left_out=left_out,
        rows=total - gone,
        rows_left_out=gone,
        genes_kept=len(genes) - len(left_out),
    )


def of_saved_model(data_dir, record: dict, targets: list[str], features: bool = True) -> Plan:
    """The counts for a saved mixed model (--weights with fine-tuning) from its trained.json:
    its pool and what it left out. A model trained before the counts existed pooled as the
    paper did; a pool whose cells are not all in data_dir leaves the counts unknown (None)."""
    pool = record.get("cells")
    pooling = record.get("pooling", "paper")
    split = record.get("pool_split", "row")
    splits = ("valid", "test")
    if not isinstance(pool, list) or not all(
        isinstance(c, str) and c in set(data.list_cells(data_dir, warn=False)) for c in pool
    ):
        unknown = {
            c: {f"{s}_{k}": None for s in splits for k in ("in_pool", "seen")} for c in targets
        }
        return Plan([], list(targets), splits, pooling, split, counts=unknown)
    left = record.get("left_out") or {}
    return plan(
        data_dir,
        pool,
        targets,
        splits,
        pooling,
        split,
        features,
        guarded=list(left.get("cells", [])),
        guarded_splits=tuple(left.get("splits", ())),
    )


def genes_on_both_sides(mix) -> int:
    """Genes with rows in both the pooled training and the pooled validation."""
    return int(np.intersect1d(mix.train.ids, mix.valid.ids).size)


# ---------------------------------------------------------------------------------------------
# The pooled data


@dataclass
class MixedData:
    """The mixed experiment: pooled train/valid of all cells, and each cell's own test split."""

    train: data.Split
    valid: data.Split
    tests: dict[str, data.Split]


def load_data_mix(
    data_dir: str | os.PathLike,
    cells: str | list[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.3,
    additional_features: bool = True,
    cache: bool = True,
    tests: bool = True,
    leave_out=None,
    by_gene: bool = False,
) -> MixedData:
    """The mixed experiment's data.

    The train and valid splits of all (or the chosen) cells are pooled, shuffled with ``seed``
    and split ``1 - val_fraction`` / ``val_fraction`` into train/validation; each cell's OWN
    test split is kept apart in ``tests`` (cell -> Split), sorted by cell; ``tests=False``
    leaves it empty (pre-training, where each cell's test split is read later).

    leave_out: gene ids whose rows (from every cell) stay out of the pool. by_gene: split the
    pool by gene (every row of a gene on one side, the genes shuffled and cut where the rows
    come closest to the fraction) instead of by row as the paper does; without leave_out and
    by_gene the pool is the paper's, row for row.

    Memory: the pooled arrays are allocated once and each cell's rows are written straight to
    their shuffled positions, so the peak is the pooled arrays plus one cell, not two copies.
    """
    data_dir = Path(data_dir)
    names = data.select_cells(data_dir, cells)
    parts = [
        (c, data.classification_dir(data_dir / c) / f"{s}.csv")
        for c in names
        for s in ("train", "valid")
    ]
    ids = [data.split_ids(p, additional_features, cache) for _, p in parts]
    gone = np.asarray([] if leave_out is None else list(leave_out), dtype=str)
    keeps = [~np.isin(i, gone) for i in ids]
    sizes = [int(k.sum()) for k in keeps]
    kept = np.concatenate([i[k] for i, k in zip(ids, keeps)])
    total = int(sum(sizes))
    rng = np.random.default_rng(seed)
    position = np.empty(total, dtype=np.int64)
    if by_gene:
        # Whole genes to each side: shuffle the genes, then cut where the training rows come
        # closest to their share; each side's rows are shuffled in turn.
        genes, gene_of_row, rows = np.unique(kept, return_inverse=True, return_counts=True)
        shuffled = rng.permutation(len(genes))
        middle = np.cumsum(rows[shuffled]) - rows[shuffled] / 2
        to_train = np.empty(len(genes), dtype=bool)
        to_train[shuffled] = middle < total * (1.0 - val_fraction)
        side = to_train[gene_of_row]
        n_train = int(side.sum())
        key = rng.permutation(total)
        for rows_of, offset in ((np.flatnonzero(side), 0), (np.flatnonzero(~side), n_train)):
            position[rows_of[np.argsort(key[rows_of])]] = offset + np.arange(len(rows_of))
    else:
        n_train = int(round(total * (1.0 - val_fraction)))
        order = rng.permutation(total)
        position[order] = np.arange(total)  # global row g goes to shuffled slot position[g]
    if min(n_train, total - n_train) < 1:
        raise data.DataError(
            f"{data_dir}: {total} pooled genes from {len(names)} cells cannot be split into "
            "training and validation"
        )

    length = data.input_length(additional_features)
    # Gene ids are compared whole: the array is as wide as the longest, never cut.
    width = int(np.char.str_len(kept).max()) if len(kept) else 1

    def empty(n):
        return data.Split(
            np.empty((n, length, 1), np.float32),
            np.empty((n, 2), np.float32),
            np.empty(n, dtype=f"<U{width}"),
            np.empty(n, dtype=f"<U{max(len(c) for c in names)}"),
        )

    pooled = (empty(n_train), empty(total - n_train))
    start = 0
    for (cell, path), n, keep in zip(parts, sizes, keeps):
        split = data.load_split(path, additional_features, cache)
        if len(split.ids) != len(keep):
            raise data.DataError(f"{path}: changed while loading")
        if not keep.all():
            split = data.Split(split.x[keep], split.y[keep], split.ids[keep])
        slots = position[start : start + n]
        start += n
        for dest, sel, offset in (
            (pooled[0], slots < n_train, 0),
            (pooled[1], slots >= n_train, n_train),
        ):
            at = slots[sel] - offset
            dest.x[at] = split.x[sel]
            dest.y[at] = split.y[sel]
            dest.ids[at] = split.ids[sel]
            dest.cells[at] = cell
        del split
    tests = {
        c: data.load_split(
            data.classification_dir(data_dir / c) / "test.csv", additional_features, cache
        )
        for c in (names if tests else [])
    }
    return MixedData(pooled[0], pooled[1], tests)


def mixed_bytes(
    data_dir: str | os.PathLike,
    cells: list[str],
    additional_features: bool = True,
    cache: bool = True,
) -> int:
    """Bytes of the arrays `load_data_mix` builds for these cells (x float32, y float32, ids
    and cell names as text of up to 64 characters), from the genes per split; cheap once the
    splits are cached."""
    data_dir = Path(data_dir)
    genes = sum(
        data.split_size(
            data.classification_dir(data_dir / c) / f"{s}.csv", additional_features, cache
        )
        for c in cells
        for s in data.SPLITS
    )
    return genes * (data.input_length(additional_features) * 4 + 2 * 4 + 2 * 64 * 4)
