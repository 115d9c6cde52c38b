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
from collections.abc import Callable, Collection, Iterable, Mapping
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


def _not_content(name: str) -> bool:
    """What serving writes (__pycache__), hidden files (a desktop's .DS_Store) and the marker: never additions."""
    return name == OUTPUT_MARKER or any(part in _RUNTIME_PARTS or part.startswith(".") for part in name.split("/"))


def _added_since(out: Path, planned: Collection[str] | None) -> list[str]:
    """What is in an earlier output that it did not write (a note beside the models, a version folder copied in by
    hand). A marker from before the files were listed says nothing about them: see _unlisted_additions."""
    try:  # split on "\n" only: splitlines() also splits a file name at \x1c, \x85 or \u2028
        lines = (out / OUTPUT_MARKER).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError):
        return []
    start = next((i for i, line in enumerate(lines) if line.endswith(_FILES_LINE)), None)
    if start is None:
        return _unlisted_additions(out, planned)
    written = set(lines[start + 1 :])
    owned = tuple(name for name in written if name.endswith("/"))
    try:
        present = _files(out)
    except OSError:
        return []
    return [name for name in present if name not in written and not name.startswith(owned) and not _not_content(name)]


def _lists_its_files(out: Path) -> bool:
    try:
        return _FILES_LINE in (out / OUTPUT_MARKER).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def _unlisted_additions(out: Path, planned: Collection[str] | None) -> list[str]:
    """For an earlier output that does not list its files (a build from before OUTPUT_MARKER, or from before the
    marker listed them): what it holds beyond what a build writes, or the new output writes. Those outputs were
    replaced as a whole, and hand-added models, version folders and notes were deleted with them (upgrade audit).

    A build wrote, beside its report, model folders of a config.pbtxt and one version folder ``1/`` with its
    lineage.json (releases add versions, but a folder with releases is never replaced); anything else there is the
    user's unless the new output writes that very file. Without the new plan (a command checking before its long
    work) only the build's shape is checked; the write checks the rest."""
    try:
        present = [name for name in _files(out) if not _not_content(name)]
    except OSError:
        return []
    if planned is None and not _is_build_report(out):
        return []
    written = set(planned or ())
    built = _is_build_report(out)
    added = []
    for name in present:
        parts = name.split("/")
        if name in written or (built and len(parts) == 1 and name in (MANIFEST_NAME, "build_engines.sh")):
            continue
        in_built_model = (parts[1:] == ["config.pbtxt"] or (len(parts) > 2 and parts[1] == "1")) and _built_model(
            out / parts[0]
        )
        if not (built and in_built_model):
            added.append(name)
    return added
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
    check_output(out, protect, replaces_builds=MANIFEST_NAME in plan, planned=plan.keys())
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


def check_output(
    out: str | Path,
    protect: Iterable[str | Path] = (),
    *,
    replaces_builds: bool = False,
    planned: Collection[str] | None = None,
) -> None:
    """Raise RepositoryError unless write_repository may write `out` (see there); commands call it before long work
    too. ``replaces_builds``: a build written before OUTPUT_MARKER existed counts as an earlier output. ``planned``:
    the files the new output writes (None before they are known)."""
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
    marked = OUTPUT_MARKER in entries
    earlier_build = not marked and replaces_builds and _earlier_build(out, entries)
    added = _added_since(out, planned) if marked else _unlisted_additions(out, planned) if earlier_build else []
    if added:
        shown = ", ".join(added[:5]) + (", ..." if len(added) > 5 else "")
        if marked and _lists_its_files(out):
            what, why = "what the earlier output did not write", ""
        else:
            what = "what a build does not write"
            why = (" (an older tritonforge's output does not list its files: only its report and model folders of a "
                   "config.pbtxt and version 1 with its lineage.json count as its own)")
        raise RepositoryError(
            f"refusing to replace {out}: it holds {what} ({shown}), which replacing it would delete{why}; move that "
            "out, or remove the folder first"
        )
    if not entries or marked or earlier_build:
        return
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise RepositoryError(
        f"refusing to replace {out}: it is not empty ({shown}) and not an earlier tritonforge output; "
        "choose a new or empty folder, or remove it first"
    )


def _built_model(folder: Path) -> bool:
    """A model folder as a build wrote it: a config.pbtxt and version 1 with the build's lineage.json."""
    return (folder / "config.pbtxt").is_file() and (folder / "1" / "lineage.json").is_file()


def _is_build_report(out: Path) -> bool:
    """The folder's tritonforge.json is a build's report (not a foreign file of that name)."""
    try:
        report = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and report.get("target") in ("cpu", "gpu") and "artifacts" in report


def _earlier_build(out: Path, entries: list[str]) -> bool:
    """A build written before the output marker existed: its tritonforge.json is a build report, and everything
    beside it is a model folder (a config.pbtxt in it) or the engine plan's script. A bare or foreign
    tritonforge.json next to other files is not enough: replacing the folder would delete them."""
    if not _is_build_report(out):
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
