"""The spec's `deploy:` section: what `tritonforge deploy k8s` takes from the spec (the CLI's options override)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field

from tritonforge.errors import OptionError
from tritonforge.naming import MODEL_NAME
from tritonforge.rate_limit import RATE_LIMIT_MODES, RateLimit, RateLimitMode, RateLimitResource
from tritonforge.spec_base import Checked, Flag, Found, Pos, raw_int, raw_list

K8S_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$"


class Autoscaling(Checked):
    """A HorizontalPodAutoscaler on Triton's average queue time per request, per model; an LLM engine, which takes
    every request into a queue of its own, on the requests waiting there."""

    enabled: Flag = True
    min_replicas: Pos = 1
    max_replicas: Pos = 4
    target_queue_time_us: Pos = Field(50_000, description="average queue time per request that triggers a scale-up")
    target_waiting_requests: Pos = Field(
        2, description="LLM engines: requests waiting in the engine's own queue per pod (TensorRT-LLM's "
        "nv_trt_llm_request_metrics waiting, averaged over 1 min) that trigger a scale-up",
    )
    models: list[Annotated[str, Field(pattern=MODEL_NAME.pattern)]] = Field(
        default_factory=list, description="Triton models watched (default: every model that is not an ensemble)"
    )

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        low, high = raw_int(data.get("min_replicas", 1)), raw_int(data.get("max_replicas", 4))
        if low is not None and high is not None and low > high:
            return [(("min_replicas",), f"{low} is larger than max_replicas {high}")]
        return []


class GatewayScaling(Checked):
    """The OpenAI gateway's pods (`deploy k8s --gateway`): a fixed count, or, when max_replicas is above
    min_replicas, a HorizontalPodAutoscaler on their CPU. The gateway is CPU-bound (a request's JSON, its tensors)
    and each replica admits `--max-requests-in-flight` on its own, so a fixed pair capped a cluster's traffic
    whatever Triton's autoscaler added (deploy audit)."""

    min_replicas: Pos = Field(2, description="the fixed count, or the autoscaler's minimum")
    max_replicas: Pos | None = Field(
        None, description="above min_replicas: a HorizontalPodAutoscaler on CPU utilization (default: min_replicas, "
        "a fixed count)",
    )
    target_cpu_percent: Annotated[int, Field(ge=10, le=100)] = Field(
        70, description="average CPU utilization, of the cpu request, that triggers a scale-up"
    )
    cpu: Annotated[str, Field(pattern=K8S_QUANTITY)] = Field(
        "500m", description="each pod's CPU request (no limit: a throttled gateway stalls every stream it holds)"
    )
    memory: Annotated[str, Field(pattern=K8S_QUANTITY)] = Field("1Gi", description="each pod's memory limit")

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        low, high = raw_int(data.get("min_replicas", 2)), raw_int(data.get("max_replicas"))
        if low is not None and high is not None and low > high:
            return [(("min_replicas",), f"{low} is larger than max_replicas {high}")]
        return []

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.min_replicas

    @property
    def autoscaled(self) -> bool:
        return self.most_replicas > self.min_replicas


K8S_LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
K8S_LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
K8S_NAMESPACE = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class NetworkPolicySettings(Checked):
    """A NetworkPolicy on the Triton pods: their inference ports (HTTP, gRPC) take connections only from the
    gateway's pods and the clients named here; the metrics port stays open to the cluster (Prometheus). Without
    it, any pod that reached Triton's Services could run inference around the gateway's keys and limits."""

    enabled: Flag = False
    client_namespaces: list[Annotated[str, Field(pattern=K8S_NAMESPACE)]] = Field(
        default_factory=list, description="namespaces whose pods may call Triton directly (gRPC/HTTP)"
    )
    client_pod_labels: dict[Annotated[str, Field(pattern=K8S_LABEL_KEY)], Annotated[str, Field(
        pattern=K8S_LABEL_VALUE)]] = Field(
        default_factory=dict, description="labels of the pods of the release's namespace that may call Triton directly"
    )


def _replicas_outside_autoscaling(data: dict[str, Any]) -> Found:
    """replicas outside an enabled autoscaler's range: the HorizontalPodAutoscaler moves it there at once."""
    scaling = data.get("autoscaling")
    scaling = scaling if isinstance(scaling, dict) else {}
    replicas = raw_int(data.get("replicas", 1))
    low, high = raw_int(scaling.get("min_replicas", 1)), raw_int(scaling.get("max_replicas", 4))
    if scaling.get("enabled", True) is False or None in (replicas, low, high):
        return []
    assert replicas is not None and low is not None and high is not None
    if low > high or low <= replicas <= high:  # a range the wrong way round is autoscaling's own error
        return []
    return [(("replicas",), (
        f"{replicas} is outside autoscaling's {low}-{high} replicas, which the HorizontalPodAutoscaler keeps: "
        "change autoscaling.min_replicas/max_replicas, or set autoscaling.enabled: false"
    ))]


_QUANTITY_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
                    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(text: str) -> float:
    """A Kubernetes quantity (K8S_QUANTITY's forms) as a number: '2Gi' -> 2147483648."""
    number = text.rstrip("mkKMGTi")
    return float(number) * _QUANTITY_SUFFIX[text[len(number):]]


def _shm_within_memory(data: dict[str, Any]) -> Found:
    """/dev/shm (a memory-backed emptyDir) counts against the container's memory limit: a shm_size at or above
    memory let the pod be OOM-killed before the volume filled (deploy audit)."""
    shm, memory = data.get("shm_size", "2Gi"), data.get("memory", "8Gi")
    if not all(isinstance(v, str) and re.fullmatch(K8S_QUANTITY, v) for v in (shm, memory)):
        return []  # the fields' own errors
    if quantity(shm) < quantity(memory):
        return []
    return [(("shm_size",), f"{shm} is not below memory {memory}: /dev/shm is memory-backed and counts against the "
                            "pod's memory limit, so the pod would be OOM-killed first (the python backend's shared "
                            "memory is a share of it: raise memory, or lower shm_size)")]


class DeploySettings(Checked):
    """What the cluster manifests take from the spec (the CLI's options override)."""

    replicas: Pos = 1
    gpus_per_replica: Pos | None = Field(
        None, description="default: what the instance groups and TensorRT-LLM tp_size × pp_size need"
    )
    gpu_resource: Annotated[str, Field(min_length=1)] = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)
    cpu: Annotated[str, Field(pattern=K8S_QUANTITY)] = "2"
    memory: Annotated[str, Field(pattern=K8S_QUANTITY)] = "8Gi"
    shm_size: Annotated[str, Field(pattern=K8S_QUANTITY)] = Field(
        "2Gi", description="/dev/shm (python backend): below memory, whose limit it counts against"
    )
    startup_seconds: Pos = Field(1800, description="time allowed to load every model (large engines load slowly)")
    drain_seconds: Annotated[int, Field(ge=1, le=3600)] = Field(
        30, description="how long Triton finishes the requests in flight at SIGTERM (a rollout, a scale-down) before "
        "it stops: above the longest generation you stream; the pod's grace period follows",
    )
    run_as_user: Annotated[int, Field(ge=1, le=2**31 - 1)] | None = Field(
        None, description="run Triton as this non-root user id (and group, fsGroup): 1000 is the NGC images' "
        "triton-server user, as NVIDIA's own charts run it; default: the image's user (root), which Pod Security's "
        "restricted level refuses",
    )
    service_monitor: Flag = Field(
        True, description="prometheus-operator ServiceMonitors for the /metrics endpoints (false on a cluster "
        "without prometheus-operator: kubectl apply fails on the unknown kind)",
    )
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    gateway: GatewayScaling = Field(default_factory=GatewayScaling)
    network_policy: NetworkPolicySettings = Field(default_factory=NetworkPolicySettings)
    # tritonserver's flag values as `deploy k8s` takes them; its --rate-limit/--rate-limit-resource replace both
    rate_limit: RateLimitMode = Field(
        "off", description="tritonserver's --rate-limit: off (Triton's default) or execution_count"
    )
    rate_limit_resources: list[str] = Field(
        default_factory=list,
        description="tritonserver's --rate-limit-resource values, '<name>:<count>' or '<name>:<count>:<device>' "
        "(needs rate_limit: execution_count)",
    )

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found = _replicas_outside_autoscaling(data) + _shm_within_memory(data)
        return found + cls._rate_limit_cross(data)

    @classmethod
    def _rate_limit_cross(cls, data: dict[str, Any]) -> Found:
        # RateLimit's own checks (those of serve/validate/deploy's flags), each reported at its field
        resources = raw_list(data.get("rate_limit_resources"))
        found: Found = []
        for i, text in enumerate(resources):
            if isinstance(text, str):
                try:
                    RateLimitResource.parse(text)
                except OptionError as err:
                    found.append((("rate_limit_resources", i), str(err)))
        mode = data.get("rate_limit", "off")
        if not found and resources and mode in RATE_LIMIT_MODES:
            try:
                RateLimit.from_options(mode, [r for r in resources if isinstance(r, str)])
            except OptionError as err:
                found.append((("rate_limit_resources",), str(err)))
        return found

    def rate_limiting(self) -> RateLimit:
        """How the pods' tritonserver rate-limits (the fields were checked on load)."""
        return RateLimit.from_options(self.rate_limit, self.rate_limit_resources)
