"""python_backends/shared/request_metrics.py: the LLM models' request gauges (TensorRT-LLM's family), one copy for
the CPU engine and the LLM API model, each shipped with it."""

from __future__ import annotations

import types
from typing import Any

import pytest

from tritonforge import python_backends


class Family:
    """pb_utils.MetricFamily's surface (Triton's custom metrics)."""

    GAUGE = "gauge"

    def __init__(self, name: str, description: str, kind: str) -> None:
        self.name, self.kind, self.gauges = name, kind, {}

    def Metric(self, labels: dict[str, str]) -> Any:  # pb_utils' name
        gauge = types.SimpleNamespace(labels=labels, value=None)
        gauge.set = lambda value: setattr(gauge, "value", value)
        self.gauges[labels["request_type"]] = gauge
        return gauge


@pytest.mark.parametrize("model", ["cpu_llm", "trtllm_llmapi"])
def test_both_llm_models_ship_the_one_copy(model: str) -> None:
    shipped = python_backends.sources(model)
    assert shipped["request_metrics.py"] == (python_backends.SHARED_DIR / "request_metrics.py").read_bytes()


def test_the_gauges_carry_upstreams_family_and_labels() -> None:
    metrics = python_backends.load_module("cpu_llm", "request_metrics")
    gauges = metrics.request_gauges(types.SimpleNamespace(MetricFamily=Family), "chat_tensorrt_llm", 2, print)
    assert gauges.enabled and gauges.family.name == "nv_trt_llm_request_metrics" and gauges.family.kind == "gauge"
    assert sorted(gauges.gauges) == ["active", "max", "scheduled", "waiting"]
    assert gauges.gauges["waiting"].labels == {"request_type": "waiting", "model": "chat_tensorrt_llm", "version": "2"}
    gauges.set(waiting=3, active=8)
    assert [gauges.gauges[k].value for k in ("waiting", "active", "scheduled")] == [3, 8, None]


def test_without_custom_metrics_the_model_serves_and_says_why() -> None:
    """A python backend without MetricFamily, or one refusing the family, leaves the gauges out: setting them does
    nothing, and a refusal is reported once through the model's own log."""
    metrics = python_backends.load_module("trtllm_llmapi", "request_metrics")
    bare = metrics.request_gauges(types.SimpleNamespace(), "m", 1, print)
    assert not bare.enabled
    bare.set(waiting=1)  # no error

    class Refusing(Family):
        def __init__(self, name: str, description: str, kind: str) -> None:
            raise RuntimeError("custom metrics are disabled")

    said: list[str] = []
    refused = metrics.request_gauges(types.SimpleNamespace(MetricFamily=Refusing), "m", 1, said.append)
    assert not refused.enabled
    assert said == ["model 'm': the request metrics are left out: custom metrics are disabled"]
