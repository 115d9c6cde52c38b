"""The reranker's model set: `<key>_pair_tokenizer` → `<key>_cross_encoder`, wired as the `rerank` ensemble.

The cross-encoder's `model.onnx` takes [batch, candidates, sequence] and returns SCORES [batch, candidates]:
one batch item is one query with its passages, so Triton batches whole queries on both targets. On a gpu image
without the onnxruntime backend, and on the cpu target with `cpu_quantization: bf16` (bfloat16 weights), the python
runner scores with PyTorch from the checkpoint (``encoder_runtime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonforge.builders.embedding import TOKENIZER_FILES, pad_id, tokenizer_encoder_set
from tritonforge.builders.model_configs import ModelSet, Signature, Target, TensorSpec, render_model
from tritonforge.builders.onnx_common import torch_parameters
from tritonforge.ensembles.dag import ModelIO
from tritonforge.ensembles.search import rerank_ensemble
from tritonforge.naming import reranker_names
from tritonforge.spec import RerankerModel


def reranker_model_set(
    key: str, model: RerankerModel, target: Target, artifact: Any, *, torch_checkpoint: Path | None = None
) -> ModelSet:
    names = reranker_names(key, ensemble=model.ensemble)
    tok_name, enc_name = names.pair_tokenizer, names.cross_encoder
    pair_ids = tuple(TensorSpec(n, "TYPE_INT64", (-1, -1)) for n in artifact.input_names)
    tokenizer_files = {n: p for n, p in artifact.tokenizer_files.items() if n in TOKENIZER_FILES}
    params = {
        "max_seq_length": str(artifact.max_seq_length),
        "pad_id": str(pad_id(tokenizer_files)),
        "model_input_names": ",".join(artifact.input_names),
    }
    if model.pad_to_multiple_of:
        params["pad_to_multiple_of"] = str(model.pad_to_multiple_of)
    text_inputs = (TensorSpec("QUERY", "TYPE_STRING", (1,)), TensorSpec("DOCUMENTS", "TYPE_STRING", (-1,)))
    tok_cfg, notes = render_model(
        tok_name,
        model.tokenizer,
        Signature(text_inputs, (*pair_ids, TensorSpec("NUM_TOKENS", "TYPE_INT32", (-1,)))),
        target=target,
        backend="python",
        parameters=params,
        cpu_only=True,
    )
    runner = target == "cpu" or torch_checkpoint is not None
    enc_inputs = tuple(TensorSpec(t.name, t.data_type, t.dims, allow_ragged_batch=runner) for t in pair_ids)
    runner_params = None
    if runner:  # the python runner pads candidates across requests; cut each request's SCORES back to its own count
        runner_params = {"unpad_output_axes": "1"}
        if torch_checkpoint is not None:
            runner_params.update(torch_parameters("scoring", artifact.precision, activation=artifact.activation))
    enc_cfg, enc_notes = render_model(
        enc_name,
        model,
        Signature(enc_inputs, (TensorSpec(artifact.output_name, "TYPE_FP32", (-1,)),)),
        target=target,
        backend="python" if runner else "onnxruntime",
        parameters=runner_params,
    )
    ens_cfg = rerank_ensemble(names.ensemble, ModelIO.from_config(tok_cfg), ModelIO.from_config(enc_cfg))

    return tokenizer_encoder_set(
        target,
        (tok_cfg, "pair_tokenizer"),
        tokenizer_files,
        enc_cfg,
        artifact,
        ens_cfg,
        notes + enc_notes,
        torch_checkpoint=torch_checkpoint,
    )
