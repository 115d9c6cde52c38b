"""kind: reranker — a cross-encoder exported to ONNX (or served from its checkpoint on PyTorch: bf16 on the cpu
target, gpu images without onnxruntime), served as pair tokenizer → cross-encoder."""

from __future__ import annotations

from typing import Any

from tritonforge.builders.kinds import (
    ArtifactInfo,
    BuildContext,
    Built,
    emulated_bf16_notes,
    unused_cpu_quantization_notes,
)
from tritonforge.builders.kinds.embedding import precision
from tritonforge.naming import reranker_names
from tritonforge.spec import RerankerModel


class RerankerKind:
    spec_class = RerankerModel

    def triton_names(self, key: str, model: RerankerModel) -> tuple[str, ...]:
        return reranker_names(key, ensemble=model.ensemble).all()

    def dependencies(self, model: RerankerModel) -> tuple[str, ...]:
        return ()

    def build(self, ctx: BuildContext, key: str, model: RerankerModel) -> Built:
        from tritonforge.builders.checkpoints import resolve_checkpoint
        from tritonforge.builders.cross_encoder import export_cross_encoder
        from tritonforge.builders.embedding import encoder_runtime
        from tritonforge.builders.reranking import reranker_model_set

        checkpoint = resolve_checkpoint(model.checkpoint, ctx.spec.source_dir)
        # no ONNX export when the cross-encoder is served on PyTorch (an image without onnxruntime, or bf16 on the
        # cpu target): the build checks that engine instead
        reduced = precision(model, ctx.spec.target)
        torch = encoder_runtime(ctx.spec.target, ctx.spec.serving_image, reduced) == "torch"
        artifact = export_cross_encoder(
            checkpoint,
            max_seq_length=model.max_seq_length,
            activation=model.activation,
            precision=reduced,
            parity_tolerance=model.parity_tolerance,
            force=model.force_quantization,
            max_quantized_diff=model.max_quantized_diff,
            progress=ctx.say_for(key),
            engine="torch" if torch else "onnx",
        )
        info = ArtifactInfo(
            key,
            "torch-cross-encoder" if torch else "onnx-cross-encoder",
            artifact.precision,
            artifact.content_hash,
            artifact.parity_max_abs_diff,
            None,
            _gate_figures(artifact),
        )
        model_set = reranker_model_set(
            key, model, ctx.spec.target, artifact, torch_checkpoint=checkpoint if torch else None
        )
        model_set.notes += [f"{key}: {note}" for note in artifact.notes]  # export fallbacks, forced gates, fp16
        model_set.notes += emulated_bf16_notes(key, reduced)
        model_set.notes += unused_cpu_quantization_notes(key, model.cpu_quantization, ctx.spec.target, reduced)
        return Built(model_set, [info], artifact)

    def lineage_inputs(self, ctx: BuildContext, key: str, model: RerankerModel) -> dict[str, str]:
        from tritonforge.builders.checkpoints import checkpoint_hash, resolve_checkpoint

        return {"checkpoint": checkpoint_hash(resolve_checkpoint(model.checkpoint, ctx.spec.source_dir))}


def _gate_figures(artifact: Any) -> dict[str, Any] | None:
    """The report's figure for a reduced cross-encoder: its largest score difference from fp32 (None for fp32)."""
    from tritonforge.builders.cross_encoder import PARITY_PAIRS

    diff = artifact.quantized_max_abs_diff
    return None if diff is None else {"max_abs_score_diff": diff, "pairs": len(PARITY_PAIRS)}


KIND = RerankerKind()
