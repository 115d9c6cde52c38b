"""The `rag` ensemble: retrieval-augmented generation in one Triton call.

    QUERY ─► tokenizer ─► encoder ─► retriever ─► pair tokenizer ─► cross-encoder ─► select ─► <key>_prompt
          ─► <key>_generate (decoupled; BLS to the LLM's ensemble: preprocessing ─► tensorrt_llm ─► postprocessing)
          ─► text_output (streamed), SOURCE_IDS, SOURCE_SCORES, PROMPT, PASSAGES_DROPPED

Naming contract (clients rely on it): QUERY (TYPE_STRING [1]); optional TOP_K / TOP_N (TYPE_INT32 [1], retrieval:
candidates retrieved, passages kept after reranking), MIN_SCORE (TYPE_FP32 [1], the reranker score below which a
passage is left out; default: the spec's min_score, else none) and the `llm` ensemble's generation controls under their
upstream names (max_tokens, temperature, top_k, top_p, seed, stream, ...) → text_output, SOURCE_IDS (TYPE_STRING
[-1], best first), SOURCE_SCORES (TYPE_FP32 [-1]), PROMPT (TYPE_STRING [1]), PASSAGES_DROPPED (TYPE_INT32 [1]).

Why the LLM is not three more steps of this ensemble: Triton (2.51, checked on the real server) refuses a decoupled
ensemble whose outputs descend from different decoupled origins — the sources come from the non-decoupled prompt
step, text_output from the decoupled engine — with "in ensemble rag, step of model 'rag' receives inputs originated
from different decoupled models" (R62; the ensemble's outputs count as one more step). So one decoupled step
produces every output: `<key>_generate` streams the LLM's pieces, the sources with the first one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tritonforge.ensembles.dag import Ensemble, ModelIO
from tritonforge.ensembles.search import encode_query, retrieve_and_rerank

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

# generation controls of the `llm` ensemble that the rag ensemble exposes too (same names, types and shapes)
GENERATION_INPUTS = (
    "temperature",
    "top_k",
    "top_p",
    "seed",
    "stream",
    "stop_words",
    "bad_words",
    "end_id",
    "pad_id",
    "repetition_penalty",
    "min_tokens",
)
SOURCES = ("SOURCE_IDS", "SOURCE_SCORES", "PROMPT", "PASSAGES_DROPPED")
OUTPUTS = ("text_output", *SOURCES)


def rag_ensemble(
    name: str,
    *,
    tokenizer: ModelIO,
    encoder: ModelIO,
    retriever: ModelIO,
    pair_tokenizer: ModelIO | None,
    cross_encoder: ModelIO | None,
    select: ModelIO | None,
    prompt: ModelIO,
    generate: ModelIO,
) -> ModelConfig:
    """Without ``pair_tokenizer``/``cross_encoder``/``select`` (no reranker), the retriever's own ranking goes to the
    prompt step, which keeps the best TOP_N."""
    rerankers = [m for m in (pair_tokenizer, cross_encoder, select) if m is not None]
    members = [tokenizer, encoder, retriever, *rerankers, prompt, generate]
    # One query per request: the generate step streams one answer (its sources first) for one prompt. Declaring
    # more made Triton accept a batch of queries, run retrieval for all of them, then refuse them at that step.
    # With 1, Triton refuses a larger batch up front ("batch-size must be <= 1").
    dag = Ensemble(name, max_batch_size=min(1, *(m.max_batch_size for m in members)))
    dag.input("QUERY", "TYPE_STRING", [1])
    dag.input("TOP_K", "TYPE_INT32", [1], optional=True)
    dag.input("TOP_N", "TYPE_INT32", [1], optional=True)
    dag.input("max_tokens", "TYPE_INT32", [1], optional=True)
    dag.input("MIN_SCORE", "TYPE_FP32", [1], optional=True)
    controls = [n for n in GENERATION_INPUTS if n in generate.inputs]
    for n in controls:
        spec = generate.inputs[n]
        dag.input(n, spec.data_type, spec.dims, optional=True)

    ranked = {"DOC_IDS": "RANKED_IDS", "SCORES": "RANKED_SCORES", "DOCUMENTS": "RANKED_DOCUMENTS"}
    if pair_tokenizer is not None and cross_encoder is not None and select is not None:
        # retrieve and rerank, as the search_rerank ensemble does
        retrieve_and_rerank(dag, tokenizer, encoder, retriever, pair_tokenizer, cross_encoder, select, ranked)
    else:
        # retrieve only, as the search ensemble does; the prompt step keeps the best TOP_N
        encode_query(dag, tokenizer, encoder)
        dag.step(retriever, inputs={"QUERY_EMBEDDING": "QUERY_EMBEDDING", "TOP_K": "TOP_K"}, outputs=ranked)
    # the prompt, trimmed to the LLM's limits, and the passages it holds
    passed = (*SOURCES, "REQUEST_OUTPUT_LEN")
    dag.step(
        prompt,
        inputs={
            "QUERY": "QUERY",
            "DOC_IDS": "RANKED_IDS",
            "DOCUMENTS": "RANKED_DOCUMENTS",
            "SCORES": "RANKED_SCORES",
            "max_tokens": "max_tokens",
            "MIN_SCORE": "MIN_SCORE",
            "TOP_N": "TOP_N",
        },
        outputs={k: f"_{k}" for k in passed},
    )
    # generate, streaming; the one producer of every output
    dag.step(
        generate,
        inputs={k: f"_{k}" for k in passed} | {n: n for n in controls},
        outputs={k: k for k in OUTPUTS},
    )
    for out in OUTPUTS:
        dag.output(out)
    return dag.config()
