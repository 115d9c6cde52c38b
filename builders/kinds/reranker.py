"""kind: reranker — a cross-encoder exported to ONNX, served as pair tokenizer → cross-encoder."""

from __future__ import annotations

from tritonforge.builders.kinds import ArtifactInfo, BuildContext, Built
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
        artifact = export_cross_encoder(
            checkpoint,
            max_seq_length=model.max_seq_length,
            activation=model.activation,
            precision=precision(model, ctx.spec.target),
            parity_tolerance=model.parity_tolerance,
            force=model.force_quantization,
            progress=ctx.say_for(key),
        )
        info = ArtifactInfo(
            key, "onnx-cross-encoder", artifact.precision, artifact.content_hash, artifact.parity_max_abs_diff, None
        )
        torch = encoder_runtime(ctx.spec.target, ctx.spec.serving_image) == "torch"
        model_set = reranker_model_set(
            key, model, ctx.spec.target, artifact, torch_checkpoint=checkpoint if torch else None
        )
        return Built(model_set, [info], artifact)

    def lineage_inputs(self, ctx: BuildContext, key: str, model: RerankerModel) -> dict[str, str]:
        from tritonforge.builders.checkpoints import checkpoint_hash, resolve_checkpoint

        return {"checkpoint": checkpoint_hash(resolve_checkpoint(model.checkpoint, ctx.spec.source_dir))}


KIND = RerankerKind()
