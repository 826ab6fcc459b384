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
