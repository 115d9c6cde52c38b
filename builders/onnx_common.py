"""What the ONNX exporters (``onnx_encoder``, ``cross_encoder``) share.

- ``quiet``: silences exporter/loader chatter.
- Checkpoint loading (``load_checkpoint``, with the transformers model class as a parameter), input names,
  maximum sequence length, and the tokenizer files shipped to the server (``write_tokenizer_files``).
- ONNX export with the TorchScript exporter and a dynamo fallback (``export_onnx``), graph checks, ONNX Runtime
  sessions, int8 / fp16 conversion (``reduce_precision``).
- The content-hash cache: ``content_hash``, ``cached_build`` (build in a temporary folder, write
  ``artifact.json``, rename into place; cache hits and stale-temp cleanup), ``load_cached`` and
  ``recheck_parity`` for thresholds a cached artifact must meet again.

Heavy libraries (torch, transformers, onnx, onnxruntime) are imported inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tritonforge.builders import artifact_cache
from tritonforge.builders.artifact_cache import STALE_TMP_SECONDS, remove_stale_tmp  # noqa: F401 (re-exported)
from tritonforge.errors import BuildError, ParityError

OPSET = 17
PRECISIONS = ("fp32", "fp16", "int8", "bf16")  # bf16: the PyTorch runner only (engine "torch"; cpu target's bf16)
# onnx: export model.onnx (served by ONNX Runtime); torch: no export, the python runner's PyTorch engine serves the
# checkpoint (images without the onnxruntime backend; builders/embedding.py encoder_runtime)
ENGINES = ("onnx", "torch")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
ARTIFACT_FILE = "artifact.json"
# ``tokenizers.Encoding`` attribute for each model input
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

T = TypeVar("T")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


# ------------------------------------------------------------------------------------------------- checkpoint


def load_checkpoint(
    checkpoint: Path, model_class: Any = "AutoModel", *, require_all_weights: bool = False, export_copy: bool = True
) -> Any:
    """``(tokenizer, reference model, export model)``, both models FP32 and in eval mode; the export model is None
    without ``export_copy`` (a build for the PyTorch runner exports nothing, and its runner loads the checkpoint
    itself: a second copy would only cost time and memory).

    ``model_class`` is a transformers auto class (or its name): ``AutoModel`` for encoders,
    ``AutoModelForSequenceClassification`` for cross encoders. The reference runs the checkpoint as shipped; the
    export copy uses eager attention, the most predictable path through the ONNX exporters. With
    ``require_all_weights`` a checkpoint that lacks some of the model's weights (a bare encoder loaded as a
    classifier would get a randomly initialised head) is refused.
    """
    import torch
    import transformers
    from transformers import AutoTokenizer

    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    except Exception as exc:
        raise BuildError(f"{checkpoint}: cannot load the tokenizer: {type(exc).__name__}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise BuildError(
            f"{checkpoint}: the tokenizer ({type(tokenizer).__name__}) is not a fast (Rust `tokenizers`) tokenizer; "
            "tritonforge ships tokenizer.json to the server, so the checkpoint needs a tokenizer.json "
            "(save one with a fast tokenizer's save_pretrained)"
        )
    cls = getattr(transformers, model_class) if isinstance(model_class, str) else model_class

    # FP32 whatever the checkpoint's torch_dtype (transformers 5 loads "auto" by default); the keyword was
    # renamed from torch_dtype to dtype in transformers 4.56.
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    fp32 = {"dtype" if (major, minor) >= (4, 56) else "torch_dtype": torch.float32}
    try:
        with quiet():
            if require_all_weights:
                ref_model, info = cls.from_pretrained(
                    str(checkpoint), local_files_only=True, output_loading_info=True, **fp32
                )
            else:
                ref_model, info = cls.from_pretrained(str(checkpoint), local_files_only=True, **fp32), {}
            missing = sorted(info.get("missing_keys") or ())
            if missing:
                raise BuildError(
                    f"{checkpoint}: the checkpoint has no weights for {', '.join(missing)} "
                    f"({cls.__name__} would initialise them at random); it is not a {cls.__name__} checkpoint"
                )
            export_model = (
                cls.from_pretrained(str(checkpoint), local_files_only=True, attn_implementation="eager", **fp32)
                if export_copy
                else None
            )
    except BuildError:
        raise
    except Exception as exc:
        raise BuildError(f"{checkpoint}: cannot load the model: {type(exc).__name__}: {exc}") from exc
    ref_model.eval()
    if export_model is not None:
        export_model.eval()
    return tokenizer, ref_model, export_model


def input_names(model: Any, tokenizer: Any, checkpoint: Path) -> tuple[str, ...]:
    """``input_ids``, ``attention_mask`` and, when both the model and the tokenizer use it, ``token_type_ids``."""
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


def resolve_max_len(checkpoint: Path, tokenizer: Any, config: Any, requested: int | None, source: str | None) -> int:
    """The requested length (checked against max_position_embeddings), else min(tokenizer, model) limits."""
    max_pos = getattr(config, "max_position_embeddings", None)
    max_pos = int(max_pos) if isinstance(max_pos, int) and max_pos > 0 else None
    if requested is not None:
        if max_pos is not None and requested > max_pos:
            where = "sentence_bert_config.json" if source == "sentence-transformers" else "max_seq_length"
            raise BuildError(f"{checkpoint}: {where} {requested} exceeds the model's max_position_embeddings {max_pos}")
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


def write_tokenizer_files(checkpoint: Path, tokenizer: Any, out: Path, max_len: int) -> list[str]:
    """Copy the tokenizer files to ship, with truncation at ``max_len`` and batch-longest padding built in.

    Checkpoints often carry stale settings in tokenizer.json (all-MiniLM-L6-v2: pad to a fixed 128, truncate at
    128, while sentence-transformers uses 256); a server tokenizing with the raw ``tokenizers`` library would
    silently get different tokens. The shipped files encode exactly as the parity check does. Truncation uses
    the ``longest_first`` strategy, which is also what transformers applies to (query, passage) pairs.
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


# ------------------------------------------------------------------------------------------------------ export


def export_onnx(
    wrapper: Any,
    args: tuple[Any, ...],
    names: tuple[str, ...],
    output_name: str,
    path: Path,
    *,
    input_axes: tuple[str, ...] = ("batch", "sequence"),
    output_axes: Mapping[int, str] | None = None,
) -> str:
    """TorchScript exporter first (opset 17, predictable for BERT); the dynamo exporter when it is unavailable.

    Every input axis is dynamic and named by ``input_axes`` (the last one is the sequence); ``output_axes`` names
    the output's dynamic axes (default: the first input axis). Returns the exporter used.
    """
    import torch

    out_axes = dict(output_axes) if output_axes is not None else {0: input_axes[0]}
    dynamic_axes: dict[str, dict[int, str]] = {name: dict(enumerate(input_axes)) for name in names}
    dynamic_axes[output_name] = out_axes
    first_error: Exception | None = None
    try:
        with quiet(), torch.no_grad():
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=list(names),
                output_names=[output_name],
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
        seq_axis = len(input_axes) - 1
        dims = {
            axis: torch.export.Dim(
                axis, min=1, max=max(int(args[0].shape[seq_axis]), 2) * 4096 if i == seq_axis else 4096
            )
            for i, axis in enumerate(input_axes)
        }
        dynamic_shapes = {name: {i: dims[axis] for i, axis in enumerate(input_axes)} for name in names}
        with quiet(), torch.no_grad():
            program = torch.onnx.export(
                wrapper,
                args,
                input_names=list(names),
                output_names=[output_name],
                dynamic_shapes=dynamic_shapes,
                opset_version=max(OPSET, 18),
                dynamo=True,
                optimize=True,
                verbose=False,
            )
            if program is None:
                raise BuildError("torch.onnx.export (dynamo) returned no program to save")
            program.save(str(path), external_data=False)
        return "dynamo"
    except Exception as exc:
        raise BuildError(
            f"ONNX export failed with both exporters: TorchScript: {type(first_error).__name__}: {first_error}; "
            f"dynamo: {type(exc).__name__}: {exc}"
        ) from exc


def check_graph(
    path: Path,
    names: tuple[str, ...],
    output_name: str,
    *,
    input_axes: tuple[str, ...] = ("batch", "sequence"),
    output_axes: tuple[str, ...] = ("batch", "dim"),
    dynamic_output_axes: tuple[int, ...] = (0,),
) -> None:
    """The graph has exactly ``names`` as INT64 inputs, every axis dynamic, and one FLOAT output of the right rank."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    problems = []
    if tuple(i.name for i in inputs) != tuple(names):
        problems.append(f"inputs are {[i.name for i in inputs]}, expected {list(names)}")
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.elem_type != onnx.TensorProto.INT64:
            problems.append(f"input {value.name} is not INT64")
        if len(dims) != len(input_axes) or any(d.HasField("dim_value") for d in dims):
            problems.append(f"input {value.name} shape {dims_of(dims)} is not dynamic [{', '.join(input_axes)}]")
    outputs = list(graph.output)
    if [o.name for o in outputs] != [output_name]:
        problems.append(f"outputs are {[o.name for o in outputs]}, expected [{output_name!r}]")
    else:
        out = outputs[0].type.tensor_type
        if out.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {output_name} is not FLOAT")
        out_dims = out.shape.dim
        if len(out_dims) != len(output_axes) or any(out_dims[i].HasField("dim_value") for i in dynamic_output_axes):
            dynamic = ", ".join(output_axes[i] for i in dynamic_output_axes)
            problems.append(
                f"output {output_name} shape {dims_of(out_dims)} is not [{', '.join(output_axes)}] "
                f"with dynamic {dynamic}"
            )
    if problems:
        raise BuildError(f"{path}: exported graph is wrong: " + "; ".join(problems))


def dims_of(dims: Any) -> list[Any]:
    """ONNX shape dims as a readable list: numbers for fixed axes, names (or ``?``) for dynamic ones."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def encoding_arrays(encodings: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """INT64 arrays ``[len(encodings), tokens]`` of padded ``tokenizers`` encodings, one per input name."""
    import numpy as np

    return {name: np.asarray([getattr(e, ENCODING_FIELDS[name]) for e in encodings], dtype=np.int64) for name in names}


# ----------------------------------------------------------------------------------------------- onnxruntime


def session(path: Path) -> Any:
    """A CPU ONNX Runtime session that logs errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, feeds: dict[str, Any], output_name: str) -> Any:
    """Run ``path`` once on CPU and return ``output_name`` as FP32."""
    import numpy as np

    (out,) = session(path).run([output_name], feeds)
    return np.asarray(out, dtype=np.float32)


def torch_runner(checkpoint: Path, parameters: dict[str, str]) -> Any:
    """The python runner's PyTorch engine (python_backends/onnx_runner/torch_engine.py) on CPU in float32: the very
    code the server runs, loaded here so a build checks it against the transformers reference."""
    from tritonforge import python_backends

    engine = python_backends.load_module("onnx_runner", "torch_engine")
    return engine.TorchEncoder(str(checkpoint), parameters, "cpu")


def torch_parameters(task: str, precision: str, **settings: str | bool) -> dict[str, str]:
    """The python runner's parameters for its PyTorch engine: rendered into config.pbtxt, and what builds run the
    engine with."""
    params = {"engine": "torch", "task": task, "precision": precision}
    params.update({k: str(v).lower() if isinstance(v, bool) else v for k, v in settings.items()})
    return params


def torch_precision_note(precision: str) -> str | None:
    """What a reduced ``precision`` means for the PyTorch engine; bf16 is measured by the quantization gate instead."""
    if precision in ("fp32", "bf16"):
        return None
    if precision == "int8":
        raise BuildError("the PyTorch runner serves fp32, fp16 (half on the GPU) or bf16, not int8; use one of those")
    return (
        "fp16: the PyTorch runner casts the weights to half on the GPU; parity was checked in float32 on CPU "
        "(half-precision numerics are not measured by this build)"
    )


@functools.cache
def _cores() -> Any:
    from tritonforge import python_backends

    return python_backends.load_module("onnx_runner", "cores")  # the shipped runners' copy of the flag rule


def bf16_flags() -> tuple[str, ...]:
    """The CPU flags that mean native bf16 (the shipped runners' rule, read when asked)."""
    flags: tuple[str, ...] = _cores().BF16_FLAGS
    return flags


CPUINFO = Path("/proc/cpuinfo")  # the one place this machine's CPU flags are read from (tests point it elsewhere)


def cpu_flags(cpuinfo: Path | None = None) -> frozenset[str] | None:
    """The flags of ``cpuinfo`` (default: this machine's /proc/cpuinfo); None when they cannot be read (not Linux)."""
    flags: frozenset[str] | None = _cores().cpu_flags(str(cpuinfo or CPUINFO))
    return flags


def native_bf16(cpuinfo: Path | None = None) -> bool | None:
    """Whether this machine's CPU computes bf16 natively (AMX or AVX512-BF16 in /proc/cpuinfo's flags); without them
    PyTorch emulates bf16, slower than fp32. None when the flags cannot be read (not Linux)."""
    native: bool | None = _cores().native_bf16(str(cpuinfo or CPUINFO))
    return native


def amx_bf16(cpuinfo: Path | None = None) -> bool:
    """Whether this machine's CPU has AMX for bf16 (``amx_bf16``: Sapphire Rapids and later), where bf16 pays most;
    False when the flags cannot be read."""
    return "amx_bf16" in (cpu_flags(cpuinfo) or ())


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8: QInt8 weights, per output channel; only MatMuls with a constant (weight) operand.

    Per-tensor weights or quantising the activation x activation attention MatMuls cost all-MiniLM-L6-v2
    0.87 minimum cosine on an AVX2 CPU; these settings give ~0.97.
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # "Please consider to run pre-processing before quantization"
    try:
        with quiet():
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


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute, FP32/INT64 graph inputs and outputs kept (same tensor contract as fp32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with quiet():
            model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        onnx.save(model, str(dst))
    except Exception as exc:
        raise BuildError(f"fp16 conversion of {src} failed: {type(exc).__name__}: {exc}") from exc


def reduce_precision(
    precision: str, fp32_path: Path, final_path: Path, feeds: dict[str, Any], output_name: str, *, metric: str
) -> tuple[Any, str | None]:
    """Write the int8/fp16 model at ``final_path`` (removing ``fp32_path``) and run it on ``feeds``.

    Returns ``(output, None)``, or ``(None, note)`` when an fp16 model cannot run on this machine's ONNX Runtime
    (its ``metric`` against fp32 is then unmeasured, and the note says so); int8 that cannot run is a BuildError.
    """
    if precision == "int8":
        quantize_int8(fp32_path, final_path)
    else:
        convert_fp16(fp32_path, final_path)
    fp32_path.unlink()
    try:
        return run_onnx(final_path, feeds, output_name), None
    except Exception as exc:
        if precision != "fp16":
            raise BuildError(f"ONNX Runtime cannot run the {precision} model: {exc}") from exc
        return None, (
            f"fp16 model could not run on this machine's ONNX Runtime (CPU), so its {metric} to fp32 is unmeasured: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        )


def library_versions() -> dict[str, str]:
    """Versions recorded in every artifact.json."""
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


# ------------------------------------------------------------------------------------------------------ cache


def content_hash(builder: str, builder_version: str, ckpt_hash: str, settings: dict[str, Any]) -> str:
    """sha256 over the builder, its recipe version, the checkpoint's hash and every setting that shapes the output."""
    payload = json.dumps(
        {"builder": builder, "builder_version": builder_version, "checkpoint": ckpt_hash, **settings},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cached_build(
    final_dir: Path,
    *,
    load: Callable[[Path], T | None],
    build: Callable[[Path], dict[str, Any]],
    check: Callable[[T], None],
    say: Callable[[str], None],
) -> T:
    """``artifact_cache.cached_build`` for ONNX exports: ``build(tmp_dir)`` returns the ``artifact.json`` record."""

    def build_and_record(tmp_dir: Path) -> None:
        record = build(tmp_dir)
        (tmp_dir / ARTIFACT_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")

    return artifact_cache.cached_build(final_dir, load=load, build=build_and_record, check=check, say=say)


def load_cached(directory: Path, make: Callable[[dict[str, Any], Path, Path | None, dict[str, Path]], T]) -> T | None:
    """Read ``artifact.json``: ``make(meta, directory, onnx_path, tokenizer_files)`` (``onnx_path`` None for an
    artifact served by the PyTorch runner, which has no ONNX file), or None when incomplete or unreadable."""
    meta_file = directory / ARTIFACT_FILE
    if not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        onnx_path = None if meta["onnx_path"] is None else directory / meta["onnx_path"]
        tokenizer_files = {name: directory / rel for name, rel in meta["tokenizer_files"].items()}
        if (onnx_path is not None and not onnx_path.is_file()) or not all(
            p.is_file() for p in tokenizer_files.values()
        ):
            return None
        return make(meta, directory, onnx_path, tokenizer_files)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_parity(
    checkpoint: Path, what: str, served: Any, reference: Any, tolerance: float, *, quantity: str, over: str
) -> float:
    """The max abs difference between what will be served (``what``: an ONNX export or the PyTorch runner) and the
    transformers reference; ParityError on a shape mismatch or beyond ``tolerance`` (NaN included). ``quantity``
    and ``over`` say what was compared, for the message."""
    import numpy as np

    if served.shape != reference.shape:
        raise ParityError(
            f"{what}: output shape {tuple(served.shape)} differs from the PyTorch reference {tuple(reference.shape)}"
        )
    max_diff = float(np.abs(served - reference).max())
    if not max_diff <= tolerance:  # also catches NaN
        raise ParityError(
            f"{checkpoint}: {what} disagrees with the transformers reference: max abs {quantity} {max_diff:.3g} > "
            f"tolerance {tolerance:.3g} over {over}"
        )
    return max_diff


def recheck_parity(directory: Path, diff: float | None, tolerance: float) -> None:
    """ParityError when a (cached) artifact's recorded parity diff exceeds this call's tolerance."""
    if diff is not None and not diff <= tolerance:
        raise ParityError(f"{directory}: cached export's max abs diff {diff:.3g} > tolerance {tolerance:.3g}")
