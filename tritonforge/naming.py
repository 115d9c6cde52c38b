"""The Triton model names each spec entry becomes: the one place they are decided.

The spec checks names for collisions before anything is built (from the raw entry, as loaded), the builders render
under these names, and the kind registry (``builders/kinds``) reports them; all three call the functions here, so a
renamed model is one edit. This module sits beside the spec, at the bottom: it imports nothing of the project.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")  # what the spec accepts as a Triton model's name
BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in mixed batches: reserved, never an adapter's name


@dataclass(frozen=True)
class EmbeddingNames:
    tokenizer: str
    encoder: str
    ensemble: str

    def all(self) -> tuple[str, ...]:
        return (self.tokenizer, self.encoder, self.ensemble)


@dataclass(frozen=True)
class RerankerNames:
    pair_tokenizer: str
    cross_encoder: str
    ensemble: str

    def all(self) -> tuple[str, ...]:
        return (self.pair_tokenizer, self.cross_encoder, self.ensemble)


@dataclass(frozen=True)
class RetrieverNames:
    retriever: str
    ensemble: str
    select: str | None = None  # with a reranker: the step that keeps the reranked top_k
    rerank_ensemble: str | None = None

    def all(self) -> tuple[str, ...]:
        extra = (self.select, self.rerank_ensemble) if self.select and self.rerank_ensemble else ()
        return (self.retriever, self.ensemble, *extra)


@dataclass(frozen=True)
class RagNames:
    prompt: str
    generate: str
    ensemble: str

    def all(self) -> tuple[str, ...]:
        return (self.prompt, self.generate, self.ensemble)


@dataclass(frozen=True)
class LLMNames:
    """The Triton model names of one LLM; the defaults are upstream's, except the ensemble (``llm``)."""

    preprocessing: str = "preprocessing"
    tensorrt_llm: str = "tensorrt_llm"
    postprocessing: str = "postprocessing"
    ensemble: str = "llm"
    bls: str = "tensorrt_llm_bls"

    @classmethod
    def prefixed(cls, key: str, *, ensemble: str = "llm", bls: str | None = None) -> LLMNames:
        """`<key>_preprocessing`, `<key>_tensorrt_llm`, ... for a spec entry named ``key``."""
        return cls(
            f"{key}_preprocessing", f"{key}_tensorrt_llm", f"{key}_postprocessing", ensemble, bls or f"{key}_bls"
        )

    def of(self, upstream_model: str) -> str:
        """The name used here for an upstream model name ('preprocessing', 'tensorrt_llm', 'ensemble', ...)."""
        return {
            "preprocessing": self.preprocessing,
            "tensorrt_llm": self.tensorrt_llm,
            "postprocessing": self.postprocessing,
            "ensemble": self.ensemble,
            "tensorrt_llm_bls": self.bls,
        }[upstream_model]


def embedding_names(key: str, *, ensemble: str = "embed") -> EmbeddingNames:
    return EmbeddingNames(f"{key}_tokenizer", f"{key}_encoder", ensemble)


def reranker_names(key: str, *, ensemble: str = "rerank") -> RerankerNames:
    return RerankerNames(f"{key}_pair_tokenizer", f"{key}_cross_encoder", ensemble)


def retriever_names(
    key: str, *, ensemble: str = "search", reranked: bool = False, rerank_ensemble: str = "search_rerank"
) -> RetrieverNames:
    if reranked:
        return RetrieverNames(f"{key}_retriever", ensemble, f"{key}_select", rerank_ensemble)
    return RetrieverNames(f"{key}_retriever", ensemble)


def rag_names(key: str, *, ensemble: str = "rag") -> RagNames:
    return RagNames(f"{key}_prompt", f"{key}_generate", ensemble)


def llm_names(key: str, *, prefixed: bool = False, ensemble: str = "llm") -> LLMNames:
    """Upstream's names (`model_names: upstream`, one LLM per repository) or `<key>_...` (`prefixed`)."""
    return LLMNames.prefixed(key, ensemble=ensemble) if prefixed else LLMNames(ensemble=ensemble)


def llm_model_names(names: LLMNames, *, runtime: str = "llmapi", bls: bool = False) -> tuple[str, ...]:
    """The models an LLM renders: the LLM API path has no postprocessing; the BLS is optional (engine path)."""
    models = [names.preprocessing, names.tensorrt_llm]
    if runtime == "engine":
        models.append(names.postprocessing)
    if bls:
        models.append(names.bls)
    return (*models, names.ensemble)


def triton_model_names(key: str, model: Mapping[str, Any]) -> tuple[str, ...]:
    """The Triton models one spec entry becomes, from the entry as written (fields may still be missing or wrong:
    the spec calls this before its own field checks, to report name collisions beside every other problem)."""
    kind = model.get("kind")
    if kind == "retriever":
        return retriever_names(
            key,
            ensemble=str(model.get("ensemble", "search")),
            reranked=bool(model.get("reranker")),
            rerank_ensemble=str(model.get("rerank_ensemble", "search_rerank")),
        ).all()
    if kind == "reranker":
        return reranker_names(key, ensemble=str(model.get("ensemble", "rerank"))).all()
    if kind == "rag":
        return rag_names(key, ensemble=str(model.get("ensemble", "rag"))).all()
    if kind == "llm":
        names = llm_names(
            key, prefixed=model.get("model_names") == "prefixed", ensemble=str(model.get("ensemble", "llm"))
        )
        return llm_model_names(names, runtime=str(model.get("runtime", "llmapi")), bls=bool(model.get("bls")))
    if kind == "embedding":
        return embedding_names(key, ensemble=str(model.get("ensemble", "embed"))).all()
    return ()  # an unknown or missing kind: its own error says so, and it names no model to collide with
