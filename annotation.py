"""Genes and their TSS, read from the gene annotation build.py is given: a GTF or GFF3, or a BED of
TSSs.

The TSS, by annotation kind:
- GTF or GFF3 (.gtf, .gff, .gff3, optionally .gz): per gene_id (GFF3: gene_id=, else ID=), the
  5' end of its ``gene`` record (the start on the plus strand, the end on the minus strand);
  where a file has no gene records, the most 5' transcript start of the gene;
- BED (.bed, optionally .gz; 6 columns, the 4th the gene id, the 6th the strand): the start on
  the plus strand, the last base on the minus strand (a 1-bp TSS interval is the TSS itself).

A gene id with records on another chromosome or strand keeps its first one; the number of such
ids (``Genes.elsewhere``) goes into build.py's summary line. An id may not hold a comma (the data
format is a CSV without quoting).

It reads the annotation only: each gene's window and the tracks' bins are tracks.py's; which
genes are written, their split and their labels, build.py's. It also holds the checks that every
input file gets first (check_readable; suffix, the ending its kind is judged by), which
tracks.py and build.py use too.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from data import DataError

GTF = (".gtf", ".gff", ".gff3")


def suffix(path: Path) -> str:
    """The file's kind-giving ending, lower case, a trailing .gz left out."""
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    return Path(name).suffix


def check_readable(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_file():
        raise DataError(f"{path}: {what} is not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise DataError(f"{path}: cannot read {what}: {e.strerror}") from None


@dataclasses.dataclass
class Genes:
    """Genes with their TSS: ids str (n,), chrom str (n,), tss int64 (n,) 0-based position of
    the first transcribed base, strand int8 (n,) +1 or -1."""

    ids: np.ndarray
    chrom: np.ndarray
    tss: np.ndarray
    strand: np.ndarray
    # Ids the annotation also places on another chromosome or strand: their first record kept.
    elsewhere: int = 0

    def take(self, keep: np.ndarray) -> Genes:
        return Genes(
            self.ids[keep], self.chrom[keep], self.tss[keep], self.strand[keep], self.elsewhere
        )


def _table(path: Path, names: list[str], what: str) -> pd.DataFrame:
    """A tab-separated file without header (lines that start with '#', 'track' or 'browser'
    skipped; a '#' elsewhere is data: PanSN chromosome names, quoted GTF attributes)."""
    try:
        table = pd.read_csv(
            path,
            sep="\t",
            header=None,
            dtype=str,
            usecols=range(len(names)),
            names=names,
            keep_default_na=False,
            skip_blank_lines=True,
            quoting=csv.QUOTE_NONE,  # GTF attributes hold quotes of their own
        )
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text {what} (is it compressed without .gz?)") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"{path}: cannot read as a {what}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read {what}: {e}") from None
    table = table[~table[names[0]].str.startswith(("#", "track", "browser"))]
    if table.empty:
        raise DataError(f"{path}: no {what} lines")
    return table


def _integers(table: pd.DataFrame, column: str, path: Path, what: str) -> np.ndarray:
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise DataError(
            f"{path}: {what} {table[column].iloc[row]!r} of {table.iloc[row, 0]} is not an integer"
        )
    return values.to_numpy(dtype=np.int64)


def _strands(table: pd.DataFrame, path: Path) -> np.ndarray:
    strand = table["strand"].to_numpy(dtype=str)
    bad = (strand != "+") & (strand != "-")
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: strand {strand[row]!r} of {table.iloc[row, 0]} is not + or - "
            "(the TSS needs a strand)"
        )
    return np.where(strand == "+", 1, -1).astype(np.int8)


def read_annotation(path: Path, gene_type: str | None = None) -> Genes:
    """The genes of a GTF/GFF3 or TSS BED file with their TSS (the rules in the module's
    docstring); a gene id seen twice (on another chromosome or strand) keeps its first record."""
    check_readable(path, "annotation")
    kind = suffix(path)
    if kind in GTF:
        genes = _read_gtf(path, gene_type)
    elif kind == ".bed":
        if gene_type:
            raise DataError(f"{path}: --gene_type needs a GTF/GFF annotation, not a BED")
        genes = _read_tss_bed(path)
    else:
        genes = None
    if genes is not None:
        # The data format is a CSV without quoting: an id must not hold a comma.
        bad = np.char.find(genes.ids.astype(str), ",") >= 0
        if bad.any():
            raise DataError(f"{path}: gene id {genes.ids[bad][0]!r} holds a comma")
        return genes
    raise DataError(
        f"{path}: unknown annotation kind {kind or '(no ending)'}: expected .gtf, .gff, .gff3 "
        "or .bed (optionally .gz)"
    )


def _read_gtf(path: Path, gene_type: str | None) -> Genes:
    names = ["chrom", "source", "feature", "start", "end", "score", "strand", "frame", "attrs"]
    table = _table(path, names, "GTF/GFF annotation")
    # The records kept are found first: a GENCODE GTF has millions of exon lines to pass over.
    genes = table[table["feature"] == "gene"]
    if genes.empty:
        genes = table[table["feature"].isin(["transcript", "mRNA"])]
    if genes.empty:
        raise DataError(f"{path}: no gene or transcript records (column 3) in the annotation")
    attrs = genes["attrs"]
    # GTF: gene_id "X" (a quoted value may hold ';' or '#'); GFF3: gene_id=X, or ID=X.
    ids = _attribute(attrs, "gene_id").fillna(_attribute(attrs, "ID"))
    genes = genes.assign(gene_id=ids.str.strip())
    if gene_type:
        types = _attribute(genes["attrs"], "gene_type|gene_biotype|biotype")
        genes = genes[types == gene_type]
        if genes.empty:
            raise DataError(f"{path}: no gene of type {gene_type!r} (gene_type or gene_biotype)")
    genes = genes[genes["gene_id"].notna()]
    if genes.empty:
        raise DataError(f"{path}: no gene_id (GTF) or gene_id=/ID= (GFF3) in the gene records")
    # GTF positions are 1-based and inclusive: the 5' base is start - 1 or end - 1, 0-based.
    frame = _five_prime(genes.rename(columns={"gene_id": "id"}), path, one_based=True)
    # Several transcripts (or a gene record repeated) per gene: its most 5' start, on the first
    # chromosome and strand it was seen on.
    first = frame.drop_duplicates("id")[["id", "chrom", "strand"]]
    elsewhere = _elsewhere(frame)
    frame = frame.merge(first, on=["id", "chrom", "strand"])
    plus = frame[frame["strand"] > 0].groupby("id", sort=False)["tss"].min()
    minus = frame[frame["strand"] < 0].groupby("id", sort=False)["tss"].max()
    tss = pd.concat([plus, minus])
    return _genes(first.assign(tss=first["id"].map(tss)), elsewhere)


def _attribute(attrs: pd.Series, key: str) -> pd.Series:
    """The value of attribute `key` (a regex of names) in GTF (key "value") or GFF3 (key=value)
    attribute columns; NaN where a record has none."""
    found = attrs.str.extract(rf'(?:^|;)\s*(?:{key})(?: +"([^"]*)"| +([^";\s][^;]*)|=([^;]*))')
    return found[0].fillna(found[1]).fillna(found[2])


def _elsewhere(frame: pd.DataFrame) -> int:
    """Gene ids with records on more than one chromosome or strand (the first one is kept)."""
    places = frame[["id", "chrom", "strand"]].drop_duplicates()
    return int((places["id"].value_counts() > 1).sum())


def _genes(frame: pd.DataFrame, elsewhere: int = 0) -> Genes:
    """Genes from a table with the columns id, chrom, tss and strand."""
    return Genes(
        frame["id"].to_numpy(str),
        frame["chrom"].to_numpy(str),
        frame["tss"].to_numpy(np.int64),
        frame["strand"].to_numpy(np.int8),
        elsewhere,
    )


def _read_tss_bed(path: Path) -> Genes:
    names = ["chrom", "start", "end", "name", "score", "strand"]
    try:
        table = _table(path, names, "TSS BED")
    except DataError as e:
        if "Usecols" in str(e) or "usecols" in str(e):
            raise DataError(
                f"{path}: a TSS BED needs 6 columns (chrom, start, end, gene id, score, strand)"
            ) from None
        raise
    frame = _five_prime(table.rename(columns={"name": "id"}), path, one_based=False)
    return _genes(frame.drop_duplicates("id"), _elsewhere(frame))


def _five_prime(table: pd.DataFrame, path: Path, one_based: bool) -> pd.DataFrame:
    """id, chrom, strand and tss (the 0-based 5' base: the start on the plus strand, the last
    base on the minus strand) of records with the columns id, chrom, start, end, strand."""
    start = _integers(table, "start", path, "start") - one_based
    end = _integers(table, "end", path, "end")  # 1-based inclusive or 0-based exclusive alike
    strand = _strands(table, path)
    return pd.DataFrame(
        {
            "id": table["id"].to_numpy(str),
            "chrom": table["chrom"].to_numpy(str),
            "strand": strand,
            "tss": np.where(strand > 0, start, end - 1),
        }
    )
