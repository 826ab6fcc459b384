"""Getting the data: the Zenodo client (records API, HTTP retries, Range resume, size and MD5
checks, a lock) and the command that downloads the record and unpacks it into the layout data.py
reads.

Command line (nothing else in the project reaches the internet)::

    python download.py --data_dir data                 # all 56 cells, verified, resumable
    python download.py --data_dir data --cells E003,E005
    python download.py --list                          # the record's files and sizes

It opens no archive itself: the safe unpacking of zip and tar archives is unpack.py's. It does not
parse or check the split files themselves: that is data.py's job.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import files
from data import SPLITS, DataError, list_cells, run_command
from unpack import archive_stem, progress_bar, unpack, unsafe

# ---------------------------------------------------------------------------------------------
# Downloading and unpacking the Zenodo record
#
# <data_dir>/.download/ holds the record's files: ``<key>.<md5 prefix>.part`` while it downloads
# (continued by an HTTP Range request on the next run), ``<key>`` once its size and MD5 match the
# record, and ``<key>.cells`` (the cells it holds) once unpacked (by unpack.py, through
# ``<data_dir>/.unpack-*/``).

ZENODO_URL = "https://zenodo.org"
ZENODO_RECORD = "2652278"
DOWNLOAD_DIR = ".download"
_HTTP_TIMEOUT_S = 60
_CHUNK = 1 << 20
_USER_AGENT = "gene-expression-1d-cnn download.py (python urllib)"
_AGAIN = "run the same command again: finished files are kept and a partial one resumes"


class DownloadError(DataError):
    """A network or server failure while downloading, said in one line with how to retry."""


class _Transient(Exception):
    """A failure worth retrying: HTTP 5xx/408/429, a timeout, a refused, reset or dropped
    connection. ``wait`` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


@dataclass
class RecordFile:
    """One file of a Zenodo record as the records API lists it: name, bytes, MD5, byte URL."""

    key: str
    size: int
    md5: str
    url: str


def _human(n: float) -> str:
    """Bytes in decimal units, as Zenodo shows them: 1.2 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _describe(e: BaseException) -> str:
    """A network failure in a few words."""
    import http.client
    import socket
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host name ({reason.strerror or reason})"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return f"no answer within {_HTTP_TIMEOUT_S} s"
    if isinstance(
        reason,
        (
            ConnectionResetError,
            ConnectionAbortedError,
            BrokenPipeError,
            http.client.IncompleteRead,
            http.client.RemoteDisconnected,
        ),
    ):
        return "connection dropped"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _open(url: str, headers: dict | None = None):
    """urlopen, with failures sorted into _Transient (retry) and HTTPError 4xx (give up)."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
    try:
        return urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code in (408, 429) or e.code >= 500:
            wait = e.headers.get("Retry-After", "") if e.headers else ""
            # Zenodo rate-limits with 429 and says how long to wait; capped so that a run
            # never sits silent for long.
            raise _Transient(
                _describe(e), min(float(wait), 60.0) if wait.isdigit() else None
            ) from None
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _Transient(_describe(e)) from None
    except ValueError as e:  # a malformed address: unknown scheme, bad port
        raise DownloadError(f"{url}: not a usable address ({e})") from None


def _retrying(action, what: str, retries: int, backoff: float, hint: str):
    """Run ``action()``; after a _Transient failure wait ``backoff * 2**attempt`` seconds (or the
    server's Retry-After) and try again, at most ``retries`` more times."""
    import time

    for attempt in range(retries + 1):
        try:
            return action()
        except _Transient as e:
            if attempt == retries:
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise DownloadError(f"{what}: {e} ({tries}); {hint}") from None
            delay = e.wait if e.wait is not None else backoff * 2**attempt
            print(
                f"warning: {what}: {e}; retrying in {delay:.3g} s "
                f"(attempt {attempt + 2} of {retries + 1})",
                file=sys.stderr,
            )
            time.sleep(delay)


def _record_files(payload, api: str, base: str, record: str) -> list[RecordFile]:
    """The files of a records-API answer: the legacy list, or InvenioRDM's ``entries``."""
    import re
    import urllib.parse

    files = payload.get("files") if isinstance(payload, dict) else None
    if isinstance(files, dict):
        files = files.get("entries")
        files = list(files.values()) if isinstance(files, dict) else files
    if not isinstance(files, list):
        raise DownloadError(
            f"{api}: the answer lists no files (is the record restricted, or "
            "--zenodo_url not a Zenodo server?)"
        )
    out = []
    for entry in files:
        entry = entry if isinstance(entry, dict) else {}
        key = entry.get("key") or entry.get("filename")
        checksum = str(entry.get("checksum") or "")
        md5 = checksum[4:] if checksum.lower().startswith("md5:") else checksum
        size = entry.get("size", entry.get("filesize"))
        links = entry.get("links") if isinstance(entry.get("links"), dict) else {}
        # The file's name becomes a path under .download/: a plain name only.
        if (
            not isinstance(key, str)
            or not key
            or key.startswith(".")
            or "/" in key
            or "\\" in key
            or "\0" in key
        ):
            raise DownloadError(f"{api}: the record lists an unusable file name {key!r}")
        if not isinstance(size, int) or size < 0 or not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
            raise DownloadError(
                f"{api}: file {key} has no valid size and MD5 checksum in the "
                "record, so it cannot be verified"
            )
        # Newer Zenodo gives the bytes as links.content (links.self is then the metadata);
        # the legacy answer gives them as links.self.
        link = (
            links.get("content")
            or links.get("self")
            or (f"{base}/api/records/{record}/files/{urllib.parse.quote(key)}/content")
        )
        out.append(RecordFile(key, size, md5.lower(), urllib.parse.urljoin(api, link)))
    if not out:
        raise DownloadError(f"{api}: the record lists no files")
    return out


def fetch_record(
    zenodo_url: str = ZENODO_URL,
    record: str = ZENODO_RECORD,
    retries: int = 4,
    backoff: float = 1.0,
) -> list[RecordFile]:
    """The files of a Zenodo record, from ``GET {zenodo_url}/api/records/{record}``."""
    import http.client
    import json
    import re
    import urllib.error
    import urllib.parse

    base = zenodo_url.rstrip("/")
    address = urllib.parse.urlsplit(base)
    try:
        address.port  # noqa: B018  raises on a port that is not a number in 0..65535
    except ValueError:
        address = address._replace(netloc="")
    if address.scheme not in ("http", "https") or not address.netloc:
        raise DataError(
            f"--zenodo_url {zenodo_url!r}: expected an http(s) address such as {ZENODO_URL}"
        )
    if not re.fullmatch(r"[\w-]+", str(record)):
        raise DataError(f"--record {record!r}: expected a record id such as {ZENODO_RECORD}")
    api = f"{base}/api/records/{record}"

    def get():
        with _open(api, {"Accept": "application/json"}) as resp:
            try:
                return resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise _Transient(_describe(e)) from None

    hint = "check the network and --zenodo_url, then run the same command again"
    try:
        body = _retrying(get, api, retries, backoff, hint)
    except urllib.error.HTTPError as e:
        raise DownloadError(
            f"{api}: {_describe(e)}; check --record and --zenodo_url "
            f"(or ZENODO_URL), then run the same command again"
        ) from None
    try:
        payload = json.loads(body)
    except ValueError:
        raise DownloadError(
            f"{api}: the answer is not JSON; is --zenodo_url a Zenodo server?"
        ) from None
    return _record_files(payload, api, base, record)


def _verify(path: Path, f: RecordFile) -> str | None:
    """None if ``path`` has the record's size and MD5, else the problem."""
    size = path.stat().st_size
    if size != f.size:
        return f"{size:,} bytes where the record lists {f.size:,}"
    md5 = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            md5.update(block)
    if md5.hexdigest() != f.md5:
        return f"MD5 {md5.hexdigest()} where the record lists {f.md5}"
    return None


def _fetch_once(f: RecordFile, part: Path, bar, task, fetched: list[int]) -> None:
    """One attempt at the rest of ``part``: a Range request from its current size."""
    import http.client
    import urllib.error

    have = part.stat().st_size if part.exists() else 0
    if have > f.size:
        part.unlink()
        have = 0
    if have == f.size:
        return
    try:
        resp = _open(f.url, {"Range": f"bytes={have}-"} if have else None)
    except urllib.error.HTTPError as e:
        if e.code == 416:  # the server cannot serve from that offset: start over
            part.unlink(missing_ok=True)
            bar.update(task, completed=0)
            raise _Transient("the server cannot resume it; starting over") from None
        raise DownloadError(
            f"{f.key} ({f.url}): {_describe(e)}; check --zenodo_url (or "
            "ZENODO_URL), then run the same command again"
        ) from None
    with resp:
        if resp.status == 206 and not resp.headers.get("Content-Range", "").startswith(
            f"bytes {have}-"
        ):
            part.unlink(missing_ok=True)
            raise _Transient("the server answered with another byte range; starting over")
        if resp.status != 206:
            have = 0  # the server ignored the Range header and sends the whole file
        bar.update(task, completed=have)
        with open(part, "ab" if have else "wb") as out:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"{_describe(e)} after {have:,} of {f.size:,} bytes") from None
                if not chunk:
                    break
                if have + len(chunk) > f.size:
                    out.close()
                    part.unlink()
                    raise DownloadError(
                        f"{f.key} ({f.url}): the server sent more than the "
                        f"{f.size:,} bytes the record lists; the partial file "
                        "was removed; run the same command again"
                    )
                try:
                    out.write(chunk)
                except OSError as e:
                    raise DataError(f"{part}: cannot write: {e.strerror}") from None
                have += len(chunk)
                fetched[0] += len(chunk)
                bar.update(task, advance=len(chunk))
    if have < f.size:
        # A body cut short raises nothing in http.client: only the byte count tells.
        raise _Transient(f"connection closed after {have:,} of {f.size:,} bytes")


def download_file(
    f: RecordFile, folder: Path, retries: int = 4, backoff: float = 1.0, progress: bool = True
) -> Path:
    """Download one record file into ``folder`` and verify its size and MD5; returns its path.

    A file already there and verified is not fetched again (one that fails verification is
    removed and fetched again); a ``.part`` left by an interrupted run is continued; a download
    that fails verification is removed and reported (DownloadError), never kept.
    """
    import glob
    import time

    final = folder / f.key
    if final.is_file():
        problem = _verify(final, f)
        if problem is None:
            print(f"{f.key}: already downloaded, size and MD5 verified")
            return final
        final.unlink()
        print(f"warning: {final}: {problem}; removed, downloading it again", file=sys.stderr)
    # The MD5 in the name: a part left from another version of the file is never continued.
    part = folder / f"{f.key}.{f.md5[:8]}.part"
    for stale in folder.glob(glob.escape(f.key) + ".*.part"):
        if stale != part:
            stale.unlink()
    have = part.stat().st_size if part.exists() else 0
    free = shutil.disk_usage(folder).free
    if f.size - have > free:
        raise DataError(
            f"{folder}: {f.key} needs {_human(f.size - have)} more, only "
            f"{_human(free)} free; free some space and run the same command again"
        )
    print(
        f"{f.key}: {'resuming at ' + _human(have) + ' of ' if have else 'downloading '}"
        f"{_human(f.size)} from {f.url}"
    )
    start, fetched = time.monotonic(), [0]
    with progress_bar(progress) as bar:
        task = bar.add_task(f.key, total=f.size, completed=have)
        _retrying(
            lambda: _fetch_once(f, part, bar, task, fetched),
            f"{f.key} ({f.url})",
            retries,
            backoff,
            "check the network, then " + _AGAIN,
        )
    seconds = max(time.monotonic() - start, 1e-6)
    problem = _verify(part, f)
    if problem is not None:
        part.unlink()
        raise DownloadError(
            f"{f.key}: {problem}; the file was removed, not used; run the "
            "same command again to download it afresh"
        )
    os.replace(part, final)
    print(
        f"{f.key}: fetched {_human(fetched[0])} in {seconds:.1f} s "
        f"({_human(fetched[0] / seconds)}/s); size and MD5 verified"
    )
    return final


def _cell_complete(data_dir: Path, cell: str) -> bool:
    return all((data_dir / cell / "classification" / f"{s}.csv").is_file() for s in SPLITS)


def _lock(folder: Path):
    """An exclusive lock on ``folder``, so two downloads never share a ``.part``."""
    import contextlib

    @contextlib.contextmanager
    def held():
        lock = files.FolderLock(folder)
        try:
            lock.acquire()
        except files.FolderBusy as e:
            holder = f" (process {e.pid})" if e.pid else ""
            raise DataError(
                f"{folder.parent}: another download into this folder is running{holder}; "
                "wait for it to end"
            ) from None
        except OSError as e:
            raise DataError(f"{folder}: cannot write: {e.strerror}") from None
        try:
            yield
        finally:
            lock.release()

    return held()


def _parse_cells(cells: str | list[str] | None) -> set[str] | None:
    if cells is None:
        return None
    if isinstance(cells, str):
        cells = cells.split(",")
    chosen = {c.strip() for c in cells if c.strip()}
    bad = [c for c in chosen if c.startswith(".") or unsafe(c) or "/" in c or "\\" in c]
    if not chosen or bad:
        raise DataError(f"--cells {','.join(cells)}: expected cell names such as E003,E005")
    return chosen


def download(
    data_dir: str | os.PathLike = "data",
    cells: str | list[str] | None = None,
    zenodo_url: str | None = None,
    record: str = ZENODO_RECORD,
    retries: int = 4,
    backoff: float = 1.0,
    progress: bool = True,
    list_only: bool = False,
) -> list[str]:
    """Download, verify and unpack the record's files into ``data_dir``; returns the cells in
    data_dir afterwards (``list_cells``).

    zenodo_url: the server (a mirror); None means $ZENODO_URL, else https://zenodo.org.
    cells: only these (comma-separated or a list). When the record has a file per cell
    (``E003.zip``...), only theirs are downloaded; otherwise its archives are downloaded whole
    and only these cells unpacked. Raises DownloadError (network) or DataError (anything else).
    """
    zenodo_url = zenodo_url or os.environ.get("ZENODO_URL") or ZENODO_URL
    wanted = _parse_cells(cells)
    data_dir = Path(data_dir)
    files = fetch_record(zenodo_url, record, retries, backoff)
    print(
        f"record {record} at {zenodo_url}: {len(files)} file{'s' if len(files) > 1 else ''}, "
        f"{_human(sum(f.size for f in files))}: "
        + ", ".join(f"{f.key} ({_human(f.size)})" for f in files)
    )
    if list_only:
        return []
    if wanted is not None:
        per_cell = [f for f in files if archive_stem(f.key) in wanted]
        if per_cell:
            missing = sorted(wanted - {archive_stem(f.key) for f in per_cell})
            if missing:
                raise DataError(
                    f"record {record} has no file for cell(s) {', '.join(missing)} "
                    f"(its files: {', '.join(f.key for f in files)})"
                )
            files = per_cell
    folder = data_dir / DOWNLOAD_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{folder}: cannot create: {e.strerror}") from None
    found: set[str] = set()
    with _lock(folder):
        # Left by an unpack that was interrupted (the lock says none is running now).
        for old in data_dir.glob(".unpack-*"):
            shutil.rmtree(old, ignore_errors=True)
        paths = [download_file(f, folder, retries, backoff, progress) for f in files]
        for f, path in zip(files, paths):
            found |= _unpack_once(f, path, data_dir, wanted)
    if wanted is not None and wanted - found:
        raise DataError(
            f"cell(s) {', '.join(sorted(wanted - found))} not in record {record} "
            f"(it holds {len(found)}: {', '.join(sorted(found)) or 'none'})"
        )
    if not found:
        raise DataError(
            f"record {record}: no <cell>/classification/{{train,valid,test}}.csv "
            f"found in its files; they are in {folder}"
        )
    ready = list_cells(data_dir, warn=False)
    print(
        f"{len(ready)} cell{'s' if len(ready) > 1 else ''} ready in {data_dir}: "
        f"{', '.join(ready)}; train with: python main.py --data_dir {data_dir}"
    )
    return ready


def _unpack_once(f: RecordFile, path: Path, data_dir: Path, wanted: set[str] | None) -> set[str]:
    """Unpack one downloaded file unless a former run did and its cells are still in place;
    returns the cells the file holds."""
    import json
    import tarfile
    import zipfile

    marker = path.with_name(path.name + ".cells")
    try:
        done = json.loads(marker.read_text())
        known = set(done["cells"]) if done.get("md5") == f.md5 else None
    except (OSError, ValueError, KeyError, TypeError):
        known = None
    # Cells the archive does not hold need no second look inside it.
    if known is not None and all(
        _cell_complete(data_dir, c) for c in (known if wanted is None else wanted & known)
    ):
        print(f"{f.key}: already unpacked ({len(known)} cells)")
        return known
    if not (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
        print(f"{f.key}: not an archive; left in {path}")
        return set()
    print(f"{f.key}: unpacking into {data_dir}")
    result = unpack(path, data_dir, wanted, f.key, progress=True)
    for cell, missing in result.incomplete.items():
        print(
            f"warning: {f.key}: {cell} lacks {', '.join(s + '.csv' for s in missing)}; "
            "not unpacked",
            file=sys.stderr,
        )
    lines = []
    if result.new:
        lines.append(f"unpacked {len(result.new)}: {', '.join(result.new)}")
    if result.completed:
        lines.append(
            "added missing splits to "
            + ", ".join(f"{c} ({'/'.join(s)})" for c, s in result.completed.items())
        )
    if result.kept:
        lines.append(f"kept {len(result.kept)} already there: {', '.join(result.kept)}")
    print(f"{f.key}: holds {len(result.found)} cells; " + ("; ".join(lines) or "nothing to do"))
    files.write_text(marker, json.dumps({"md5": f.md5, "cells": result.found}))
    return set(result.found)


# ---------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="download.py",
        description="Download the DeepChrome/AttentiveChrome data from Zenodo (record "
        f"{ZENODO_RECORD}), verify each file's size and MD5, and unpack it as "
        "<data_dir>/<cell>/classification/{train,valid,test}.csv. Run it again "
        "after an interruption: finished files are not fetched again and a partial "
        "one resumes.",
    )
    p.add_argument(
        "--data_dir",
        default="./data",
        help="where the cells land; the downloaded files stay in <data_dir>/"
        f"{DOWNLOAD_DIR}/ [Default: %(default)s]",
    )
    p.add_argument(
        "--cells", default=None, help="comma-separated cells to get, e.g. E003,E005 [Default: all]"
    )
    p.add_argument(
        "--zenodo_url",
        default=None,
        help=f"Zenodo server or mirror [Default: $ZENODO_URL if set, else {ZENODO_URL}]",
    )
    p.add_argument(
        "--record", default=ZENODO_RECORD, help="Zenodo record id [Default: %(default)s]"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=4,
        help="retries after a network error, HTTP 5xx or a dropped connection "
        "[Default: %(default)s]",
    )
    p.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="seconds before the first retry, doubled for each next one [Default: %(default)s]",
    )
    p.add_argument(
        "--list", action="store_true", help="only list the record's files and sizes [Default: off]"
    )
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.retries < 0 or args.backoff < 0:
        parser.error("--retries and --backoff must not be negative")
    try:
        download(
            args.data_dir,
            args.cells,
            args.zenodo_url,
            args.record,
            args.retries,
            args.backoff,
            list_only=args.list,
        )
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    run_command(main)
