"""Benchmark a model on a running Triton: closed-loop concurrency sweeps or an open-loop request rate.

    from tritonforge.bench import run_bench

    report = run_bench("127.0.0.1:8001", "embed", concurrency=[1, 4, 16], duration_s=5)
    report.write_json("bench.json")
    report.plot("bench.png")

What it measures, per level (one concurrency, or the offered rate):

* client side: latency percentiles (p50/p90/p95/p99, mean, min, max, in ms), throughput (requests/s and items/s:
  requests x batch size), error counts with their messages;
* server side, from Triton's statistics API (``get_inference_statistics``) read before and after the level: the
  average queue, compute_input, compute_infer and compute_output time per request (µs), the average total time in
  the server, the executions (so the dynamic batcher's average batch size), for the model *and* for every composing
  model of an ensemble (recursively). An ensemble's own queue/compute figures are what Triton reports for the
  ensemble scheduler; its composing models' rows show where the time goes;
* decoupled (streaming) models, over gRPC streams: time to first response, inter-response latency, responses per
  request and responses ("tokens") per second.

Load generation: ``concurrency=[N, ...]`` runs N workers, each with its own client and connection, each sending
its next request as soon as the previous one returns (closed loop). ``rate=R`` sends requests at Poisson arrival
times averaging R per second (open loop) through a bounded pool of ``max_inflight`` workers; an open-loop latency
is measured from the request's *scheduled* arrival, so a client that falls behind shows it (``late``) instead of
hiding it, and arrivals still unsent when the level's time is up are counted as ``dropped``. Each level first runs
``warmup_s`` seconds unmeasured, then ``duration_s`` measured (or until ``max_requests``).

Inputs: ``"auto"`` generates them from the model's config (shapes with -1 become ``seq_length``; STRING inputs get
real short English sentences; integers and floats are random within a safe range, with name-based choices for the
usual controls: ``*mask*`` ones, ``max_tokens`` 16, ``top_k`` 5, ``temperature`` 1.0, ...); optional inputs are
left out. Or a JSON data file (perf_analyzer's layout)::

    {"data": [{"TEXT": ["a sentence"]}, {"TEXT": {"content": ["another"], "shape": [1]}}, ...]}

one entry per batch item, shapes without the batch dimension; ``batch_size`` consecutive entries make a request.
A STRING value may also be ``{"b64": "..."}`` (raw bytes).

A benchmark sends real load. It refuses any address that is not loopback (127.0.0.0/8, ::1, a name that resolves
only to those) unless ``allow_remote=True`` (``tritonforge bench --allow-remote``): point it only at a server you
are allowed to load, and bound it (``duration_s``, ``max_requests``, ``timeout``).
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import math
import queue
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonforge.errors import BenchError

__all__ = [
    "BenchError",
    "BenchReport",
    "LevelResult",
    "ModelSplit",
    "Percentiles",
    "StreamStats",
    "check_target",
    "default_url",
    "error_lines",
    "generate_inputs",
    "load_data",
    "parse_concurrency",
    "plot_report",
    "report_tables",
    "run_bench",
]

Protocol = Literal["grpc", "http"]

DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
MAX_CONCURRENCY = 1024
MAX_OPEN_LOOP_REQUESTS = 1_000_000
PAYLOAD_POOL = 16
_STAT_PARTS = ("queue", "compute_input", "compute_infer", "compute_output")

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


# ------------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Percentiles:
    """Latency distribution in milliseconds."""

    count: int
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of_seconds(cls, samples: Sequence[float]) -> Percentiles | None:
        if not samples:
            return None
        ms = np.asarray(samples, dtype=np.float64) * 1000.0
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        return cls(
            len(ms), float(p50), float(p90), float(p95), float(p99), float(ms.mean()), float(ms.min()), float(ms.max())
        )


@dataclass(frozen=True)
class ModelSplit:
    """Triton's own account of one model during one level (deltas of its statistics), per request."""

    model: str
    composing: bool  # called by the benchmarked ensemble, not by the client
    requests: int  # successful requests (success.count delta)
    failures: int
    inferences: int  # batch items
    executions: int
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float
    total_us: float  # success.ns / success.count: the whole request inside the server

    @property
    def avg_batch(self) -> float:
        return self.inferences / self.executions if self.executions else 0.0


@dataclass(frozen=True)
class StreamStats:
    """Decoupled models: every response with outputs counts as a token."""

    responses: int
    responses_per_request: float
    tokens_per_s: float
    ttft_ms: Percentiles | None  # time to first response
    inter_token_ms: Percentiles | None  # gaps between consecutive responses of one request


@dataclass
class LevelResult:
    mode: Literal["concurrency", "rate"]
    concurrency: int | None  # closed loop: workers; open loop: None
    rate: float | None  # open loop: offered requests/s
    duration_s: float  # measured wall time
    requests: int  # succeeded
    errors: int
    throughput_rps: float
    throughput_items_s: float
    latency_ms: Percentiles | None
    error_messages: dict[str, int] = field(default_factory=dict)
    server: list[ModelSplit] = field(default_factory=list)
    stream: StreamStats | None = None
    late: int = 0  # open loop: sent more than 5 ms after the scheduled arrival
    dropped: int = 0  # open loop: not sent before the level's time was up
    server_note: str = ""

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.mode == "concurrency" else f"{self.rate:g}/s"

    @property
    def x(self) -> float:
        return float((self.concurrency if self.mode == "concurrency" else self.rate) or 0.0)


@dataclass
class BenchReport:
    url: str
    model: str
    protocol: Protocol
    batch_size: int
    streaming: bool
    inputs: dict[str, dict[str, Any]]  # name -> {"datatype", "shape"} of the first request
    data: str  # "auto" or the data file
    warmup_s: float
    composing_models: list[str]
    levels: list[LevelResult] = field(default_factory=list)
    started: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for level, raw in zip(self.levels, out["levels"], strict=True):
            raw["label"] = level.label
            for split, raw_split in zip(level.server, raw["server"], strict=True):
                raw_split["avg_batch"] = split.avg_batch
        return out

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def plot(self, path: str | Path) -> Path:
        return plot_report(self, path)


# ------------------------------------------------------------------------------------------------- the target


def default_url(protocol: Protocol = "grpc") -> str:
    return f"localhost:{DEFAULT_PORTS[protocol]}"


def _host_port(url: str, protocol: str) -> tuple[str, str]:
    """``(host, "host:port")`` of a ``host:port`` or ``scheme://host:port`` URL; the host without brackets."""
    if not isinstance(url, str) or not url.strip():
        raise BenchError(f"url must be 'host:port', got {url!r}")
    rest = url.strip()
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        if scheme.lower() not in ("grpc", "http"):
            raise BenchError(f"url {url!r}: scheme {scheme!r} is not grpc:// or http:// (TLS is not supported here)")
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise BenchError(f"url {url!r} must be host:port without a path")
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:  # a bare name, IPv4 or IPv6 address
        host, port = rest, ""
    port = port or str(DEFAULT_PORTS.get(protocol, 8001))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"url {url!r}: port {port!r} is not a TCP port")
    if not host:
        raise BenchError(f"url {url!r} has no host")
    return host, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_target(url: str, *, protocol: Protocol = "grpc", allow_remote: bool = False) -> str:
    """``host:port`` for tritonclient; a BenchError for a non-loopback address unless ``allow_remote``."""
    host, address = _host_port(url, protocol)
    if not allow_remote and not _is_loopback(host):
        raise BenchError(
            f"refusing to benchmark {address}: it is not a loopback address and a benchmark sends real load. "
            "Pass --allow-remote (allow_remote=True) to load a server you are allowed to load."
        )
    return address


def parse_concurrency(value: str | int | Iterable[int]) -> list[int]:
    """``"1,4,16"`` (or ints) -> ``[1, 4, 16]``, each within 1..MAX_CONCURRENCY."""
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    out = []
    for item in items:
        try:
            n = int(item)
        except (TypeError, ValueError):
            raise BenchError(f"concurrency {item!r} is not an integer (give e.g. 1,4,16)") from None
        if not 1 <= n <= MAX_CONCURRENCY:
            raise BenchError(f"concurrency {n} must be within 1..{MAX_CONCURRENCY}")
        out.append(n)
    if not out:
        raise BenchError("concurrency is empty: give at least one level, e.g. 1,4,16")
    return out


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
        raise BenchError(f"input '{name}' has datatype {datatype}, which auto inputs cannot generate: use --data")
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
        raise BenchError(f"model '{config.get('name', '?')}' has no required inputs to generate")
    for spec in specs:
        if spec.get("is_shape_tensor"):
            raise BenchError(f"input '{spec['name']}' is a shape tensor: auto inputs cannot guess it; use --data")
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
        raise BenchError(f"batch_size={batch_size} must be >= 1")
    if max_batch == 0 and batch_size != 1:
        raise BenchError(f"model '{config.get('name', '?')}' does not batch (max_batch_size 0): use batch_size 1")
    if max_batch > 0 and batch_size > max_batch:
        raise BenchError(f"batch_size={batch_size} is larger than the model's max_batch_size {max_batch}")


def _entry_array(where: str, value: Any, datatype: str, dims: list[int]) -> np.ndarray:
    shape = None
    if isinstance(value, Mapping):
        if "b64" in value:
            if datatype != "BYTES":
                raise BenchError(f"{where}: b64 content is only for STRING inputs (this one is {datatype})")
            value = {"content": [base64.b64decode(value["b64"])], "shape": value.get("shape", [1] * len(dims))}
        if "content" not in value:
            raise BenchError(f"{where}: an object value needs 'content' (and optionally 'shape') or 'b64'")
        shape = value.get("shape")
        value = value["content"]
    if datatype == "BYTES":
        flat = np.array(value, dtype=np.object_).reshape(-1)
        items = []
        for item in flat:
            if isinstance(item, str):
                item = item.encode("utf-8")
            elif isinstance(item, Mapping) and "b64" in item:
                item = base64.b64decode(item["b64"])
            if not isinstance(item, bytes):
                raise BenchError(f"{where}: STRING values must be strings, got {type(item).__name__}")
            items.append(item)
        array = np.array(items, dtype=np.object_)
    else:
        try:
            array = np.array(value, dtype=_NUMPY[datatype])
        except (KeyError, TypeError, ValueError) as err:
            raise BenchError(f"{where}: cannot read the value as {datatype}: {err}") from None
    try:
        if shape is not None:
            return array.reshape([int(s) for s in shape])
        if sum(d < 0 for d in dims) <= 1:
            return array.reshape(dims)
        if array.ndim == len(dims):
            return array
    except ValueError as err:
        raise BenchError(f"{where}: {array.size} values do not fit the input's dims {dims}: {err}") from None
    raise BenchError(f"{where}: dims {dims} have several -1: give the entry's 'shape'")


def load_data(path: str | Path, config: Mapping[str, Any], *, batch_size: int = 1) -> list[dict[str, np.ndarray]]:
    """Requests from a JSON data file (see the module docstring): one entry per batch item."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise BenchError(f"cannot read the data file {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}: not JSON: {err}") from None
    entries = raw.get("data") if isinstance(raw, Mapping) else raw
    if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) for e in entries):
        raise BenchError(f'{path}: expected {{"data": [{{input name: value, ...}}, ...]}} with at least one entry')
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
            raise BenchError(f"{path}: data[{k}]: " + "; ".join(problems))
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
            raise BenchError(
                f"{path}: entries {start}..{start + batch_size - 1} cannot share a batch (different shapes: {err}); "
                "use batch_size 1 or give them the same shapes"
            ) from None
    return payloads


def _describe(payload: Mapping[str, np.ndarray], datatypes: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    return {name: {"datatype": datatypes[name], "shape": list(a.shape)} for name, a in payload.items()}


# -------------------------------------------------------------------------------------------------- transport


@dataclass
class _Sample:
    start: float  # when it was due (open loop) or sent (closed loop)
    end: float
    ok: bool
    error: str = ""
    token_times: list[float] = field(default_factory=list)


def _short_error(err: BaseException) -> str:
    message = getattr(err, "message", None)
    text = message() if callable(message) else str(err)
    status = getattr(err, "status", None)
    code = status() if callable(status) else None
    text = " ".join(str(text or type(err).__name__).split())
    text = text.replace("[request id: <id_unknown>] ", "")
    prefix = f"{str(code).removeprefix('StatusCode.')}: " if code else ""
    return (prefix + text)[:200]


class _Session:
    """One worker's own client and connection (and gRPC stream for decoupled models)."""

    def __init__(
        self,
        address: str,
        protocol: Protocol,
        model: str,
        payloads: Sequence[Mapping[str, np.ndarray]],
        datatypes: Mapping[str, str],
        outputs: Sequence[str],
        timeout: float,
        streaming: bool,
    ) -> None:
        self.protocol = protocol
        self.model = model
        self.timeout = timeout
        self.streaming = streaming
        if protocol == "grpc":
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(
                address,
                channel_args=[
                    ("grpc.max_send_message_length", 2**31 - 1),
                    ("grpc.max_receive_message_length", 2**31 - 1),
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        else:
            import tritonclient.http as mod

            self.client = mod.InferenceServerClient(
                address, connection_timeout=timeout, network_timeout=timeout, concurrency=1
            )
        self.requests = []
        for payload in payloads:
            tensors = []
            for name, array in payload.items():
                tensor = mod.InferInput(name, list(array.shape), datatypes[name])
                if protocol == "http":
                    tensor.set_data_from_numpy(array, binary_data=True)
                else:
                    tensor.set_data_from_numpy(array)
                tensors.append(tensor)
            self.requests.append(tensors)
        if protocol == "http":
            self.outputs = [mod.InferRequestedOutput(o, binary_data=True) for o in outputs]
        else:
            self.outputs = [mod.InferRequestedOutput(o) for o in outputs]
        self._stream: queue.Queue[tuple[Any, Any]] | None = None
        self._sent = 0

    def send(self, index: int, due: float | None = None) -> _Sample:
        tensors = self.requests[index % len(self.requests)]
        start = time.perf_counter()
        if self.streaming:
            return self._send_stream(tensors, start if due is None else due)
        try:
            if self.protocol == "grpc":
                self.client.infer(self.model, tensors, outputs=self.outputs, client_timeout=self.timeout)
            else:
                self.client.infer(self.model, tensors, outputs=self.outputs)
        except Exception as err:
            return _Sample(start if due is None else due, time.perf_counter(), False, _short_error(err))
        return _Sample(start if due is None else due, time.perf_counter(), True)

    def _open_stream(self) -> queue.Queue[tuple[Any, Any]]:
        if self._stream is None:
            responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
            self.client.start_stream(callback=lambda result, error: responses.put((result, error)))
            self._stream = responses
        return self._stream

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream = None
            with contextlib.suppress(Exception):
                self.client.stop_stream(cancel_requests=True)

    def _send_stream(self, tensors: list[Any], start: float) -> _Sample:
        self._sent += 1
        request_id = str(self._sent)
        try:
            responses = self._open_stream()
            self.client.async_stream_infer(
                self.model, tensors, outputs=self.outputs, request_id=request_id, enable_empty_final_response=True
            )
        except Exception as err:
            self._close_stream()
            return _Sample(start, time.perf_counter(), False, _short_error(err))
        deadline = time.perf_counter() + self.timeout
        tokens: list[float] = []
        while True:
            left = deadline - time.perf_counter()
            try:
                result, error = responses.get(timeout=max(left, 0.0))
            except queue.Empty:
                self._close_stream()  # drop what may still arrive for this request
                return _Sample(start, time.perf_counter(), False, f"no final response within {self.timeout:g}s", tokens)
            now = time.perf_counter()
            if error is not None:
                self._close_stream()
                return _Sample(start, now, False, _short_error(error), tokens)
            response = result.get_response()
            if response.id != request_id:
                continue  # a late response of an earlier (timed out) request
            if response.outputs:
                tokens.append(now)
            final = response.parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                return _Sample(start, now, True, "", tokens)

    def close(self) -> None:
        self._close_stream()
        with contextlib.suppress(Exception):
            self.client.close()


# ------------------------------------------------------------------------------------------- server statistics


def _num(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _stats_of(raw: Mapping[str, Any], model: str) -> dict[str, int]:
    """Counters of every version of ``model`` summed: ``{"success_count", "success_ns", "queue_ns", ...}``."""
    out: Counter[str] = Counter()
    for entry in raw.get("model_stats", []):
        if entry.get("name") != model:
            continue
        stats = entry.get("inference_stats", {})
        out["success_count"] += _num(stats.get("success", {}).get("count"))
        out["success_ns"] += _num(stats.get("success", {}).get("ns"))
        out["fail_count"] += _num(stats.get("fail", {}).get("count"))
        for part in _STAT_PARTS:
            out[f"{part}_ns"] += _num(stats.get(part, {}).get("ns"))
        out["inferences"] += _num(entry.get("inference_count"))
        out["executions"] += _num(entry.get("execution_count"))
    return dict(out)


class _Stats:
    """Reads the statistics of the benchmarked model and its composing models."""

    def __init__(self, address: str, protocol: Protocol, models: Sequence[str], timeout: float) -> None:
        if protocol == "grpc":
            import tritonclient.grpc as mod

            self.client = mod.InferenceServerClient(address)
        else:
            import tritonclient.http as mod

            self.client = mod.InferenceServerClient(address, connection_timeout=timeout, network_timeout=timeout)
        self.protocol = protocol
        self.models = list(models)
        self.error = ""

    def snapshot(self) -> dict[str, dict[str, int]] | None:
        out = {}
        try:
            for model in self.models:
                if self.protocol == "grpc":
                    raw = self.client.get_inference_statistics(model, as_json=True)
                else:
                    raw = self.client.get_inference_statistics(model)
                out[model] = _stats_of(raw, model)
        except Exception as err:
            self.error = f"the statistics API failed: {_short_error(err)}"
            return None
        return out

    def settled(self, base: Mapping[str, Mapping[str, int]], top: str, done: int, wait: float = 3.0) -> Any:
        """A snapshot taken once the counters account for the ``done`` requests sent since ``base``.

        Triton updates its statistics around the time it sends a response, so a client can see its answer a moment
        before the counters move: poll until the model has counted ``done`` more requests and two reads agree (every
        composing model caught up too), for at most ``wait`` seconds (it returns as soon as they agree; the bound
        is for a loaded server, whose counters can lag its responses by more than a second).
        """
        deadline = time.monotonic() + wait
        previous = None
        while True:
            now = self.snapshot()
            if now is None:
                return None
            counted = sum(now[top].get(k, 0) - base[top].get(k, 0) for k in ("success_count", "fail_count"))
            if (counted >= done and now == previous) or time.monotonic() > deadline:
                return now
            previous = now
            time.sleep(0.02)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def _split(
    before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]], top: str
) -> list[ModelSplit]:
    rows = []
    for model in after:
        b, a = before.get(model, {}), after[model]

        def d(key: str, b: Mapping[str, int] = b, a: Mapping[str, int] = a) -> int:
            return a.get(key, 0) - b.get(key, 0)

        n = d("success_count")

        def per(key: str, n: int = n, d: Callable[[str], int] = d) -> float:
            return d(key) / n / 1000.0 if n > 0 else 0.0

        rows.append(
            ModelSplit(
                model=model,
                composing=model != top,
                requests=n,
                failures=d("fail_count"),
                inferences=d("inferences"),
                executions=d("executions"),
                queue_us=per("queue_ns"),
                compute_input_us=per("compute_input_ns"),
                compute_infer_us=per("compute_infer_ns"),
                compute_output_us=per("compute_output_ns"),
                total_us=per("success_ns"),
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------- load patterns


def _budget(max_requests: int | None) -> Callable[[], bool]:
    """A thread-safe ticket counter: True while requests may still be sent."""
    if max_requests is None:
        return lambda: True
    lock = threading.Lock()
    left = [max_requests]

    def take() -> bool:
        with lock:
            if left[0] <= 0:
                return False
            left[0] -= 1
            return True

    return take


class _Pool:
    """Worker threads that each own one session for the whole benchmark.

    tritonclient's HTTP client runs on gevent, whose hub belongs to the thread that made the client: a client must
    be created and used in one thread, so sessions live in long-lived threads and each phase is handed to them.
    """

    def __init__(self, size: int, make: Callable[[], _Session]) -> None:
        self._jobs: list[queue.Queue[Callable[[_Session], None] | None]] = [queue.Queue() for _ in range(size)]
        self._done: queue.Queue[BaseException | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._serve, args=(q, make), daemon=True, name=f"bench-{i}")
            for i, q in enumerate(self._jobs)
        ]
        for t in self._threads:
            t.start()
        self._collect(size)  # every session made (or the first failure raised)

    def _serve(self, jobs: queue.Queue[Callable[[_Session], None] | None], make: Callable[[], _Session]) -> None:
        try:
            session = make()
        except BaseException as err:
            self._done.put(err)
            return
        self._done.put(None)
        try:
            while (job := jobs.get()) is not None:
                try:
                    job(session)
                except BaseException as err:  # a bug in a worker must not vanish with its thread
                    self._done.put(err)
                else:
                    self._done.put(None)
        finally:
            session.close()

    def _collect(self, count: int) -> None:
        errors = [e for e in (self._done.get() for _ in range(count)) if e is not None]
        if errors:
            self.close()
            raise errors[0]

    def run(self, jobs: Sequence[Callable[[_Session], None]]) -> None:
        """Run ``jobs[i]`` on worker ``i``; return when all are done."""
        for q, job in zip(self._jobs, jobs, strict=False):
            q.put(job)
        self._collect(len(jobs))

    def close(self) -> None:
        for q in self._jobs:
            q.put(None)
        for t in self._threads:
            t.join(timeout=60)


def _closed_loop(pool: _Pool, workers: int, seconds: float, max_requests: int | None) -> tuple[list[_Sample], float]:
    samples: list[_Sample] = []
    lock = threading.Lock()
    take = _budget(max_requests)
    begin = time.perf_counter()
    stop_at = begin + seconds

    def worker(k: int) -> Callable[[_Session], None]:
        def run(session: _Session) -> None:
            i = k
            while time.perf_counter() < stop_at and take():
                sample = session.send(i)
                i += 1
                with lock:
                    samples.append(sample)

        return run

    pool.run([worker(k) for k in range(workers)])
    end = max(s.end for s in samples) if samples else time.perf_counter()
    return samples, max(end - begin, 1e-9)


def _arrivals(rate: float, seconds: float, max_requests: int | None, rng: random.Random) -> list[float]:
    times: list[float] = []
    t = 0.0
    cap = min(max_requests if max_requests is not None else MAX_OPEN_LOOP_REQUESTS, MAX_OPEN_LOOP_REQUESTS)
    while len(times) < cap:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        times.append(t)
    return times


def _open_loop(
    pool: _Pool,
    workers: int,
    rate: float,
    seconds: float,
    max_requests: int | None,
    rng: random.Random,
) -> tuple[list[_Sample], float, int, int]:
    schedule = _arrivals(rate, seconds, max_requests, rng)
    samples: list[_Sample] = []
    lock = threading.Lock()
    nxt = [0]
    late = [0]
    dropped = [0]
    begin = time.perf_counter()
    stop_at = begin + seconds

    def run(session: _Session) -> None:
        while True:
            with lock:
                if nxt[0] >= len(schedule):
                    return
                k = nxt[0]
                nxt[0] += 1
            due = begin + schedule[k]
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
            elif now >= stop_at:  # the level's time is up and this arrival was never sent
                with lock:
                    dropped[0] += 1
                continue
            elif now - due > 0.005:
                with lock:
                    late[0] += 1
            sample = session.send(k, due=due)
            with lock:
                samples.append(sample)

    pool.run([run] * workers)
    end = max([s.end for s in samples] + [time.perf_counter() if not samples else begin])
    if max_requests is None or len(schedule) < max_requests:  # not cut short: the window is the whole level
        end = max(end, begin + seconds)
    return samples, max(end - begin, 1e-9), late[0], dropped[0]


# ------------------------------------------------------------------------------------------------- the bench


def _config_json(raw: Any) -> dict[str, Any]:
    return dict(raw.get("config", raw)) if isinstance(raw, Mapping) else {}


def _composing(fetch: Callable[[str], dict[str, Any]], config: Mapping[str, Any], seen: set[str]) -> list[str]:
    out = []
    for step in config.get("ensemble_scheduling", {}).get("step", []):
        name = step.get("model_name", "")
        if name and name not in seen:
            seen.add(name)
            out.append(name)
            with contextlib.suppress(Exception):
                out += _composing(fetch, fetch(name), seen)
    return out


def _level_result(
    mode: Literal["concurrency", "rate"],
    concurrency: int | None,
    rate: float | None,
    samples: list[_Sample],
    wall: float,
    batch_size: int,
    streaming: bool,
) -> LevelResult:
    ok = [s for s in samples if s.ok]
    errors = Counter(s.error for s in samples if not s.ok)
    stream = None
    if streaming:
        tokens = sum(len(s.token_times) for s in ok)
        ttft = [s.token_times[0] - s.start for s in ok if s.token_times]
        gaps = [b - a for s in ok for a, b in zip(s.token_times, s.token_times[1:], strict=False)]
        stream = StreamStats(
            responses=tokens,
            responses_per_request=tokens / len(ok) if ok else 0.0,
            tokens_per_s=tokens / wall,
            ttft_ms=Percentiles.of_seconds(ttft),
            inter_token_ms=Percentiles.of_seconds(gaps),
        )
    return LevelResult(
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        duration_s=wall,
        requests=len(ok),
        errors=sum(errors.values()),
        error_messages=dict(errors.most_common(10)),
        throughput_rps=len(ok) / wall,
        throughput_items_s=len(ok) * batch_size / wall,
        latency_ms=Percentiles.of_seconds([s.end - s.start for s in ok]),
        stream=stream,
    )


def run_bench(
    url: str | None,
    model: str,
    *,
    protocol: Protocol = "grpc",
    concurrency: str | int | Iterable[int] | None = (1, 4, 16),
    rate: float | None = None,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    inputs: str | Path = "auto",
    batch_size: int = 1,
    max_requests: int | None = None,
    streaming: bool | None = None,
    timeout: float = 30.0,
    allow_remote: bool = False,
    max_inflight: int = 32,
    seq_length: int = 16,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Benchmark ``model`` at ``url`` (see the module docstring); one :class:`LevelResult` per level.

    ``rate`` (requests/s, open loop) takes precedence over ``concurrency`` (closed loop). ``max_requests`` bounds
    the measured requests of each level, ``timeout`` each request (s). ``streaming=None`` follows the model's
    ``model_transaction_policy.decoupled``.
    """
    if protocol not in ("grpc", "http"):
        raise BenchError(f"protocol={protocol!r} is not one of 'grpc', 'http'")
    address = check_target(url or default_url(protocol), protocol=protocol, allow_remote=allow_remote)
    if not duration_s > 0 or warmup_s < 0:
        raise BenchError(f"duration_s={duration_s} must be > 0 and warmup_s={warmup_s} >= 0")
    if not timeout > 0:
        raise BenchError(f"timeout={timeout} must be > 0 seconds")
    if max_requests is not None and max_requests < 1:
        raise BenchError(f"max_requests={max_requests} must be >= 1")
    if rate is not None:
        if not (rate > 0 and math.isfinite(rate)):
            raise BenchError(f"rate={rate} must be > 0 requests/s")
        if not 1 <= max_inflight <= MAX_CONCURRENCY:
            raise BenchError(f"max_inflight={max_inflight} must be within 1..{MAX_CONCURRENCY}")
        levels: list[int] = []
    else:
        levels = parse_concurrency(concurrency if concurrency is not None else (1, 4, 16))
    say = progress or (lambda _m: None)

    fetch, metadata = _describe_model(address, protocol, model, timeout)
    config = fetch(model)
    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    streaming = decoupled if streaming is None else streaming
    if streaming and protocol != "grpc":
        raise BenchError(f"model '{model}' streams (decoupled): benchmark it over gRPC (--protocol grpc)")
    if decoupled and not streaming:
        raise BenchError(f"model '{model}' is decoupled: its responses only come over a gRPC stream (streaming)")
    if str(inputs) == "auto":
        payloads = generate_inputs(config, batch_size=batch_size, seq_length=seq_length, seed=seed)
    else:
        payloads = load_data(inputs, config, batch_size=batch_size)
    datatypes = {i["name"]: _datatype(i.get("data_type", "")) for i in _model_inputs(config)}
    outputs = [o["name"] for o in metadata.get("outputs", [])]
    composing = _composing(fetch, config, {model})
    items = batch_size if int(config.get("max_batch_size", 0) or 0) > 0 else 1

    report = BenchReport(
        url=address,
        model=model,
        protocol=protocol,
        batch_size=items,
        streaming=streaming,
        inputs=_describe(payloads[0], datatypes),
        data=str(inputs),
        warmup_s=warmup_s,
        composing_models=composing,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    workers = max(levels) if levels else max_inflight
    stats = _Stats(address, protocol, [model, *composing], timeout)
    rng = random.Random(seed)
    pool: _Pool | None = None
    try:
        pool = _Pool(
            workers, lambda: _Session(address, protocol, model, payloads, datatypes, outputs, timeout, streaming)
        )
        plan: list[tuple[int | None, float | None]] = [(n, None) for n in levels] or [(None, rate)]
        for n, r in plan:
            label = f"concurrency {n}" if n is not None else f"rate {r:g}/s"
            start = stats.snapshot()
            warm: list[_Sample] = []
            if warmup_s > 0:
                say(f"{model}: warming up ({label}, {warmup_s:g}s)")
                if n is not None:
                    warm, _ = _closed_loop(pool, n, warmup_s, None)
                else:
                    assert r is not None
                    warm, *_ = _open_loop(pool, workers, r, warmup_s, None, rng)
            before = stats.settled(start, model, len(warm)) if start is not None else None
            say(f"{model}: measuring {label} for {duration_s:g}s")
            if n is not None:
                samples, wall = _closed_loop(pool, n, duration_s, max_requests)
                level = _level_result("concurrency", n, None, samples, wall, items, streaming)
            else:
                assert r is not None
                samples, wall, late, dropped = _open_loop(pool, workers, r, duration_s, max_requests, rng)
                level = _level_result("rate", None, r, samples, wall, items, streaming)
                level.late, level.dropped = late, dropped
            after = stats.settled(before, model, len(samples)) if before is not None else None
            if before is not None and after is not None:
                level.server = _split(before, after, model)
            else:
                level.server_note = stats.error
            report.levels.append(level)
    finally:
        if pool is not None:
            pool.close()
        stats.close()
    return report


def _describe_model(
    address: str, protocol: Protocol, model: str, timeout: float
) -> tuple[Callable[[str], dict[str, Any]], dict[str, Any]]:
    """A config fetcher and the model's metadata; a BenchError when the server or the model is not there."""
    if protocol == "grpc":
        import tritonclient.grpc as mod

        client = mod.InferenceServerClient(address)

        def config_of(name: str) -> dict[str, Any]:
            return _config_json(client.get_model_config(name, as_json=True, client_timeout=timeout))

        def metadata_of(name: str) -> dict[str, Any]:
            return dict(client.get_model_metadata(name, as_json=True, client_timeout=timeout))

        def ready(name: str) -> bool:
            return bool(client.is_model_ready(name, client_timeout=timeout))

        def live() -> bool:
            return bool(client.is_server_live(client_timeout=timeout))
    else:
        import tritonclient.http as mod

        client = mod.InferenceServerClient(address, connection_timeout=timeout, network_timeout=timeout)

        def config_of(name: str) -> dict[str, Any]:
            return _config_json(client.get_model_config(name))

        def metadata_of(name: str) -> dict[str, Any]:
            return dict(client.get_model_metadata(name))

        def ready(name: str) -> bool:
            return bool(client.is_model_ready(name))

        def live() -> bool:
            return bool(client.is_server_live())

    cache: dict[str, dict[str, Any]] = {}

    def fetch(name: str) -> dict[str, Any]:
        if name not in cache:
            cache[name] = config_of(name)
        return cache[name]

    try:
        try:
            up = live()
        except Exception as err:
            raise BenchError(f"cannot reach the {protocol} endpoint {address}: {_short_error(err)}") from None
        if not up:
            raise BenchError(f"the server at {address} is not live")
        try:
            is_ready = ready(model)
        except Exception as err:
            raise BenchError(f"model '{model}' at {address}: {_short_error(err)}") from None
        if not is_ready:
            raise BenchError(f"model '{model}' is not ready at {address} (unknown, not loaded, or failed to load)")
        try:
            fetch(model)
            for name in _composing(fetch, fetch(model), {model}):
                fetch(name)
            metadata = metadata_of(model)
        except BenchError:
            raise
        except Exception as err:
            raise BenchError(f"cannot read the config of model '{model}' at {address}: {_short_error(err)}") from None
    finally:
        with contextlib.suppress(Exception):
            client.close()
    return (lambda name: cache.get(name, {})), metadata


# ------------------------------------------------------------------------------------------------- rendering


def _ms(p: Percentiles | None, attr: str) -> str:
    return "-" if p is None else f"{getattr(p, attr):.1f}"


def report_tables(report: BenchReport) -> list[Any]:
    """Rich tables: the client's view per level, then Triton's server-side split per level and model."""
    from rich.table import Table

    mode = "closed loop" if report.levels and report.levels[0].mode == "concurrency" else "open loop, Poisson"
    title = (
        f"{report.model} over {report.protocol} at {report.url} ({mode}, batch {report.batch_size}"
        f"{', streaming' if report.streaming else ''})"
    )
    client = Table(title=title)
    for col in ("level", "requests", "errors", "req/s", "items/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms"):
        client.add_column(col, justify="left" if col == "level" else "right")
    if report.streaming:
        for col in ("TTFT p50 ms", "ITL p50 ms", "tokens/s"):
            client.add_column(col, justify="right")
    for lv in report.levels:
        row = [
            lv.label,
            str(lv.requests),
            str(lv.errors) + (f" (+{lv.dropped} dropped)" if lv.dropped else ""),
            f"{lv.throughput_rps:.1f}",
            f"{lv.throughput_items_s:.1f}",
            *(_ms(lv.latency_ms, a) for a in ("p50", "p90", "p95", "p99")),
        ]
        if report.streaming:
            s = lv.stream
            row += [
                _ms(s.ttft_ms if s is not None else None, "p50"),
                _ms(s.inter_token_ms if s is not None else None, "p50"),
                "-" if s is None else f"{s.tokens_per_s:.1f}",
            ]
        client.add_row(*row)

    server = Table(title="server-side split (Triton statistics, average µs per request)")
    for col in (
        "level",
        "model",
        "requests",
        "avg batch",
        "queue",
        "compute in",
        "compute infer",
        "compute out",
        "total",
    ):
        server.add_column(col, justify="left" if col in ("level", "model") else "right")
    for lv in report.levels:
        if not lv.server:
            server.add_row(lv.label, lv.server_note or "no statistics", *([""] * 7))
        for sp in lv.server:
            server.add_row(
                lv.label,
                ("  └ " if sp.composing else "") + sp.model,
                str(sp.requests),
                f"{sp.avg_batch:.1f}",
                f"{sp.queue_us:.0f}",
                f"{sp.compute_input_us:.0f}",
                f"{sp.compute_infer_us:.0f}",
                f"{sp.compute_output_us:.0f}",
                f"{sp.total_us:.0f}",
            )
    return [client, server]


def error_lines(report: BenchReport) -> list[str]:
    """``level: count x message`` for every failed request kind."""
    return [f"{lv.label}: {n} x {msg}" for lv in report.levels for msg, n in lv.error_messages.items()]


def plot_report(report: BenchReport, path: str | Path) -> Path:
    """A PNG: throughput and p50/p99 latency against the level, and the server-side split as stacked bars."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    levels = report.levels
    xs = [lv.x for lv in levels]
    closed = bool(levels) and levels[0].mode == "concurrency"
    xlabel = "concurrency (workers)" if closed else "offered rate (requests/s)"

    fig, (ax_tp, ax_lat, ax_split) = plt.subplots(1, 3, figsize=(17, 5))
    fig.suptitle(f"{report.model} over {report.protocol} ({report.url}), batch {report.batch_size}")

    ax_tp.plot(xs, [lv.throughput_rps for lv in levels], "o-", label="requests/s")
    if report.batch_size > 1:
        ax_tp.plot(xs, [lv.throughput_items_s for lv in levels], "s--", label="items/s")
    if report.streaming:
        ax_tp.plot(xs, [lv.stream.tokens_per_s if lv.stream else 0 for lv in levels], "^:", label="tokens/s")
    ax_tp.set(title="throughput", xlabel=xlabel, ylabel="per second")
    ax_tp.set_ylim(bottom=0)
    ax_tp.legend()

    for attr, style in (("p50", "o-"), ("p99", "s--")):
        ax_lat.plot(
            xs, [getattr(lv.latency_ms, attr) if lv.latency_ms else float("nan") for lv in levels], style, label=attr
        )
    ax_lat.set(title="latency", xlabel=xlabel, ylabel="ms")
    ax_lat.set_ylim(bottom=0)
    ax_lat.legend()
    for ax in (ax_tp, ax_lat):
        ax.grid(alpha=0.3)
        if closed and len(xs) > 1 and max(xs) / max(min(xs), 1) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g}" for x in xs])

    bars = [(lv, sp) for lv in levels for sp in lv.server]
    if bars:
        parts = [
            ("queue", "queue_us", "#c7c7c7"),
            ("compute input", "compute_input_us", "#9ecae1"),
            ("compute infer", "compute_infer_us", "#3182bd"),
            ("compute output", "compute_output_us", "#fd8d3c"),
        ]
        positions, pos, previous = [], 0.0, None
        for lv, _ in bars:
            if previous is not None and lv is not previous:
                pos += 0.6  # a gap between levels
            positions.append(pos)
            pos += 1.0
            previous = lv
        bottom = np.zeros(len(bars))
        # an ensemble's compute time spans its composing models: hatch its bars so they are not added up
        hatches = ["//" if report.composing_models and not sp.composing else "" for _, sp in bars]
        for label, attr, color in parts:
            values = np.array([getattr(sp, attr) / 1000.0 for _, sp in bars])
            ax_split.bar(
                positions,
                values,
                bottom=bottom,
                color=color,
                label=label,
                width=0.8,
                hatch=hatches,
                edgecolor="white",
                linewidth=0,
            )
            bottom += values
        ax_split.set_xticks(positions)
        ax_split.set_xticklabels([f"{lv.label}\n{sp.model}" for lv, sp in bars], rotation=45, ha="right", fontsize=8)
        title = "server-side split (avg per request)"
        if report.composing_models:
            title += f"\nhatched: the {report.model} ensemble (spans its composing models)"
        ax_split.set(title=title, ylabel="ms")
        ax_split.set_ylim(bottom=0)
        from matplotlib.patches import Patch

        ax_split.legend(handles=[Patch(color=c, label=lb) for lb, _, c in parts], fontsize=8)
    else:
        ax_split.text(0.5, 0.5, "no server statistics", ha="center", va="center", transform=ax_split.transAxes)
        ax_split.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
