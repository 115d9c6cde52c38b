"""Export a Hugging Face encoder checkpoint to a self-contained ONNX sentence-embedding model.

The exported graph is ``encoder -> pooling (mean over the attention mask, or CLS) -> optional L2 normalisation``
with inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model uses them), all INT64
``[batch, sequence]``, and one FP32 output ``EMBEDDING`` ``[batch, dim]``.

Every export is checked against a PyTorch reference computed sentence by sentence without padding, and the
result is cached under ``<cache>/onnx-encoder/<content hash>/``; the folder is built in a temporary folder and
renamed into place, so an interrupted build never leaves a half-written artifact behind.

Heavy libraries (torch, transformers, onnx, onnxruntime) are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.errors import BuildError, ParityError

from .checkpoints import (
    checkpoint_hash,
    default_cache_dir,
    read_sentence_transformers_config,
    validate_checkpoint,
)

BUILDER_VERSION = "1"  # part of every content hash: bump it when the export, parity or quantisation recipe changes
OPSET = 17
OUTPUT_NAME = "EMBEDDING"
POOLINGS = ("auto", "mean", "cls")
PRECISIONS = ("fp32", "fp16", "int8")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
STALE_TMP_SECONDS = 24 * 3600

# Real English sentences of very different lengths; run as ONE padded batch through ONNX Runtime and one by one,
# unpadded, through PyTorch. The spread of lengths is what exposes baked-in shapes and mask/pooling mistakes.
PARITY_SENTENCES = (
    "Hi.",
    "Good morning!",
    "The cat sat on the mat.",
    "Where is the nearest train station?",
    "She forgot her umbrella, so she got soaked walking home from work.",
    "Quantum computers use qubits, which can represent both zero and one at the same time.",
    "The committee postponed its decision until the auditors had reviewed every invoice from last year.",
    "Yes",
    "After three days of heavy rain, the river finally burst its banks and flooded the low-lying fields "
    "around the village, forcing dozens of families to leave their homes in the middle of the night.",
    "Please restart the server before the backup begins.",
    "In 1969, two astronauts walked on the Moon while a third orbited above them in the command module.",
    "I like green tea, but my brother prefers strong black coffee with plenty of sugar and a splash of "
    "milk, especially on cold winter mornings when he has to get up early for the long drive to the office.",
)


@dataclass(frozen=True)
class EncoderArtifact:
    onnx_path: Path
    dim: int
    max_seq_length: int
    pooling: str
    normalize: bool
    input_names: tuple[str, ...]
    output_name: str
    precision: str
    content_hash: str
    parity_max_abs_diff: float | None
    quantized_min_cosine: float | None
    tokenizer_files: dict[str, Path]
    notes: tuple[str, ...] = field(default=())

    @property
    def directory(self) -> Path:
        return self.onnx_path.parent


# --------------------------------------------------------------------------------------------------------- API


def export_encoder(
    checkpoint: Path,
    *,
    pooling: str = "auto",
    normalize: bool = True,
    max_seq_length: int | None = None,
    precision: str = "fp32",
    parity_tolerance: float = 1e-4,
    min_cosine: float = 0.99,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EncoderArtifact:
    """Export (or fetch from the cache) the ONNX embedding model for ``checkpoint``.

    Raises BuildError for a bad checkpoint or setting, ParityError when ONNX Runtime disagrees with PyTorch
    beyond ``parity_tolerance``, and BuildError when an int8/fp16 model's minimum cosine similarity to the fp32
    embeddings is below ``min_cosine`` (unless ``force``).
    """
    say = progress or (lambda _msg: None)
    if pooling not in POOLINGS:
        raise BuildError(f"pooling {pooling!r} is not supported; use one of {', '.join(POOLINGS)}")
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    if max_seq_length is not None and (
        not isinstance(max_seq_length, int) or isinstance(max_seq_length, bool) or max_seq_length < 2
    ):
        raise BuildError(f"max_seq_length must be an integer >= 2, got {max_seq_length!r}")
    checkpoint = Path(checkpoint).expanduser().resolve()
    validate_checkpoint(checkpoint)

    # An explicit pooling overrides whatever sentence-transformers declares, even a mode we cannot export.
    st_pooling, st_max_len = read_sentence_transformers_config(checkpoint, strict=pooling == "auto")
    resolved_pooling = (st_pooling or "mean") if pooling == "auto" else pooling

    content_hash = _content_hash(
        checkpoint_hash(checkpoint),
        {
            "pooling": resolved_pooling,
            "normalize": bool(normalize),
            "max_seq_length": max_seq_length,  # None = resolved from the (hashed) checkpoint files
            "precision": precision,
            "opset": OPSET,
            "output_name": OUTPUT_NAME,
        },
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final_dir = root / "onnx-encoder" / content_hash

    cached = _load_cached(final_dir)
    if cached is not None:
        say("cache hit")
        _check_thresholds(cached, parity_tolerance, min_cosine, force)
        return cached
    if final_dir.exists():  # only outside damage makes an incomplete folder: rebuild it
        shutil.rmtree(final_dir, ignore_errors=True)

    final_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(final_dir.parent)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".tmp-{content_hash[:16]}-", dir=final_dir.parent))
    try:
        tmp_dir.chmod(0o755)
        record = _build(
            checkpoint,
            tmp_dir,
            pooling=resolved_pooling,
            normalize=bool(normalize),
            max_seq_length=max_seq_length or st_max_len,
            max_len_from="argument" if max_seq_length else ("sentence-transformers" if st_max_len else None),
            precision=precision,
            parity_tolerance=parity_tolerance,
            min_cosine=min_cosine,
            force=force,
            content_hash=content_hash,
            say=say,
        )
        (tmp_dir / "artifact.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            if _load_cached(final_dir) is None:  # not a concurrent builder that finished first
                raise
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)

    artifact = _load_cached(final_dir)
    if artifact is None:  # pragma: no cover - we just wrote it
        raise BuildError(f"{final_dir}: artifact was written but cannot be read back")
    _check_thresholds(artifact, parity_tolerance, min_cosine, force)
    return artifact


def load_artifact(directory: Path) -> EncoderArtifact:
    """Read ``artifact.json`` from an artifact folder; BuildError when it is missing or incomplete."""
    artifact = _load_cached(Path(directory))
    if artifact is None:
        raise BuildError(f"{directory} is not a complete ONNX encoder artifact (needs artifact.json and model.onnx)")
    return artifact


# ------------------------------------------------------------------------------------------------------ build


def _build(
    checkpoint: Path,
    out_dir: Path,
    *,
    pooling: str,
    normalize: bool,
    max_seq_length: int | None,
    max_len_from: str | None,
    precision: str,
    parity_tolerance: float,
    min_cosine: float,
    force: bool,
    content_hash: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    import torch

    notes: list[str] = []
    timings: dict[str, float] = {}

    say("loading checkpoint")
    t0 = time.perf_counter()
    tokenizer, ref_model, export_model = _load(checkpoint)
    input_names = _input_names(export_model, tokenizer, checkpoint)
    max_len = _resolve_max_len(checkpoint, tokenizer, export_model.config, max_seq_length, max_len_from)
    tokenizer_files = _write_tokenizer_files(checkpoint, tokenizer, out_dir / "tokenizer", max_len)
    timings["load_s"] = time.perf_counter() - t0

    say("exporting")
    t0 = time.perf_counter()
    wrapper = _EmbeddingWrapperFactory.make(export_model, input_names, pooling, normalize)
    dummy = tokenizer(
        ["Export the encoder.", "A second, longer sentence makes the batch padded and shapes dynamic."],
        padding=True,
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    fp32_path = out_dir / ("model.onnx" if precision == "fp32" else "model.fp32.onnx")
    exporter = _export_onnx(wrapper, tuple(dummy[n] for n in input_names), input_names, fp32_path)
    if exporter != "torchscript":
        notes.append(f"exported with the {exporter} exporter (the TorchScript exporter failed)")
    _check_graph(fp32_path, input_names)
    timings["export_s"] = time.perf_counter() - t0

    say("parity check")
    t0 = time.perf_counter()
    feeds = _parity_feeds(tokenizer, out_dir / "tokenizer" / "tokenizer.json", input_names, max_len)
    with torch.inference_mode():
        reference = _reference_embeddings(ref_model, tokenizer, input_names, pooling, normalize, max_len)
    onnx_out = _run_onnx(fp32_path, feeds)
    if onnx_out.shape != reference.shape:
        raise ParityError(
            f"ONNX output shape {tuple(onnx_out.shape)} differs from the PyTorch reference {tuple(reference.shape)}"
        )
    max_diff = float(abs(onnx_out - reference).max())
    if not max_diff <= parity_tolerance:  # also catches NaN
        raise ParityError(
            f"{checkpoint}: ONNX export disagrees with PyTorch: max abs diff {max_diff:.3g} > tolerance "
            f"{parity_tolerance:.3g} over {len(PARITY_SENTENCES)} sentences (one padded batch vs unpadded one by one)"
        )
    dim = int(onnx_out.shape[1])
    _set_output_dim(fp32_path, dim)
    timings["parity_s"] = time.perf_counter() - t0
    del wrapper, export_model, ref_model

    quant_cos: float | None = None
    if precision != "fp32":
        say("quantizing")
        t0 = time.perf_counter()
        final_path = out_dir / "model.onnx"
        if precision == "int8":
            _quantize_int8(fp32_path, final_path)
        else:
            _convert_fp16(fp32_path, final_path)
        fp32_path.unlink()
        try:
            quant_out = _run_onnx(final_path, feeds)
        except Exception as exc:
            if precision != "fp16":
                raise BuildError(f"ONNX Runtime cannot run the {precision} model: {exc}") from exc
            notes.append(
                "fp16 model could not run on this machine's ONNX Runtime (CPU), so its cosine to fp32 is unmeasured: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            )
        else:
            quant_cos = _min_cosine(quant_out, onnx_out)
            if not quant_cos >= min_cosine:
                if not force:
                    raise BuildError(
                        f"{checkpoint}: {precision} model's minimum cosine similarity to fp32 is {quant_cos:.6f} "
                        f"< min_cosine {min_cosine}; pass force=True to accept it"
                    )
                notes.append(f"{precision} minimum cosine {quant_cos:.6f} is below {min_cosine}, accepted (force)")
        timings["quantize_s"] = time.perf_counter() - t0

    import onnx
    import onnxruntime
    import transformers

    return {
        "onnx_path": "model.onnx",
        "dim": dim,
        "max_seq_length": max_len,
        "pooling": pooling,
        "normalize": normalize,
        "input_names": list(input_names),
        "output_name": OUTPUT_NAME,
        "precision": precision,
        "content_hash": content_hash,
        "parity_max_abs_diff": max_diff,
        "quantized_min_cosine": quant_cos,
        "tokenizer_files": {name: f"tokenizer/{name}" for name in tokenizer_files},
        "notes": notes,
        "build": {
            "builder_version": BUILDER_VERSION,
            "exporter": exporter,
            "opset": OPSET,
            "checkpoint": str(checkpoint),
            "parity_tolerance": parity_tolerance,
            "parity_sentences": len(PARITY_SENTENCES),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
        },
    }


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporter/loader chatter (deprecation + tracer warnings, weight-loading progress bars)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _load(checkpoint: Path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    except Exception as exc:
        raise BuildError(f"{checkpoint}: cannot load the tokenizer: {type(exc).__name__}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise BuildError(
            f"{checkpoint}: the tokenizer ({type(tokenizer).__name__}) is not a fast (Rust `tokenizers`) tokenizer; "
            "tritonforge ships tokenizer.json to the server, so the checkpoint needs a tokenizer.json "
            "(save one with a fast tokenizer's save_pretrained)"
        )
    import transformers

    # FP32 whatever the checkpoint's torch_dtype (transformers 5 loads "auto" by default); the keyword was
    # renamed from torch_dtype to dtype in transformers 4.56.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    fp32 = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}
    try:
        with _quiet():
            # The reference runs the checkpoint as shipped; the exported copy uses eager attention, the most
            # predictable path through the ONNX exporters.
            ref_model = AutoModel.from_pretrained(str(checkpoint), local_files_only=True, **fp32)
            export_model = AutoModel.from_pretrained(
                str(checkpoint), local_files_only=True, attn_implementation="eager", **fp32
            )
    except Exception as exc:
        raise BuildError(f"{checkpoint}: cannot load the model: {type(exc).__name__}: {exc}") from exc
    ref_model.eval()
    export_model.eval()
    return tokenizer, ref_model, export_model


def _input_names(model, tokenizer, checkpoint: Path) -> tuple[str, ...]:
    import inspect

    params = inspect.signature(model.forward).parameters
    for required in ("input_ids", "attention_mask"):
        if required not in params:
            raise BuildError(
                f"{checkpoint}: {type(model).__name__}.forward takes no {required!r}; only text encoders that take "
                "input_ids and attention_mask can be exported"
            )
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in params and "token_type_ids" in (getattr(tokenizer, "model_input_names", None) or ()):
        names.append("token_type_ids")
    return tuple(n for n in INPUT_ORDER if n in names)


def _resolve_max_len(checkpoint: Path, tokenizer, config, requested: int | None, source: str | None) -> int:
    max_pos = getattr(config, "max_position_embeddings", None)
    max_pos = int(max_pos) if isinstance(max_pos, int) and max_pos > 0 else None
    if requested is not None:
        if max_pos is not None and requested > max_pos:
            where = "sentence_bert_config.json" if source == "sentence-transformers" else "max_seq_length"
            raise BuildError(
                f"{checkpoint}: {where} {requested} exceeds the model's max_position_embeddings {max_pos}"
            )
        return requested
    tok_max = getattr(tokenizer, "model_max_length", None)
    tok_max = int(tok_max) if isinstance(tok_max, int | float) and 0 < tok_max < 1_000_000 else None
    candidates = [v for v in (tok_max, max_pos) if v is not None]
    if not candidates:
        raise BuildError(
            f"{checkpoint}: cannot tell the maximum sequence length (no model_max_length in the tokenizer, no "
            "max_position_embeddings in config.json): pass max_seq_length"
        )
    return min(candidates)


def _write_tokenizer_files(checkpoint: Path, tokenizer, out: Path, max_len: int) -> list[str]:
    """Copy the tokenizer files to ship, with truncation at ``max_len`` and batch-longest padding built in.

    Checkpoints often carry stale settings in tokenizer.json (all-MiniLM-L6-v2: pad to a fixed 128, truncate at
    128, while sentence-transformers uses 256); a server tokenizing with the raw ``tokenizers`` library would
    silently get different tokens. The shipped files encode exactly as the parity check does.
    """
    from tokenizers import Tokenizer

    out.mkdir(parents=True)
    written = []
    for name in TOKENIZER_FILES:
        src = checkpoint / name
        if src.is_file():
            shutil.copyfile(src, out / name)
            written.append(name)
    if "tokenizer.json" in written:
        backend = Tokenizer.from_file(str(out / "tokenizer.json"))
    else:  # converted from vocab files by transformers: write what it built
        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        written.insert(0, "tokenizer.json")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pad_token = tokenizer.pad_token if tokenizer.pad_token is not None else "[PAD]"
    pad_type_id = getattr(tokenizer, "pad_token_type_id", 0) or 0
    backend.enable_truncation(max_length=max_len)
    backend.enable_padding(pad_id=pad_id, pad_type_id=pad_type_id, pad_token=pad_token)
    backend.save(str(out / "tokenizer.json"))

    cfg_file = out / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text(encoding="utf-8")) if cfg_file.is_file() else {}
    cfg["model_max_length"] = max_len
    cfg_file.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if "tokenizer_config.json" not in written:
        written.append("tokenizer_config.json")
    return [n for n in TOKENIZER_FILES if n in written]


class _EmbeddingWrapperFactory:
    """Builds the export wrapper lazily so torch is imported only when exporting."""

    @staticmethod
    def make(model, input_names: tuple[str, ...], pooling: str, normalize: bool):
        import torch

        with_types = "token_type_ids" in input_names

        class EmbeddingModel(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = model

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
                if with_types:
                    kwargs["token_type_ids"] = token_type_ids
                hidden = self.encoder(**kwargs, return_dict=False)[0]
                if pooling == "cls":
                    emb = hidden[:, 0]
                else:
                    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                    emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                if normalize:
                    emb = torch.nn.functional.normalize(emb, p=2.0, dim=1)
                return emb

        return EmbeddingModel().eval()


def _export_onnx(wrapper, args: tuple, input_names: tuple[str, ...], path: Path) -> str:
    """TorchScript exporter first (opset 17, predictable for BERT); the dynamo exporter when it is unavailable."""
    import torch

    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in input_names}
    dynamic_axes[OUTPUT_NAME] = {0: "batch"}
    first_error: Exception | None = None
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=list(input_names),
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        return "torchscript"
    except Exception as exc:  # removed/broken TorchScript exporter: fall back to torch.export
        first_error = exc
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()

    try:
        batch = torch.export.Dim("batch", min=1, max=4096)
        seq = torch.export.Dim("sequence", min=1, max=max(int(args[0].shape[1]), 2) * 4096)
        dynamic_shapes = {name: {0: batch, 1: seq} for name in input_names}
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                args,
                input_names=list(input_names),
                output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes,
                opset_version=max(OPSET, 18),
                dynamo=True,
                optimize=True,
                verbose=False,
            )
            program.save(str(path), external_data=False)
        return "dynamo"
    except Exception as exc:
        raise BuildError(
            f"ONNX export failed with both exporters: TorchScript: {type(first_error).__name__}: {first_error}; "
            f"dynamo: {type(exc).__name__}: {exc}"
        ) from exc


def _check_graph(path: Path, input_names: tuple[str, ...]) -> None:
    """The exported graph has exactly our inputs (INT64, dynamic batch+sequence) and a FP32 [batch, dim] output."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    problems = []
    if tuple(i.name for i in inputs) != tuple(input_names):
        problems.append(f"inputs are {[i.name for i in inputs]}, expected {list(input_names)}")
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            problems.append(f"input {value.name} is not INT64")
        if len(dims) != 2 or any(d.HasField("dim_value") for d in dims):
            problems.append(f"input {value.name} shape {_dims(dims)} is not dynamic [batch, sequence]")
    outputs = list(graph.output)
    if [o.name for o in outputs] != [OUTPUT_NAME]:
        problems.append(f"outputs are {[o.name for o in outputs]}, expected [{OUTPUT_NAME!r}]")
    else:
        out = outputs[0].type.tensor_type
        if out.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {OUTPUT_NAME} is not FLOAT")
        if len(out.shape.dim) != 2 or out.shape.dim[0].HasField("dim_value"):
            problems.append(f"output {OUTPUT_NAME} shape {_dims(out.shape.dim)} is not [batch, dim] with dynamic batch")
    if problems:
        raise BuildError(f"{path}: exported graph is wrong: " + "; ".join(problems))


def _set_output_dim(path: Path, dim: int) -> None:
    """Write the (now measured) embedding width into the output shape: ``[batch, dim]``, not ``[batch, ?]``."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # external tensors keep their (relative) locations
    out_dim = model.graph.output[0].type.tensor_type.shape.dim[1]
    if out_dim.HasField("dim_value") and out_dim.dim_value == dim:
        return
    out_dim.Clear()
    out_dim.dim_value = dim
    onnx.save(model, str(path))


def _dims(dims) -> list:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _parity_feeds(tokenizer, tokenizer_json: Path, input_names: tuple[str, ...], max_len: int) -> dict[str, Any]:
    """ONE padded batch of the parity sentences, encoded by the shipped tokenizer.json (as a server would)."""
    import numpy as np
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(tokenizer_json))
    encodings = shipped.encode_batch(list(PARITY_SENTENCES))
    for sentence, enc in zip(PARITY_SENTENCES, encodings, strict=True):
        expected = tokenizer(sentence, truncation=True, max_length=max_len)["input_ids"]
        got = [i for i, m in zip(enc.ids, enc.attention_mask, strict=True) if m]
        if got != list(expected):
            raise BuildError(
                f"{tokenizer_json}: the shipped tokenizer encodes {sentence[:40]!r} as {got[:12]}... but "
                f"transformers' tokenizer gives {list(expected)[:12]}...; the server would see different tokens"
            )
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {
        name: np.asarray([getattr(e, fields[name]) for e in encodings], dtype=np.int64) for name in input_names
    }


def _reference_embeddings(model, tokenizer, input_names, pooling: str, normalize: bool, max_len: int):
    """PyTorch embeddings computed straight from AutoModel outputs, one sentence at a time, no padding."""
    import numpy as np
    import torch

    rows = []
    for sentence in PARITY_SENTENCES:
        enc = tokenizer(sentence, truncation=True, max_length=max_len, return_tensors="pt")
        hidden = model(**{n: enc[n] for n in input_names}).last_hidden_state[0]  # [tokens, hidden]
        vec = hidden[0] if pooling == "cls" else hidden.mean(dim=0)
        if normalize:
            vec = vec / vec.norm(p=2).clamp(min=1e-12)
        rows.append(vec.to(torch.float32).numpy())
    return np.stack(rows)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run_onnx(path: Path, feeds: dict[str, Any]):
    import numpy as np

    (out,) = _session(path).run([OUTPUT_NAME], feeds)
    return np.asarray(out, dtype=np.float32)


def _min_cosine(a, b) -> float:
    import numpy as np

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-30)
    return float(cos.min())


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8: QInt8 weights, per output channel; only MatMuls with a constant (weight) operand.

    Per-tensor weights or quantising the activation x activation attention MatMuls cost all-MiniLM-L6-v2
    0.87 minimum cosine on an AVX2 CPU; these settings give ~0.97.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "Please consider to run pre-processing before quantization"
    try:
        with _quiet():
            quantize_dynamic(
                str(src),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"MatMulConstBOnly": True},
            )
    except Exception as exc:
        raise BuildError(f"int8 dynamic quantisation of {src} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        logging.disable(previous)


def _convert_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet():
            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    except Exception as exc:
        raise BuildError(f"fp16 conversion of {src} failed: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------------------------ cache


def _content_hash(ckpt_hash: str, settings: dict[str, Any]) -> str:
    payload = json.dumps(
        {"builder": "onnx-encoder", "builder_version": BUILDER_VERSION, "checkpoint": ckpt_hash, **settings},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _load_cached(directory: Path) -> EncoderArtifact | None:
    meta_file = directory / "artifact.json"
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        onnx_path = directory / meta["onnx_path"]
        tokenizer_files = {name: directory / rel for name, rel in meta["tokenizer_files"].items()}
        if not onnx_path.is_file() or not all(p.is_file() for p in tokenizer_files.values()):
            return None
        return EncoderArtifact(
            onnx_path=onnx_path,
            dim=int(meta["dim"]),
            max_seq_length=int(meta["max_seq_length"]),
            pooling=str(meta["pooling"]),
            normalize=bool(meta["normalize"]),
            input_names=tuple(meta["input_names"]),
            output_name=str(meta["output_name"]),
            precision=str(meta["precision"]),
            content_hash=str(meta["content_hash"]),
            parity_max_abs_diff=meta["parity_max_abs_diff"],
            quantized_min_cosine=meta["quantized_min_cosine"],
            tokenizer_files=tokenizer_files,
            notes=tuple(meta.get("notes", ())),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_thresholds(artifact: EncoderArtifact, parity_tolerance: float, min_cosine: float, force: bool) -> None:
    """A cached artifact must satisfy this call's thresholds too (it may have been built with looser ones)."""
    diff = artifact.parity_max_abs_diff
    if diff is not None and not diff <= parity_tolerance:
        raise ParityError(
            f"{artifact.directory}: cached export's max abs diff {diff:.3g} > tolerance {parity_tolerance:.3g}"
        )
    cos = artifact.quantized_min_cosine
    if cos is not None and not cos >= min_cosine and not force:
        raise BuildError(
            f"{artifact.directory}: {artifact.precision} model's minimum cosine similarity to fp32 is {cos:.6f} "
            f"< min_cosine {min_cosine}; pass force=True to accept it"
        )


def _remove_stale_tmp(parent: Path) -> None:
    """Temp folders left by builds killed mid-way (older than a day) are removed; live builds are left alone."""
    cutoff = time.time() - STALE_TMP_SECONDS
    for tmp in parent.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and tmp.stat().st_mtime < cutoff:
                shutil.rmtree(tmp, ignore_errors=True)
