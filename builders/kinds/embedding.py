"""kind: embedding — a checkpoint exported to ONNX (parity- and quality-gated), served as tokenizer → encoder."""

from __future__ import annotations

from tritonforge.builders.kinds import (
    ArtifactInfo,
    BuildContext,
    Built,
    emulated_bf16_notes,
    unused_cpu_quantization_notes,
)
from tritonforge.naming import embedding_names
from tritonforge.spec import EmbeddingModel, RerankerModel


def precision(model: EmbeddingModel | RerankerModel, target: str) -> str:
    if target == "gpu":
        return model.gpu_precision
    return "fp32" if model.cpu_quantization == "none" else model.cpu_quantization  # the spec allows none|int8|bf16


class EmbeddingKind:
    spec_class = EmbeddingModel

    def triton_names(self, key: str, model: EmbeddingModel) -> tuple[str, ...]:
        return embedding_names(key, ensemble=model.ensemble).all()

    def dependencies(self, model: EmbeddingModel) -> tuple[str, ...]:
        return ()

    def build(self, ctx: BuildContext, key: str, model: EmbeddingModel) -> Built:
        from tritonforge.builders.checkpoints import resolve_checkpoint
        from tritonforge.builders.embedding import embedding_model_set, encoder_runtime
        from tritonforge.builders.onnx_encoder import export_encoder

        checkpoint = resolve_checkpoint(model.checkpoint, ctx.spec.source_dir)
        # no ONNX export when the encoder is served on PyTorch (an image without onnxruntime, or bf16 on the cpu
        # target): the build checks that engine instead
        reduced = precision(model, ctx.spec.target)
        torch = encoder_runtime(ctx.spec.target, ctx.spec.serving_image, reduced) == "torch"
        artifact = export_encoder(
            checkpoint,
            pooling=model.pooling,
            normalize=model.normalize,
            max_seq_length=model.max_seq_length,
            precision=reduced,
            parity_tolerance=model.parity_tolerance,
            min_mean_cosine=model.min_mean_cosine,
            min_search_overlap=model.min_search_overlap,
            force=model.force_quantization,
            progress=ctx.say_for(key),
            engine="torch" if torch else "onnx",
        )
        info = ArtifactInfo(
            key,
            "torch-encoder" if torch else "onnx-encoder",
            artifact.precision,
            artifact.content_hash,
            artifact.parity_max_abs_diff,
            artifact.quantized_min_cosine,
            artifact.quantization_gate,
        )
        model_set = embedding_model_set(
            key, model, ctx.spec.target, artifact, torch_checkpoint=checkpoint if torch else None
        )
        model_set.notes += [f"{key}: {note}" for note in artifact.notes]  # export fallbacks, forced gates, fp16
        model_set.notes += emulated_bf16_notes(key, reduced)
        model_set.notes += unused_cpu_quantization_notes(key, model.cpu_quantization, ctx.spec.target, reduced)
        return Built(model_set, [info], artifact)

    def lineage_inputs(self, ctx: BuildContext, key: str, model: EmbeddingModel) -> dict[str, str]:
        from tritonforge.builders.checkpoints import checkpoint_hash, resolve_checkpoint

        return {"checkpoint": checkpoint_hash(resolve_checkpoint(model.checkpoint, ctx.spec.source_dir))}


KIND = EmbeddingKind()
