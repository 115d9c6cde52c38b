"""Offline validation of a Triton model repository: Triton's load-time rules, without a server.

The checks follow the order in which Triton itself validates a repository (triton-inference-server/core:
``model_config_utils.cc``, ``model_repository_manager.cc``, ``model_lifecycle.cc``, ``ensemble_utils.cc``); the
rule labels R1..R68 in the comments are those of the team's Triton config-rules reference:

1. poll: read ``config.pbtxt``, autofill backend fields, ``ValidateModelConfig``, ``ValidateModelIOConfig``
   (by default as ``--disable-auto-complete-config``, the way tritonforge's ``serve`` and ``deploy k8s`` run Triton;
   with ``auto_complete=True`` as Triton's default, where backends complete the config from the model file and a
   missing ``config.pbtxt`` is allowed: :mod:`tritonforge.validation.autocomplete`), directory name;
2. dependency graph: ensemble steps resolved, missing composing models, circular dependencies;
3. load: version policy, instance groups, label files, sequence state, model files, warmup;
4. ensembles, once their composing models "loaded": required versions, then the cross-model
   ``ValidateEnsembleConfig`` (dtype, shape, decoupled joins), which derives the ensemble's decoupled flag.

Messages use Triton's own wording so they can be recognised in a server log. Unlike Triton, which stops at the
first error of a model, every independent problem is reported. A model that fails to poll never enters the
dependency graph (ensembles that use it see it as "not available"), exactly as in Triton.

Python-backend models are only executed in the auto-complete mode, and then only their ``auto_complete_config``
(in a subprocess, with a timeout).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tritonforge.config_io import model_config_pb2, read_config
from tritonforge.errors import OptionError, Problem, ValidationError
from tritonforge.lineage import damage
from tritonforge.trtllm.images import image_name_problem
from tritonforge.validation.autocomplete import auto_complete as auto_complete_config
from tritonforge.validation.autocomplete import model_file_rules as model_file_io_rules
from tritonforge.validation.backends import backend_library_rules
from tritonforge.validation.common import CONFIG_FILE, _dedupe, _Findings, _Model
from tritonforge.validation.config_rules import _model_config_rules, _model_io_rules, _normalize
from tritonforge.validation.model_dir_rules import (
    _autofill_backend_fields,
    _batch_strategy_rules,
    _instance_group_rules,
    _label_file_rules,
    _model_file_rules,
    _python_env_rules,
    _sequence_state_rules,
    _versions_to_load,
    _warmup_rules,
)
from tritonforge.validation.rate_limit import RateLimit, RateLimitResource, check_rate_limiter
from tritonforge.validation.repository_rules import _check_dependencies
from tritonforge.values import is_whole

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["RateLimit", "RateLimitResource", "check_config", "check_repository", "validate"]


def check_config(
    config: ModelConfig, *, model_dir: Path | None = None, gpus: int | None = 8, auto_complete: bool = False
) -> list[str]:
    """Every single-config problem of one model, as Triton's messages (the config itself is not modified).

    With ``model_dir`` the layout rules run too (directory name, version folders, model files, label, warmup and
    initial-state files); without it only what the config alone says is checked. ``gpus`` is the number of GPUs
    of the target machine (ids ``0..gpus-1``); ``None`` skips the GPU-id checks.
    """
    copy = model_config_pb2().ModelConfig()
    copy.CopyFrom(config)
    model_dir = Path(model_dir) if model_dir is not None else None
    repo = model_dir.parent if model_dir is not None else None
    return _check_model(copy, model_dir, repo, gpus, None, auto_complete).messages()


def check_repository(
    repo: str | Path,
    *,
    gpus: int | None = 8,
    image: str | None = None,
    auto_complete: bool = False,
    image_backends: bool = False,
    rate_limit: RateLimit | None = None,
) -> list[Problem]:
    """Every problem of the repository, sorted (stably) by the path of the offending config.pbtxt.

    ``image`` is the Triton container that will serve it (e.g. ``nvcr.io/nvidia/tritonserver:24.12-trtllm-python-py3``;
    default: the ``image`` recorded by tritonforge's build in ``tritonforge.json``): every TensorRT-LLM engine
    manifest in the repository is checked against that container's TensorRT-LLM version. With ``image_backends``
    (what ``tritonforge validate`` does, and build and deploy on the gpu target) every model's backend is also
    checked against the backends that image ships; without it only backends no NGC image ships are.
    ``auto_complete`` validates as Triton's default mode (NGC containers run with auto-complete: backends complete
    configs from model files) instead of ``--disable-auto-complete-config``, the mode tritonforge serves with.
    ``rate_limit`` is the server's ``--rate-limit`` and ``--rate-limit-resource`` flags (default: off, Triton's
    default and how tritonforge serves); the rate limiter's resource rules (R44) apply only with execution_count.
    """
    if isinstance(repo, str) and not repo.strip():
        # Path("") is the current folder: validating it instead would report on whatever the caller stands in
        why = f"{repo!r} is not a path: give the model repository's folder ('.' for the current one)"
        return [Problem("repo", why)]
    repo = Path(repo)
    if repo.is_file():  # Triton's "failed to stat file" read as if it were missing
        spec = repo.suffix in (".yaml", ".yml")
        hint = f": a deployment spec? build it first (tritonforge build {repo} -o <folder>)" if spec else ""
        return [Problem(str(repo), f"is a file, not a model repository folder{hint}")]
    if not repo.is_dir():
        return [Problem(str(repo), f"failed to stat file {repo}: model repository is not a directory")]
    problems: list[Problem] = []
    models: dict[str, _Model] = {}
    try:
        model_dirs = sorted((p for p in repo.iterdir() if p.is_dir()), key=lambda p: p.name)
    except OSError as err:
        return [Problem(str(repo), f"failed to read the model repository {repo}: {err.strerror or err}")]
    for model_dir in model_dirs:
        try:
            model = _load_model(model_dir, repo, gpus, problems, image if image_backends else None, auto_complete)
        except OSError as err:  # a folder the server could not read either (permissions, I/O): named, not raised
            where = Path(err.filename) if err.filename else model_dir
            problems.append(Problem(str(model_dir), f"failed to read {where}: {err.strerror or err}"))
            continue
        if model is not None:
            models[model.name] = model
    _check_dependencies(models)
    check_rate_limiter(models, rate_limit or RateLimit())
    for model in models.values():
        problems.extend(Problem(model.where, m) for m in _dedupe([*model.findings.messages(), *model.cross]))
    problems.extend(_engine_manifest_problems(repo, image or _recorded_image(repo)))
    return sorted(problems, key=lambda p: p.where)


def _recorded_image(repo: Path) -> str | None:
    """The serving image tritonforge's build recorded in ``tritonforge.json`` (None when there is none)."""
    from tritonforge.build_manifest import read_build_manifest

    image = (read_build_manifest(repo) or {}).get("image")
    return image if isinstance(image, str) and image else None


def _engine_manifest_problems(repo: Path, image: str | None) -> list[Problem]:
    """A TensorRT-LLM engine only loads in a container whose TensorRT-LLM version built it (the most common
    load failure users report): compare each engine manifest with the target image."""
    import json

    if not image:
        return []
    from tritonforge.trtllm.compatibility import MANIFEST_NAME, check_engine_manifest

    problems = []
    for manifest_path in sorted(repo.glob(f"*/*/engine/{MANIFEST_NAME}")):
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            problems.append(Problem(str(manifest_path), f"unreadable engine manifest: {err}"))
            continue
        problems.extend(Problem(str(manifest_path), m) for m in check_engine_manifest(manifest, image))
    return problems


MAX_GPUS = 1024  # GPUs on one machine: the ids 0..N-1 are listed (Triton gives a KIND_GPU group without ids all)


def validate(
    repo: str | Path,
    *,
    gpus: int | None = 8,
    image: str | None = None,
    auto_complete: bool = False,
    rate_limit: RateLimit | None = None,
) -> None:
    """Raise ValidationError listing every problem if the repository would not load cleanly in Triton
    (``auto_complete``, ``rate_limit``: see :func:`check_repository`); OptionError for an image that names no
    release (check_repository takes such an image as a custom build and skips the checks that need one)."""
    if not isinstance(repo, str | os.PathLike):
        raise OptionError(f"repo must be the model repository's path (str or Path), got {type(repo).__name__}")
    if gpus is not None and (not is_whole(gpus) or not 0 <= gpus <= MAX_GPUS):  # (a billion ran out of memory)
        raise OptionError(f"gpus={gpus!r} must be a whole number of GPUs, 0 to {MAX_GPUS} (None: GPU ids are not "
                          "checked)")
    gpus = None if gpus is None else int(gpus)
    if rate_limit is not None and not isinstance(rate_limit, RateLimit):
        raise OptionError(
            f"rate_limit must be a RateLimit (tritonforge.validator.RateLimit(mode, resources)), got "
            f"{type(rate_limit).__name__}"
        )
    if image is not None and (problem := image_name_problem(image)):
        raise OptionError(f"--image {problem}")
    problems = check_repository(
        repo, gpus=gpus, image=image, auto_complete=auto_complete, image_backends=True, rate_limit=rate_limit
    )
    if problems:
        raise ValidationError(problems)


# ================================================================ per-model bookkeeping


def _load_model(
    model_dir: Path, repo: Path, gpus: int | None, problems: list[Problem], image: str | None, auto_complete: bool
) -> _Model | None:
    path = model_dir / CONFIG_FILE
    if not path.is_file() and auto_complete:  # Triton starts from an empty config and completes it
        config = model_config_pb2().ModelConfig()
        return _Model(model_dir.name, str(path), config, _check_model(config, model_dir, repo, gpus, image, True))
    if not path.is_file():
        problems.append(
            Problem(
                str(model_dir),
                f"failed to open text file for read {path}: No such file or directory "
                "(validated as tritonserver --disable-auto-complete-config, the way tritonforge serves: every model "
                "needs its config.pbtxt; --auto-complete validates as Triton's default mode)",
            )
        )
        return None
    try:
        config = read_config(path)
    except ValidationError as err:
        problems.extend(err.problems)
        return None
    except (OSError, UnicodeDecodeError) as err:
        problems.append(Problem(str(path), f"failed to read text proto from {path}: {err}"))
        return None
    findings = _check_model(config, model_dir, repo, gpus, image, auto_complete)
    return _Model(model_dir.name, str(path), config, findings)


def _check_model(
    config: ModelConfig,
    model_dir: Path | None,
    repo: Path | None,
    gpus: int | None,
    image: str | None = None,
    auto_complete: bool = False,
) -> _Findings:
    """Steps 1-5 and 8 of Triton's load sequence for one model; normalizes ``config`` in place."""
    found = _Findings()
    dir_name = model_dir.name if model_dir is not None else ""
    error = _autofill_backend_fields(config, dir_name, model_dir)
    if error:
        found.poll.append(error)
        return found
    _normalize(config)
    found.poll += _model_config_rules(config)
    completing = auto_complete and model_dir is not None
    if not completing:
        found.poll += _model_io_rules(config)
    if model_dir is not None and config.name and config.name != dir_name:  # R1
        found.poll.append(
            f"unexpected directory name '{dir_name}' for model '{config.name}', directory name must equal model name"
        )
    if model_dir is None:
        found.load += _instance_group_rules(config, gpus)
        return found
    found.versions, ignored, broken = _versions_to_load(config, model_dir)
    found.load += broken
    if not found.versions:  # R5 (ensembles included)
        hint = "".join(f"; {note}" for note in ignored)
        found.load.append(
            f"at least one version must be available under the version policy of model '{config.name}'{hint}"
        )
    found.load += _instance_group_rules(config, gpus)
    found.load += backend_library_rules(config, model_dir, found.versions, image)
    if completing:  # the backend completes the config (TRITONBACKEND_ModelInitialize), then core validates its IO
        errors = [] if found.poll or found.load else auto_complete_config(config, model_dir, _latest(found.versions))
        if errors:
            found.load += errors
            return found
        _normalize(config)
        # core validates the completed config as a whole (a decoupled policy beside the response cache, a negative
        # max_batch_size set by the model), not only its inputs and outputs
        found.poll += [m for m in _model_config_rules(config) if m not in found.poll]
        found.poll += _model_io_rules(config)
    found.load += _label_file_rules(config, model_dir)
    found.load += _sequence_state_rules(config, model_dir)
    found.load += _python_env_rules(config, model_dir)
    found.load += _batch_strategy_rules(config, model_dir, repo)
    found.load += _warmup_rules(config, model_dir)
    found.version_errors = _model_file_rules(config, model_dir, found.versions)
    for version in found.versions:  # not Triton's rule: what tritonforge's build recorded of the folder
        if version not in found.version_errors and (cut := damage(model_dir / str(version))):
            found.version_errors[version] = (
                f"version {version} of model '{config.name}' is not what the build wrote ({cut}): a copy cut short, "
                "or files changed since: copy it again or rebuild (an edit meant to stay: remove \"files\" from its "
                "lineage.json)"
            )
    checked = [v for v in found.versions if v not in found.version_errors]
    found.version_errors.update(model_file_io_rules(config, model_dir, checked))
    return found


def _latest(versions: list[int]) -> int | None:
    return max(versions) if versions else None


# ================================================================ normalization (§2 step 2, §3.11, R10)
