"""Export a Hugging Face encoder checkpoint to a self-contained ONNX sentence-embedding model.

The exported graph is ``encoder -> pooling (mean over the attention mask, or CLS) -> optional L2 normalisation``
with inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the model uses them), all INT64
``[batch, sequence]``, and one FP32 output ``EMBEDDING`` ``[batch, dim]``.

With ``engine="torch"`` (images without the onnxruntime backend) nothing is exported: the artifact holds the
tokenizer files and the encoder's settings, and the check runs the python runner's PyTorch engine
(python_backends/onnx_runner/torch_engine.py), which serves the checkpoint itself, against the same reference.

Every export is checked against a PyTorch reference computed sentence by sentence without padding, and the
result is cached under ``<cache>/onnx-encoder/<content hash>/``; the folder is built in a temporary folder and
renamed into place, so an interrupted build never leaves a half-written artifact behind. What this exporter shares
with the cross-encoder exporter (loading, tokenizer files, export, ONNX Runtime, quantisation, the cache) lives in
``onnx_common``.

Heavy libraries (torch, transformers, onnx, onnxruntime) are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.errors import BuildError, QuantizationGateError
from tritonforge.values import is_whole

from . import onnx_common as common
from . import quantization_gate
from .checkpoints import (
    checkpoint_hash,
    default_cache_dir,
    read_sentence_transformers_config,
    validate_checkpoint,
)
from .onnx_common import ENGINES, INPUT_ORDER, OPSET, PRECISIONS, STALE_TMP_SECONDS, TOKENIZER_FILES  # noqa: F401 (API)
from .quantization_gate import FORCED

BUILDER = "onnx-encoder"
# part of every content hash: bump it when the export, parity or quantisation recipe changes
BUILDER_VERSION = "1"
OUTPUT_NAME = "EMBEDDING"
POOLINGS = ("auto", "mean", "cls")

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
    directory: Path  # the cached artifact's folder
    onnx_path: Path | None  # None: served by the PyTorch runner from the checkpoint (engine "torch")
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
    # the quantization gate's figures (int8/fp16/bf16; see quantization_gate.py), None for fp32
    quantization_gate: dict[str, Any] | None = None
    engine: str = "onnx"


# --------------------------------------------------------------------------------------------------------- API


def export_encoder(
    checkpoint: Path,
    *,
    pooling: str = "auto",
    normalize: bool = True,
    max_seq_length: int | None = None,
    precision: str = "fp32",
    parity_tolerance: float = 1e-4,
    min_mean_cosine: float = 0.99,
    min_search_overlap: float = 0.9,
    force: bool = False,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    engine: str = "onnx",
) -> EncoderArtifact:
    """Export (or fetch from the cache) the ONNX embedding model for ``checkpoint``; with ``engine="torch"`` no
    ONNX: the tokenizer files and settings for the python runner's PyTorch engine, checked against the reference.

    Raises BuildError for a bad checkpoint or setting, ParityError when ONNX Runtime disagrees with PyTorch
    beyond ``parity_tolerance``, and BuildError when an int8/fp16/bf16 model fails the quantization gate (its mean
    cosine to fp32 over the evaluation corpus below ``min_mean_cosine``, or its top-10 search overlap with fp32 below
    ``min_search_overlap``; see :mod:`.quantization_gate`) unless ``force``.
    """
    say = progress or (lambda _msg: None)
    if pooling not in POOLINGS:
        raise BuildError(f"pooling {pooling!r} is not supported; use one of {', '.join(POOLINGS)}")
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    if engine not in ENGINES:
        raise BuildError(f"engine {engine!r} is not supported; use one of {', '.join(ENGINES)}")
    if max_seq_length is not None and (not is_whole(max_seq_length) or max_seq_length < 2):
        raise BuildError(f"max_seq_length must be an integer >= 2, got {max_seq_length!r}")
    max_seq_length = None if max_seq_length is None else int(max_seq_length)  # numpy's too: hashed as JSON
    if engine == "torch":
        common.torch_precision_note(precision)  # int8 refused before any work
    elif precision == "bf16":
        raise BuildError('precision "bf16" is served by the PyTorch runner: use engine="torch" (no ONNX export)')
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
            # reduced precision records the quantization gate's figures (fp32 artifacts and their hashes unchanged)
            **({} if precision == "fp32" else {"quantization_gate": quantization_gate.GATE_VERSION}),
            "opset": OPSET,
            "output_name": OUTPUT_NAME,
            **({} if engine == "onnx" else {"engine": engine}),  # ONNX artifacts keep their hashes
        },
    )
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    artifact = common.cached_build(
        root / BUILDER / content_hash,
        load=_load_cached,
        build=lambda tmp_dir: _build(
            checkpoint,
            tmp_dir,
            pooling=resolved_pooling,
            normalize=bool(normalize),
            max_seq_length=max_seq_length or st_max_len,
            max_len_from="argument" if max_seq_length else ("sentence-transformers" if st_max_len else None),
            precision=precision,
            parity_tolerance=parity_tolerance,
            gate=(min_mean_cosine, min_search_overlap),
            force=force,
            content_hash=content_hash,
            say=say,
            engine=engine,
        ),
        check=lambda artifact: _check_thresholds(
            artifact, parity_tolerance, (min_mean_cosine, min_search_overlap), force
        ),
        say=say,
    )
    return _with_gate_notes(artifact, (min_mean_cosine, min_search_overlap), force)


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
    gate: tuple[float, float],
    force: bool,
    content_hash: str,
    say: Callable[[str], None],
    engine: str = "onnx",
) -> dict[str, Any]:
    import torch

    notes: list[str] = []
    timings: dict[str, float] = {}

    say("loading checkpoint")
    t0 = time.perf_counter()
    tokenizer, ref_model, export_model = common.load_checkpoint(checkpoint, "AutoModel", export_copy=engine == "onnx")
    input_names = common.input_names(ref_model, tokenizer, checkpoint)
    max_len = common.resolve_max_len(checkpoint, tokenizer, ref_model.config, max_seq_length, max_len_from)
    tokenizer_files = common.write_tokenizer_files(checkpoint, tokenizer, out_dir / "tokenizer", max_len)
    timings["load_s"] = time.perf_counter() - t0

    fp32_path: Path | None = None  # stays None for engine "torch": nothing is exported
    exporter: str | None = None
    if engine == "onnx":
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
        exporter = common.export_onnx(
            wrapper, tuple(dummy[n] for n in input_names), input_names, OUTPUT_NAME, fp32_path
        )
        if exporter != "torchscript":
            notes.append(f"exported with the {exporter} exporter (the TorchScript exporter failed)")
        common.check_graph(fp32_path, input_names, OUTPUT_NAME)
        del wrapper
        timings["export_s"] = time.perf_counter() - t0

    say("parity check" if fp32_path is not None else "parity check (PyTorch runner)")
    t0 = time.perf_counter()
    feeds = _parity_feeds(tokenizer, out_dir / "tokenizer" / "tokenizer.json", input_names, max_len)
    with torch.inference_mode():
        reference = _reference_embeddings(ref_model, tokenizer, input_names, pooling, normalize, max_len)
    torch_fp32: Any = None
    if fp32_path is None:  # engine "torch": the python runner's own PyTorch engine, on the checkpoint, in float32
        parameters = common.torch_parameters("embedding", "fp32", pooling=pooling, normalize=normalize)
        torch_fp32 = common.torch_runner(checkpoint, parameters)
        (served,) = torch_fp32.run([OUTPUT_NAME], feeds)
        what = "the PyTorch runner"
    else:
        served = common.run_onnx(fp32_path, feeds, OUTPUT_NAME)
        what = "ONNX export"
    over = f"{len(PARITY_SENTENCES)} sentences (one padded batch vs unpadded one by one)"
    max_diff = common.check_parity(checkpoint, what, served, reference, parity_tolerance, quantity="diff", over=over)
    dim = int(served.shape[1])
    if fp32_path is not None:
        _set_output_dim(fp32_path, dim)
    timings["parity_s"] = time.perf_counter() - t0
    del export_model, ref_model

    quant_cos: float | None = None
    figures: quantization_gate.GateFigures | None = None

    def gated(reference: Any, reduced: Any) -> quantization_gate.GateFigures:
        """The gate's figures for ``reduced`` against ``reference`` (a model file or a runner); refuses by _gate."""
        found = quantization_gate.measure(
            reference, reduced, out_dir / "tokenizer" / "tokenizer.json", input_names, OUTPUT_NAME, max_len
        )
        _gate(found, precision, gate, force)
        return found

    if fp32_path is None and precision == "bf16":
        # the engine in bfloat16 (what the runner serves with `precision: bf16`) against itself in float32
        say("quantization gate (bf16)")
        t0 = time.perf_counter()
        parameters = common.torch_parameters("embedding", precision, pooling=pooling, normalize=normalize)
        figures = gated(torch_fp32, common.torch_runner(checkpoint, parameters))
        quant_cos = figures.min_cosine
        timings["quantize_s"] = time.perf_counter() - t0
    elif fp32_path is None:
        note = common.torch_precision_note(precision)
        if note:
            notes.append(note)
    elif precision != "fp32":
        say("quantizing")
        t0 = time.perf_counter()
        reference_copy = out_dir / "model.fp32-reference.onnx"  # reduce_precision removes fp32_path
        shutil.copyfile(fp32_path, reference_copy)
        quant_out, note = common.reduce_precision(
            precision, fp32_path, out_dir / "model.onnx", feeds, OUTPUT_NAME, metric="cosine"
        )
        if note:
            notes.append(note)
        if quant_out is not None:
            say("quantization gate")
            figures = gated(reference_copy, out_dir / "model.onnx")
            quant_cos = figures.min_cosine
        reference_copy.unlink()
        timings["quantize_s"] = time.perf_counter() - t0

    return {
        "engine": engine,
        "onnx_path": None if fp32_path is None else "model.onnx",
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
        "quantization_gate": None if figures is None else figures.as_dict(),
        "tokenizer_files": {name: f"tokenizer/{name}" for name in tokenizer_files},
        "notes": notes,
        "build": {
            "builder_version": BUILDER_VERSION,
            "exporter": exporter,
            **({} if fp32_path is None else {"opset": OPSET}),
            "checkpoint": str(checkpoint),
            "parity_tolerance": parity_tolerance,
            "parity_sentences": len(PARITY_SENTENCES),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "versions": common.library_versions(),
        },
    }


def _gate(figures: quantization_gate.GateFigures, precision: str, gate: tuple[float, float], force: bool) -> None:
    """QuantizationGateError when the reduced model fails the quantization gate, unless ``force``. A forced pass
    is noted by export_encoder on each call: the artifact is cached, and a later call's thresholds may differ."""
    problems = quantization_gate.gate_problems(figures, precision, *gate)
    if problems and not force:
        raise QuantizationGateError(problems)


class _EmbeddingWrapperFactory:
    """Builds the export wrapper lazily so torch is imported only when exporting."""

    @staticmethod
    def make(model: Any, input_names: tuple[str, ...], pooling: str, normalize: bool) -> Any:
        import torch

        with_types = "token_type_ids" in input_names

        class EmbeddingModel(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.encoder = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
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


def _parity_feeds(tokenizer: Any, tokenizer_json: Path, input_names: tuple[str, ...], max_len: int) -> dict[str, Any]:
    """ONE padded batch of the parity sentences, encoded by the shipped tokenizer.json (as a server would)."""
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
    return common.encoding_arrays(encodings, input_names)


def _reference_embeddings(
    model: Any, tokenizer: Any, input_names: Any, pooling: str, normalize: bool, max_len: int
) -> Any:
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


# ------------------------------------------------------------------------------------------------------ cache


def _content_hash(ckpt_hash: str, settings: dict[str, Any]) -> str:
    return common.content_hash(BUILDER, BUILDER_VERSION, ckpt_hash, settings)


def _load_cached(directory: Path) -> EncoderArtifact | None:
    return common.load_cached(directory, _from_record)


def _from_record(
    meta: dict[str, Any], directory: Path, onnx_path: Path | None, tokenizer_files: dict[str, Path]
) -> EncoderArtifact:
    return EncoderArtifact(
        directory=directory,
        onnx_path=onnx_path,
        engine=str(meta.get("engine", "onnx")),
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
        quantization_gate=meta.get("quantization_gate"),
        tokenizer_files=tokenizer_files,
        notes=tuple(meta.get("notes", ())),
    )


def _check_thresholds(
    artifact: EncoderArtifact, parity_tolerance: float, gate: tuple[float, float], force: bool
) -> None:
    """A cached artifact must satisfy this call's thresholds too (it may have been built with looser ones)."""
    common.recheck_parity(artifact.directory, artifact.parity_max_abs_diff, parity_tolerance)
    if not force and (problems := _gate_problems(artifact, gate)):
        raise QuantizationGateError(problems)


def _gate_problems(artifact: EncoderArtifact, gate: tuple[float, float]) -> list[str]:
    if artifact.quantization_gate is None:
        return []
    figures = quantization_gate.GateFigures(**artifact.quantization_gate)
    return quantization_gate.gate_problems(figures, artifact.precision, *gate)


def _with_gate_notes(artifact: EncoderArtifact, gate: tuple[float, float], force: bool) -> EncoderArtifact:
    """The artifact's notes with this call's forced gate failures: the cached artifact's own notes may hold the
    thresholds of the build that made it (artifacts from before this rule recorded them), not this one's."""
    kept = tuple(n for n in artifact.notes if not n.endswith(FORCED))
    forced = tuple(f"{p}{FORCED}" for p in _gate_problems(artifact, gate)) if force else ()
    return dataclasses.replace(artifact, notes=kept + forced)
