"""Request payloads: generated from the model's config, or read from a perf_analyzer-style JSON data file."""

from __future__ import annotations

import base64
import binascii
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tritonforge.errors import BenchOptionsError

PAYLOAD_POOL = 16


# real sentences for text inputs (written for this project)
SENTENCES = (
    "How do I speed up inference on a GPU?",
    "Triton batches requests from many clients into one execution.",
    "The recipe needs two eggs, a cup of flour and a pinch of salt.",
    "What is the capital of Australia?",
    "Thunder is the sound caused by lightning heating the air.",
    "Dynamic batching trades a little latency for a lot of throughput.",
    "Please summarise the attached quarterly report in three bullet points.",
    "The train to Lyon leaves at seven fifteen from platform four.",
    "Which sentence embedding model works best for short queries?",
    "A cache hit avoids running the model at all.",
    "Water boils at a lower temperature at high altitude.",
    "My order arrived damaged; how can I get a replacement?",
    "Vector search finds the passages closest to the query embedding.",
    "The museum is closed on Mondays and public holidays.",
    "Quantisation to int8 shrinks the model and usually speeds it up on CPUs.",
    "She planted tomatoes, basil and a row of sunflowers along the fence.",
    "Why does my container run out of shared memory?",
    "Latency percentiles say more than an average ever will.",
    "The meeting moved to Thursday afternoon because of the holiday.",
    "Rerankers score each query and passage pair with a cross-encoder.",
)

_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": np.float32,  # tritonclient converts float32 arrays for BF16 inputs
    "BYTES": np.object_,
}



# ------------------------------------------------------------------------------------------------------ inputs


def _datatype(config_type: str) -> str:
    t = str(config_type).removeprefix("TYPE_")
    return "BYTES" if t == "STRING" else t


def _dims(raw: Iterable[Any]) -> list[int]:
    return [int(d) for d in raw]


def _int_range(name: str) -> tuple[int, int] | int:
    """A constant or a [low, high) range for an integer input, by its name."""
    n = name.lower()
    if "mask" in n:
        return 1
    if "type_ids" in n or "token_type" in n or n in ("pad_id", "lora_task_id") or "seed" in n:
        return 0
    for key, value in (
        ("max_tokens", 16),
        ("top_k", 5),
        ("top_n", 3),
        ("beam", 1),
        ("end_id", 2),
        ("num_return", 1),
        ("min_length", 1),
        ("request_output_len", 16),
    ):
        if key in n:
            return value
    if n.endswith("ids") or n.endswith("_id") or "token" in n:
        return (1000, 2000)  # inside every common vocabulary, past the special tokens
    return (1, 8)


def _float_value(name: str) -> float | None:
    n = name.lower()
    for key, value in (("temperature", 1.0), ("top_p", 0.9), ("penalty", 1.0), ("length_penalty", 1.0)):
        if key in n:
            return value
    return None


def _fill(name: str, datatype: str, shape: list[int], rng: random.Random) -> np.ndarray:
    size = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        items = [rng.choice(SENTENCES).encode("utf-8") for _ in range(size)]
        return np.array(items, dtype=np.object_).reshape(shape)
    dtype = _NUMPY.get(datatype)
    if dtype is None:
        raise BenchOptionsError(
            f"input '{name}' has datatype {datatype}, which auto inputs cannot generate: use --data"
        )
    if datatype == "BOOL":
        return (np.array([rng.random() for _ in range(size)]) < 0.5).reshape(shape)
    if np.issubdtype(dtype, np.integer):
        spec = _int_range(name)
        if isinstance(spec, int):
            return np.full(shape, spec, dtype=dtype)
        return np.array([rng.randrange(*spec) for _ in range(size)], dtype=dtype).reshape(shape)
    value = _float_value(name)
    if value is not None:
        return np.full(shape, value, dtype=dtype)
    return np.array([rng.random() for _ in range(size)], dtype=dtype).reshape(shape)


def _model_inputs(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(i) for i in config.get("input", [])]


def generate_inputs(
    config: Mapping[str, Any],
    *,
    batch_size: int = 1,
    seq_length: int = 16,
    string_items: int = 4,
    count: int = PAYLOAD_POOL,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """``count`` different requests for a model config (the JSON form, as Triton returns it).

    Shapes: the batch dimension is ``batch_size`` when the model batches; a -1 becomes ``seq_length`` (numeric) or
    ``string_items`` (STRING) items. Optional inputs are left out.
    """
    max_batch = int(config.get("max_batch_size", 0) or 0)
    _check_batch(config, batch_size)
    rng = random.Random(seed)
    specs = [i for i in _model_inputs(config) if not i.get("optional")]
    if not specs:
        raise BenchOptionsError(f"model '{config.get('name', '?')}' has no required inputs to generate")
    for spec in specs:
        if spec.get("is_shape_tensor"):
            raise BenchOptionsError(
                f"input '{spec['name']}' is a shape tensor: auto inputs cannot guess it; use --data"
            )
    payloads = []
    for _ in range(count):
        payload = {}
        for spec in specs:
            datatype = _datatype(spec.get("data_type", ""))
            dims = [(string_items if datatype == "BYTES" else seq_length) if d < 0 else d for d in _dims(spec["dims"])]
            shape = ([batch_size] if max_batch > 0 else []) + dims
            payload[spec["name"]] = _fill(spec["name"], datatype, shape, rng)
        payloads.append(payload)
    return payloads


def _check_batch(config: Mapping[str, Any], batch_size: int) -> None:
    max_batch = int(config.get("max_batch_size", 0) or 0)
    if batch_size < 1:
        raise BenchOptionsError(f"batch_size={batch_size} (--batch-size) must be >= 1")
    if max_batch == 0 and batch_size != 1:
        raise BenchOptionsError(
            f"model '{config.get('name', '?')}' does not batch (max_batch_size 0): use batch_size 1"
        )
    if max_batch > 0 and batch_size > max_batch:
        raise BenchOptionsError(
            f"batch_size={batch_size} (--batch-size) is larger than the model's max_batch_size {max_batch}"
        )


def _b64(where: str, value: Any) -> bytes:
    """The bytes of a ``{"b64": ...}`` value; a BenchOptionsError naming the entry when it is not base64 text."""
    if not isinstance(value, str):
        raise BenchOptionsError(f"{where}: 'b64' must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)  # validate: stray characters are refused, not skipped
    except (binascii.Error, ValueError) as err:
        raise BenchOptionsError(f"{where}: 'b64' is not valid base64 ({err})") from None


def _entry_array(where: str, value: Any, datatype: str, dims: list[int]) -> np.ndarray:
    shape = None
    if isinstance(value, Mapping):
        if "b64" in value:
            if datatype != "BYTES":
                raise BenchOptionsError(f"{where}: b64 content is only for STRING inputs (this one is {datatype})")
            value = {"content": [_b64(where, value["b64"])], "shape": value.get("shape", [1] * len(dims))}
        if "content" not in value:
            raise BenchOptionsError(f"{where}: an object value needs 'content' (and optionally 'shape') or 'b64'")
        shape = value.get("shape")
        value = value["content"]
    if datatype == "BYTES":
        flat = np.array(value, dtype=np.object_).reshape(-1)
        items = []
        for item in flat:
            if isinstance(item, str):
                item = item.encode("utf-8")
            elif isinstance(item, Mapping) and "b64" in item:
                item = _b64(where, item["b64"])
            if not isinstance(item, bytes):
                raise BenchOptionsError(f"{where}: STRING values must be strings, got {type(item).__name__}")
            items.append(item)
        array = np.array(items, dtype=np.object_)
    else:
        try:
            array = np.array(value, dtype=_NUMPY[datatype])
        except (KeyError, TypeError, ValueError) as err:
            raise BenchOptionsError(f"{where}: cannot read the value as {datatype}: {err}") from None
    try:
        if shape is not None:
            return array.reshape([int(s) for s in shape])
        if sum(d < 0 for d in dims) <= 1:
            return array.reshape(dims)
        if array.ndim == len(dims):
            return array
    except ValueError as err:
        raise BenchOptionsError(f"{where}: {array.size} values do not fit the input's dims {dims}: {err}") from None
    raise BenchOptionsError(f"{where}: dims {dims} have several -1: give the entry's 'shape'")


def load_data(path: str | Path, config: Mapping[str, Any], *, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
    """Requests from a JSON data file (see the module docstring): one entry per batch item."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BenchOptionsError(f"cannot read the data file {path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:  # JSON is UTF-8; raw bytes go in {"b64": ...} values
        raise BenchOptionsError(
            f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8, or give raw bytes as {{\"b64\": ...}}"
        ) from None
    except json.JSONDecodeError as err:
        raise BenchOptionsError(f"{path}: not JSON: {err}") from None
    entries = raw.get("data") if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) for e in entries):
        raise BenchOptionsError(
            f'{path}: expected {{"data": [{{input name: value, ...}}, ...]}} with at least one entry'
        )
    _check_batch(config, batch_size)
    max_batch = int(config.get("max_batch_size", 0) or 0)
    specs = {i["name"]: i for i in _model_inputs(config)}
    required = {n for n, s in specs.items() if not s.get("optional")}
    items: list[dict[str, np.ndarray]] = []
    for k, entry in enumerate(entries):
        unknown = sorted(set(entry) - set(specs))
        missing = sorted(required - set(entry))
        if unknown or missing:
            problems = ([f"unknown inputs {unknown} (the model has {sorted(specs)})"] if unknown else []) + (
                [f"missing required inputs {missing}"] if missing else []
            )
            raise BenchOptionsError(f"{path}: data[{k}]: " + "; ".join(problems))
        items.append(
            {
                name: _entry_array(
                    f"{path}: data[{k}].{name}",
                    value,
                    _datatype(specs[name].get("data_type", "")),
                    _dims(specs[name]["dims"]),
                )
                for name, value in entry.items()
            }
        )
    if max_batch == 0:
        return items
    payloads = []
    for start in range(0, max(len(items), 1), batch_size):
        group = [items[(start + j) % len(items)] for j in range(batch_size)]
        try:
            payloads.append({name: np.stack([g[name] for g in group]) for name in group[0]})
        except ValueError as err:
            raise BenchOptionsError(
                f"{path}: entries {start}..{start + batch_size - 1} cannot share a batch (different shapes: {err}); "
                "use batch_size 1 or give them the same shapes"
            ) from None
    return payloads


def _describe(payload: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    return {name: {"datatype": datatypes[name], "shape": list(a.shape)} for name, a in payload.items()}
