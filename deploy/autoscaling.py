"""What `deploy k8s`'s HorizontalPodAutoscaler scales on, and the prometheus-adapter rules that serve it: each model's
average queue time per request, and an LLM engine's backlog (an engine takes every request into a queue of its own,
so Triton's queue time stays near zero while requests wait there)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge.triton.engines import takes_stop

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

QUEUE_METRIC = "triton_queue_time_per_request_us"
# the engine's backlog gauge (TensorRT-LLM's; the CPU engine publishes the same family)
ENGINE_SERIES = "nv_trt_llm_request_metrics"
WAITING_METRIC = "trtllm_waiting_requests"


def backlog_engines(repo: Path, configs: dict[str, ModelConfig], target: str) -> tuple[list[str], list[str]]:
    """(the LLM engine models that publish their backlog, those that do not): an engine declares upstream's `stop`
    input; the CPU engine (cpu target) and TensorRT-LLM's C++ backend (the engine path) publish
    nv_trt_llm_request_metrics, the LLM API's python model when its model.yaml turns on the iteration statistics
    it reads them from (``enable_iter_perf_stats``, on by default)."""
    engines = sorted(n for n, c in configs.items() if takes_stop(c))
    publishing = [n for n in engines if target == "cpu" or configs[n].backend == "tensorrtllm"
                  or _iteration_stats(repo / n)]
    return publishing, [n for n in engines if n not in publishing]


def _iteration_stats(model: Path) -> bool:
    """Whether an LLM API model's model.yaml (any version's) asks LLM() for iteration statistics."""
    import yaml

    for path in model.glob("*/model.yaml"):
        try:
            args = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(args, dict) and args.get("enable_iter_perf_stats") is True:
            return True
    return False


def pods_metric(model: str, metric: str, target: int) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": metric, "selector": {"matchLabels": {"model": model}}},
            "target": {"type": "AverageValue", "averageValue": str(target)},  # a Quantity, in the metric's unit
        },
    }


def prometheus_adapter_rules(*, engines: bool = False) -> dict[str, Any]:
    """prometheus-adapter's rules: average queue time per request over the last minute, per pod and model; with
    ``engines``, the requests waiting in an LLM engine's own queue, averaged over the last minute.

    The HPA's metric selector (model=<name>) lands in <<.LabelMatchers>>, so each model is scaled on its own queue
    and a busy model is not averaged away by idle ones loaded beside it.
    """
    series = "nv_inference_queue_duration_us"
    query = (
        f"sum(rate({series}{{<<.LabelMatchers>>}}[1m])) by (<<.GroupBy>>) / "
        "clamp_min(sum(rate(nv_inference_request_success{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>), 1e-9)"
    )
    resources = {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}}
    rules = [
        {
            "seriesQuery": f'{series}{{namespace!="",pod!="",model!=""}}',
            "resources": resources,
            "name": {"matches": f"^{series}$", "as": QUEUE_METRIC},
            "metricsQuery": query,
        }
    ]
    if engines:
        waiting = 'request_type="waiting"'
        rules.append({
            "seriesQuery": f'{ENGINE_SERIES}{{namespace!="",pod!="",model!="",{waiting}}}',
            "resources": resources,
            "name": {"matches": f"^{ENGINE_SERIES}$", "as": WAITING_METRIC},
            "metricsQuery": (
                f"sum(avg_over_time({ENGINE_SERIES}{{{waiting},<<.LabelMatchers>>}}[1m])) by (<<.GroupBy>>)"
            ),
        })
    return {"rules": rules}
