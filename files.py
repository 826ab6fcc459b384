"""Writing files whole: text, JSON, CSV tables, figures and Keras models, each through a temporary
file renamed into place, so a reader (or a killed run) never sees half of one.

It is the one place that knows temporary-file-and-rename; it reads nothing and imports neither
matplotlib nor TensorFlow (figures and models bring their own ``save`` methods).
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
    wants ``.keras``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600); results should follow the user's umask like
        # any file they write.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
