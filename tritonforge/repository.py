"""The only code that writes a model repository to disk.

A build produces a FilePlan ({relative path: bytes or source file}); `write_repository` materialises it in a
temporary sibling folder, lets the caller check it there (the validator), and only then swaps it into place.
A failed build therefore leaves any previous repository untouched, and nothing half-written is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath

from tritonforge.errors import RepositoryError

# bytes are written as they are; a Path is copied (hard-linked when possible: artifacts can be large)
FileContent = bytes | Path
FilePlan = Mapping[str, FileContent]


def _check_relative(rel: str) -> PurePosixPath:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise RepositoryError(f"file plan entry '{rel}' must be a relative path inside the repository")
    return p


def materialize(plan: FilePlan, root: Path) -> None:
    """Write every file of the plan under root (which must exist)."""
    for rel in sorted(plan):
        content = plan[rel]
        target = root / _check_relative(rel)
        if rel.endswith("/"):  # an empty folder, e.g. an ensemble's version folder
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            try:
                os.link(content, target)
            except OSError:
                shutil.copy2(content, target)
        else:
            target.write_bytes(content)


def write_repository(plan: FilePlan, out: str | Path, check: Callable[[Path], None] | None = None) -> Path:
    """Write `plan` as the repository `out`, replacing what was there only if `check` (if given) passes.

    `check` receives the temporary folder and raises to abort; the temporary folder is then removed.
    """
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and not out.is_dir():
        raise RepositoryError(f"{out} exists and is not a folder")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        materialize(plan, tmp)
        if check is not None:
            check(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            old.rmdir()
            out.rename(old)
            try:
                tmp.rename(out)
            except OSError:
                old.rename(out)  # put the previous repository back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
