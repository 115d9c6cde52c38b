"""kind: retriever — a corpus embedded by its embedder's own artifact into a FAISS index, served as the search
ensembles (and, with a reranker, the rerank-then-select one)."""

from __future__ import annotations

from typing import Any

from tritonforge.builders.kinds import ArtifactInfo, BuildContext, Built
from tritonforge.naming import retriever_names
from tritonforge.spec import RetrieverModel


class RetrieverKind:
    spec_class = RetrieverModel

    def triton_names(self, key: str, model: RetrieverModel) -> tuple[str, ...]:
        return retriever_names(
            key, ensemble=model.ensemble, reranked=model.reranker is not None, rerank_ensemble=model.rerank_ensemble
        ).all()

    def dependencies(self, model: RetrieverModel) -> tuple[str, ...]:
        return (model.embedder, model.reranker) if model.reranker else (model.embedder,)

    def build(self, ctx: BuildContext, key: str, model: RetrieverModel) -> Built:
        from tritonforge.builders.retrieval import retriever_model_set

        embedder = ctx.built[model.embedder]
        index, (truncated, limit) = _build_index(ctx, key, model, embedder.artifact)
        rerank_set = (model.reranker, ctx.built[model.reranker].models) if model.reranker else None
        models = retriever_model_set(
            key, model, ctx.spec.target, index, embedder.models, model.embedder, rerank_set
        )
        if truncated:
            models.notes.append(
                f"{key}: {truncated} of {index.count} passages are longer than the {limit} tokens "
                f"{model.embedder} embeds: they are indexed from their beginning only (chunk them to search the rest)"
            )
        info = ArtifactInfo(key, f"faiss-{index.index_type}", "fp32", index.content_hash, None, None)
        return Built(models, [info], index)

    def lineage_inputs(self, ctx: BuildContext, key: str, model: RetrieverModel) -> dict[str, str]:
        from tritonforge.lineage import file_or_folder_hash

        return {"corpus": file_or_folder_hash(ctx.source_path(model.corpus))}


def _build_index(ctx: BuildContext, key: str, model: RetrieverModel, encoder: Any) -> tuple[Any, tuple[int, int]]:
    """Corpus → passages embedded by the embedder's own engine (its model.onnx, or its PyTorch runner) → FAISS
    index (cached by content hash: a cached one is not embedded again, which took as long as the first build);
    with the passages the embedder truncates (how many, its token limit)."""
    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.builders.corpus import load_corpus
    from tritonforge.builders.index import IndexSettings, build_index, embed_passages, find_cached_index
    from tritonforge.builders.retrieval import encode_fn, truncated_passages

    progress = ctx.say_for(key)
    passages = load_corpus(ctx.source_path(model.corpus))
    settings = IndexSettings(**model.index.model_dump())
    truncated = truncated_passages(encoder, [p.text for p in passages])
    cached = find_cached_index(passages, settings, embedder_hash=encoder.content_hash)
    if cached is not None:
        return cached, truncated
    if progress:
        progress(f"embedding {len(passages)} passages")
    report = (lambda done, total: progress(f"embedding passages {done}/{total}")) if progress else None
    checkpoint = resolve_checkpoint(ctx.spec.models[model.embedder].checkpoint, ctx.spec.source_dir)
    embeddings = embed_passages([p.text for p in passages], encode_fn(encoder, checkpoint), progress=report)
    return build_index(passages, embeddings, settings, embedder_hash=encoder.content_hash), truncated


KIND = RetrieverKind()
