"""The only code that writes a model repository to disk.

A build produces a FilePlan ({relative path: bytes or source file}); `write_repository` materialises it in a
temporary sibling folder, lets the caller check it there (the validator), and only then swaps it into place.
A failed build therefore leaves any previous repository untouched, and nothing half-written is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

from tritonforge.build_manifest import MANIFEST_NAME
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


# written into every folder write_repository creates: a folder holding it is a tritonforge output, safe to replace
OUTPUT_MARKER = ".tritonforge-output"
_MARKER_TEXT = (
    "Written by tritonforge. The next build or deploy into this folder replaces it as a whole, unless something\n"
    "was added to it since: the files it wrote follow, one per line.\n"
)
_FILES_LINE = "the files it wrote follow, one per line."
# what Triton's python backend writes into a served version folder when it imports model.py: not an addition
_RUNTIME_PARTS = ("__pycache__",)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _marker(folder: Path, owned: Iterable[str] = ()) -> bytes:
    """The marker's text and the files written; ``owned`` folders (listed with a trailing '/') are the output's
    though it does not write them (the engines build_engines.sh writes into the repository later)."""
    names = [*_files(folder), *(f"{prefix.strip('/')}/" for prefix in owned)]
    return (_MARKER_TEXT + "".join(f"{name}\n" for name in names)).encode()


def _added_since(out: Path) -> list[str]:
    """What is in an earlier output that it did not write (a note beside the models, a version folder copied in by
    hand); none for a marker from before the files were listed."""
    try:  # split on "\n" only: splitlines() also splits a file name at \x1c, \x85 or \u2028
        lines = (out / OUTPUT_MARKER).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return []
    start = next((i for i, line in enumerate(lines) if line.endswith(_FILES_LINE)), None)
    if start is None:
        return []
    written = set(lines[start + 1 :])
    owned = tuple(name for name in written if name.endswith("/"))
    try:
        present = _files(out)
    except OSError:
        return []
    return [
        name for name in present
        if name not in written and name != OUTPUT_MARKER and not name.startswith(owned)
        # what serving writes (__pycache__), and hidden files (a desktop's .DS_Store) are not additions
        and not any(part in _RUNTIME_PARTS or part.startswith(".") for part in name.split("/"))
    ]
# a build's manifest (MANIFEST_NAME): repositories built before OUTPUT_MARKER existed are recognised by it
# what `tritonforge release` keeps in a repository (tritonforge/releases.py): a folder holding either has versions
# and history that no build reproduces
RELEASES_FILE = "releases.json"
RELEASES_LOCK = ".releases.lock"


def write_repository(
    plan: FilePlan,
    out: str | Path,
    check: Callable[[Path], None] | None = None,
    *,
    protect: Iterable[str | Path] = (),
    owned: Iterable[str] = (),
) -> Path:
    """Write `plan` as the folder `out`, replacing what was there only if `check` (if given) passes.

    `check` receives the temporary folder and raises to abort; the temporary folder is then removed. An existing
    `out` is replaced only when it is empty or an earlier tritonforge output (it holds OUTPUT_MARKER, or a build's
    tritonforge.json report with only model folders beside it); never when it is, or contains, the current folder or
    a path in `protect` (the command's inputs). Anything else raises RepositoryError before a file is written.
    """
    out = Path(out).absolute()
    check_output(out, protect, replaces_builds=MANIFEST_NAME in plan)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        raise RepositoryError(f"cannot create {out}: {err.strerror or err}") from err
    try:
        materialize(plan, tmp)
        (tmp / OUTPUT_MARKER).write_bytes(_marker(tmp, owned))
        _make_readable(tmp)
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
    except OSError as err:  # a full disk, a permission: nothing half-written stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise RepositoryError(f"cannot write {out}: {err.strerror or err}") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def check_output(out: str | Path, protect: Iterable[str | Path] = (), *, replaces_builds: bool = False) -> None:
    """Raise RepositoryError unless write_repository may write `out` (see there); commands call it before long work
    too. ``replaces_builds``: a build written before OUTPUT_MARKER existed counts as an earlier output."""
    out = Path(out).absolute()
    resolved = out.resolve()
    if out.name in ("", ".", "..") or resolved == Path(resolved.anchor):
        raise RepositoryError(f"{out} cannot be an output folder: name a folder of its own (e.g. {out / 'out'})")
    for path in (Path.cwd(), *(Path(p) for p in protect)):
        inside = path.absolute().resolve()
        if inside == resolved or resolved in inside.parents:
            what = "the current folder" if path == Path.cwd() else f"{path}, an input of this command"
            raise RepositoryError(
                f"refusing to write {out}: it would replace {what}; choose another output folder"
            )
    if not out.exists():
        return
    if not out.is_dir():
        raise RepositoryError(f"{out} exists and is not a folder")
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as err:
        raise RepositoryError(f"{out} cannot be read: {err.strerror or err}") from None
    released = [name for name in (RELEASES_FILE, RELEASES_LOCK) if name in entries]
    if released:
        raise RepositoryError(
            f"refusing to replace {out}: it holds releases ({released[0]}), and replacing it would delete every "
            "version added with `tritonforge release add` and their history; write into another folder and add "
            f"what changed with `tritonforge release add --repo {out} --from <that folder>`"
        )
    if OUTPUT_MARKER in entries and (added := _added_since(out)):
        shown = ", ".join(added[:5]) + (", ..." if len(added) > 5 else "")
        raise RepositoryError(
            f"refusing to replace {out}: it holds what the earlier output did not write ({shown}), which replacing "
            "it would delete; move that out, or remove the folder first"
        )
    if not entries or OUTPUT_MARKER in entries or (replaces_builds and _earlier_build(out, entries)):
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise RepositoryError(
        f"refusing to replace {out}: it is not empty ({shown}) and not an earlier tritonforge output; "
        "choose a new or empty folder, or remove it first"
    )


def _earlier_build(out: Path, entries: list[str]) -> bool:
    """A build written before the output marker existed: its tritonforge.json is a build report, and everything
    beside it is a model folder (a config.pbtxt in it) or the engine plan's script. A bare or foreign
    tritonforge.json next to other files is not enough: replacing the folder would delete them."""
    try:
        report = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict) or report.get("target") not in ("cpu", "gpu") or "artifacts" not in report:
        return False
    for name in entries:
        path = out / name
        if name in (MANIFEST_NAME, "build_engines.sh"):
            continue
        if not (path.is_dir() and not path.is_symlink() and (path / "config.pbtxt").is_file()):
            return False
    return True


def _make_readable(root: Path) -> None:
    """mkdtemp makes the folder 0700; give it the mode a plain mkdir would (a Triton under another user reads it)."""
    umask = os.umask(0)
    os.umask(umask)
    root.chmod(0o777 & ~umask)
