"""spec → artifacts → rendered configs → file plan → (validated) repository on disk."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonforge.builders.kinds import ArtifactInfo, BuildContext, build_order, kind_of
from tritonforge.errors import BuildError, OptionError, Problem, QuantizationGateError, SpecError, ValidationError
from tritonforge.naming import llm_names
from tritonforge.repository import FileContent, check_output, write_repository
from tritonforge.spec import EmbeddingModel, LLMModel, RerankerModel, Spec, load_spec, parse_spec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildReport:
    repo: Path
    target: str
    models: tuple[str, ...]
    artifacts: tuple[ArtifactInfo, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    planned_commands: tuple[str, ...] = field(default_factory=tuple)  # --plan: engine builds not run


def plan_repository(
    spec: Spec, progress: Progress | None = None, engine_plans: list[Any] | None = None
) -> tuple[dict[str, FileContent], list[ArtifactInfo], list[str]]:
    """Compile every artifact (cached by content hash) and render the whole repository as a file plan.

    Each entry is built by its kind (``builders/kinds``), after the entries it builds on: retrievers embed their
    corpus with an embedder's artifact and wire ensembles through the models of both.
    """
    from tritonforge.builders.model_configs import ModelSet

    ctx = BuildContext(spec, progress, engine_plans)
    for key in build_order(spec):
        try:
            ctx.built[key] = kind_of(spec.models[key]).build(ctx, key, spec.models[key])
        except QuantizationGateError as err:  # said in the spec's words, the same for a fresh or a cached model
            raise BuildError(
                f"models.{key}: {'; '.join(err.problems)}; set force_quantization: true on it to ship it anyway, "
                "or choose another precision"
            ) from None
    artifacts = [a for built in ctx.built.values() for a in built.artifacts]
    plan = ModelSet()
    for key, built in ctx.built.items():
        _add_lineage(ctx, key)
        plan.merge(built.models)

    manifest: dict[str, Any] = {"spec": spec.name, "target": spec.target, "artifacts": [asdict(a) for a in artifacts]}
    stand_ins = random_stand_ins(spec)
    if stand_ins:  # said at build time (notes) and at serve time (tritonforge serve reads it back)
        manifest["random_stand_ins"] = stand_ins
        plan.notes += [f"RANDOM stand-in: {s}" for s in stand_ins]
    plan.notes += bf16_notes(spec)
    if spec.target == "gpu":  # the GPU nodes' driver: nothing here can check it, so the build says it
        from tritonforge.trtllm.images import driver_note

        plan.notes += [note] if (note := driver_note(spec.serving_image)) else []
    if spec.target == "gpu" or spec.image:
        manifest["image"] = spec.serving_image  # validate / deploy check engines and runtimes against it
    # `tritonforge deploy k8s` sizes pods from these: the engine may live outside the repository
    manifest["deploy"] = spec.deploy.model_dump(mode="json")
    if spec.target == "gpu":
        manifest["parallel"] = {
            llm_names(k, prefixed=m.model_names == "prefixed").tensorrt_llm: {
                "runtime": m.runtime,
                "tp_size": m.engine.tp_size if m.runtime == "engine" else m.llmapi.tensor_parallel_size,
                "pp_size": m.engine.pp_size if m.runtime == "engine" else m.llmapi.pipeline_parallel_size,
                "gpu_device_ids": m.tensorrt_llm.gpu_device_ids if m.runtime == "engine" else None,
            }
            for k, m in spec.of_kind(LLMModel).items()
        }
    manifest["python_models"] = python_models(plan.files)
    from tritonforge import python_backends

    manifest["package_versions"] = python_backends.installed_versions()  # what the build was checked with
    manifest["gateway_models"] = gateway_models(spec)
    # Files at the repository root are not models; Triton ignores them.
    plan.files["tritonforge.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return plan.files, artifacts, plan.notes


def gateway_models(spec: Spec) -> dict[str, dict[str, str]]:
    """What the OpenAI gateway serves of this repository: {kind: {model id (the spec key): ensemble}}, and each
    chat model's engine step (where a stop string's cancel goes). `serve --gateway` and `deploy k8s --gateway`
    read it back; without it a gateway serves examples/rag.yaml's ids, and a repository named otherwise was
    unreachable through it (404 model_not_found) while /health said ready."""
    llms = spec.of_kind(LLMModel)
    return {
        "chat": {k: m.ensemble for k, m in llms.items()},
        "embeddings": {k: m.ensemble for k, m in spec.of_kind(EmbeddingModel).items()},
        "rerank": {k: m.ensemble for k, m in spec.of_kind(RerankerModel).items()},
        "engine_models": {
            k: llm_names(k, prefixed=m.model_names == "prefixed", ensemble=m.ensemble).tensorrt_llm
            for k, m in llms.items()
        },
    }


def python_models(files: Mapping[str, FileContent]) -> dict[str, str]:
    """{Triton model: the shipped python-backend model it runs}: what `deploy k8s` reads to know the packages a
    model imports, even after a later tritonforge changed that model.py (it compares bytes only as a fallback)."""
    from tritonforge import python_backends

    found = {}
    for path, data in files.items():
        parts = path.split("/")
        if len(parts) == 3 and parts[2] == "model.py" and isinstance(data, bytes):
            name = python_backends.shipped_name(data)
            if name is not None:
                found[parts[0]] = name
    return dict(sorted(found.items()))


def bf16_notes(spec: Spec) -> list[str]:
    """One note when this build machine's CPU has AMX (amx_bf16) and the cpu target serves encoders in fp32 that
    `cpu_quantization: bf16` would serve about twice as fast here (embedding and reranker models; none otherwise)."""
    from tritonforge.builders.onnx_common import amx_bf16

    if spec.target != "cpu":
        return []
    fp32 = [
        key
        for key, model in spec.models.items()
        if isinstance(model, EmbeddingModel | RerankerModel) and model.cpu_quantization == "none"
    ]
    if not fp32 or not amx_bf16():
        return []
    return [
        f"this CPU has AMX (amx_bf16): cpu_quantization: bf16 serves {', '.join(fp32)} ~2x faster here "
        "(on a Xeon with AMX, served: all-MiniLM-L6-v2 1.98x fp32, a MiniLM-sized cross-encoder 1.8-2.0x), shipped "
        "only when it passes the quantization gate "
        "against fp32 (docs/spec.md)"
    ]


def random_stand_ins(spec: Spec) -> list[str]:
    """What the spec serves from random weights (`random:` checkpoints and adapters): their output means nothing."""
    from tritonforge.builders.checkpoints import is_random

    found = []
    for key, model in spec.models.items():
        checkpoint = getattr(model, "checkpoint", None)
        if isinstance(checkpoint, str) and is_random(checkpoint):
            found.append(f"{key}: {checkpoint} (a tiny model with random weights: its output means nothing)")
        for name, adapter in sorted(getattr(model, "adapters", {}).items()):
            if is_random(adapter.path):
                found.append(f"{key}: adapter '{name}' is {adapter.path} (a random LoRA: its effect means nothing)")
    return found


def _add_lineage(ctx: BuildContext, key: str) -> None:
    """Every version folder of the entry's Triton models gets lineage.json (what it was built from, and how)."""
    from tritonforge.lineage import LINEAGE_FILE, lineage_bytes, lineage_record

    model, built = ctx.spec.models[key], ctx.built[key]
    record = lineage_bytes(
        lineage_record(
            spec_name=ctx.spec.name,
            target=ctx.spec.target,
            spec_model=key,
            kind=model.kind,
            settings=model.model_dump(mode="json"),
            artifacts=[asdict(a) for a in built.artifacts],
            inputs=kind_of(model).lineage_inputs(ctx, key, model),
        )
    )
    for name in built.models.configs:
        built.models.files[f"{name}/1/{LINEAGE_FILE}"] = record


def _check_arguments(out: object, target: object, progress: object) -> None:
    """build's own arguments, refused before any work (a target outside the spec's choices was written into
    tritonforge.json as given)."""
    if not isinstance(out, str | os.PathLike):
        raise OptionError(f"out must be the output folder's path (str or Path), got {type(out).__name__}")
    if target not in (None, "cpu", "gpu"):
        raise OptionError(f"target={target!r} is not one of 'cpu', 'gpu' (or None: the spec's own target)")
    if progress is not None and not callable(progress):
        raise OptionError(f"progress must be a callable taking one str (or None), got {type(progress).__name__}")


def build(
    spec: Spec | str | Path | Mapping[str, Any],
    out: str | Path,
    *,
    target: Literal["cpu", "gpu"] | None = None,
    progress: Progress | None = None,
    check: bool = True,
    plan_only: bool = False,
    image: str | None = None,
) -> BuildReport:
    """Build a deployment spec into the model repository `out`: a Spec, a YAML file's path, or the spec's data as a
    mapping (its relative paths resolve against the working directory).

    Artifacts are built (or taken from the cache), configs rendered, the repository written to a temporary
    folder and validated against Triton's load rules there; only then does it replace `out`. On any error
    the previous repository is left untouched.

    ``image`` overrides the spec's serving image (gpu). ``plan_only`` selects the engine path for every LLM (only
    engines are planned) on the gpu target: the repository is written with every config rendered and, instead of
    building engines here, a script (``build_engines.sh``) with the exact commands to run on a GPU machine.
    """
    from tritonforge.validator import check_repository

    _check_arguments(out, target, progress)
    started = time.perf_counter()
    if isinstance(spec, Mapping):
        spec = parse_spec(dict(spec))
    elif not isinstance(spec, Spec):
        spec = load_spec(spec)
    spec = spec.with_target(target)
    plan_engines = plan_only and spec.target == "gpu" and bool(spec.of_kind(LLMModel))
    spec = spec.with_overrides(image=image, runtime="engine" if plan_engines else None)
    inputs = [spec.source_dir] if spec.source_dir is not None else []
    if not (plan_only and not plan_engines):  # refuse an output folder now, not after minutes of building
        check_output(out, inputs, replaces_builds=True)
    missing = missing_paths(spec)
    if missing:  # every one at once, before any work (the builders would stop at the first)
        raise SpecError(missing, "the spec names files that are not there (nothing was built)")
    engine_plans: list[Any] | None = [] if plan_only else None
    from tritonforge.builders.checkpoints import _PROGRESS, reporting

    token = reporting(progress)  # checkpoint downloads and conversions report through the build's progress
    try:
        plan, artifacts, notes = plan_repository(spec, progress, engine_plans)
    except OSError as err:  # the cache, a checkpoint's unpacking, a download's folder: one error, not a traceback
        where = f"{err.filename}: " if err.filename else ""
        raise BuildError(f"cannot build: {where}{err.strerror or err} (check TRITONFORGE_CACHE and the spec's "
                         "paths; nothing was written)") from err
    finally:
        _PROGRESS.reset(token)
    commands: tuple[str, ...] = ()
    if plan_only and not engine_plans:  # nothing to plan but the models: the report lists them, nothing is written
        models = tuple(sorted({p.split("/", 1)[0] for p in plan if "/" in p}))
        seconds = time.perf_counter() - started
        return BuildReport(Path(out), spec.target, models, tuple(artifacts), tuple(notes), seconds)
    if engine_plans:
        from tritonforge.builders.trtllm_plan_script import SCRIPT_NAME, engine_build_script, engine_folder

        script = engine_build_script(engine_plans, spec.serving_image)
        plan[SCRIPT_NAME] = script.text.encode()
        commands = script.commands
        notes = [*notes, f"engines are not built here: run {SCRIPT_NAME} (in the repository) on a GPU machine"]

    def _finish(tmp: Path) -> None:
        from tritonforge.lineage import LINEAGE_FILE, record_files

        for lineage in tmp.glob(f"*/*/{LINEAGE_FILE}"):
            record_files(lineage.parent)
        if check:
            _validate(tmp)

    def _validate(tmp: Path) -> None:
        if progress:
            progress("validating repository")
        # GPU ids cannot be checked here: the build machine is not the serving machine; the gpu target's backends
        # and engines are checked against the image that will serve them
        gpu = spec.target == "gpu"
        found = check_repository(tmp, gpus=None, image=spec.serving_image if gpu else None, image_backends=gpu)
        problems = [Problem(p.where.replace(str(tmp), str(Path(out))), p.message) for p in found]
        if problems:
            raise ValidationError(problems, "the built repository breaks Triton's load rules (nothing was written)")

    # what build_engines.sh writes into the repository later is the output's too: its next build replaces it
    owned = [engine_folder(key, model) for key, model, _ in engine_plans] if engine_plans else []
    repo = write_repository(plan, out, check=_finish, protect=inputs, owned=owned)
    if engine_plans:
        (repo / SCRIPT_NAME).chmod(0o755)
    models = tuple(sorted({p.split("/", 1)[0] for p in plan if "/" in p}))
    return BuildReport(
        repo, spec.target, models, tuple(artifacts), tuple(notes), time.perf_counter() - started, commands
    )


def missing_paths(spec: Spec) -> list[Problem]:
    """The spec's local paths that do not exist, by field: checkpoint folders, corpora, adapter folders
    (``pypi:`` and ``random:`` references are resolved by the builders; relative paths are the spec folder's)."""
    from tritonforge.builders.checkpoints import PYPI_PREFIX, RANDOM_PREFIX

    def local(ref: str) -> Path | None:
        ref = ref.strip()
        if not ref or ref.startswith((PYPI_PREFIX, RANDOM_PREFIX)):
            return None
        path = Path(ref).expanduser()
        return path if path.is_absolute() or spec.source_dir is None else spec.source_dir / path

    found = []
    for key, model in spec.models.items():
        refs = [("checkpoint", getattr(model, "checkpoint", None), "folder"),
                ("corpus", getattr(model, "corpus", None), "file or folder")]
        refs += [(f"adapters.{name}.path", a.path, "folder") for name, a in getattr(model, "adapters", {}).items()]
        for field_name, ref, what in refs:
            path = local(ref) if isinstance(ref, str) else None
            if path is None or path.exists():
                continue
            found.append(Problem(f"models.{key}.{field_name}", f"{path} does not exist (a {what} is expected here)"))
    return found

