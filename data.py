"""Reading, checking, preprocessing and caching the DeepChrome/AttentiveChrome data.

On disk (Zenodo record 2652278): ``<data_dir>/<cell>/classification/{train,valid,test}.csv``,
no header, one row per bin::

    gene_id, bin_id, H3K27me3, H3K36me3, H3K4me1, H3K4me3, H3K9me3, label

100 rows per gene (bins 1..100 around the TSS), the 0/1 label repeated on every row.

Each gene becomes a float32 vector of length 505 (or 500 without the additional features):
every bin divided by its largest mark, flattened bin-major, followed by the five column sums of
that matrix divided by their largest value. The model sees it as a ``(505, 1)`` sequence.

A library, not a command: generating cells is synth.py's job, getting the real data (Zenodo)
download.py's, building cells from your own histone tracks build.py's; pooling cells for the
mixed experiments is pooling.py's; the network and its training are Convnet.py's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

import files

MARKS = ("H3K27me3", "H3K36me3", "H3K4me1", "H3K4me3", "H3K9me3")
COLUMNS = ("gene_id", "bin_id") + MARKS + ("label",)
SPLITS = ("train", "valid", "test")
N_BINS = 100
N_MARKS = len(MARKS)
# Bump when the preprocessing or the cache layout changes, so old caches are never served.
CACHE_VERSION = 2


class DataError(Exception):
    """Bad or missing input data. The message is one line naming the file and the problem."""


class Split(NamedTuple):
    """One split of one cell (or of the pooled cells).

    x: float32 (n_genes, 505 or 500, 1); y: float32 one-hot (n_genes, 2), or None for a cell
    built without expression values (build.py; main.py --predict only);
    ids: str (n_genes,) gene ids with their leading zeros; cells: str (n_genes,) or None,
    the cell each gene comes from (pooled data only).
    """

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    cells: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """int (n_genes,) class index, 0 = low and 1 = high expression."""
        return self.y[:, 1].astype(np.int8)


@dataclass
class Cell:
    """The three splits of one cell type."""

    name: str
    train: Split
    valid: Split
    test: Split


def input_length(additional_features: bool = True) -> int:
    return N_BINS * N_MARKS + (N_MARKS if additional_features else 0)


# The network's variants (Convnet.Conv1DNet builds them) and their names in legends. Here, not in
# Convnet.py, so the command lines offer them without importing TensorFlow; one of them only
# changes the input: no_additional_features reads 500 values per gene instead of 505.
VARIANT_LABELS = {
    "full": "full",
    "no_spatial_dropout": "no spatial dropout",
    "no_additional_features": "no additional features",
}
VARIANTS = tuple(VARIANT_LABELS)


# ---------------------------------------------------------------------------------------------
# Finding cells


def classification_dir(cell_dir: str | os.PathLike) -> Path:
    """The folder holding the split CSVs: ``cell_dir/classification`` or ``cell_dir`` itself."""
    cell_dir = Path(cell_dir)
    sub = cell_dir / "classification"
    return sub if sub.is_dir() else cell_dir


_MISSING = "missing"


def _split_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a split file, or None when it is a regular file:
    ``_MISSING``, "is a directory, not a split file", "is a FIFO or other special file, not a
    split file" or "cannot read: <reason>". Only stat'ed (links followed), never opened: a FIFO
    would block the reader until something writes to it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return _MISSING
    except OSError as e:
        return f"cannot read: {e.strerror}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a split file"
    return "is a FIFO or other special file, not a split file"


def _cell_problems(cls: Path) -> tuple[list[str], str | None]:
    """A classification folder's missing split files ("test.csv", ...) and the first split
    path that exists but is no split file ("<path>: is a directory, ..."), or None."""
    missing, wrong = [], None
    for s in SPLITS:
        problem = _split_file_problem(cls / f"{s}.csv")
        if problem == _MISSING:
            missing.append(f"{s}.csv")
        elif problem and wrong is None:
            wrong = f"{cls / f'{s}.csv'}: {problem}"
    return missing, wrong


def list_cells(data_dir: str | os.PathLike, warn: bool = True) -> list[str]:
    """Sorted names of the cell folders in ``data_dir`` that hold all three split files.

    Files and folders without ``classification/`` are ignored. ``warn`` (a run over all cells):
    a folder with ``classification/`` but only some of the splits is skipped with a warning
    naming what is missing, and a split path that exists but is a directory, a FIFO or another
    special file raises DataError naming it (it is there, so the cell was meant to be used; it
    is never opened, so a FIFO cannot hang the run). Without ``warn`` both kinds of cell are
    left out silently (``select_cells`` names the problem when such a cell is chosen).
    Raises DataError if data_dir does not exist or holds no cell.
    """
    cells = _complete_cells(Path(data_dir), warn)
    if not cells:
        raise _no_cells(data_dir)
    return cells


def _complete_cells(data_dir: Path, warn: bool) -> list[str]:
    """list_cells without its error for a data_dir that holds no cell."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    cells = []
    for entry in sorted(data_dir.iterdir()):
        cls = entry / "classification"
        if not cls.is_dir():
            continue
        missing, wrong = _cell_problems(cls)
        if wrong and warn:
            raise DataError(wrong)
        if not missing and not wrong:
            cells.append(entry.name)
        elif warn:
            print(f"warning: skipping {cls}: missing {', '.join(missing)}", file=sys.stderr)
    return cells


def _no_cells(data_dir) -> DataError:
    return DataError(
        f"{data_dir}: no cell folders found (expected <cell>/classification/"
        "{train,valid,test}.csv)"
    )


def names(text: str) -> list[str]:
    """The names of a comma-separated list (cells, as --holdout_cell or explain.py --cells give
    them): stripped, empty ones dropped, each once, in the order given."""
    return list(dict.fromkeys(n for n in (s.strip() for s in text.split(",")) if n))


def select_cells(data_dir: str | os.PathLike, cells: str | list[str] | None) -> list[str]:
    """Validate a chosen subset (list or comma-separated string) against ``list_cells``.

    None: every cell (``list_cells`` with its warnings and errors). A chosen cell with a split
    file missing, or a split path that is a directory or special file, raises DataError naming
    it; unchosen cells are not looked into.
    """
    data_dir = Path(data_dir)
    if cells is None:
        return list_cells(data_dir)
    available = _complete_cells(data_dir, warn=False)
    if isinstance(cells, str):
        cells = [c for c in (s.strip() for s in cells.split(",")) if c]
    unknown = [c for c in cells if c not in available]
    for c in unknown:
        cls = data_dir / c / "classification"
        if cls.is_dir():
            missing, wrong = _cell_problems(cls)
            if wrong:
                raise DataError(wrong)
            if missing:
                raise DataError(f"{cls}: incomplete cell, missing {', '.join(missing)}")
    if not available:
        raise _no_cells(data_dir)
    if unknown:
        raise DataError(f"{data_dir}: cell(s) not found: {', '.join(unknown)}")
    return sorted(dict.fromkeys(cells))


# ---------------------------------------------------------------------------------------------
# Parsing and checking one split file


def _read_table(path: Path, integer_counts: bool = True):
    """Parse a split CSV with pyarrow (multithreaded C++): gene ids as text, counts as int32
    (integer_counts, the real data: 15% faster to parse) or float32."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    types = {"gene_id": pa.string(), "bin_id": pa.int32(), "label": pa.int8()}
    types.update({m: pa.int32() if integer_counts else pa.float32() for m in MARKS})
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS), block_size=1 << 22),
        convert_options=pacsv.ConvertOptions(column_types=types),
    )


def _line_of_row(path: Path, row: int) -> int:
    """1-based line number of the row-th (0-based) non-blank line. Error path only."""
    seen = -1
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                seen += 1
                if seen == row:
                    return lineno
    return seen + 1


def _diagnose(path: Path, arrow_message: str) -> DataError:
    """Find the first malformed line of a file pyarrow refused. Error path only, so a plain loop."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                return DataError(f"{path}:{lineno}: not text (invalid UTF-8); is this a CSV file?")
            if not line:
                continue
            fields = line.split(",")
            if len(fields) != len(COLUMNS):
                return DataError(
                    f"{path}:{lineno}: expected {len(COLUMNS)} columns "
                    f"({','.join(COLUMNS)}), got {len(fields)}"
                )
            if lineno == 1 and not fields[1].strip().lstrip("+-").isdigit():
                return DataError(
                    f"{path}:1: looks like a header row ({line[:60]}); "
                    "the data format has no header, remove that line"
                )
            if not fields[1].strip().isdigit():
                return DataError(f"{path}:{lineno}: bin id {fields[1]!r} is not an integer")
            for name, value in zip(MARKS, fields[2:7]):
                try:
                    float(value)
                except ValueError:
                    return DataError(f"{path}:{lineno}: {name} count {value!r} is not a number")
            if fields[7].strip() not in ("0", "1"):
                return DataError(f"{path}:{lineno}: label {fields[7]!r} is not 0 or 1")
    return DataError(f"{path}: cannot parse: {arrow_message.splitlines()[0]}")


def _first_row_off_block(gene_col, n_genes: int) -> int:
    """First row whose gene id differs from its 100-row block's first id, or -1.

    gene_col: one pyarrow string array. When all ids have one byte length (zero-padded ids,
    the real data), the bytes are compared as a numpy (genes, 100, width) block: ~1 ms for a
    split, against ~10 ms for a string comparison kernel.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n_rows = len(gene_col)
    offsets = np.frombuffer(gene_col.buffers()[1], dtype=np.int32)[
        gene_col.offset : gene_col.offset + n_rows + 1
    ]
    widths = np.diff(offsets)
    if n_rows and widths.min() == widths.max() and widths[0] > 0:
        raw = np.frombuffer(gene_col.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
        block = raw.reshape(n_genes, N_BINS, int(widths[0]))
        differs = block != block[:, :1]
        # One flat reduction for the common, valid case; the per-row one only on an error.
        if not differs.any():
            return -1
        bad = differs.any(axis=2).ravel()
    else:
        firsts = gene_col.take(pa.array(np.repeat(np.arange(0, n_rows, N_BINS), N_BINS)))
        bad = ~pc.equal(gene_col, firsts).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else -1


def _parse_split(path: Path, unlabeled_ok: bool = False):
    """Parse and check one split file.

    Returns (planes float32 (5, n_genes, 100): the counts, one plane per mark;
    labels int8 (n_genes,), all -1 for a file whose label field is empty on every line (a cell
    built without expression values: an error unless unlabeled_ok); ids str (n_genes,)).
    Raises DataError naming the file, and the line or gene, of the first problem found.
    """
    return _check_split(path, _read_split(path), unlabeled_ok)


def _read_split(path: Path):
    """One split file read as a pyarrow table of COLUMNS: a missing, unreadable, empty or
    malformed file raises DataError naming it (and the line, where the CSV is broken)."""
    import pyarrow as pa

    problem = _split_file_problem(path)
    if problem == _MISSING:
        raise DataError(f"{path}: split file not found")
    if problem:
        raise DataError(f"{path}: {problem}")
    try:
        size = path.stat().st_size
    except OSError as e:  # gone since
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if size == 0:
        raise DataError(f"{path}: empty file")
    try:
        try:
            return _read_table(path)
        except pa.ArrowInvalid:
            # Counts written as decimals ("4.0") are allowed: parse them as floats. A file
            # broken in another way fails again below and is diagnosed.
            return _read_table(path, integer_counts=False)
    except PermissionError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise DataError(f"{path}: empty file") from None
        raise _diagnose(path, str(e)) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from None


def _check_split(path: Path, table, unlabeled_ok: bool):
    """The values and the layout of a split's table checked (no gap, counts finite and not
    negative, labels 0 or 1 and one per gene, 100 bins in order per gene, no gene twice) and
    turned into _parse_split's arrays; DataError names the line of the first problem."""
    n_rows = table.num_rows
    if n_rows == 0:
        raise DataError(f"{path}: empty file")

    def fail_row(row: int, problem: str) -> DataError:
        return DataError(f"{path}:{_line_of_row(path, int(row))}: {problem}")

    unlabeled = table.column("label").null_count == n_rows
    if unlabeled and not unlabeled_ok:
        raise DataError(
            f"{path}: no labels (the label field is empty on every line): a cell built without "
            "expression values can only be predicted: python main.py --weights MODEL --predict DIR"
        )
    for name in COLUMNS:
        col = table.column(name)
        if col.null_count and not (name == "label" and unlabeled):
            row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            what = "gene id" if name == "gene_id" else name
            raise fail_row(row, f"{what} is missing or NaN")

    # Counts straight into one float32 plane per mark, chunk by chunk: contiguous copies
    # (a (rows, 5) block would need strided ones), no concatenated temporary per column.
    planes = np.empty((N_MARKS, n_rows), dtype=np.float32)
    for j, name in enumerate(MARKS):
        start = 0
        for chunk in table.column(name).chunks:
            planes[j, start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
            start += len(chunk)
    # One pass for the common case; locate the first offender only when there is one.
    if not (planes.min() >= 0 and planes.max() < np.inf):
        bad = ~np.isfinite(planes)
        if not bad.any():
            bad = planes < 0
        row = int(np.flatnonzero(bad.any(axis=0))[0])
        j = int(np.flatnonzero(bad[:, row])[0])
        if not np.isfinite(planes[j, row]):
            raise fail_row(
                row,
                f"{MARKS[j]} count is infinite or too large for float32 "
                f"(above {np.finfo(np.float32).max:.1e})",
            )
        raise fail_row(row, f"{MARKS[j]} count {planes[j, row]:g} is negative")

    # An unlabeled cell's labels are -1 from here on (Split.y None).
    labels = np.full(n_rows, -1, np.int8) if unlabeled else table.column("label").to_numpy()
    bad = (labels != 0) & (labels != 1) & (labels != -1)
    if bad.any():
        row = np.flatnonzero(bad)[0]
        raise fail_row(row, f"label {labels[row]} is not 0 or 1")

    if n_rows % N_BINS:
        raise DataError(
            f"{path}: {n_rows} rows is not a multiple of {N_BINS} (one row per bin, "
            f"{N_BINS} bins per gene); the file may be truncated"
        )
    n_genes = n_rows // N_BINS

    gene_col = table.column("gene_id").combine_chunks()
    row = _first_row_off_block(gene_col, n_genes)
    if row >= 0:
        gene = gene_col[row - row % N_BINS].as_py()
        raise fail_row(
            row,
            f"gene {gene} has {row % N_BINS} rows, expected {N_BINS} "
            f"(next id {gene_col[row].as_py()})",
        )
    ids = np.asarray(gene_col.take(np.arange(0, n_rows, N_BINS)).to_pylist(), dtype=str)

    bins = table.column("bin_id").to_numpy().reshape(n_genes, N_BINS)
    bad = bins != np.arange(1, N_BINS + 1, dtype=bins.dtype)
    if bad.any():
        g, b = np.argwhere(bad)[0]
        raise fail_row(
            g * N_BINS + b,
            f"gene {ids[g]}: bin {bins[g, b]} where bin {b + 1} "
            f"was expected (bins must be 1..{N_BINS} in order)",
        )

    labels = labels.reshape(n_genes, N_BINS)
    bad = labels != labels[:, :1]
    if bad.any():
        g, b = np.argwhere(bad)[0]
        raise fail_row(g * N_BINS + b, f"gene {ids[g]}: label changes within the gene")

    uniq, first, counts_per_id = np.unique(ids, return_index=True, return_counts=True)
    if (counts_per_id > 1).any():
        dup = uniq[counts_per_id > 1]
        raise DataError(
            f"{path}: duplicate gene id(s) {', '.join(dup[:5])}{' ...' if len(dup) > 5 else ''}"
        )

    return planes.reshape(N_MARKS, n_genes, N_BINS), labels[:, 0].copy(), ids


def preprocess(counts: np.ndarray, additional_features: bool = True) -> np.ndarray:
    """The paper's preprocessing, vectorized over genes.

    Args:
        counts: (n_genes, 100, 5) read counts, any real dtype.
        additional_features: append the 5 normalized column sums (the paper's full model).
    Returns:
        float32 (n_genes, 505, 1), or (n_genes, 500, 1) without additional features.
    """
    planes = np.array(np.asarray(counts).transpose(2, 0, 1), dtype=np.float32, order="C")
    return _features(planes, additional_features)


def _features(planes: np.ndarray, additional_features: bool = True) -> np.ndarray:
    """``preprocess`` on counts laid out as planes, float32 (5, n_genes, 100), which it
    overwrites with the normalized values: every step but the last reads and writes
    contiguous memory, about twice as fast as working on (n_genes, 100, 5)."""
    n = planes.shape[1]
    length = input_length(additional_features)
    bin_max = np.maximum.reduce(planes)  # (n, 100), elementwise over the 5 planes
    # Counts are >= 0, so an all-zero bin has max 0 and all entries 0: dividing by `tiny`
    # instead of 0 keeps it 0 without a masked divide.
    np.maximum(bin_max, np.finfo(np.float32).tiny, out=bin_max)
    np.divide(planes, bin_max, out=planes)
    out = np.empty((n, length), dtype=np.float32)
    # Bin-major interleave straight into the output: its first 500 columns viewed as (n, 100, 5).
    out[:, : N_BINS * N_MARKS].reshape(n, N_BINS, N_MARKS)[...] = planes.transpose(1, 2, 0)
    if additional_features:
        sums = planes.sum(axis=2).T  # (n, 5) column sums over the bins
        top = sums.max(axis=1, keepdims=True)
        np.maximum(top, np.finfo(np.float32).tiny, out=top)
        np.divide(sums, top, out=out[:, N_BINS * N_MARKS :])
    return out.reshape(n, length, 1)


def one_hot(labels: np.ndarray) -> np.ndarray:
    """int (n,) 0/1 labels -> float32 (n, 2) one-hot."""
    return np.eye(2, dtype=np.float32)[np.asarray(labels, dtype=np.intp)]


# ---------------------------------------------------------------------------------------------
# Cache


def _cache_path(path: Path, additional_features: bool) -> Path:
    """Cache folder for one split: ``.cache/<split>-<key>/{x,labels,ids}.npy`` beside the CSV."""
    st = path.stat()
    key = f"{CACHE_VERSION}|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{additional_features}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return path.parent / ".cache" / f"{path.stem}-{digest}"


def _write_cache(cache: Path, split: Split, labels: np.ndarray) -> None:
    """Write the arrays as one folder renamed into place, so a reader never sees half a cache;
    stale keys of the same split are removed first. A read-only data folder means no cache."""

    def write(tmp: Path) -> None:
        np.save(tmp / "x.npy", split.x)
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int8))
        np.save(tmp / "ids.npy", split.ids)

    try:
        cache.parent.mkdir(exist_ok=True)
        for old in cache.parent.glob(cache.name.split("-")[0] + "-*"):
            shutil.rmtree(old, ignore_errors=True)
        files.atomic_folder(cache, write)
    except OSError:
        pass


# np.load parses each .npy header with ast.literal_eval, and CPython 3.11's AST builder is not
# safe from two threads at once (load_cell's: "SystemError: AST constructor recursion depth
# mismatch", seen in CI on 3.11.7): one cache read at a time.
_CACHE_READ = threading.Lock()


def _read_cache(cache: Path, what: tuple[str, ...] = ("x", "labels", "ids")) -> dict | None:
    try:
        with _CACHE_READ:
            return {k: np.load(cache / f"{k}.npy", allow_pickle=False) for k in what}
    except (OSError, ValueError):
        return None


def load_split(
    path: str | os.PathLike,
    additional_features: bool = True,
    cache: bool = True,
    unlabeled_ok: bool = False,
) -> Split:
    """Load one split CSV as a Split (x float32 (n, 505|500, 1), y float32 (n, 2), ids str).

    With unlabeled_ok, a file without labels (empty label fields, written by build.py without
    expression values) loads with y None; otherwise it is a DataError.

    Parsed arrays are cached in ``.cache/`` beside the file, keyed by the file's path, size and
    modification time and by the preprocessing option, so an edited file is parsed again.
    """
    path = Path(path)
    if cache and path.is_file():
        cache_file = _cache_path(path, additional_features)
        if cache_file.is_dir():
            hit = _read_cache(cache_file)
            # An unlabeled file's cache (labels -1) serves only where that is allowed; otherwise
            # the file is parsed again and refused with its own message.
            if hit is not None and (unlabeled_ok or not (hit["labels"] < 0).any()):
                return _split(hit["x"], hit["labels"], hit["ids"])
    planes, labels, ids = _parse_split(path, unlabeled_ok)
    split = _split(_features(planes, additional_features), labels, ids)
    if cache:
        _write_cache(_cache_path(path, additional_features), split, labels)
    return split


def _split(x: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> Split:
    return Split(x, None if (labels < 0).any() else one_hot(labels), ids)


def load_cell(
    cell_dir: str | os.PathLike,
    additional_features: bool = True,
    cache: bool = True,
    unlabeled_ok: bool = False,
) -> Cell:
    """All three splits of one cell (``<cell>/classification/`` or the folder of the CSVs);
    unlabeled_ok: as load_split."""
    cell_dir = Path(cell_dir)
    if not cell_dir.is_dir():
        raise DataError(f"{cell_dir}: cell folder not found")
    cls = classification_dir(cell_dir)
    # Three threads: pyarrow and numpy release the GIL, so one split's checks and
    # preprocessing overlap the next one's parse.
    with ThreadPoolExecutor(len(SPLITS)) as pool:
        splits = list(
            pool.map(
                lambda s: load_split(cls / f"{s}.csv", additional_features, cache, unlabeled_ok),
                SPLITS,
            )
        )
    name = cell_dir.name if cls != cell_dir else cell_dir.resolve().parent.name
    return Cell(name, *splits)


def load_data(cell_dir: str | os.PathLike, additional_features: bool = True, cache: bool = True):
    """The released code's interface: ``(x_train, y_train), (x_val, y_val), (x_test, y_test)``.

    x float32 (n_genes, 505, 1) (500 without additional features), y float32 one-hot
    (n_genes, 2). Use ``load_cell`` for the gene ids.
    """
    cell = load_cell(cell_dir, additional_features, cache)
    return tuple((s.x, s.y) for s in (cell.train, cell.valid, cell.test))


def split_size(path: Path, additional_features: bool, cache: bool) -> int:
    """Genes in a split, reading only the cached labels when a valid cache exists."""
    if cache:
        cache_file = _cache_path(path, additional_features)
        hit = _read_cache(cache_file, ("labels",)) if cache_file.is_dir() else None
        if hit is not None:
            return len(hit["labels"])
    return len(load_split(path, additional_features, cache).ids)


def split_ids(
    path: str | os.PathLike, additional_features: bool = True, cache: bool = True
) -> np.ndarray:
    """The gene ids of one split, in file order, reading only the cached ids when a valid
    cache exists."""
    path = Path(path)
    if cache:
        cache_file = _cache_path(path, additional_features)
        hit = _read_cache(cache_file, ("ids",)) if cache_file.is_dir() else None
        if hit is not None:
            return hit["ids"]
    return load_split(path, additional_features, cache).ids


def run_command(main) -> None:
    """Run a command line's ``main()`` and exit with its status; bad input (DataError) ends in
    one line on stderr and exit status 2, no traceback. For data.py, download.py and build.py."""
    try:
        sys.exit(main())
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> int:
    raise DataError(
        "data.py is a library, not a command: generate cells with python synth.py, get the "
        "real data with python download.py, build your own with python build.py"
    )


if __name__ == "__main__":
    run_command(main)
