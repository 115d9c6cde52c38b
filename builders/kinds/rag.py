"""kind: rag — retrieval-augmented generation over a retriever and an LLM of the same spec (no artifact of its own)."""

from __future__ import annotations

from tritonforge.builders.kinds import BuildContext, Built
from tritonforge.naming import rag_names
from tritonforge.spec import LLMModel, RagModel, RetrieverModel


class RagKind:
    spec_class = RagModel

    def triton_names(self, key: str, model: RagModel) -> tuple[str, ...]:
        return rag_names(key, ensemble=model.ensemble).all()

    def dependencies(self, model: RagModel) -> tuple[str, ...]:
        return (model.retriever, model.llm)

    def build(self, ctx: BuildContext, key: str, model: RagModel) -> Built:
        from tritonforge.builders.rag import rag_model_set

        retriever, llm = ctx.spec.models[model.retriever], ctx.spec.models[model.llm]
        assert isinstance(retriever, RetrieverModel) and isinstance(llm, LLMModel)  # checked by the spec
        # the retriever's own entries (embedder, reranker) are built before it, so before this entry too
        sets = {k: b.models for k, b in ctx.built.items()}
        return Built(rag_model_set(key, model, ctx.spec.target, retriever=retriever, llm=llm, sets=sets))

    def lineage_inputs(self, ctx: BuildContext, key: str, model: RagModel) -> dict[str, str]:
        return {}


KIND = RagKind()
