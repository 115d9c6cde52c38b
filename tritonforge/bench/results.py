"""What a benchmark reports: percentiles, per-model server splits, streaming figures, levels, the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tritonforge.atomic_file import write_text_atomic
from tritonforge.triton.options import Protocol

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
    # the benchmarked model's successful requests by Triton's count (None: no statistics), and why it differs from
    # the client's: other clients' traffic on the model is in the split, or requests the client gave up on
    server_requests: int | None = None
    server_mismatch: str = ""

    @property
    def error_rate(self) -> float:
        """Failed requests over the requests sent (0.0 when none was sent)."""
        sent = self.requests + self.errors
        return self.errors / sent if sent else 0.0

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
    # stopped by Ctrl-C or SIGTERM: ``levels`` are the ones completed, the level cut short is named, not reported
    interrupted: bool = False
    interrupted_during: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for level, raw in zip(self.levels, out["levels"], strict=True):
            raw["label"] = level.label
            raw["error_rate"] = level.error_rate
            for split, raw_split in zip(level.server, raw["server"], strict=True):
                raw_split["avg_batch"] = split.avg_batch
        return out

    def write_json(self, path: str | Path) -> Path:
        """Write the report (folders created, the file replaced whole); an OutputFileError when it cannot be."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def plot(self, path: str | Path) -> Path:
        from tritonforge.bench.report import plot_report  # the report renders results: it imports this module

        return plot_report(self, path)
