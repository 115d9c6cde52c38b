"""Export a Hugging Face cross-encoder (reranker) checkpoint to a self-contained ONNX scoring model.

The checkpoint is an ``AutoModelForSequenceClassification`` with ONE label: it reads a (query, passage) pair and
returns one relevance logit. The exported graph takes ``input_ids``, ``attention_mask`` (and ``token_type_ids``
when the model uses them), all INT64 ``[batch, candidates, sequence]`` — one batch item is one query with its
candidate passages, because Triton batches whole requests (queries) on the leading axis — reshapes them to
``[batch * candidates, sequence]`` inside the graph, runs the classifier and returns ``SCORES`` FP32
``[batch, candidates]``: the raw logit, or its sigmoid with ``activation="sigmoid"``. Every axis is dynamic, so
the same ``model.onnx`` serves on Triton's onnxruntime backend (``gpu``) and the python ONNX runner (``cpu``).

With ``engine="torch"`` (images without the onnxruntime backend; the cpu target's bf16) nothing is exported: the
artifact holds the tokenizer files and settings, and the check runs the python runner's PyTorch engine
(python_backends/onnx_runner/torch_engine.py), which serves the checkpoint itself, against the same reference. With
``precision="bf16"`` (engine torch only) that engine in bfloat16 is gated against itself in float32, as int8 is
against the fp32 export: the largest score difference over the parity pairs must stay within ``max_quantized_diff``.

Every export is checked against PyTorch logits computed pair by pair without padding, and the result is cached
under ``<cache>/cross-encoder/<content hash>/`` (built in a temporary folder, renamed into place). The machinery
shared with the bi-encoder exporter lives in ``onnx_common``.

Heavy libraries (torch, transformers, onnx, onnxruntime) are imported inside the functions that need them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonforge.errors import BuildError, QuantizationGateError
from tritonforge.values import is_real, is_whole

from . import onnx_common as common
from .checkpoints import checkpoint_hash, default_cache_dir, validate_checkpoint
from .onnx_common import OPSET, PRECISIONS
from .quantization_gate import FORCED

BUILDER = "cross-encoder"
BUILDER_VERSION = "1"  # part of every content hash: bump it when the export, parity or quantisation recipe changes
OUTPUT_NAME = "SCORES"
ACTIVATIONS = ("none", "sigmoid")
INPUT_AXES = ("batch", "candidates", "sequence")
OUTPUT_AXES = ("batch", "candidates")

# Real (query, passages) groups with very different query and passage lengths; run as ONE padded batch shaped
# [2, 5, sequence] through ONNX Runtime and pair by pair, unpadded, through PyTorch. The spread of lengths exposes
# baked-in shapes and mask mistakes; the last passage is long enough that a small max_seq_length truncates it.
PARITY_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "How do I reset my password?",
        (
            "Yes.",
            "Open the settings page, choose Account, then click 'Forgot password' and follow the link we email you.",
            "Passwords must be at least twelve characters long.",
            "The cafeteria serves lunch from noon until two.",
            "If you no longer have access to the email address on file, contact support with a copy of your ID; "
            "after we verify who you are, an agent will reset the password for you and ask you to choose a new one "
            "the next time you sign in, which usually takes one or two working days from the moment we receive "
            "your request and the documents we asked for.",
        ),
    ),
    (
        "Why did the river flood the village after the storm last spring, and could it happen again this year?",
        (
            "Heavy rain for three days raised the river until it burst its banks.",
            "Blue.",
            "The council has since built a higher embankment along the east side of the village.",
            "Rivers flood when more water arrives than the channel can carry.",
            "My cat likes to sleep in the sun.",
        ),
    ),
)
PARITY_PAIRS = tuple((query, passage) for query, passages in PARITY_GROUPS for passage in passages)


@dataclass(frozen=True)
class CrossEncoderArtifact:
    directory: Path  # the cached artifact's folder
    onnx_path: Path | None  # None: served by the PyTorch runner from the checkpoint (engine "torch")
    max_seq_length: int
    input_names: tuple[str, ...]
    output_name: str
    precision: str
    content_hash: str
    parity_max_abs_diff: float | None
    quantized_max_abs_diff: float | None  # int8/fp16/bf16: max |score - fp32 score| over the parity pairs
    tokenizer_files: dict[str, Path]
    activation: str
    notes: tuple[str, ...] = field(default=())
    engine: str = "onnx"


# --------------------------------------------------------------------------------------------------------- API


def export_cross_encoder(
    checkpoint: Path,
    *,
    max_seq_length: int | None = None,
    activation: Literal["none", "sigmoid"] = "none",
    precision: str = "fp32",
    parity_tolerance: float = 1e-4,
    max_quantized_diff: float = 0.05,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    engine: str = "onnx",
) -> CrossEncoderArtifact:
    """Export (or fetch from the cache) the ONNX scoring model for the reranker ``checkpoint``; with
    ``engine="torch"`` no ONNX: the tokenizer files and settings for the python runner's PyTorch engine, checked
    against the reference.

    Raises BuildError for a bad checkpoint or setting (a classifier with other than one label, a slow tokenizer,
    missing weights), ParityError when ONNX Runtime disagrees with PyTorch beyond ``parity_tolerance``, and
    BuildError when an int8/fp16/bf16 model's scores differ from fp32 by more than ``max_quantized_diff`` (unless
    ``force``). Scores are compared after the activation. bf16 is served by the PyTorch runner only
    (``engine="torch"``).
    """
    say = progress or (lambda _msg: None)
    if activation not in ACTIVATIONS:
        raise BuildError(f"activation {activation!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
    if precision not in PRECISIONS:
        raise BuildError(f"precision {precision!r} is not supported; use one of {', '.join(PRECISIONS)}")
    if engine not in common.ENGINES:
        raise BuildError(f"engine {engine!r} is not supported; use one of {', '.join(common.ENGINES)}")
    if precision == "bf16" and engine != "torch":
        raise BuildError('precision "bf16" is served by the PyTorch runner: use engine="torch" (no ONNX export)')
    if max_seq_length is not None and (not is_whole(max_seq_length) or max_seq_length < 2):
        raise BuildError(f"max_seq_length must be an integer >= 2, got {max_seq_length!r}")
    max_seq_length = None if max_seq_length is None else int(max_seq_length)  # numpy's too: hashed as JSON
    if engine == "torch":
        common.torch_precision_note(precision)  # int8 refused before any work
    # finite=False: inf is a bound that lets any difference through; NaN fails ">= 0"
    if not is_real(max_quantized_diff, finite=False) or not max_quantized_diff >= 0:
        raise BuildError(f"max_quantized_diff must be a number >= 0, got {max_quantized_diff!r}")
    max_quantized_diff = float(max_quantized_diff)  # numpy's too: kept as a plain float
    checkpoint = Path(checkpoint).expanduser().resolve()
    validate_checkpoint(checkpoint)

    content_hash = common.content_hash(
        BUILDER,
        BUILDER_VERSION,
        checkpoint_hash(checkpoint),
        {
            "activation": activation,
            "max_seq_length": max_seq_length,  # None = resolved from the (hashed) checkpoint files
            "precision": precision,
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
            max_seq_length=max_seq_length,
            activation=activation,
            precision=precision,
            parity_tolerance=parity_tolerance,
            max_quantized_diff=max_quantized_diff,
            force=force,
            content_hash=content_hash,
            say=say,
            engine=engine,
        ),
        check=lambda artifact: _check_thresholds(artifact, parity_tolerance, max_quantized_diff, force),
        say=say,
    )
    return _with_gate_notes(artifact, max_quantized_diff, force)


def load_artifact(directory: Path) -> CrossEncoderArtifact:
    """Read ``artifact.json`` from an artifact folder; BuildError when it is missing or incomplete."""
    artifact = _load_cached(Path(directory))
    if artifact is None:
        raise BuildError(
            f"{directory} is not a complete cross-encoder artifact (needs artifact.json, model.onnx and tokenizer/)"
        )
    return artifact


# ------------------------------------------------------------------------------------------------------ build


def _build(
    checkpoint: Path,
    out_dir: Path,
    *,
    max_seq_length: int | None,
    activation: str,
    precision: str,
    parity_tolerance: float,
    max_quantized_diff: float,
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
    _check_num_labels(checkpoint)
    tokenizer, ref_model, export_model = common.load_checkpoint(
        checkpoint, "AutoModelForSequenceClassification", require_all_weights=True, export_copy=engine == "onnx"
    )
    input_names = common.input_names(ref_model, tokenizer, checkpoint)
    max_len = common.resolve_max_len(
        checkpoint, tokenizer, ref_model.config, max_seq_length, "argument" if max_seq_length else None
    )
    specials = int(tokenizer.num_special_tokens_to_add(pair=True))
    if max_len < specials + 2:
        raise BuildError(
            f"{checkpoint}: max_seq_length {max_len} leaves no room for a query and a passage next to the "
            f"{specials} special tokens of a pair; use at least {specials + 2}"
        )
    tokenizer_files = common.write_tokenizer_files(checkpoint, tokenizer, out_dir / "tokenizer", max_len)
    declared = _declared_activation(checkpoint)
    if declared is not None and declared != activation:
        notes.append(
            f"the checkpoint declares a {declared!r} activation (sentence-transformers CrossEncoder); "
            f"exported with activation={activation!r}"
        )
    timings["load_s"] = time.perf_counter() - t0

    fp32_path: Path | None = None  # stays None for engine "torch": nothing is exported
    exporter: str | None = None
    if engine == "onnx":
        say("exporting")
        t0 = time.perf_counter()
        wrapper = _ScoringWrapperFactory.make(export_model, input_names, activation)
        dummy = _dummy_inputs(tokenizer, input_names, max_len)
        fp32_path = out_dir / ("model.onnx" if precision == "fp32" else "model.fp32.onnx")
        exporter = common.export_onnx(
            wrapper,
            tuple(dummy[n] for n in input_names),
            input_names,
            OUTPUT_NAME,
            fp32_path,
            input_axes=INPUT_AXES,
            output_axes=dict(enumerate(OUTPUT_AXES)),
        )
        if exporter != "torchscript":
            notes.append(f"exported with the {exporter} exporter (the TorchScript exporter failed)")
        common.check_graph(
            fp32_path,
            input_names,
            OUTPUT_NAME,
            input_axes=INPUT_AXES,
            output_axes=OUTPUT_AXES,
            dynamic_output_axes=(0, 1),
        )
        del wrapper
        timings["export_s"] = time.perf_counter() - t0

    say("parity check" if fp32_path is not None else "parity check (PyTorch runner)")
    t0 = time.perf_counter()
    feeds = _parity_feeds(tokenizer, out_dir / "tokenizer" / "tokenizer.json", input_names, max_len)
    with torch.inference_mode():
        reference = _reference_scores(ref_model, tokenizer, input_names, activation, max_len)
    if fp32_path is None:  # engine "torch": the python runner's own PyTorch engine, on the checkpoint
        checked = "fp32" if precision == "bf16" else precision  # bf16: float32 here, gated against it below
        parameters = common.torch_parameters("scoring", checked, activation=activation)
        (served,) = common.torch_runner(checkpoint, parameters).run([OUTPUT_NAME], feeds)
        what = "the PyTorch runner"
    else:
        served = common.run_onnx(fp32_path, feeds, OUTPUT_NAME)
        what = "ONNX export"
    over = (
        f"{len(PARITY_PAIRS)} (query, passage) pairs (one padded {list(served.shape)} batch vs unpadded pair by pair)"
    )
    max_diff = common.check_parity(
        checkpoint, what, served, reference, parity_tolerance, quantity="score diff", over=over
    )
    timings["parity_s"] = time.perf_counter() - t0
    del export_model, ref_model

    quant_diff: float | None = None
    if fp32_path is None and precision == "bf16":
        # the engine in bfloat16 (what the runner serves with `precision: bf16`) against itself in float32
        say("quantization gate (bf16)")
        t0 = time.perf_counter()
        parameters = common.torch_parameters("scoring", precision, activation=activation)
        (reduced,) = common.torch_runner(checkpoint, parameters).run([OUTPUT_NAME], feeds)
        quant_diff = _gate(precision, reduced, served, max_quantized_diff, force)
        timings["quantize_s"] = time.perf_counter() - t0
    elif fp32_path is None:
        note = common.torch_precision_note(precision)
        if note:
            notes.append(note)
    elif precision != "fp32":
        say("quantizing")
        t0 = time.perf_counter()
        quant_out, note = common.reduce_precision(
            precision, fp32_path, out_dir / "model.onnx", feeds, OUTPUT_NAME, metric="score difference"
        )
        if note:
            notes.append(note)
        if quant_out is not None:
            quant_diff = _gate(precision, quant_out, served, max_quantized_diff, force)
        timings["quantize_s"] = time.perf_counter() - t0

    return {
        "engine": engine,
        "onnx_path": None if fp32_path is None else "model.onnx",
        "max_seq_length": max_len,
        "input_names": list(input_names),
        "output_name": OUTPUT_NAME,
        "precision": precision,
        "content_hash": content_hash,
        "parity_max_abs_diff": max_diff,
        "quantized_max_abs_diff": quant_diff,
        "tokenizer_files": {name: f"tokenizer/{name}" for name in tokenizer_files},
        "activation": activation,
        "notes": notes,
        "build": {
            "builder_version": BUILDER_VERSION,
            "exporter": exporter,
            **({} if fp32_path is None else {"opset": OPSET}),
            "checkpoint": str(checkpoint),
            "parity_tolerance": parity_tolerance,
            "parity_pairs": len(PARITY_PAIRS),
            "parity_batch": list(served.shape),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "versions": common.library_versions(),
        },
    }


def _gate(precision: str, reduced: Any, fp32: Any, max_quantized_diff: float, force: bool) -> float:
    """The reduced model's largest score difference from fp32; QuantizationGateError above ``max_quantized_diff``
    (NaN included) unless ``force``. A forced pass is noted by export_cross_encoder on each call: the artifact is
    cached, and a later call's threshold may differ."""
    import numpy as np

    diff = float(np.abs(reduced - fp32).max())
    if (problems := _gate_problems(precision, diff, max_quantized_diff)) and not force:
        raise QuantizationGateError(problems)
    return diff


def _gate_problems(precision: str, diff: float | None, max_quantized_diff: float) -> list[str]:
    if diff is None or diff <= max_quantized_diff:
        return []
    return [f"{precision} model's scores differ from fp32 by up to {diff:.6f} > max_quantized_diff "
            f"{max_quantized_diff}"]


def _with_gate_notes(artifact: CrossEncoderArtifact, max_quantized_diff: float, force: bool) -> CrossEncoderArtifact:
    """The artifact's notes with this call's forced gate failure (a cached artifact's notes may hold the threshold
    of the build that made it: artifacts from before this rule recorded it)."""
    kept = tuple(n for n in artifact.notes if not n.endswith(FORCED) and not n.endswith(", accepted (force)"))
    problems = _gate_problems(artifact.precision, artifact.quantized_max_abs_diff, max_quantized_diff)
    return dataclasses.replace(artifact, notes=kept + (tuple(f"{p}{FORCED}" for p in problems) if force else ()))


def _check_num_labels(checkpoint: Path) -> None:
    """A reranker scores one logit per pair: refuse classifiers with another number of labels, before loading."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(checkpoint), local_files_only=True)
    except Exception as exc:
        raise BuildError(f"{checkpoint}: cannot read config.json: {type(exc).__name__}: {exc}") from exc
    num_labels = getattr(config, "num_labels", None)
    if num_labels != 1:
        raise BuildError(
            f"{checkpoint}/config.json: the classifier has num_labels {num_labels}, but a cross-encoder (reranker) "
            "scores one logit per (query, passage) pair: only num_labels 1 can be exported"
        )


def _declared_activation(checkpoint: Path) -> str | None:
    """The activation a sentence-transformers CrossEncoder checkpoint declares in config.json, when it does."""
    try:
        cfg = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    st = cfg.get("sentence_transformers") if isinstance(cfg, dict) else None
    name = (st.get("activation_fn") if isinstance(st, dict) else None) or cfg.get(
        "sbert_ce_default_activation_function"
    )
    if not isinstance(name, str) or not name:
        return None
    leaf = name.rsplit(".", 1)[-1].lower()
    return {"sigmoid": "sigmoid", "identity": "none"}.get(leaf, leaf)


class _ScoringWrapperFactory:
    """Builds the export wrapper lazily so torch is imported only when exporting."""

    @staticmethod
    def make(model: Any, input_names: tuple[str, ...], activation: str) -> Any:
        import torch

        with_types = "token_type_ids" in input_names
        sigmoid = activation == "sigmoid"

        class ScoringModel(torch.nn.Module):
            """[batch, candidates, sequence] ids -> [batch, candidates] scores, one classifier run per pair."""

            def __init__(self) -> None:
                super().__init__()
                self.classifier = model

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
                batch, candidates, seq = input_ids.shape[0], input_ids.shape[1], input_ids.shape[2]
                kwargs = {"input_ids": input_ids.reshape(-1, seq), "attention_mask": attention_mask.reshape(-1, seq)}
                if with_types:
                    kwargs["token_type_ids"] = token_type_ids.reshape(-1, seq)
                logits = self.classifier(**kwargs, return_dict=False)[0]  # [batch * candidates, 1]
                scores = logits[:, 0].reshape(batch, candidates)
                if sigmoid:
                    scores = torch.sigmoid(scores)
                return scores

        return ScoringModel().eval()


def _dummy_inputs(tokenizer: Any, input_names: tuple[str, ...], max_len: int) -> dict[str, Any]:
    """A padded [2, 3, sequence] batch (batch != candidates, so no axis can be confused with another)."""
    queries = ("Export the reranker.", "Which passage answers the question best?")
    passages = ("A short one.", "A second, longer passage makes the batch padded and shapes dynamic.", "Third.")
    enc = tokenizer(
        [q for q in queries for _ in passages],
        [p for _ in queries for p in passages],
        padding=True,
        truncation=True,
        max_length=max_len,
        return_tensors="pt",
    )
    return {n: enc[n].reshape(len(queries), len(passages), -1) for n in input_names}


def _parity_feeds(tokenizer: Any, tokenizer_json: Path, input_names: tuple[str, ...], max_len: int) -> dict[str, Any]:
    """ONE padded [groups, candidates, sequence] batch of the parity pairs, encoded by the shipped tokenizer.json.

    The shipped tokenizer must encode every pair exactly as transformers' ``tokenizer(query, passage,
    truncation=True)`` does (ids and token types), or the server would score different tokens.
    """
    from tokenizers import Tokenizer

    shipped = Tokenizer.from_file(str(tokenizer_json))
    encodings = shipped.encode_batch(list(PARITY_PAIRS))
    for (query, passage), enc in zip(PARITY_PAIRS, encodings, strict=True):
        expected = tokenizer(query, passage, truncation=True, max_length=max_len)
        kept = [m == 1 for m in enc.attention_mask]
        for name, got_all in (("input_ids", enc.ids), ("token_type_ids", enc.type_ids)):
            if name not in expected:
                continue
            got = [v for v, keep in zip(got_all, kept, strict=True) if keep]
            if got != list(expected[name]):
                raise BuildError(
                    f"{tokenizer_json}: the shipped tokenizer encodes the pair ({query[:30]!r}, {passage[:30]!r}) "
                    f"with {name} {got[:16]}... but transformers' tokenizer gives {list(expected[name])[:16]}...; "
                    "the server would see different tokens"
                )
    arrays = common.encoding_arrays(encodings, input_names)  # [pairs, sequence]
    groups = len(PARITY_GROUPS)
    return {name: a.reshape(groups, -1, a.shape[1]) for name, a in arrays.items()}


def _reference_scores(model: Any, tokenizer: Any, input_names: Any, activation: str, max_len: int) -> Any:
    """PyTorch scores straight from the classifier's logits, one (query, passage) pair at a time, no padding."""
    import numpy as np
    import torch

    rows = []
    for query, passages in PARITY_GROUPS:
        row = []
        for passage in passages:
            enc = tokenizer(query, passage, truncation=True, max_length=max_len, return_tensors="pt")
            logit = model(**{n: enc[n] for n in input_names}).logits[0, 0].to(torch.float32)
            row.append(float(torch.sigmoid(logit) if activation == "sigmoid" else logit))
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


# ------------------------------------------------------------------------------------------------------ cache


def _load_cached(directory: Path) -> CrossEncoderArtifact | None:
    return common.load_cached(directory, _from_record)


def _from_record(
    meta: dict[str, Any], directory: Path, onnx_path: Path | None, tokenizer_files: dict[str, Path]
) -> CrossEncoderArtifact:
    return CrossEncoderArtifact(
        directory=directory,
        onnx_path=onnx_path,
        engine=str(meta.get("engine", "onnx")),
        max_seq_length=int(meta["max_seq_length"]),
        input_names=tuple(meta["input_names"]),
        output_name=str(meta["output_name"]),
        precision=str(meta["precision"]),
        content_hash=str(meta["content_hash"]),
        parity_max_abs_diff=meta["parity_max_abs_diff"],
        quantized_max_abs_diff=meta["quantized_max_abs_diff"],
        tokenizer_files=tokenizer_files,
        activation=str(meta["activation"]),
        notes=tuple(meta.get("notes", ())),
    )


def _check_thresholds(
    artifact: CrossEncoderArtifact, parity_tolerance: float, max_quantized_diff: float, force: bool
) -> None:
    """A cached artifact must satisfy this call's thresholds too (it may have been built with looser ones)."""
    common.recheck_parity(artifact.directory, artifact.parity_max_abs_diff, parity_tolerance)
    problems = _gate_problems(artifact.precision, artifact.quantized_max_abs_diff, max_quantized_diff)
    if problems and not force:
        raise QuantizationGateError(problems)
