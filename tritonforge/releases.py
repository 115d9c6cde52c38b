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
from typing import TYPE_CHECKING, Any, Protocol

from tritonforge.config_io import parse_config_text, render_config
from tritonforge.errors import ClientError, ReleaseError, TritonForgeError
from tritonforge.lineage import LINEAGE_FILE, lineage_bytes, read_lineage, version_content_hash
from tritonforge.triton.connection import Connection

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

RELEASES_FILE = "releases.json"
LOCK_FILE = ".releases.lock"


class ModelControl(Protocol):
    """What a release needs from a running Triton: (re)load one model, raising with Triton's reason on failure.

    :class:`tritonforge.server.TritonServer` is one; :class:`TritonControl` reaches any Triton over HTTP."""

    def load(self, model: str) -> None: ...


class TritonControl:
    """Triton's repository API over HTTP (``host:port``), with the admin key header when the server wants one."""

    def __init__(self, url: str, *, admin_key: str | None = None, timeout: float = 300.0) -> None:
        self.url = url.removeprefix("http://")
        self.admin_key = admin_key
        self.timeout = timeout

    def load(self, model: str) -> None:
        with Connection(self.url, "http", timeout=self.timeout, retries=0, admin_key=self.admin_key) as triton:
            try:
                triton.load_model(model)
                ready = triton.is_model_ready(model)
            except ClientError as err:
                reason = getattr(err, "reason", "") or str(err)
                raise ReleaseError(f"Triton at {self.url} could not load '{model}': {reason}") from None
        if not ready:
            raise ReleaseError(f"Triton at {self.url} loaded '{model}' but it is not ready")


@dataclass(frozen=True)
class VersionInfo:
    version: int
    serving: bool
    lineage: dict[str, Any] | None


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


def _model_dir(repo: Path, model: str) -> Path:
    folder = repo / model
    if not (folder / "config.pbtxt").is_file():
        known = ", ".join(sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())) or "none"
        raise ReleaseError(f"'{model}' is not a model of {repo} (models: {known})")
    return folder


def versions_on_disk(model_dir: Path) -> list[int]:
    """Numbered version folders, as Triton sees them (other names are not versions)."""
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)


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


def _read_state(repo: Path) -> dict[str, Any]:
    try:
        data = json.loads((repo / RELEASES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"models": {}}
    except ValueError as err:
        raise ReleaseError(f"{repo / RELEASES_FILE} is not valid JSON ({err}); fix or remove it") from None
    if not isinstance(data, dict) or not isinstance(data.get("models", {}), dict):
        raise ReleaseError(f"{repo / RELEASES_FILE} must be an object with a 'models' object")
    data.setdefault("models", {})
    return data


def _write_atomic(path: Path, content: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
    repo = Path(repo)
    folder = _model_dir(repo, model)
    config = parse_config_text((folder / "config.pbtxt").read_text(encoding="utf-8"), str(folder / "config.pbtxt"))
    on_disk = versions_on_disk(folder)
    active = serving_versions(config, on_disk)
    entry = _read_state(repo)["models"].get(model, {})
    versions = tuple(VersionInfo(v, v in active, read_lineage(folder / str(v))) for v in on_disk)
    return ModelReleases(model, versions, tuple(active), entry.get("pinned"), tuple(entry.get("history", [])))


def list_releases(repo: str | Path) -> list[ModelReleases]:
    repo = Path(repo)
    if not repo.is_dir():
        raise ReleaseError(f"model repository {repo} is not a folder")
    names = sorted(p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file())
    return [model_releases(repo, n) for n in names]


# ------------------------------------------------------------------------------------------------ writing


@contextlib.contextmanager
def _locked(repo: Path) -> Iterator[dict[str, Any]]:
    """Hold the repository's release lock; yields the state, written back (atomically) on success."""
    with open(repo / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReleaseError(f"another release command is changing {repo}; try again when it finishes") from None
        try:
            state = _read_state(repo)
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                _write_atomic(repo / RELEASES_FILE, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
    old = (folder / "config.pbtxt").read_bytes()
    config = parse_config_text(old.decode("utf-8"), str(folder / "config.pbtxt"))
    config.version_policy.Clear()
    config.version_policy.specific.versions.extend(sorted(versions))
    return old, render_config(config).encode()


def _apply(repo: Path, model: str, version: int, control: ModelControl | None) -> tuple[tuple[int, ...], bool]:
    """Make `version` the one serving `model`: config on disk first, then the running Triton (if any).

    A failed load puts the previous config back (and asks Triton to reload it, which keeps serving it anyway),
    so disk and server agree on the old version."""
    folder = _model_dir(repo, model)
    on_disk = versions_on_disk(folder)
    if version not in on_disk:
        raise ReleaseError(
            f"{model} has no version {version} (versions: {', '.join(map(str, on_disk)) or 'none'}); "
            "add it with `tritonforge release add` first"
        )
    old, new = _config_with_versions(folder, [version])
    before = tuple(serving_versions(parse_config_text(old.decode()), on_disk))
    if new != old:
        _write_atomic(folder / "config.pbtxt", new)
    if control is None:
        return before, False
    try:
        control.load(model)
    except TritonForgeError as err:
        _write_atomic(folder / "config.pbtxt", old)
        with contextlib.suppress(TritonForgeError):
            control.load(model)
        served = ", ".join(map(str, before)) or "none"
        raise ReleaseError(
            f"version {version} of {model} failed to load, so it was not promoted (version {served} still "
            f"serves; config.pbtxt restored): {err}"
        ) from None
    return before, True


def promote(repo: str | Path, model: str, version: int, *, control: ModelControl | None = None) -> Change:
    """Serve `version` of `model` (refused while the model is pinned to another version)."""
    repo = Path(repo)
    with _locked(repo) as state:
        current = model_releases(repo, model)
        if current.pinned is not None and current.pinned != version:
            raise ReleaseError(
                f"{model} is pinned to version {current.pinned}; `tritonforge release unpin {model}` first"
            )
        entry = _entry(state, model, current.active)
        previous, applied = _apply(repo, model, version, control)
        entry["history"].append({"action": "promote", "version": version, "from": list(previous), "at": _now()})
    return Change(model, "promote", version, previous, applied)


def rollback(repo: str | Path, model: str, *, control: ModelControl | None = None) -> Change:
    """Serve the version promoted before the current one."""
    repo = Path(repo)
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
        previous, applied = _apply(repo, model, target, control)
        entry["history"].append({"action": "rollback", "version": target, "from": list(previous), "at": _now()})
    return Change(model, "rollback", target, previous, applied)


def pin(repo: str | Path, model: str, version: int | None = None, *, control: ModelControl | None = None) -> Change:
    """Freeze `model` on `version` (default: what serves now): promote and rollback are refused until unpin."""
    repo = Path(repo)
    with _locked(repo) as state:
        current = model_releases(repo, model)
        if version is None:
            if len(current.active) != 1:
                raise ReleaseError(f"{model} serves versions {list(current.active)}; name the version to pin")
            version = current.active[0]
        entry = _entry(state, model, current.active)
        previous, applied = current.active, False
        if tuple(current.active) != (version,):
            previous, applied = _apply(repo, model, version, control)
            entry["history"].append({"action": "promote", "version": version, "from": list(previous), "at": _now()})
        else:
            _old, new = _config_with_versions(repo / model, [version])  # make the pin explicit on disk too
            _write_atomic(repo / model / "config.pbtxt", new)
        entry["pinned"] = version
        entry["history"].append({"action": "pin", "version": version, "at": _now()})
    return Change(model, "pin", version, tuple(previous), applied)


def unpin(repo: str | Path, model: str) -> Change:
    repo = Path(repo)
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


def _config_problem(model: str, ours: Path, theirs: Path) -> str | None:
    a = _comparable(ours.read_text(encoding="utf-8"), str(ours))
    b = _comparable(theirs.read_text(encoding="utf-8"), str(theirs))
    if a == b:
        return None
    diff = [
        line
        for line in difflib.unified_diff(a.splitlines(), b.splitlines(), "serving", "new", lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return (
        f"{model}: the new build's config.pbtxt differs from the serving one beyond version_policy "
        f"({'; '.join(diff[:6])}{' …' if len(diff) > 6 else ''}). Triton has one config for all versions of a model, "
        "so a version can change files, not the config: build it as a new model name instead"
    )


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
    skipped). Nothing serves differently afterwards: the serving versions are written explicitly into the configs
    first, so a new folder only serves once promoted. Returns {model: new version}.
    """
    repo, source = Path(repo), Path(source)
    for folder, what in ((repo, "model repository"), (source, "source repository")):
        if not folder.is_dir():
            raise ReleaseError(f"{what} {folder} is not a folder")
    candidates = models or sorted(p.name for p in source.iterdir() if (p / "config.pbtxt").is_file())
    problems: list[str] = []
    plan: list[tuple[str, Path]] = []
    for model in candidates:
        src_dir = source / model
        if not (src_dir / "config.pbtxt").is_file():
            problems.append(f"{model}: not a model of the source repository {source}")
            continue
        if not (repo / model / "config.pbtxt").is_file():
            problems.append(f"{model}: not in {repo}; releases add versions to existing models (build it in first)")
            continue
        src_versions = versions_on_disk(src_dir)
        if not src_versions:
            problems.append(f"{model}: the source has no version folder")
            continue
        src_version_dir = src_dir / str(src_versions[-1])
        src_config = parse_config_text((src_dir / "config.pbtxt").read_text(encoding="utf-8"))
        if src_config.platform == "ensemble" and models is None:
            continue  # an ensemble's version folder is empty: nothing to release
        if (problem := _config_problem(model, repo / model / "config.pbtxt", src_dir / "config.pbtxt")) is not None:
            problems.append(problem)
            continue
        current = model_releases(repo, model)
        serving_hashes = {version_content_hash(repo / model / str(v)) for v in current.active}
        if models is None and version_content_hash(src_version_dir) in serving_hashes:
            continue  # unchanged
        plan.append((model, src_version_dir))
    if problems:
        raise ReleaseError("; ".join(problems))
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
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
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
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            state["models"][model]["history"].append({"action": "add", "version": version, "at": _now()})
            added[model] = version
    return added
