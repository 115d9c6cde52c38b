"""The embedding service's model set: `<key>_tokenizer` → `<key>_encoder`, wired as the `embed` ensemble.

Target `gpu`: the encoder is served by Triton's onnxruntime backend (KIND_GPU by default).
Target `cpu`: the same `model.onnx` is served by the python-backend ONNX Runtime runner with identical tensor
names, so the ensemble and every client are the same on both targets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge import python_backends
from tritonforge.builders.model_configs import ModelSet, Signature, Target, TensorSpec, render_model
from tritonforge.ensembles.dag import ModelIO
from tritonforge.ensembles.embed import embed_ensemble
from tritonforge.naming import embedding_names
from tritonforge.repository import FileContent
from tritonforge.spec import EmbeddingModel

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def pad_id(tokenizer_files: dict[str, Path]) -> int:
    """The pad token's id, from the files the tokenizer model ships with (0 when the checkpoint has none)."""
    from tokenizers import Tokenizer

    pad: Any = None
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if name in tokenizer_files:
            pad = json.loads(tokenizer_files[name].read_text()).get("pad_token") or pad
    if isinstance(pad, dict):
        pad = pad.get("content")
    if not pad:
        return 0
    token_id = Tokenizer.from_file(str(tokenizer_files["tokenizer.json"])).token_to_id(pad)
    return 0 if token_id is None else token_id


def embedding_model_set(key: str, model: EmbeddingModel, target: Target, artifact: Any) -> ModelSet:
    """Render the three models of one embedding service."""
    names = embedding_names(key, ensemble=model.ensemble)
    tok_name, enc_name = names.tokenizer, names.encoder
    ids = tuple(TensorSpec(n, "TYPE_INT64", (-1,)) for n in artifact.input_names)
    extras = (TensorSpec("NUM_TOKENS", "TYPE_INT32", (1,)), TensorSpec("TRUNCATED", "TYPE_BOOL", (1,)))
    tokenizer_files = {n: p for n, p in artifact.tokenizer_files.items() if n in TOKENIZER_FILES}
    tok_params = {
        "max_seq_length": str(artifact.max_seq_length),
        "pad_id": str(pad_id(tokenizer_files)),
        "model_input_names": ",".join(artifact.input_names),
    }
    if model.pad_to_multiple_of:
        tok_params["pad_to_multiple_of"] = str(model.pad_to_multiple_of)
    tok_cfg, notes = render_model(
        tok_name,
        model.tokenizer,
        Signature((TensorSpec("TEXT", "TYPE_STRING", (1,)),), ids + extras),
        target=target,
        backend="python",
        parameters=tok_params,
        cpu_only=True,  # tokenization is CPU work on every target
    )

    # python runner on cpu: ragged batching lets requests of different lengths share one ONNX Runtime call
    ragged = target == "cpu"
    enc_inputs = tuple(TensorSpec(t.name, t.data_type, t.dims, allow_ragged_batch=ragged) for t in ids)
    enc_cfg, enc_notes = render_model(
        enc_name,
        model,
        Signature(enc_inputs, (TensorSpec(artifact.output_name, "TYPE_FP32", (artifact.dim,)),)),
        target=target,
        backend="onnxruntime" if target == "gpu" else "python",
    )
    ens_cfg = embed_ensemble(names.ensemble, ModelIO.from_config(tok_cfg), ModelIO.from_config(enc_cfg))

    return tokenizer_encoder_set(
        target, (tok_cfg, "tokenizer"), tokenizer_files, enc_cfg, artifact, ens_cfg, notes + enc_notes
    )


def tokenizer_encoder_set(
    target: Target,
    tokenizer: tuple[ModelConfig, str],
    tokenizer_files: dict[str, Path],
    encoder_cfg: ModelConfig,
    artifact: Any,
    ensemble_cfg: ModelConfig,
    notes: list[str],
) -> ModelSet:
    """The files of a tokenizer step (python model + tokenizer files), an ONNX model (served by the onnxruntime
    backend on gpu, by the python ONNX Runtime runner on cpu) and the ensemble over them."""
    tok_cfg, tok_source = tokenizer
    out = ModelSet(notes=notes)
    out.add(tok_cfg, {"model.py": python_backends.source(tok_source)})
    out.add_files(tok_cfg.name, {f"tokenizer/{name}": path for name, path in tokenizer_files.items()})
    encoder_files: dict[str, FileContent] = {"model.onnx": artifact.onnx_path}
    if target == "cpu":
        encoder_files["model.py"] = python_backends.source("onnx_runner")
    out.add(encoder_cfg, encoder_files)
    out.add(ensemble_cfg, {})
    return out
