"""Writing files whole: text, JSON, CSV tables, figures and Keras models, each through a temporary
file renamed into place, so a reader (or a killed run) never sees half of one.

It is the one place that knows temporary-file-and-rename; it reads nothing and imports neither
matplotlib nor TensorFlow (figures and models bring their own ``save`` methods). It also says how
much room is left, in memory and on a disk, for the commands that check before they start.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read once: os.umask can only be read by setting it
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, write, suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``: readers never see half a file.

    ``suffix`` ends the temporary file's name, for writers that judge the format by it (Keras
    wants ``.keras``). An OSError (a read-only folder, a full disk) leaves no temporary file and
    names ``path``, not the temporary file.
    """
    return atomic_writes([(path, write, suffix)])[0]


def atomic_writes(items) -> list[Path]:
    """Several files written whole and together: each ``(path, write[, suffix])`` is written
    to its temporary file first, and only when all are written are they renamed into place, so
    a full disk midway leaves every earlier file as it was. Returns the paths."""
    done = []
    try:
        for path, write, *suffix in items:
            path = Path(path)
            try:
                fd, tmp = tempfile.mkstemp(
                    dir=path.parent, prefix=f".{path.name}.", suffix=suffix[0] if suffix else ".tmp"
                )
                os.close(fd)
                done.append((path, tmp))
                write(tmp)
                # mkstemp makes the file private (0600); results should follow the user's umask
                # like any file they write.
                os.chmod(tmp, 0o666 & ~_UMASK)
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(path)) from e
        for path, tmp in done:
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        for _, tmp in done:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [path for path, _ in done]


def writable(folder: str | os.PathLike) -> Path:
    """Make `folder` if missing and check that a file can be created in it; OSError naming the
    folder when not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(folder)) from None
    return folder


def remove_leftovers(folder: str | os.PathLike, pattern: str) -> int:
    """Remove the temporary files (`pattern`, e.g. ".*.tmp") a killed writer left in `folder`;
    for a folder that one command alone writes. Returns how many were removed."""
    removed = 0
    for path in Path(folder).glob(pattern):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def write_problem(e: OSError) -> str:
    """An OSError met while writing, as the one line a command prints: the path and why."""
    return f"{e.filename or 'output'}: cannot write there ({e.strerror or e})"


def atomic_folder(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_folder)`` and rename the folder to ``path`` (which must not exist):
    readers see all of its files or none."""
    path = Path(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    return atomic_write(path, write)


def write_json(path: str | os.PathLike, obj) -> Path:
    """``obj`` as indented JSON, ending in a newline."""
    return write_text(path, json.dumps(obj, indent=2) + "\n")


def write_csv(path: str | os.PathLike, table) -> Path:
    """A results or predictions table (a pandas DataFrame), floats to 6 decimals."""
    return atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6f"))


def save_model(model, path: str | os.PathLike) -> Path:
    """``model.save``: a run killed mid-save leaves the previous file or the new one, never a
    torn one that would load as garbage."""
    return atomic_write(path, model.save, suffix=".tmp.keras")


# ---------------------------------------------------------------------------------------------
# One owner per folder


class FolderBusy(Exception):
    """Another process holds the folder's lock; ``pid`` is its process id when known."""

    def __init__(self, folder: Path, pid: int | None):
        super().__init__(f"{folder}: in use by process {pid}" if pid else f"{folder}: in use")
        self.folder, self.pid = folder, pid


class FolderLock:
    """An exclusive, OS-level lock on a folder (``flock`` on ``<folder>/.lock``), held until
    ``release()`` or the process ends: the kernel drops it with the process, so a killed owner
    never leaves a stale lock. The file holds the owner's process id, for the message of whoever
    is refused, and is removed on release.

    Local disks lock reliably. On a network file system the lock holds only where the file
    system passes locks between machines (NFS v4, or v3 with lockd, do); where it refuses locks
    (ENOLCK, EOPNOTSUPP), ``acquire`` returns False and the caller runs unlocked.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / self.NAME
        self.fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting. Returns True when held, False where the file system
        has no locks; raises FolderBusy when another process holds it, OSError when the
        folder cannot be written."""
        import errno

        try:
            import fcntl
        except ImportError:  # Windows: no flock
            return False
        if self.fd is not None:
            return True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise FolderBusy(self.folder, self._holder()) from None
                if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return False
                raise
            # The owner before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else can see; start again.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def _holder(self) -> int | None:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def release(self) -> None:
        """Remove the lock file, then let go of the lock (in that order, so no one takes a lock
        on a file that is about to disappear)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def available_memory() -> int | None:
    """Bytes this process may still allocate: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            room = int(limit) - int((cg / "memory.current").read_text())
            avail = room if avail is None else min(avail, room)
    except (OSError, ValueError):
        pass
    return avail


def free_disk(path: str | os.PathLike) -> int | None:
    """Bytes free on the file system that holds `path` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def gib(n_bytes: float) -> str:
    """Bytes as GiB for a message."""
    return f"{n_bytes / 2**30:.1f} GiB"
