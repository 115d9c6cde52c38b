"""Triton's statistics API read around each level: where the time goes, per model and composing model."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tritonforge.bench.results import ModelSplit
from tritonforge.errors import ClientError
from tritonforge.triton.connection import Connection
from tritonforge.triton.options import Protocol

_STAT_PARTS = ("queue", "compute_input", "compute_infer", "compute_output")


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
        self.triton = Connection(address, protocol, timeout=timeout, retries=0)
        self.models = list(models)
        self.error = ""

    def snapshot(self) -> dict[str, dict[str, int]] | None:
        out = {}
        try:
            for model in self.models:
                out[model] = _stats_of(self.triton.statistics(model), model)
        except ClientError as err:
            self.error = f"the statistics API failed: {err}"
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
        self.triton.close()


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
