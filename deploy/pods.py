"""What every pod `deploy k8s` renders shares: how it stops and where it is scheduled."""

from __future__ import annotations

from typing import Any

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
    return [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": dict(selector)}} for key in keys]
