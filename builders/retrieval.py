"""The retriever's model set: `<key>_retriever` (FAISS over the corpus) and the `search` ensemble
(encode → retrieve), plus `<key>_select` and the `search_rerank` ensemble when a reranker is named.

Passages are embedded in-process by the very same artifact the server runs (shipped tokenizer.json + model.onnx),
so query and passage vectors live in one space; the index manifest records that artifact's hash and the
retriever refuses to load an index built by another embedder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tritonforge import python_backends
from tritonforge.builders.model_configs import ModelSet, Signature, Target, TensorSpec, render_model
from tritonforge.ensembles.dag import ModelIO
from tritonforge.ensembles.search import search_ensemble, search_rerank_ensemble
from tritonforge.naming import embedding_names, reranker_names, retriever_names
from tritonforge.spec import RetrieverModel

RESULTS = (
    TensorSpec("DOC_IDS", "TYPE_STRING", (-1,)),
    TensorSpec("SCORES", "TYPE_FP32", (-1,)),
    TensorSpec("DOCUMENTS", "TYPE_STRING", (-1,)),
)
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def onnx_encode_fn(artifact: Any) -> Callable[[list[str]], np.ndarray]:
    """Embed texts in-process with an encoder artifact exactly as the served pipeline does."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    return _tokenized(artifact, session)


def encode_fn(artifact: Any, checkpoint: Path) -> Callable[[list[str]], np.ndarray]:
    """The in-process twin of whichever engine serves ``artifact``: its model.onnx on ONNX Runtime, or (an artifact
    for the PyTorch runner, which has no ONNX) the runner's own PyTorch engine on ``checkpoint`` at the artifact's
    precision (bf16 as the cpu target serves it; fp16, a GPU's, in float32 here)."""
    if artifact.onnx_path is not None:
        return onnx_encode_fn(artifact)
    from tritonforge.builders.onnx_common import torch_parameters, torch_runner

    # the artifact's precision: bf16 as served (cpu target); fp16 runs in float32 on this CPU, as the build checked
    parameters = torch_parameters(
        "embedding", artifact.precision, pooling=artifact.pooling, normalize=artifact.normalize
    )
    return _tokenized(artifact, torch_runner(checkpoint, parameters))


def truncated_passages(artifact: Any, texts: list[str]) -> tuple[int, int]:
    """(how many of ``texts`` are longer than the embedder takes, that length in tokens): those are indexed from
    their beginning only, and a build says so (it said nothing, and a document's later text was never found)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(artifact.tokenizer_files["tokenizer.json"]))
    limit = int((tokenizer.truncation or {}).get("max_length") or 0)
    if not limit:
        return 0, 0
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return sum(len(e.ids) > limit for e in tokenizer.encode_batch(texts)), limit


def _tokenized(artifact: Any, session: Any) -> Callable[[list[str]], np.ndarray]:
    """``session.run`` over texts tokenized by the artifact's shipped tokenizer.json (truncation and padding built
    in), as the tokenizer step feeds the encoder."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(artifact.tokenizer_files["tokenizer.json"]))

    def encode(texts: list[str]) -> np.ndarray:
        encodings = tokenizer.encode_batch(texts)
        feed = {
            name: np.asarray([getattr(e, _ENCODING_FIELDS[name]) for e in encodings], dtype=np.int64)
            for name in artifact.input_names
        }
        return np.asarray(session.run([artifact.output_name], feed)[0], dtype=np.float32)

    return encode


def retriever_model_set(
    key: str,
    model: RetrieverModel,
    target: Target,
    index: Any,
    embedder: ModelSet,
    embedder_key: str,
    reranker: tuple[str, ModelSet] | None,
) -> ModelSet:
    names = retriever_names(
        key, ensemble=model.ensemble, reranked=reranker is not None, rerank_ensemble=model.rerank_ensemble
    )
    name = names.retriever
    inputs = (
        TensorSpec("QUERY_EMBEDDING", "TYPE_FP32", (index.dim,)),
        TensorSpec("TOP_K", "TYPE_INT32", (1,), optional=True),
    )
    params = {
        "embedder_hash": index.embedder_hash,
        "default_top_k": str(model.default_top_k),
        "max_top_k": str(model.max_top_k),
    }
    cfg, notes = render_model(
        name, model, Signature(inputs, RESULTS), target=target, backend="python", parameters=params, cpu_only=True
    )
    out = ModelSet(notes=notes)
    files = {f: index.folder / f for f in ("index.faiss", "docstore.jsonl", "manifest.json")}
    out.add(cfg, {**python_backends.sources("retriever"), **files})  # model.py and the cores.py it loads

    embedder_names = embedding_names(embedder_key)
    tokenizer = ModelIO.from_config(embedder.configs[embedder_names.tokenizer])
    encoder = ModelIO.from_config(embedder.configs[embedder_names.encoder])
    retriever = ModelIO.from_config(cfg)
    out.add(search_ensemble(names.ensemble, tokenizer, encoder, retriever), {})

    if reranker is not None and names.select and names.rerank_ensemble:
        rr_key, rr = reranker
        rr_names = reranker_names(rr_key)
        select_inputs = (
            TensorSpec("CANDIDATE_IDS", "TYPE_STRING", (-1,)),
            TensorSpec("CANDIDATE_DOCUMENTS", "TYPE_STRING", (-1,)),
            TensorSpec("RERANK_SCORES", "TYPE_FP32", (-1,)),
            TensorSpec("TOP_N", "TYPE_INT32", (1,), optional=True),
        )
        select_cfg, select_notes = render_model(
            names.select,
            model.select,
            Signature(select_inputs, RESULTS),
            target=target,
            backend="python",
            parameters={"default_top_n": str(model.default_top_n)},
            cpu_only=True,
        )
        out.notes += select_notes
        out.add(select_cfg, {"model.py": python_backends.source("rerank_select")})
        ens = search_rerank_ensemble(
            names.rerank_ensemble,
            tokenizer,
            encoder,
            retriever,
            ModelIO.from_config(rr.configs[rr_names.pair_tokenizer]),
            ModelIO.from_config(rr.configs[rr_names.cross_encoder]),
            ModelIO.from_config(select_cfg),
        )
        out.add(ens, {})
    return out
