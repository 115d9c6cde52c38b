"""Retrieval pipelines: `search` (encode → retrieve), `rerank` (pairs → cross-encoder) and `search` with
reranking (encode → retrieve → rerank → keep TOP_N).

Naming contract (clients rely on it): QUERY (TYPE_STRING [1]) + optional TOP_K / TOP_N (TYPE_INT32 [1]) →
DOC_IDS (TYPE_STRING [-1]), SCORES (TYPE_FP32 [-1]), DOCUMENTS (TYPE_STRING [-1]); rerank: QUERY + PASSAGES
(TYPE_STRING [-1]) → SCORES (TYPE_FP32 [-1]), one score per passage in the order sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from tritonforge.ensembles.dag import Ensemble, ModelIO

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

RESULTS = ("DOC_IDS", "SCORES", "DOCUMENTS")


def _batch(*models: ModelIO) -> int:
    return min(m.max_batch_size for m in models)


def encode_query(dag: Ensemble, tokenizer: ModelIO, encoder: ModelIO) -> None:
    ids = {key: key for key in encoder.inputs}
    dag.step(tokenizer, inputs={"TEXT": "QUERY"}, outputs=ids)  # NUM_TOKENS/TRUNCATED stay unmapped (allowed)
    dag.step(encoder, inputs=ids, outputs={"EMBEDDING": "QUERY_EMBEDDING"})


def search_ensemble(name: str, tokenizer: ModelIO, encoder: ModelIO, retriever: ModelIO) -> ModelConfig:
    dag = Ensemble(name, max_batch_size=_batch(tokenizer, encoder, retriever))
    dag.input("QUERY", "TYPE_STRING", [1]).input("TOP_K", "TYPE_INT32", [1], optional=True)
    encode_query(dag, tokenizer, encoder)
    dag.step(
        retriever, inputs={"QUERY_EMBEDDING": "QUERY_EMBEDDING", "TOP_K": "TOP_K"}, outputs={o: o for o in RESULTS}
    )
    for out in RESULTS:
        dag.output(out)
    return dag.config()


def _score_pairs(
    dag: Ensemble, pair_tokenizer: ModelIO, cross_encoder: ModelIO, passages: str, scores: str,
    extras: Mapping[str, str] | None = None,
) -> None:
    """``extras``: pair-tokenizer outputs to map too (NUM_TOKENS); the others stay unmapped (allowed)."""
    pair_ids = {key: f"pair_{key}" for key in cross_encoder.inputs}
    dag.step(pair_tokenizer, inputs={"QUERY": "QUERY", "DOCUMENTS": passages}, outputs={**pair_ids, **(extras or {})})
    dag.step(cross_encoder, inputs={key: pair_ids[key] for key in pair_ids}, outputs={"SCORES": scores})


def rerank_ensemble(name: str, pair_tokenizer: ModelIO, cross_encoder: ModelIO) -> ModelConfig:
    """QUERY + PASSAGES -> SCORES, and NUM_TOKENS (each pair's tokens) when the pair tokenizer counts them."""
    dag = Ensemble(name, max_batch_size=_batch(pair_tokenizer, cross_encoder))
    dag.input("QUERY", "TYPE_STRING", [1]).input("PASSAGES", "TYPE_STRING", [-1])
    counts = {"NUM_TOKENS": "NUM_TOKENS"} if "NUM_TOKENS" in pair_tokenizer.outputs else {}
    _score_pairs(dag, pair_tokenizer, cross_encoder, "PASSAGES", "SCORES", counts)
    dag.output("SCORES")
    for out in counts:
        dag.output(out)
    return dag.config()


def retrieve_and_rerank(
    dag: Ensemble,
    tokenizer: ModelIO,
    encoder: ModelIO,
    retriever: ModelIO,
    pair_tokenizer: ModelIO,
    cross_encoder: ModelIO,
    select: ModelIO,
    results: dict[str, str],
) -> None:
    """QUERY (+ TOP_K, TOP_N) → encode → retrieve candidates → cross-encoder → best TOP_N, mapped to `results`
    ({select output: ensemble tensor}); shared by the search_rerank and rag pipelines."""
    encode_query(dag, tokenizer, encoder)
    dag.step(
        retriever,
        inputs={"QUERY_EMBEDDING": "QUERY_EMBEDDING", "TOP_K": "TOP_K"},
        outputs={"DOC_IDS": "CANDIDATE_IDS", "DOCUMENTS": "CANDIDATE_DOCUMENTS"},
    )
    _score_pairs(dag, pair_tokenizer, cross_encoder, "CANDIDATE_DOCUMENTS", "RERANK_SCORES")
    dag.step(
        select,
        inputs={k: k for k in ("CANDIDATE_IDS", "CANDIDATE_DOCUMENTS", "RERANK_SCORES", "TOP_N")},
        outputs=results,
    )


def search_rerank_ensemble(
    name: str,
    tokenizer: ModelIO,
    encoder: ModelIO,
    retriever: ModelIO,
    pair_tokenizer: ModelIO,
    cross_encoder: ModelIO,
    select: ModelIO,
) -> ModelConfig:
    dag = Ensemble(name, max_batch_size=_batch(tokenizer, encoder, retriever, pair_tokenizer, cross_encoder, select))
    dag.input("QUERY", "TYPE_STRING", [1])
    dag.input("TOP_K", "TYPE_INT32", [1], optional=True)  # candidates retrieved
    dag.input("TOP_N", "TYPE_INT32", [1], optional=True)  # results kept after reranking
    retrieve_and_rerank(
        dag, tokenizer, encoder, retriever, pair_tokenizer, cross_encoder, select, {o: o for o in RESULTS}
    )
    for out in RESULTS:
        dag.output(out)
    return dag.config()
