"""The content-hash artifact cache shared by every builder (ONNX exports, indexes, ...).

An artifact lives in ``<cache>/<kind>/<content hash>/``. It is built in a temporary sibling folder and renamed
into place, so an interrupted or failed build never leaves a half-written artifact; a concurrent builder that
finishes first wins the rename. Temporary folders of builds killed long ago are swept on the next build.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tritonforge.errors import BuildError

T = TypeVar("T")
STALE_TMP_SECONDS = 24 * 3600


def cached_build(
    final_dir: Path,
    *,
    load: Callable[[Path], T | None],
    build: Callable[[Path], None],
    check: Callable[[T], None] = lambda _artifact: None,
    say: Callable[[str], None] = lambda _msg: None,
) -> T:
    """The artifact in ``final_dir``: read from the cache, or built into a temp folder and renamed into place.

    ``load(dir)`` reads a complete artifact (None when there is none), ``build(tmp_dir)`` writes its files,
    ``check(artifact)`` raises when the artifact misses this call's thresholds; it runs on cache hits too, since
    the cached artifact may have been built with looser ones. OS errors become BuildError naming the folder.
    """
    cached = load(final_dir)
    if cached is not None:
        say("cache hit")
        check(cached)
        return cached
    if final_dir.exists():  # only outside damage makes an incomplete folder: rebuild it
        shutil.rmtree(final_dir, ignore_errors=True)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(final_dir.parent)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{final_dir.name[:16]}-", dir=final_dir.parent))
    except OSError as err:
        raise BuildError(f"cannot create the cache folder {final_dir.parent}: {err.strerror or err}") from err
    try:
        tmp_dir.chmod(0o755)
        build(tmp_dir)
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            if load(final_dir) is None:  # not a concurrent builder that finished first
                raise
    except OSError as err:
        raise BuildError(f"cannot write the artifact {final_dir}: {err.strerror or err}") from err
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)

    artifact = load(final_dir)
    if artifact is None:  # pragma: no cover - we just wrote it
        raise BuildError(f"{final_dir}: artifact was written but cannot be read back")
    check(artifact)
    return artifact


def remove_stale_tmp(parent: Path) -> None:
    """Temp folders left by builds killed mid-way (older than a day) are removed; live builds are left alone."""
    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in parent.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
