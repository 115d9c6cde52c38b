"""Versioned releases inside one model repository: add, promote, roll back, pin.

A model's numbered version folders are immutable once added (``add_version`` only ever creates the next number,
with its ``lineage.json``). Which version serves is configuration: the model's ``version_policy`` in its
``config.pbtxt`` (``specific { versions: [N] }``), rewritten atomically (temp file + rename) and then applied
through Triton's repository API (explicit model control). Triton loads the new version while the old one keeps
serving, and switches once the new one is ready; a version that fails to load leaves the old one serving, and
the previous ``config.pbtxt`` is put back.

The release history (what was promoted when, and pins) lives in ``releases.json`` at the repository root, which
Triton ignores (only folders are models). Writes are serialised by a lock file, so two promotes cannot interleave.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge.atomic_file import write_atomic
from tritonforge.builders.lora import TABLE_FILE as ADAPTER_TABLE
from tritonforge.config_io import parse_config_text, render_config
from tritonforge.errors import ReleaseError, ReleaseInterrupted, TritonForgeError, ValidationError
from tritonforge.lineage import LINEAGE_FILE, damage, lineage_bytes, read_lineage, version_content_hash
from tritonforge.release_control import (
    HeldSignals,
    ModelControl,
    TritonControl,
    load_failure,
    server_ready,
    signal_name,
    version_failed,
)
from tritonforge.repository import RELEASES_FILE, RELEASES_LOCK
from tritonforge.values import is_whole

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

LOCK_FILE = RELEASES_LOCK
ACTIONS = ("initial", "add", "promote", "rollback", "pin", "unpin")  # the events releases.json records
__all__ = ["ModelControl", "TritonControl"]  # defined in release_control, imported from here as they always were


@dataclass(frozen=True)
class VersionInfo:
    version: int
    serving: bool
    lineage: dict[str, Any] | None
    folder: Path | None = None

    def content_sha256(self) -> str | None:
        """sha256 of what the version folder serves (:func:`version_content_hash`): as `release add` recorded it,
        else read from the files (a version `tritonforge build` wrote has none recorded); None without a folder.

        Not the artifacts' ``content_hash`` in the lineage: that is the build cache's key (what the artifact was
        built from), which `release list` showed for every version, so versions with different files looked alike."""
        release = (self.lineage or {}).get("release")
        recorded = release.get("content_sha256") if isinstance(release, dict) else None
        if isinstance(recorded, str) and recorded:
            return recorded
        return version_content_hash(self.folder) if self.folder is not None else None


@dataclass(frozen=True)
class ModelReleases:
    """One model's release state as on disk."""

    model: str
    versions: tuple[VersionInfo, ...]
    active: tuple[int, ...]
    pinned: int | None
    history: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    @property
    def previous(self) -> int | None:
        """The version a rollback returns to."""
        stack = _stack(self.history)
        return stack[-2] if len(stack) >= 2 else None


@dataclass(frozen=True)
class Change:
    """The outcome of a promote, rollback or pin."""

    model: str
    action: str
    version: int
    previous: tuple[int, ...]
    applied: bool  # True when a running Triton was told (and the new version serves there)


# ------------------------------------------------------------------------------------------------- reading


def _check_repository(repo: Path, what: str = "model repository", option: str = "--repo or TRITONFORGE_REPO") -> None:
    """Refuse a path that is not a folder before anything (the lock file included) is created in it."""
    if repo.is_dir():
        return
    where = str(repo) if repo.is_absolute() else f"{repo} ({repo.absolute()})"
    problem = "is not a folder" if repo.exists() else "does not exist"
    raise ReleaseError(
        f"{what} {where} {problem}: expected a model repository folder (one folder per model, each with a "
        f"config.pbtxt); name it with {option}"
    )


def _model_names(repo: Path) -> list[str]:
    return sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())


def _as_repo(repo: str | Path, what: str = "model repository") -> Path:
    """The repository argument as a Path; anything else is a ReleaseError (not pathlib's TypeError)."""
    if isinstance(repo, str) and not repo.strip():
        # Path("") is the current folder: an unset shell variable ("--repo $REPO") must not pick it silently
        raise ReleaseError(f"{what} '{repo}' is not a path: give its folder ('.' for the current one)")
    if isinstance(repo, str | os.PathLike):
        return Path(repo)
    raise ReleaseError(f"{what} must be a folder path (str or Path), got {type(repo).__name__}")


def _check_version(version: object) -> int:
    """A version number as releases take it: a whole number >= 1 (True is not version 1, nor "2" version 2)."""
    if not is_whole(version) or version < 1:
        raise ReleaseError(f"version must be a whole number >= 1 (a version folder's name), got {_shown(version)}")
    return int(version)


def _check_control(control: ModelControl | None) -> None:
    if control is not None and not callable(getattr(control, "load", None)):
        raise ReleaseError(
            f"control must have a load(model) method (e.g. TritonControl(url)), got {type(control).__name__}"
        )


def _model_dir(repo: Path, model: str) -> Path:
    _check_repository(repo)
    if not isinstance(model, str):
        raise ReleaseError(f"model must be a model name (str), got {_shown(model)}")
    folder = repo / model
    # a plain folder name only: "", ".", ".." or a path would point outside the model folders
    if model in ("", ".", "..") or Path(model).name != model or not (folder / "config.pbtxt").is_file():
        known = _model_names(repo)
        if not known:
            raise ReleaseError(
                f"'{model}' is not a model of {repo}: {repo} holds no models, so it is not a model repository "
                "(expected one folder per model, each with a config.pbtxt)"
            )
        raise ReleaseError(f"'{model}' is not a model of {repo} (models: {', '.join(known)})")
    return folder


def _config_bytes(path: Path) -> tuple[bytes, str]:
    """A config.pbtxt's bytes and text; one that cannot be read or is not UTF-8 is a ReleaseError naming it."""
    try:
        data = path.read_bytes()
        return data, data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ReleaseError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); config.pbtxt must be UTF-8 protobuf text"
        ) from None
    except OSError as err:
        raise ReleaseError(f"cannot read {path}: {err.strerror or err}") from None


def _read_config(path: Path) -> ModelConfig:
    return parse_config_text(_config_bytes(path)[1], str(path))


def versions_on_disk(model_dir: Path) -> list[int]:
    """Numbered version folders, as Triton sees them (other names are not versions)."""
    # isascii: "²" is a str.isdigit() that int() refuses, and not a version to Triton either
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.is_dir() and p.name.isascii() and p.name.isdigit() and int(p.name) > 0
    )


def serving_versions(config: ModelConfig, on_disk: Sequence[int]) -> list[int]:
    """The versions Triton serves for a config's version_policy (default: latest 1)."""
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return list(on_disk)
    if which == "specific":
        return sorted(v for v in policy.specific.versions if v in on_disk)
    n = policy.latest.num_versions if which == "latest" else 1
    return sorted(on_disk)[-max(n, 1) :] if on_disk else []


def _is_version(value: object) -> bool:
    return is_whole(value) and int(value) > 0


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _state_problems(data: object) -> list[str]:
    """Everything wrong with the shape of releases.json, checked once on reading so no caller meets a bad value."""
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        return ["it must be an object with a 'models' object of {model name: {'pinned': ..., 'history': [...]}}"]
    problems: list[str] = []
    for name, entry in data.get("models", {}).items():
        where = f"models.{name}"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be an object with 'pinned' and 'history', got {_shown(entry)}")
            continue
        if entry.get("pinned") is not None and not _is_version(entry["pinned"]):
            problems.append(
                f"{where}.pinned must be a version number (1 or more) or null, got {_shown(entry['pinned'])}"
            )
        history = entry.get("history", [])
        if not isinstance(history, list):
            problems.append(f"{where}.history must be a list of events, got {_shown(history)}")
            continue
        for i, event in enumerate(history):
            at = f"{where}.history[{i}]"
            if not isinstance(event, dict):
                problems.append(f"{at} must be an object with 'action' and 'version', got {_shown(event)}")
                continue
            if event.get("action") not in ACTIONS:
                problems.append(f"{at}.action must be one of {', '.join(ACTIONS)}, got {_shown(event.get('action'))}")
            if not _is_version(event.get("version")):
                problems.append(
                    f"{at}.version must be a version number (1 or more), got {_shown(event.get('version'))}"
                )
    return problems


def _read_state(repo: Path) -> dict[str, Any]:
    path = repo / RELEASES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"models": {}}
    except ValueError as err:
        raise ReleaseError(f"{path} is not valid JSON ({err}); fix or remove it") from None
    except OSError as err:
        raise ReleaseError(f"cannot read {path}: {err.strerror or err}") from None
    if problems := _state_problems(data):
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise ReleaseError(
            f"{path} is not a valid release history ({len(problems)} problem{'s' * (len(problems) != 1)}): {shown}. "
            "Fix or remove it (it holds only history and pins; each config.pbtxt says what serves)"
        )
    data.setdefault("models", {})
    for entry in data["models"].values():  # both keys present from here on: callers index them
        entry.setdefault("pinned", None)
        entry.setdefault("history", [])
    return data


def _write_atomic(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` at once, keeping its permissions; a failed write (a full disk) leaves the
    old file and is a ReleaseError."""
    write_atomic(path, content, error=ReleaseError)


def _stack(history: Sequence[Mapping[str, Any]]) -> list[int]:
    """The promoted versions, oldest first, after replaying promotes and rollbacks."""
    stack: list[int] = []
    for event in history:
        if event.get("action") in ("initial", "promote"):
            stack.append(int(event["version"]))
        elif event.get("action") == "rollback" and stack:
            stack.pop()
    return stack


def model_releases(repo: str | Path, model: str) -> ModelReleases:
    repo = _as_repo(repo)
    folder = _model_dir(repo, model)
    config = _read_config(folder / "config.pbtxt")
    on_disk = versions_on_disk(folder)
    active = serving_versions(config, on_disk)
    entry = _read_state(repo)["models"].get(model, {})
    versions = tuple(VersionInfo(v, v in active, read_lineage(folder / str(v)), folder / str(v)) for v in on_disk)
    return ModelReleases(model, versions, tuple(active), entry.get("pinned"), tuple(entry.get("history", [])))


def list_releases(repo: str | Path) -> list[ModelReleases]:
    repo = _as_repo(repo)
    _check_repository(repo)
    return [model_releases(repo, n) for n in _model_names(repo)]


# ------------------------------------------------------------------------------------------------ writing


@contextlib.contextmanager
def _locked(repo: Path) -> Iterator[dict[str, Any]]:
    """Hold the repository's release lock; yields the state, written back (atomically) on success.

    Callers check the model with :func:`_model_dir` first, so the lock file is only ever made in a repository."""
    _check_repository(repo)
    try:
        lock = open(repo / LOCK_FILE, "a+")  # noqa: SIM115 - closed by the with below; open's OSError is ours
    except OSError as err:
        raise ReleaseError(f"cannot create the release lock {repo / LOCK_FILE}: {err.strerror or err}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReleaseError(f"another release command is changing {repo}; try again when it finishes") from None
        try:
            state = _read_state(repo)
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                _save_state(repo, state)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _save_state(repo: Path, state: dict[str, Any]) -> None:
    """Write releases.json (atomically), unless it already holds exactly this."""
    content = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
    path = repo / RELEASES_FILE
    with contextlib.suppress(OSError):
        if path.read_bytes() == content:
            return
    _write_atomic(path, content)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _entry(state: dict[str, Any], model: str, active: Sequence[int]) -> dict[str, Any]:
    entry = state["models"].setdefault(model, {"pinned": None, "history": []})
    if not entry["history"] and active:
        # what served before tritonforge managed the model is the bottom of the rollback stack
        entry["history"].append({"action": "initial", "version": max(active), "at": _now()})
    return entry


def _config_with_versions(folder: Path, versions: Sequence[int]) -> tuple[bytes, bytes]:
    """(old config bytes, new config bytes with version_policy specific {versions}) — protobuf-rendered."""
    old, text = _config_bytes(folder / "config.pbtxt")
    config = parse_config_text(text, str(folder / "config.pbtxt"))
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(sorted(versions))
    return old, render_config(config).encode()


def _apply(
    repo: Path, state: dict[str, Any], model: str, version: int, action: str, control: ModelControl | None
) -> tuple[tuple[int, ...], bool, int | None]:
    """Make `version` the one serving `model`: config on disk and the event in releases.json first, then the
    running Triton (if any). Returns (the versions that served before, whether Triton was told, the stop signal
    that came meanwhile or None).

    Disk and history agree at every step, so a command that dies while Triton loads (SIGKILL) leaves a promotion
    that `rollback` can undo, not a config that no history explains. A failed load puts the previous config back,
    removes the event (and asks Triton to reload, which keeps serving the old version anyway), so disk, history and
    server agree on the old version. SIGINT, SIGTERM and SIGHUP are held meanwhile (:class:`HeldSignals`): one that
    ended the command while Triton loaded a version that then failed left the config naming that version, and the
    repository could not be served again; the caller ends as the signal asked once this has returned."""
    folder = _model_dir(repo, model)
    on_disk = versions_on_disk(folder)
    if version not in on_disk:
        raise ReleaseError(
            f"{model} has no version {version} (versions: {', '.join(map(str, on_disk)) or 'none'}); "
            "add it with `tritonforge release add` first"
        )
    old, new = _config_with_versions(folder, [version])
    before = tuple(serving_versions(parse_config_text(old.decode(), str(folder / "config.pbtxt")), on_disk))
    with HeldSignals() as held:
        if new != old:
            _write_atomic(folder / "config.pbtxt", new)
        history = state["models"][model]["history"]
        if before != (version,):  # promoting what serves changes nothing: recorded, a rollback would undo nothing
            history.append({"action": action, "version": version, "from": list(before), "at": _now()})
        try:
            _save_state(repo, state)
        except ReleaseError:
            if new != old:
                _write_atomic(folder / "config.pbtxt", old)
            raise
        if control is None:
            return before, False, held.first
        try:
            control.load(model)
        except TritonForgeError as err:
            _write_atomic(folder / "config.pbtxt", old)
            if before != (version,):
                history.pop()
            _save_state(repo, state)
            with contextlib.suppress(TritonForgeError):
                control.load(model)
            # a failed version leaves Triton's strict readiness false until a restart: the message must say so
            ready = server_ready(control) if version_failed(err) else None
            failure = load_failure(model, version, before, err, ready)
        else:
            return before, True, held.first
    if held.first is not None:
        raise ReleaseInterrupted(
            f"{signal_name(held.first)} came while Triton loaded {model}; the load was let finish and the "
            f"repository put back before stopping: {failure}",
            signum=held.first,
        )
    raise ReleaseError(failure)


def _interrupted(change: Change, signum: int | None) -> Change:
    """``change``, or ReleaseInterrupted when a stop signal was held while it was made: the change is complete
    (files, history and Triton agree), and the command still ends as the signal asked."""
    if signum is None:
        return change
    was = ", ".join(map(str, change.previous)) or "none"
    where = "Triton serves it" if change.applied else "config.pbtxt names it (files only)"
    undo = {
        "promote": f"; `tritonforge release rollback {change.model}` returns to {was}",
        "pin": f"; `tritonforge release unpin {change.model}` then `release rollback {change.model}` returns to {was}",
    }.get(change.action, "")
    raise ReleaseInterrupted(
        f"{signal_name(signum)} came while Triton loaded {change.model}; the load was let finish before stopping: "
        f"the {change.action} is complete, version {change.version} serves (was {was}; {where}){undo}",
        signum=signum,
        change=change,
    )


def promote(repo: str | Path, model: str, version: int, *, control: ModelControl | None = None) -> Change:
    """Serve `version` of `model` (refused while the model is pinned to another version)."""
    repo = _as_repo(repo)
    version = _check_version(version)
    _check_control(control)
    _model_dir(repo, model)  # before the lock: a wrong --repo must not get a lock file
    with _locked(repo) as state:
        current = model_releases(repo, model)
        if current.pinned is not None and current.pinned != version:
            raise ReleaseError(
                f"{model} is pinned to version {current.pinned}; `tritonforge release unpin {model}` first"
            )
        _entry(state, model, current.active)
        previous, applied, caught = _apply(repo, state, model, version, "promote", control)
    return _interrupted(Change(model, "promote", version, previous, applied), caught)


def rollback(repo: str | Path, model: str, *, control: ModelControl | None = None) -> Change:
    """Serve the version promoted before the current one."""
    repo = _as_repo(repo)
    _check_control(control)
    _model_dir(repo, model)  # before the lock: a wrong --repo must not get a lock file
    with _locked(repo) as state:
        current = model_releases(repo, model)
        if current.pinned is not None:
            raise ReleaseError(
                f"{model} is pinned to version {current.pinned}; `tritonforge release unpin {model}` first"
            )
        entry = _entry(state, model, current.active)
        stack = _stack(entry["history"])
        if len(stack) < 2:
            raise ReleaseError(f"{model} has no earlier promoted version to roll back to (promoted: {stack or 'none'})")
        target = stack[-2]
        previous, applied, caught = _apply(repo, state, model, target, "rollback", control)
    return _interrupted(Change(model, "rollback", target, previous, applied), caught)


def pin(repo: str | Path, model: str, version: int | None = None, *, control: ModelControl | None = None) -> Change:
    """Freeze `model` on `version` (default: what serves now): promote and rollback are refused until unpin."""
    repo = _as_repo(repo)
    version = None if version is None else _check_version(version)
    _check_control(control)
    _model_dir(repo, model)  # before the lock: a wrong --repo must not get a lock file
    with _locked(repo) as state:
        current = model_releases(repo, model)
        if version is None:
            if len(current.active) != 1:
                raise ReleaseError(f"{model} serves versions {list(current.active)}; name the version to pin")
            version = current.active[0]
        entry = _entry(state, model, current.active)
        previous, applied, caught = current.active, False, None
        if tuple(current.active) != (version,):
            previous, applied, caught = _apply(repo, state, model, version, "promote", control)
        else:
            _old, new = _config_with_versions(repo / model, [version])  # make the pin explicit on disk too
            _write_atomic(repo / model / "config.pbtxt", new)
        entry["pinned"] = version
        entry["history"].append({"action": "pin", "version": version, "at": _now()})
    return _interrupted(Change(model, "pin", version, tuple(previous), applied), caught)


def unpin(repo: str | Path, model: str) -> Change:
    repo = _as_repo(repo)
    _model_dir(repo, model)  # before the lock: a wrong --repo must not get a lock file
    with _locked(repo) as state:
        current = model_releases(repo, model)
        if current.pinned is None:
            raise ReleaseError(f"{model} is not pinned")
        entry = _entry(state, model, current.active)
        entry["history"].append({"action": "unpin", "version": current.pinned, "at": _now()})
        entry["pinned"] = None
    return Change(model, "unpin", current.pinned, current.active, False)


# -------------------------------------------------------------------------------------------- new versions


def _comparable(text: str, where: str) -> str:
    """A config without its version_policy: one config serves every version, so the rest must not change."""
    config = parse_config_text(text, where)
    config.ClearField("version_policy")
    return render_config(config)


def _config_diff(ours: Path, theirs: Path) -> list[str]:
    """The lines (``-serving``/``+new``) in which two configs differ beyond version_policy; [] when they agree."""
    a = _comparable(_config_bytes(ours)[1], str(ours))
    b = _comparable(_config_bytes(theirs)[1], str(theirs))
    return [
        line
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), "serving", "new", lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _shown_diff(diff: Sequence[str]) -> str:
    return f"{'; '.join(diff[:6])}{' …' if len(diff) > 6 else ''}"


def _config_problem(model: str, ours: Path, theirs: Path) -> str | None:
    if not (diff := _config_diff(ours, theirs)):
        return None
    return (
        f"{model}: the new build's config.pbtxt differs from the serving one beyond version_policy "
        f"({_shown_diff(diff)}). Triton has one config for all versions of a model, "
        "so a version can change files, not the config: build it as a new model name instead"
    )


def _what_differs(ours: Path, theirs: Path) -> list[str]:
    """The config fields that differ (beyond version_policy), each parameter by its key and values: an ensemble's
    config renders as many short lines, which a line diff cut into fragments ('+  key: "lora_adapters"')."""
    a, b = _read_config(ours), _read_config(theirs)
    changed: list[str] = []
    for name in sorted({f.name for f, _ in a.ListFields()} | {f.name for f, _ in b.ListFields()}):
        if name == "version_policy":
            continue
        if name != "parameters":
            if getattr(a, name) != getattr(b, name):
                changed.append(name)
            continue
        for key in sorted(set(a.parameters) | set(b.parameters)):
            old = a.parameters[key].string_value if key in a.parameters else None
            new = b.parameters[key].string_value if key in b.parameters else None
            if old != new:
                shown = f"added ({new!r})" if old is None else f"removed (was {old!r})" if new is None else (
                    f"{old!r} -> {new!r}")
                changed.append(f"parameters[{key!r}] {shown}")
    return changed


def _ensemble_change(repo: Path, source: Path, model: str) -> str:
    """What a release cannot do for an ensemble whose config changed, and what does it."""
    return (
        f"{model} is an ensemble, and its config.pbtxt in {source} differs from the serving one: "
        f"{'; '.join(_what_differs(repo / model / 'config.pbtxt', source / model / 'config.pbtxt'))}. An ensemble "
        "has one config and an empty version folder, so a release adds nothing to it: to serve the new config, copy "
        f"{source / model / 'config.pbtxt'} over {repo / model / 'config.pbtxt'} once the versions it needs serve, "
        f"then restart Triton (or load {model} through its repository API), or serve the new build's repository"
    )


def ensemble_changes(repo: str | Path, source: str | Path, models: Sequence[str] | None = None) -> dict[str, str]:
    """{ensemble: what differs and what to do} for each ensemble (of ``models``, default all) in both ``repo`` and
    ``source`` whose config differs: :func:`add_versions` skips ensembles, and an adapter listed in a chat
    ensemble's ``lora_adapters`` parameter, say, would otherwise go unnoticed."""
    repo, source = _as_repo(repo), _as_repo(source, "source repository")
    _check_repository(repo)
    _check_repository(source, "source repository", "--from")
    changes: dict[str, str] = {}
    for model in dict.fromkeys(models) if models else _model_names(source):
        ours, theirs = repo / model / "config.pbtxt", source / model / "config.pbtxt"
        if Path(model).name != model or not ours.is_file() or not theirs.is_file():
            continue
        if _read_config(theirs).platform == "ensemble" and _config_diff(ours, theirs):
            changes[model] = _ensemble_change(repo, source, model)
    return changes


def _add_problem(repo: Path, source: Path, model: str, every: bool, plan: list[tuple[str, Path]]) -> str | None:
    """Check one model of an add (`every`: found by scanning the source, not named); appends it to `plan` when it
    is to be added, returns what is wrong otherwise (None when it is fine or skipped)."""
    src_dir = source / model
    if model in ("", ".", "..") or Path(model).name != model or not (src_dir / "config.pbtxt").is_file():
        return f"{model}: not a model of the source repository {source}"
    if not (repo / model / "config.pbtxt").is_file():
        return f"{model}: not in {repo}; releases add versions to existing models (build it in first)"
    src_versions = versions_on_disk(src_dir)
    if not src_versions:
        return f"{model}: the source has no version folder"
    src_version_dir = src_dir / str(src_versions[-1])
    if cut := damage(src_version_dir):  # a source copied in part: never release it (validate's size check)
        return (f"{model}: version {src_versions[-1]} of the source is not what its build wrote ({cut}): a copy cut "
                "short? copy it again or rebuild")
    src_config = _read_config(src_dir / "config.pbtxt")
    if src_config.platform == "ensemble":  # its version folder is empty: nothing to release (ensemble_changes)
        if every:
            return None
        if _config_diff(repo / model / "config.pbtxt", src_dir / "config.pbtxt"):
            return _ensemble_change(repo, source, model)
        return f"{model} is an ensemble whose config equals the serving one: a release has nothing to add to it"
    if (problem := _config_problem(model, repo / model / "config.pbtxt", src_dir / "config.pbtxt")) is not None:
        return problem
    current = model_releases(repo, model)
    for serving in current.active:
        if (problem := _renumbered_adapters(model, repo / model / str(serving), src_version_dir)) is not None:
            return problem
    serving_hashes = {version_content_hash(repo / model / str(v)) for v in current.active}
    if every and version_content_hash(src_version_dir) in serving_hashes:
        return None  # unchanged
    plan.append((model, src_version_dir))
    return None


def _adapter_ids(version_dir: Path) -> dict[str, int]:
    try:
        table = json.loads((version_dir / ADAPTER_TABLE).read_text(encoding="utf-8"))
        return {name: int(entry["lora_task_id"]) for name, entry in table["adapters"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no table (not an LLM with adapters), or one the model itself refuses at load


def _renumbered_adapters(model: str, serving: Path, new: Path) -> str | None:
    """An adapter whose lora_task_id differs between what serves and the new version. Preprocessing (name -> id)
    and the engine (id -> weights) each hold the table and are promoted one at a time, so an id that moved sends a
    name's requests to another adapter's weights. Builds before ids followed the names numbered them 1..N."""
    before, after = _adapter_ids(serving), _adapter_ids(new)
    moved = [f"'{name}' {before[name]} -> {after[name]}" for name in sorted(before.keys() & after.keys())
             if before[name] != after[name]]
    if not moved:
        return None
    return (f"{model}: the new version numbers adapters differently from version {serving.name}, which serves "
            f"(lora_task_id {', '.join(moved)}; built by a tritonforge that numbered adapters 1..N): promoted one "
            "model at a time, requests for an adapter would reach another adapter's weights. Serve the new build as "
            "a whole repository (a restart), not as release versions")


def _check_add_arguments(models: object, evaluation: object, dataset_sha256: object, note: object) -> None:
    """add_versions' arguments, refused before anything is read or written."""
    if models is not None and (
        isinstance(models, str | bytes)
        or not isinstance(models, Sequence)
        or not all(isinstance(m, str) for m in models)
    ):
        raise ReleaseError(f"models must be a list of model names (str) or None for every model, got {_shown(models)}")
    if evaluation is not None:
        try:
            if not isinstance(evaluation, Mapping):
                raise TypeError
            json.dumps(dict(evaluation))
        except (TypeError, ValueError):
            raise ReleaseError(
                f"evaluation must be a mapping of JSON values (recorded in lineage.json), got {_shown(evaluation)}"
            ) from None
    for name, value in (("dataset_sha256", dataset_sha256), ("note", note)):
        if value is not None and not isinstance(value, str):
            raise ReleaseError(f"{name} must be a str (or None), got {_shown(value)}")


def add_versions(
    repo: str | Path,
    source: str | Path,
    models: Sequence[str] | None = None,
    *,
    evaluation: Mapping[str, Any] | None = None,
    dataset_sha256: str | None = None,
    note: str | None = None,
) -> dict[str, int]:
    """Add each model's newest version folder in `source` (a freshly built repository) as the next version in `repo`.

    Without `models`, every non-ensemble model whose files differ from what serves is added (unchanged ones are
    skipped; :func:`ensemble_changes` names the ensembles whose config differs, which a release cannot change).
    Nothing serves differently afterwards: the serving versions are written explicitly into the configs
    first, so a new folder only serves once promoted. Returns {model: new version}.
    """
    repo, source = _as_repo(repo), _as_repo(source, "source repository")
    _check_add_arguments(models, evaluation, dataset_sha256, note)
    _check_repository(repo)
    _check_repository(source, "source repository", "--from")
    _read_state(repo)  # a bad releases.json is named once, not once per model below
    # --model X --model X means X once: one new version, not two identical ones
    candidates = list(dict.fromkeys(models)) if models else _model_names(source)
    if not candidates:
        raise ReleaseError(
            f"source repository {source} holds no models (expected one folder per model, each with a config.pbtxt "
            "and a numbered version folder): pass the repository `tritonforge build` wrote"
        )
    problems: list[str] = []
    plan: list[tuple[str, Path]] = []
    for model in candidates:
        try:
            if (problem := _add_problem(repo, source, model, models is None, plan)) is not None:
                problems.append(problem)
        except ValidationError as err:  # a config.pbtxt that does not parse: its path is in each problem
            problems.extend(f"{model}: {p.message}" for p in err.problems)
        except ReleaseError as err:
            problems.append(f"{model}: {err}")
    if problems:
        raise ReleaseError("; ".join(problems))
    if not plan:
        return {}  # nothing changes: no lock, no history write
    added: dict[str, int] = {}
    with _locked(repo) as state:
        for model, src_version_dir in plan:
            folder = repo / model
            current = model_releases(repo, model)
            _entry(state, model, current.active)
            # pin what serves explicitly before a higher-numbered folder appears ("latest" would pick it up)
            _old, new = _config_with_versions(folder, current.active)
            _write_atomic(folder / "config.pbtxt", new)
            version = (max(versions_on_disk(folder)) if versions_on_disk(folder) else 0) + 1
            for left in folder.glob(".staging-*"):  # an add killed mid-copy (this one holds the lock: not ours)
                shutil.rmtree(left, ignore_errors=True)
            try:
                staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
            except OSError as err:
                raise ReleaseError(f"cannot add to {folder}: {err.strerror or err}") from None
            try:
                shutil.copytree(src_version_dir, staging, dirs_exist_ok=True)
                lineage = read_lineage(src_version_dir) or {}
                lineage["release"] = {
                    "version": version,
                    "added_at": _now(),
                    "source": str(src_version_dir.resolve()),
                    "content_sha256": version_content_hash(staging),
                    **({"evaluation": dict(evaluation)} if evaluation else {}),
                    **({"dataset_sha256": dataset_sha256} if dataset_sha256 else {}),
                    **({"note": note} if note else {}),
                }
                (staging / LINEAGE_FILE).write_bytes(lineage_bytes(lineage))
                staging.rename(folder / str(version))
            except BaseException as err:
                shutil.rmtree(staging, ignore_errors=True)
                if isinstance(err, OSError | shutil.Error):  # a full disk, say: shutil.Error lists every file
                    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)[:300]
                    raise ReleaseError(
                        f"version {version} of {model} was not added (nothing of it is left): copying "
                        f"{src_version_dir} failed: {reason}"
                    ) from None
                raise
            state["models"][model]["history"].append({"action": "add", "version": version, "at": _now()})
            added[model] = version
    return added
