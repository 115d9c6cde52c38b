"""The embedding service's model set: `<key>_tokenizer` → `<key>_encoder`, wired as the `embed` ensemble.

Target `gpu`: the encoder is served by Triton's onnxruntime backend (KIND_GPU by default), or, when the serving
image has no onnxruntime backend (the `-trtllm-python-py3` images that serve the LLM), by the python runner on
PyTorch from the checkpoint (`encoder_runtime`).
Target `cpu`: the same `model.onnx` is served by the python-backend ONNX Runtime runner with identical tensor
names, so the ensemble and every client are the same on both targets; with `cpu_quantization: bf16` that runner
serves the checkpoint on PyTorch in bfloat16 instead (`engine: torch`, `precision: bf16`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tritonforge import python_backends
from tritonforge.builders.model_configs import ModelSet, Signature, Target, TensorSpec, render_model
from tritonforge.builders.onnx_common import torch_parameters
from tritonforge.ensembles.dag import ModelIO
from tritonforge.ensembles.embed import embed_ensemble
from tritonforge.errors import BuildError
from tritonforge.naming import embedding_names
from tritonforge.repository import FileContent
from tritonforge.spec import EmbeddingModel
from tritonforge.trtllm.images import image_backends

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

# onnxruntime: Triton's onnxruntime backend runs model.onnx; onnx_runner: the python runner runs it with ONNX Runtime;
# torch: the python runner runs the checkpoint with PyTorch (python_backends/onnx_runner/torch_engine.py)
EncoderRuntime = Literal["onnxruntime", "onnx_runner", "torch"]


def encoder_runtime(target: Target, image: str | None, precision: str = "fp32") -> EncoderRuntime:
    """How an encoder is served. A gpu image known to lack the onnxruntime backend (every -trtllm-python-py3 image)
    still ships torch and transformers (TensorRT-LLM needs them), so the encoder runs there on PyTorch; an image
    tritonforge does not know is assumed to have the backend, as the full -py3 image does. On the cpu target bf16
    (`cpu_quantization: bf16`) runs on the python runner's PyTorch engine too: bfloat16 weights, which CPUs with AMX
    compute natively."""
    if target == "cpu":
        return "torch" if precision == "bf16" else "onnx_runner"
    shipped = image_backends(image)
    return "torch" if shipped is not None and "onnxruntime" not in shipped else "onnxruntime"


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


def embedding_model_set(
    key: str, model: EmbeddingModel, target: Target, artifact: Any, *, torch_checkpoint: Path | None = None
) -> ModelSet:
    """Render the three models of one embedding service. ``torch_checkpoint`` (gpu target): serve the encoder from
    that checkpoint on PyTorch instead of ``model.onnx`` on the onnxruntime backend (see ``encoder_runtime``)."""
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

    # the python runner pads: ragged batching lets requests of different lengths share one call
    runner = target == "cpu" or torch_checkpoint is not None
    enc_inputs = tuple(TensorSpec(t.name, t.data_type, t.dims, allow_ragged_batch=runner) for t in ids)
    enc_cfg, enc_notes = render_model(
        enc_name,
        model,
        Signature(enc_inputs, (TensorSpec(artifact.output_name, "TYPE_FP32", (artifact.dim,)),)),
        target=target,
        backend="python" if runner else "onnxruntime",
        parameters=None
        if torch_checkpoint is None
        else torch_parameters("embedding", artifact.precision, pooling=artifact.pooling, normalize=artifact.normalize),
    )
    ens_cfg = embed_ensemble(names.ensemble, ModelIO.from_config(tok_cfg), ModelIO.from_config(enc_cfg))

    return tokenizer_encoder_set(
        target,
        (tok_cfg, "tokenizer"),
        tokenizer_files,
        enc_cfg,
        artifact,
        ens_cfg,
        notes + enc_notes,
        torch_checkpoint=torch_checkpoint,
    )


def tokenizer_encoder_set(
    target: Target,
    tokenizer: tuple[ModelConfig, str],
    tokenizer_files: dict[str, Path],
    encoder_cfg: ModelConfig,
    artifact: Any,
    ensemble_cfg: ModelConfig,
    notes: list[str],
    *,
    torch_checkpoint: Path | None = None,
) -> ModelSet:
    """The files of a tokenizer step (python model + tokenizer files), an encoder (model.onnx on the onnxruntime
    backend on gpu, or run by the python ONNX Runtime runner on cpu; with ``torch_checkpoint`` the python runner and
    the checkpoint's model files under ``checkpoint/``) and the ensemble over them."""
    from tritonforge.builders.checkpoints import model_files

    tok_cfg, tok_source = tokenizer
    out = ModelSet(notes=notes)
    out.add(tok_cfg, {"model.py": python_backends.source(tok_source)})
    out.add_files(tok_cfg.name, {f"tokenizer/{name}": path for name, path in tokenizer_files.items()})
    encoder_files: dict[str, FileContent]
    if torch_checkpoint is not None:
        why = "bf16" if target == "cpu" else "the serving image has no onnxruntime backend"
        out.notes.append(
            f"{encoder_cfg.name}: {why}: served by the python runner on PyTorch "
            "from the checkpoint's weights (checkpoint/), not model.onnx"
        )
        encoder_files = dict(python_backends.sources("onnx_runner"))
        encoder_files.update({f"checkpoint/{name}": path for name, path in model_files(torch_checkpoint).items()})
    else:
        if artifact.onnx_path is None:  # a kind passes torch_checkpoint whenever it built for the PyTorch runner
            raise BuildError(f"{encoder_cfg.name}: its artifact has no model.onnx (built for the PyTorch runner)")
        encoder_files = {"model.onnx": artifact.onnx_path}
        if target == "cpu":  # the runner's whole folder, as every shipped python model (its torch engine unused)
            encoder_files.update(python_backends.sources("onnx_runner"))
    out.add(encoder_cfg, encoder_files)
    out.add(ensemble_cfg, {})
    return out
