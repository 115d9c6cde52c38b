"""An LLM model's own request queue on Triton's metrics port, in TensorRT-LLM's family, so that what reads a GPU
deployment's reads this one (deploy's autoscaler: ``trtllm_waiting_requests``):
``nv_trt_llm_request_metrics{model, version, request_type}`` with request_type ``waiting``, ``active``,
``scheduled`` and ``max``, as upstream's python tensorrt_llm model creates them (NVIDIA/TensorRT-LLM
triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/1/model.py @ 89fd9b74ab7ae753b4c6b3db25a400dca7ea54a0,
create_metrics). The CPU engine and the LLM API model fill them, each from its own scheduler's state.

Shipped beside model.py in each python model that needs it (python_backends.SHARED); standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

FAMILY = "nv_trt_llm_request_metrics"
TYPES = ("waiting", "active", "scheduled", "max")


class RequestGauges:
    """One model version's four gauges; without them (``enabled`` false) setting them does nothing."""

    def __init__(self, family: Any = None, gauges: dict[str, Any] | None = None) -> None:
        self.family = family  # kept: a family's gauges live as long as it does
        self.gauges: dict[str, Any] = gauges or {}

    @property
    def enabled(self) -> bool:
        return bool(self.gauges)

    def set(self, **values: float) -> None:
        """``set(waiting=3, active=8)``: the named gauges to these values."""
        for kind, value in values.items():
            if kind in self.gauges:
                self.gauges[kind].set(value)


def request_gauges(pb_utils: Any, model: str, version: int | str, warn: Callable[[str], object]) -> RequestGauges:
    """The gauges of ``model``/``version``: disabled where the python backend has no custom metrics or creating them
    failed (``warn(message)`` says why). They are best effort: the model serves without them."""
    family = getattr(pb_utils, "MetricFamily", None)
    if family is None:
        return RequestGauges()
    try:
        created = family(name=FAMILY, description="TRT LLM request metrics", kind=family.GAUGE)
        return RequestGauges(created, {kind: created.Metric(labels={"request_type": kind, "model": model,
                                                                      "version": str(version)}) for kind in TYPES})
    except Exception as err:
        warn(f"model '{model}': the request metrics are left out: {err}")
        return RequestGauges()
