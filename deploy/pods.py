"""What every pod `deploy k8s` renders shares: how it stops and where it is scheduled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonforge.spec_deploy import NetworkPolicySettings

# at SIGTERM Triton and the gateway stop taking connections at once, while Services and ingresses still route to
# the pod for a few seconds: a preStop wait keeps them serving until the endpoint is removed everywhere
PRESTOP_SECONDS = 10


def prestop_wait() -> dict[str, Any]:
    """The container's lifecycle: wait PRESTOP_SECONDS before the SIGTERM (``sleep``: both images have it)."""
    return {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SECONDS)]}}}


def spread(selector: dict[str, str], *, zones: bool) -> list[dict[str, Any]]:
    """Replicas spread over nodes (and zones), as a preference: a node drain or a zone outage takes one of them,
    not all; a cluster with fewer nodes than replicas still schedules them."""
    keys = ["kubernetes.io/hostname", *(["topology.kubernetes.io/zone"] if zones else [])]
    # matchLabelKeys: a rollout's new pods are spread among themselves, not counted with the old ones they replace
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": dict(selector)}, "matchLabelKeys": ["pod-template-hash"]}
            for key in keys]


def network_policy(
    policy: NetworkPolicySettings, selector: dict[str, str], gateway_pods: dict[str, str] | None
) -> dict[str, Any]:
    """The Triton pods' NetworkPolicy values: who may reach the inference ports (the gateway's pods over gRPC, the
    named clients over HTTP and gRPC); the metrics port from anywhere, as Prometheus runs in a namespace of its own."""
    inference = [{"port": "http", "protocol": "TCP"}, {"port": "grpc", "protocol": "TCP"}]
    ingress: list[dict[str, Any]] = []
    if gateway_pods:  # the gateway Deployment's own selector: one copy of its labels
        ingress.append({"from": [{"podSelector": {"matchLabels": gateway_pods}}],
                        "ports": [{"port": "grpc", "protocol": "TCP"}]})
    clients: list[dict[str, Any]] = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}} for ns in policy.client_namespaces
    ]
    if policy.client_pod_labels:
        clients.append({"podSelector": {"matchLabels": dict(policy.client_pod_labels)}})
    if clients:
        ingress.append({"from": clients, "ports": inference})
    ingress.append({"ports": [{"port": "metrics", "protocol": "TCP"}]})
    return {"enabled": policy.enabled, "podSelector": dict(selector), "ingress": ingress}
