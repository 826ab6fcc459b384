"""Unpacking the data: the split files of a zip or tar (.gz/.bz2/.xz) archive put safely into the
layout data.py reads, ``<data_dir>/<cell>/classification/{train,valid,test}.csv``, whatever folders
the archive keeps them in; and the progress bar on stderr that download.py shares.

An archive with an unsafe member (an absolute path, ``..``, a link or a device) is refused as a
whole before anything lands; existing files are never overwritten. It reaches no network and
verifies no download (download.py fetches the archives and checks their size and MD5), and it
does not parse or check the split files themselves: that is data.py's job.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from data import SPLITS, DataError

# ---------------------------------------------------------------------------------------------
# Unpacking an archive
#
# An archive is unpacked into ``<data_dir>/.unpack-*/`` and each complete cell is renamed into
# place, so an interrupted unpack never leaves a half cell that looks complete.

_CHUNK = 1 << 20
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar", ".zip")


def archive_stem(name: str) -> str:
    """The file name without its archive suffix: E003.tar.gz -> E003."""
    lower = name.lower()
    for suffix in _ARCHIVE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def unsafe(name: str) -> str | None:
    """Why a member name may not be unpacked, or None. Backslashes count as separators, since
    an archive made on Windows may use them."""
    import re

    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in parts:
        return "a path through '..'"
    if "\0" in name:
        return "a NUL byte in its name"
    return None


def _member_target(name: str, stem: str) -> tuple[str, str] | None:
    """(cell, split) when the member is a split file of the layout main.py reads, else None.

    ``.../<cell>/classification/<split>.csv`` at any depth; in a per-cell archive (``stem`` its
    name without suffix) also ``classification/<split>.csv`` or ``<split>.csv`` at its root.
    """
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or not parts[-1].endswith(".csv") or parts[-1][:-4] not in SPLITS:
        return None
    split = parts[-1][:-4]
    if len(parts) >= 3 and parts[-2] == "classification":
        cell = parts[-3]
    elif parts[:-1] in ([], ["classification"]):
        cell = stem
    else:
        return None
    # Hidden names (.cache, .download, ..) are never cells.
    if not cell or cell.startswith(".") or unsafe(cell):
        return None
    return cell, split


@dataclass
class Unpacked:
    """What ``unpack`` did. found: every cell the archive holds completely, asked for or not;
    new: cells moved into place; completed: existing cell -> split files added; kept: existing
    complete cells left as they were; incomplete: cell -> splits the archive lacks."""

    found: list[str]
    new: list[str]
    completed: dict[str, list[str]]
    kept: list[str]
    incomplete: dict[str, list[str]]


def unpack(
    archive: str | os.PathLike,
    data_dir: str | os.PathLike,
    cells: set[str] | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Unpacked:
    """Unpack the split files of a zip or tar (.gz/.bz2/.xz) archive as
    ``<data_dir>/<cell>/classification/{train,valid,test}.csv``, whatever folders they sit in.

    Only ``cells`` are written (all when None). An archive with an unsafe member (absolute
    path, ``..``, a link or a device) is refused as a whole before anything is moved into
    place. Each cell is written into a temporary folder inside data_dir and renamed into place
    when complete. Existing files are never overwritten: a complete existing cell is kept,
    split files missing from an existing cell are added. Other members are ignored.
    ``name``: the archive's name in the record (its stem names a per-cell archive's cell);
    ``progress``: a bar over the archive's bytes on a terminal.
    """
    import tarfile
    import zipfile
    import zlib

    archive, data_dir = Path(archive), Path(data_dir)
    try:
        tmp = Path(tempfile.mkdtemp(dir=data_dir, prefix=".unpack-"))
    except OSError as e:
        raise DataError(f"{data_dir}: cannot write: {e.strerror}") from None
    try:
        members = _Members(archive, data_dir, tmp, archive_stem(name or archive.name), cells)
        _extract(archive, members, progress)
        return _place(members, data_dir)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise DataError(
                f"{data_dir}: cannot write while unpacking {archive.name}: {e.strerror}"
            ) from None
        raise DataError(
            f"{archive}: damaged archive ({e}); delete it and run the same command again"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Members:
    """The split files met while reading an archive, copied into ``tmp/<cell>/classification``
    for the chosen cells; the safety refusal that stops an archive as a whole."""

    def __init__(self, archive: Path, data_dir: Path, tmp: Path, stem: str, cells: set[str] | None):
        self.archive, self.data_dir, self.tmp, self.stem, self.cells = (
            archive,
            data_dir,
            tmp,
            stem,
            cells,
        )
        self.written: dict[str, dict[str, str]] = {}  # cell -> split -> member, cells unpacked
        self.seen: dict[str, set[str]] = {}  # cell -> splits, of every cell in the archive

    def refuse(self, member: str, why: str):
        raise DataError(
            f"{self.archive}: refused: member {member!r} is {why}, which could "
            f"write outside {self.data_dir}; nothing was unpacked from this archive"
        )

    def take(self, member: str, open_member) -> None:
        target = _member_target(member, self.stem)
        if target is None:
            return
        cell, split = target
        self.seen.setdefault(cell, set()).add(split)
        if self.cells is not None and cell not in self.cells:
            return
        splits = self.written.setdefault(cell, {})
        if split in splits:
            raise DataError(
                f"{self.archive}: holds {cell}'s {split}.csv twice "
                f"({splits[split]} and {member}); cannot tell which to use"
            )
        dest = self.tmp / cell / "classification" / f"{split}.csv"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open_member() as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
        splits[split] = member


class _Counted:
    """The archive's bytes as tarfile reads them, counted for the progress bar."""

    def __init__(self, raw, advance):
        self.raw, self.advance = raw, advance

    def read(self, n=-1):
        block = self.raw.read(n)
        self.advance(len(block))
        return block


def _extract(archive: Path, members: _Members, progress: bool) -> None:
    """Read a zip or tar archive once, checking every member before its bytes are used, and
    hand each regular file to ``members.take``."""
    import functools
    import stat
    import tarfile
    import zipfile

    with progress_bar(progress) as bar:
        task = bar.add_task(f"unpacking {archive.name}", total=archive.stat().st_size)
        advance = functools.partial(bar.update, task)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
                # The central directory lists every member: check them all before writing.
                for info in infos:
                    why = unsafe(info.filename)
                    if why is None and stat.S_ISLNK(info.external_attr >> 16):
                        why = "a symbolic link"
                    if why:
                        members.refuse(info.filename, why)
                for info in infos:
                    if not info.is_dir():
                        members.take(info.filename, functools.partial(zf.open, info))
                    advance(advance=info.compress_size)
        elif tarfile.is_tarfile(archive):
            # Stream mode: one pass over the compressed bytes. A member is checked before its
            # bytes are read; a refusal drops the temporary folder, so nothing lands.
            with open(archive, "rb") as raw:
                counted = _Counted(raw, lambda n: advance(advance=n))
                with tarfile.open(fileobj=counted, mode="r|*") as tf:
                    for member in tf:
                        why = unsafe(member.name)
                        if why is None and (member.issym() or member.islnk()):
                            why = f"a link (to {member.linkname!r})"
                        if why is None and not (member.isfile() or member.isdir()):
                            why = "a device, FIFO or other special file"
                        if why:
                            members.refuse(member.name, why)
                        if member.isfile():
                            members.take(member.name, functools.partial(tf.extractfile, member))
        else:
            raise DataError(f"{archive}: not a zip or tar archive")


def _place(members: _Members, data_dir: Path) -> Unpacked:
    """Move each complete unpacked cell into data_dir: a new cell as a whole folder, an existing
    cell's missing split files one by one; never overwrite a file."""
    result = Unpacked(
        sorted(c for c, s in members.seen.items() if len(s) == len(SPLITS)), [], {}, [], {}
    )
    for cell in sorted(members.written):
        missing = [s for s in SPLITS if s not in members.written[cell]]
        if missing:
            result.incomplete[cell] = missing
            continue
        dest = data_dir / cell
        if not dest.exists() and not dest.is_symlink():
            os.replace(members.tmp / cell, dest)
            result.new.append(cell)
            continue
        if not dest.is_dir():
            raise DataError(
                f"{dest}: exists and is not a folder; move it away and run the same command again"
            )
        cls = dest / "classification"
        cls.mkdir(exist_ok=True)
        added = [s for s in SPLITS if not (cls / f"{s}.csv").exists()]
        for s in added:
            os.replace(members.tmp / cell / "classification" / f"{s}.csv", cls / f"{s}.csv")
        if added:
            result.completed[cell] = added
        else:
            result.kept.append(cell)
    return result


# ---------------------------------------------------------------------------------------------
# The progress bar (download.py's too)


def progress_bar(enabled: bool):
    """Rich's progress bar (a Keras dependency) with bytes, speed and time left, on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    # Off when stderr is not a terminal: a log file gets the one summary line per file instead.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )
