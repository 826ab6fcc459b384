"""Your own cells: build the 100-bin input that main.py reads from five histone tracks and a gene
annotation (and, for labels, an expression table).

    python build.py --out mydata --cell K562 --annotation gencode.v44.annotation.gtf.gz \\
        --H3K27me3 H3K27me3.bigWig --H3K36me3 H3K36me3.bigWig --H3K4me1 H3K4me1.bigWig \\
        --H3K4me3 H3K4me3.bigWig --H3K9me3 H3K9me3.bigWig --expression K562-tpm.tsv
    python build.py --out mydata --samples sheet.csv --annotation genes.gtf   # several cells
    python main.py --data_dir mydata                          # train on it (needs expression)
    python main.py --weights logs/RUN --predict mydata        # or only predict its genes

It writes ``<out>/<cell>/classification/{train,valid,test}.csv`` in the released data's format:
per gene 100 rows, bins of 100 bp covering TSS +/- 5 kb, bin 1 the farthest upstream on the
gene's own strand (for a minus-strand gene the genomic window is read backwards), the five marks
in the data's order, and the label: 1 if the gene's expression is above the cell's median over
the genes written, else 0. Without an expression table the label field is left empty: such a
cell can be predicted (main.py --predict) but not trained on or tested.

What a bin holds, by track kind (bigWig, BAM, tagAlign/BED reads), is tracks.py's; where the TSS
is, by annotation kind (GTF/GFF3, TSS BED), annotation.py's.

Genes are dropped, and counted in the summary line, when their chromosome is missing from a
track (names match with or without a ``chr`` prefix), when their window runs past a chromosome
end that a track knows (bigWig and BAM headers), when they have no expression value, or when
they are not in ``--split_like``'s genes.

The split into train/valid/test is by gene and the same in every cell: a seeded hash of the
gene id (``--split_seed``, recorded in ``<out>/build.json``), so cells built together or apart
with one seed share it; or ``--split_like DIR``, the split of an existing cell (or data folder),
so a new cell lines up with cells already built and a mixed model never tests on a gene it
trained on in another cell.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import data
import files
from annotation import Genes, check_readable, read_annotation
from data import MARKS, N_BINS, SPLITS, DataError
from tracks import Track, window_edges

# ---------------------------------------------------------------------------------------------
# Expression and the split


def read_expression(path: Path, column: str | None = None) -> pd.Series:
    """Expression values (RPKM, TPM, ...) by gene id, from a CSV or tab-separated table whose
    first column is the gene id; with a header row, ``column`` names the value column (default:
    the second). Duplicate ids or values that are not numbers are errors."""
    check_readable(path, "expression table")
    try:
        with open(path, newline="") as f:
            head = f.readline()
        sep = "\t" if "\t" in head else ","
        fields = next(csv.reader([head], delimiter=sep), [])
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text expression table") from None
    if len(fields) < 2:
        raise DataError(f"{path}: expected a gene id and a value per line, got {head.strip()!r}")
    try:
        float(fields[1])
        header = None
    except ValueError:
        header = 0
    try:
        table = pd.read_csv(path, sep=sep, header=header, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path}: cannot read: {str(e).splitlines()[0]}") from None
    if header is None:
        table.columns = ["gene_id", "value", *table.columns[2:]]
        column = "value"
    elif column is None:
        column = table.columns[1]
    elif column not in table.columns:
        raise DataError(
            f"{path}: no column {column!r} (columns: {', '.join(map(str, table.columns))})"
        )
    ids = table.iloc[:, 0].str.strip()
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & (table[column].str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(
            f"{path}: {column} {table[column].iloc[row]!r} of {ids.iloc[row]} is not a number"
        )
    dup = ids[ids.duplicated()]
    if len(dup):
        shown = ", ".join(dup.unique()[:5])
        raise DataError(
            f"{path}: duplicate gene id(s) {shown}{' ...' if dup.nunique() > 5 else ''}"
        )
    return pd.Series(values.to_numpy(np.float64), index=ids.to_numpy(str)).dropna()


def match_expression(ids: np.ndarray, expression: pd.Series) -> np.ndarray:
    """float64 (n,): each gene's value, NaN where it has none. Ids match as given or, for a gene
    that does not, without a trailing version (ENSG00000141510.18 and ENSG00000141510)."""
    values = expression.reindex(ids).to_numpy(np.float64, copy=True)
    missing = np.isnan(values)
    if missing.any():
        bare = pd.Series(
            expression.to_numpy(), index=expression.index.str.replace(r"\.\d+$", "", regex=True)
        )
        bare = bare[~bare.index.duplicated(keep=False)]
        stripped = pd.Index(ids[missing]).str.replace(r"\.\d+$", "", regex=True)
        values[missing] = bare.reindex(stripped).to_numpy(np.float64)
    return values


def hashed_split(ids: np.ndarray, seed: int) -> np.ndarray:
    """int8 (n,): 0 train, 1 valid, 2 test, from a seeded hash of each gene id alone, so the
    same gene falls in the same split in every cell built with this seed."""
    key = f"{seed:016d}"[-16:]
    return (pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=key) % 3).astype(np.int8)


def split_of_folder(folder: Path) -> pd.Series:
    """The split (0, 1, 2) of every gene of an existing cell (``<cell>`` or ``<cell>/
    classification``) or of all cells of a data folder, by gene id."""
    import pyarrow.csv as pacsv

    if not folder.is_dir():
        raise DataError(f"--split_like {folder}: no such folder")
    cls = data.classification_dir(folder)
    cells = [cls] if (cls / "train.csv").is_file() else []
    if not cells:
        cells = [data.classification_dir(folder / c) for c in data.list_cells(folder, warn=False)]
    if not cells:
        raise DataError(f"--split_like {folder}: neither a cell folder nor a data folder of cells")
    parts = []
    for cls in cells:
        for k, split in enumerate(SPLITS):
            path = cls / f"{split}.csv"
            try:
                ids = pacsv.read_csv(
                    path,
                    read_options=pacsv.ReadOptions(column_names=list(data.COLUMNS)),
                    convert_options=pacsv.ConvertOptions(
                        include_columns=["gene_id"], column_types={"gene_id": "string"}
                    ),
                ).column("gene_id")
            except Exception as e:  # pyarrow raises several types for a bad file
                raise DataError(f"{path}: cannot read its gene ids: {str(e)[:100]}") from None
            parts.append(pd.Series(k, index=pd.unique(ids.to_numpy(zero_copy_only=False))))
    split = pd.concat(parts)
    split = split[~split.index.duplicated()]
    return split.astype(np.int8)


# ---------------------------------------------------------------------------------------------
# One cell


@dataclasses.dataclass
class Built:
    """One cell's result: the genes written, their counts float64 (n, 100, 5) with bin 1 the
    farthest upstream, labels int8 (n,) or None, split int8 (n,), the dropped counts, and the
    median expression the labels were cut at (None without labels)."""

    genes: Genes
    counts: np.ndarray
    labels: np.ndarray | None
    split: np.ndarray
    dropped: dict[str, int]
    median: float | None = None


def build_cell(
    tracks: dict[str, Track],
    genes: Genes,
    split: np.ndarray,
    expression: pd.Series | None = None,
) -> Built:
    """The counts of every gene of ``genes`` that all five tracks cover; ``split`` int8 (n,)
    0/1/2, or -1 for genes to leave out (not in --split_like)."""
    dropped = {}
    keep = split >= 0
    dropped["not in --split_like"] = int((~keep).sum())
    values = None
    if expression is not None:
        values = match_expression(genes.ids, expression)
        has = ~np.isnan(values)
        dropped["without expression"] = int((keep & ~has).sum())
        keep &= has
    edges = window_edges(genes.tss, genes.strand)
    absent = np.zeros(len(genes.ids), bool)
    off_end = edges[:, 0] < 0
    names = {}  # (mark, annotation chrom) -> track chrom
    for chrom in np.unique(genes.chrom):
        on = genes.chrom == chrom
        for mark, track in tracks.items():
            name = track.name_of(str(chrom))
            names[mark, chrom] = name
            if name is None:
                absent |= on
            elif track.chroms[name] is not None:
                off_end |= on & (edges[:, -1] > track.chroms[name])
    dropped["on a chromosome missing from a track"] = int((keep & absent).sum())
    keep &= ~absent
    dropped["window past a chromosome end"] = int((keep & off_end).sum())
    keep &= ~off_end
    genes, edges, split = genes.take(keep), edges[keep], split[keep]
    counts = np.zeros((len(genes.ids), N_BINS, len(MARKS)), dtype=np.float64)
    for chrom in np.unique(genes.chrom):
        on = np.flatnonzero(genes.chrom == chrom)
        for j, mark in enumerate(MARKS):
            counts[on, :, j] = tracks[mark].bins(names[mark, chrom], edges[on])
    minus = genes.strand < 0
    counts[minus] = counts[minus, ::-1]  # bin 1 is upstream on the gene's strand
    labels = median = None
    if values is not None and len(genes.ids):
        kept = values[keep]
        median = float(np.median(kept))
        labels = (kept > median).astype(np.int8)
    return Built(genes, counts, labels, split, dropped, median)


def replace(folder: Path, write) -> None:
    """``write(folder)`` where ``folder`` may hold an earlier build (--overwrite): the old one is
    moved aside first and removed only once the new one is in place, put back if writing
    fails."""
    if not folder.exists():
        write(folder)
        return
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    try:
        write(folder)
    except BaseException:
        os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_cell(folder: Path, built: Built) -> None:
    """``folder/classification/{train,valid,test}.csv`` in the released format, written as one
    folder renamed into place. Whole-number counts are written as integers; the label field is
    empty without expression values."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    integral = bool(np.all(built.counts == np.round(built.counts)))

    def write(tmp: Path) -> None:
        cls = tmp / "classification"
        cls.mkdir()
        for k, split in enumerate(SPLITS):
            rows = np.flatnonzero(built.split == k)
            n = len(rows)
            block = built.counts[rows].reshape(n * N_BINS, len(MARKS))
            columns = {
                "gene_id": pa.array(np.repeat(built.genes.ids[rows], N_BINS)),
                "bin_id": pa.array(np.tile(np.arange(1, N_BINS + 1, dtype=np.int32), n)),
            }
            for j, mark in enumerate(MARKS):
                columns[mark] = pa.array(
                    block[:, j].astype(np.int64) if integral else block[:, j].astype(np.float32)
                )
            columns["label"] = (
                pa.array(np.repeat(built.labels[rows], N_BINS))
                if built.labels is not None
                else pa.nulls(n * N_BINS, pa.int8())
            )
            pacsv.write_csv(
                pa.table(columns),
                cls / f"{split}.csv",
                write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"),
            )

    files.atomic_folder(folder, write)


# ---------------------------------------------------------------------------------------------
# Command line


def read_sheet(path: Path) -> dict[str, dict[str, Path]]:
    """A sample sheet, CSV with header ``cell,mark,path``: per cell, its five marks' files and,
    as mark ``expression``, optionally its expression table. Relative paths are from the
    sheet's folder."""
    check_readable(path, "sample sheet")
    try:
        sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the sample sheet: {str(e).splitlines()[0]}") from None
    sheet.columns = [c.strip().lower() for c in sheet.columns]
    if not {"cell", "mark", "path"} <= set(sheet.columns):
        raise DataError(f"{path}: the sample sheet needs the columns cell,mark,path")
    cells: dict[str, dict[str, Path]] = {}
    for line, (cell, mark, file) in enumerate(
        sheet[["cell", "mark", "path"]].itertuples(index=False), 2
    ):
        cell, mark, file = cell.strip(), mark.strip(), file.strip()
        if mark not in (*MARKS, "expression"):
            raise DataError(
                f"{path}:{line}: mark {mark!r} is not one of {', '.join(MARKS)} or expression"
            )
        entry = cells.setdefault(cell, {})
        if mark in entry:
            raise DataError(f"{path}:{line}: {cell} {mark} given twice")
        entry[mark] = (path.parent / file) if not Path(file).is_absolute() else Path(file)
    return cells


def check_cell_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise DataError(
            f"cell name {name!r}: use letters, digits, '_', '.' and '-' (it becomes a folder name)"
        )


class Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, no usage dump, exit status 2 (data.run_command).
        raise DataError(f"{message} (see python build.py -h)")


def parse_args(argv):
    p = Parser(
        prog="build.py",
        description="Build main.py's input (100 bins of 100 bp around each TSS, five marks) "
        "from histone tracks (bigWig, BAM, tagAlign/BED reads) and a gene annotation (GTF/GFF3 "
        "or TSS BED), with labels from an expression table or without (for --predict).",
    )
    p.add_argument("--out", required=True, help="data folder to write <cell>/classification/ into")
    p.add_argument(
        "--annotation", required=True, help="genes: a GTF/GFF3 or a 6-column BED of TSSs (.gz ok)"
    )
    p.add_argument("--cell", help="the cell's name, with the five mark flags [Default: none]")
    for mark in MARKS:
        p.add_argument(f"--{mark}", metavar="FILE", help=f"{mark} track of --cell")
    p.add_argument(
        "--expression",
        help="--cell's expression table (gene id, value; CSV or tab-separated): label 1 above "
        "the cell's median [Default: none, labels left empty]",
    )
    p.add_argument(
        "--samples",
        help="sample sheet CSV with header cell,mark,path (mark: one of the five, or "
        "'expression'), for several cells at once [Default: none]",
    )
    p.add_argument(
        "--expression_column",
        help="the value column of an expression table with a header [Default: its second]",
    )
    p.add_argument(
        "--gene_type",
        help="keep only genes of this type (GTF gene_type / gene_biotype), e.g. protein_coding "
        "[Default: all genes]",
    )
    p.add_argument(
        "--split_seed",
        type=int,
        default=None,
        help="seed of the gene-id hash that splits genes 1:1:1 into train/valid/test [Default: "
        "the one recorded in OUT/build.json, else 0]",
    )
    p.add_argument(
        "--split_like",
        help="take the split from an existing cell folder (or data folder) instead; genes not "
        "in it are left out [Default: none]",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace cells already in OUT [Default: off, an existing cell is an error]",
    )
    args = p.parse_args(argv)
    given = [m for m in MARKS if getattr(args, m)]
    if args.samples and (args.cell or given or args.expression):
        p.error("give either --samples or --cell with the mark flags, not both")
    if not args.samples:
        if not args.cell:
            p.error("give --cell NAME with the five mark flags, or --samples SHEET")
        missing = [m for m in MARKS if m not in given]
        if missing:
            p.error(f"--cell {args.cell}: no track for {', '.join(missing)} (--{missing[0]} FILE)")
    if args.split_like and args.split_seed is not None:
        p.error("give --split_seed or --split_like, not both")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = Path(args.out)
    if args.samples:
        cells = read_sheet(Path(args.samples))
    else:
        cells = {args.cell: {m: Path(getattr(args, m)) for m in MARKS}}
        if args.expression:
            cells[args.cell]["expression"] = Path(args.expression)
    for cell, entry in cells.items():
        check_cell_name(cell)
        missing = [m for m in MARKS if m not in entry]
        if missing:
            raise DataError(f"{args.samples}: cell {cell} has no track for {', '.join(missing)}")
        if (out / cell).exists() and not args.overwrite:
            raise DataError(
                f"{out / cell}: already built; pass --overwrite to replace it, or another --out"
            )
    record_path = out / "build.json"
    record = {}
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"{record_path}: cannot read: {e}") from None
    if args.split_like:
        split_rule = {"like": str(Path(args.split_like).resolve())}
    elif args.split_seed is not None:
        split_rule = {"seed": args.split_seed}
    else:
        split_rule = {"seed": record.get("split", {}).get("seed", 0)}
    if record.get("split") not in (None, split_rule):
        raise DataError(
            f"{out}: its cells were split by {json.dumps(record['split'])}, this build by "
            f"{json.dumps(split_rule)}; cells built together share one split (use the same, "
            "or another --out)"
        )
    started = time.perf_counter()
    genes = read_annotation(Path(args.annotation), args.gene_type)
    if args.split_like:
        reference = split_of_folder(Path(args.split_like))
        split = reference.reindex(genes.ids).fillna(-1).to_numpy(np.int8)
        if not (split >= 0).any():
            raise DataError(
                f"{args.annotation}: none of its gene ids is in --split_like {args.split_like} "
                f"(its ids look like {reference.index[0]}; the annotation's like {genes.ids[0]})"
            )
    else:
        split = hashed_split(genes.ids, split_rule["seed"])
    out.mkdir(parents=True, exist_ok=True)
    built_cells = record.get("cells", {})
    for cell, entry in cells.items():
        tracks = {mark: Track(entry[mark], mark) for mark in MARKS}
        expression = (
            read_expression(entry["expression"], args.expression_column)
            if "expression" in entry
            else None
        )
        built = build_cell(tracks, genes, split, expression)
        if not len(built.genes.ids):
            why = "; ".join(f"{v:,} {k}" for k, v in built.dropped.items() if v)
            raise DataError(f"{cell}: no gene left to write ({why})")
        sizes = [int((built.split == k).sum()) for k in range(3)]
        if min(sizes) == 0:
            empty = SPLITS[sizes.index(0)]
            raise DataError(
                f"{cell}: no gene in the {empty} split ({len(built.genes.ids):,} genes written "
                "in all): too few genes to fill train, valid and test"
            )
        replace(out / cell, functools.partial(write_cell, built=built))
        dropped = ", ".join(f"{v:,} {k}" for k, v in built.dropped.items() if v) or "none"
        labels = (
            f"label 1 above the median {built.median:.4g}"
            if built.median is not None
            else "no labels"
        )
        twice = (
            f"; {genes.elsewhere:,} gene ids on a second chromosome or strand in the "
            "annotation, their first record kept"
            if genes.elsewhere
            else ""
        )
        print(
            f"{cell}: {len(built.genes.ids):,} of {len(genes.ids):,} genes written "
            f"(train/valid/test {sizes[0]:,}/{sizes[1]:,}/{sizes[2]:,}; {labels}); "
            f"dropped: {dropped}{twice}",
            flush=True,
        )
        built_cells[cell] = {
            "tracks": {m: str(entry[m].resolve()) for m in MARKS},
            "kinds": {m: tracks[m].kind for m in MARKS},
            "expression": str(entry["expression"].resolve()) if "expression" in entry else None,
            "annotation": str(Path(args.annotation).resolve()),
            "gene_type": args.gene_type,
            "genes": len(built.genes.ids),
            "split_sizes": sizes,
            "dropped": built.dropped,
            "ids_elsewhere_too": genes.elsewhere,
            "median_expression": built.median,
        }
        files.write_json(record_path, {"split": split_rule, "cells": built_cells})
    print(f"wrote {len(cells)} cell(s) to {out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    data.run_command(main)
