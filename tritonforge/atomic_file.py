"""Writing one file whole or not at all: a benchmark's JSON or plot, the quality report, releases' state and the
configs a promote rewrites. The one copy of "temp file beside it, fsync, keep its mode, rename over it"."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from tritonforge.errors import OutputFileError, TritonForgeError


def write_atomic(
    path: str | Path, write: Callable[[BinaryIO], None] | bytes, *, error: type[TritonForgeError] = OutputFileError
) -> Path:
    """Create ``path``'s folders, run ``write`` on a temporary file beside it, then rename it over ``path``.

    A failure (ENOSPC on a full disk, say) leaves any previous file as it was and no partial one: a script that
    reads the file never sees half a JSON document. An OSError becomes ``error`` naming the file. ``write`` may be
    the bytes themselves. The file keeps its permissions; a new one is 0644 (mkstemp's 0600 would hide it from a
    Triton, or a reader, running as another user).
    """
    if isinstance(write, bytes):
        data = write

        def write(fh: BinaryIO) -> None:
            fh.write(data)

    path = Path(path)
    if path.exists() and not path.is_file():  # /dev/stdout, /dev/full, a FIFO: renaming over it would replace it
        return _write_in_place(path, write, error)
    try:
        mode = path.stat().st_mode & 0o777
        left = "the previous file is unchanged"
    except OSError:
        mode = 0o644  # mkstemp's 0600 would hide a report from the other users who read it
        left = "no file was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise error(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise error(f"cannot write {path} ({left}): {err.strerror or err}") from None
        raise
    return path


def _write_in_place(path: Path, write: Callable[[BinaryIO], None], error: type[TritonForgeError]) -> Path:
    try:
        with path.open("wb") as fh:
            write(fh)
    except OSError as err:
        raise error(f"cannot write {path}: {err.strerror or err}") from None
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, text.encode("utf-8"))
