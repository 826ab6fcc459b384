"""One histone mark's signal in 100-bp bins around each TSS, from a user's track: a bigWig, a BAM
or reads as tagAlign/BED.

What a bin holds, by track kind (judged by the file name's ending):
- bigWig (.bw, .bigWig, .bigwig; read with pyBigWig): the mean signal over the bin's 100 bp,
  bases without data counting as 0;
- BAM (.bam; pysam) and tagAlign or BED reads (.tagAlign, .bed, optionally .gz): the number of
  reads whose 5' end falls in the bin, as in the released data (a plus-strand read's 5' end is
  its start, a minus-strand read's its last base). BAM reads that are unmapped, secondary,
  supplementary, QC-failed or marked duplicates are skipped, and of a pair only read 1 counts.

``window_edges`` places each gene's 100 bins (TSS +/- 5 kb, in genome order); ``Track.bins``
fills them, from the track's name for the chromosome (with or without a ``chr`` prefix).

It reads tracks only: the genes and their TSS are annotation.py's; which genes every track
covers, the bins turned to the gene's own strand and the files written, build.py's.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from annotation import check_readable, suffix
from data import N_BINS, DataError

BIN_BP = 100
WINDOW_BP = N_BINS * BIN_BP  # 10 kb: TSS +/- 5 kb
BIGWIG = (".bw", ".bigwig")
BAM = (".bam",)
READS = (".tagalign", ".bed")
# BAM flags of reads that are not counted: unmapped, secondary, QC fail, duplicate,
# supplementary; and read 2 of a pair (its fragment is counted by read 1).
SKIP_FLAGS = 0x4 | 0x100 | 0x200 | 0x400 | 0x800 | 0x80
BIGWIG_MAGIC = (0x888FFC26).to_bytes(4, "little")


def window_edges(tss: np.ndarray, strand: np.ndarray) -> np.ndarray:
    """int64 (n, 101): the genomic bin edges of each gene's window, ascending; bins of the
    forward window in genome order. A plus-strand TSS at t opens bin 51, [t, t + 100); on the
    minus strand it closes bin 51 read backwards, so the window is [t - 4999, t + 5001)."""
    start = np.where(strand > 0, tss - WINDOW_BP // 2, tss + 1 - WINDOW_BP // 2)
    return start[:, None] + BIN_BP * np.arange(N_BINS + 1, dtype=np.int64)


@contextlib.contextmanager
def c_stderr_quiet():
    """Silence what C libraries (libBigWig, htslib) print to file descriptor 2 while a file is
    opened: a bad file is reported once, in our own line."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def track_kind(path: Path) -> str:
    kind = suffix(path)
    if kind in BIGWIG:
        return "bigWig"
    if kind in BAM:
        return "BAM"
    if kind in READS:
        return "reads"
    raise DataError(
        f"{path}: unknown track kind {kind or '(no ending)'}: expected a bigWig (.bw, .bigWig), "
        "a BAM (.bam) or reads as tagAlign/BED (.tagAlign, .bed, optionally .gz)"
    )


class Track:
    """One mark's signal: ``chroms`` its chromosome names and lengths (None where the file does
    not say), ``bins(chrom, edges)`` the values of bins between ascending edges."""

    def __init__(self, path: Path, mark: str):
        check_readable(path, f"{mark} track")
        self.path, self.mark, self.kind = path, mark, track_kind(path)
        self.chroms: dict[str, int | None] = {}
        self._positions: dict[str, np.ndarray] = {}
        if self.kind == "bigWig":
            self._open_bigwig()
        elif self.kind == "BAM":
            self._read_bam()
        else:
            self._read_reads()

    # bigWig: the mean over each bin, read one stretch of overlapping windows at a time.
    def _open_bigwig(self):
        import pyBigWig

        with open(self.path, "rb") as f:
            magic = f.read(4)
        bw = None
        if magic == BIGWIG_MAGIC:
            try:
                with c_stderr_quiet():
                    bw = pyBigWig.open(str(self.path))
            except (RuntimeError, OSError):
                bw = None
        if bw is None or not bw.isBigWig():
            raise DataError(f"{self.path}: cannot read as a bigWig ({self.mark} track)")
        self._bw = bw
        self.chroms = dict(bw.chroms())

    def _bigwig_bins(self, chrom: str, edges: np.ndarray) -> np.ndarray:
        # Windows that overlap are read together: one pyBigWig call per stretch, per-base values
        # (NaN where the file has none), then every bin's sum from one cumulative sum.
        starts, ends = edges[:, 0], edges[:, -1]
        order = np.argsort(starts, kind="stable")
        s, e = starts[order], np.maximum.accumulate(ends[order])
        new = np.r_[True, s[1:] >= e[:-1]]
        run = np.cumsum(new) - 1
        lo, hi = s[new], np.r_[e[np.flatnonzero(new)[1:] - 1], e[-1]]
        offset = np.r_[0, np.cumsum(hi - lo)]
        values = np.empty(int(offset[-1]), dtype=np.float64)
        for k, (a, b) in enumerate(zip(lo.tolist(), hi.tolist())):
            values[offset[k] : offset[k + 1]] = self._bw.values(chrom, a, b, numpy=True)
        np.nan_to_num(values, copy=False, nan=0.0)
        area = np.r_[0.0, np.cumsum(values)]
        where = np.empty(len(starts), dtype=np.int64)
        where[order] = offset[run] - lo[run]  # buffer index of genome position 0, per gene
        cum = area[edges + where[:, None]]
        return np.diff(cum, axis=1) / BIN_BP

    # Reads: the 5' end of every read, sorted per chromosome; a bin counts those within it.
    def _read_bam(self):
        import pysam

        try:
            with c_stderr_quiet():
                bam = pysam.AlignmentFile(str(self.path), "rb")
        except (ValueError, OSError) as e:
            raise DataError(
                f"{self.path}: cannot read as a BAM ({self.mark} track): {str(e)[:100]}"
            ) from None
        with bam:
            names = list(bam.references)
            self.chroms = dict(zip(names, bam.lengths))
            found: list[list[int]] = [[] for _ in names]
            try:
                for read in bam.fetch(until_eof=True):
                    if read.flag & SKIP_FLAGS:
                        continue
                    found[read.reference_id].append(
                        read.reference_end - 1 if read.is_reverse else read.reference_start
                    )
            except (ValueError, OSError) as e:
                raise DataError(f"{self.path}: cannot read the BAM's reads: {e}") from None
        self._positions = {
            n: np.sort(np.array(p, dtype=np.int64)) for n, p in zip(names, found) if p
        }

    def _read_reads(self):
        import pyarrow as pa
        import pyarrow.csv as pacsv

        try:
            table = pacsv.read_csv(
                self.path,
                read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                parse_options=pacsv.ParseOptions(delimiter="\t"),
                convert_options=pacsv.ConvertOptions(
                    column_types={"f0": pa.string(), "f1": pa.int64(), "f2": pa.int64()}
                ),
            )
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
            raise DataError(
                f"{self.path}: cannot read as tagAlign/BED reads ({self.mark} track): "
                f"{str(e).splitlines()[0][:120]}"
            ) from None
        if table.num_columns < 6:
            raise DataError(
                f"{self.path}: reads need 6 columns (chrom, start, end, name, score, strand); "
                f"found {table.num_columns}: the 5' end depends on the strand"
            )
        table = table.select(["f0", "f1", "f2", "f5"]).rename_columns(
            ["chrom", "start", "end", "strand"]
        )
        if table.num_rows == 0:
            raise DataError(f"{self.path}: no reads ({self.mark} track)")
        frame = table.to_pandas()
        minus = (frame["strand"] == "-").to_numpy()
        five = np.where(minus, frame["end"].to_numpy() - 1, frame["start"].to_numpy())
        frame = pd.DataFrame({"chrom": frame["chrom"], "five": five})
        for chrom, group in frame.groupby("chrom", sort=False):
            self._positions[str(chrom)] = np.sort(group["five"].to_numpy(np.int64))
        self.chroms = {c: None for c in self._positions}  # a reads file says no lengths

    def name_of(self, chrom: str) -> str | None:
        """The track's name for an annotation chromosome: the same, or with/without 'chr'."""
        for name in (chrom, "chr" + chrom, chrom[3:] if chrom.startswith("chr") else None):
            if name is not None and name in self.chroms:
                return name
        return None

    def bins(self, chrom: str, edges: np.ndarray) -> np.ndarray:
        """float64 (n, 100): the bins between ascending genomic edges (n, 101) on ``chrom``
        (the track's name for it)."""
        if self.kind == "bigWig":
            return self._bigwig_bins(chrom, edges)
        positions = self._positions.get(chrom, np.empty(0, np.int64))
        return np.diff(np.searchsorted(positions, edges), axis=1).astype(np.float64)
