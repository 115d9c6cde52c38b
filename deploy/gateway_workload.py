"""The OpenAI gateway's Deployment in a cluster: its values in the chart (`gateway:`), from the build's record of
the models it serves and the command line's image and API-key Secret."""

from __future__ import annotations

from typing import Any

from tritonforge.build_manifest import gateway_model_entries
from tritonforge.deploy.options import DeployOptions
from tritonforge.deploy.pods import PRESTOP_SECONDS, prestop_wait, spread
from tritonforge.spec_deploy import GatewayScaling, quantity

GATEWAY_PORT = 9000
GATEWAY_METRICS_PORT = 9090  # /metrics without an API key, for the ServiceMonitor (not on the gateway's Service)
DRAIN_SECONDS = 15  # tritonforge.gateway.listen.GatewayServer's grace for requests in flight at SIGTERM


MEMORY_REQUEST = "256Mi"  # what a replica holds at rest with room for bursts; the limit is the spec's


def _memory_request(limit: str) -> str:
    return limit if quantity(limit) < quantity(MEMORY_REQUEST) else MEMORY_REQUEST


def gateway_models_args(info: dict[str, Any]) -> list[str]:
    """`--model` flags for the models the build recorded (tritonforge.json's `gateway_models`); none from a build
    that recorded none, and the gateway then serves examples/rag.yaml's ids (deploy notes it)."""
    return [f"--model={entry}" for entry in gateway_model_entries(info)]


def gateway_values(
    name: str, options: DeployOptions, info: dict[str, Any], triton_grpc_port: int, scaling: GatewayScaling
) -> dict[str, Any]:
    # Every Triton pod's address through the headless Service, a request each in turn: through the ClusterIP
    # Service each gateway replica kept one connection to one pod (kube-proxy balances connections, not gRPC's
    # requests), and Triton pods the autoscaler added got no gateway traffic.
    triton = f"dns:///{name}-grpc-pods:{triton_grpc_port}"
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "gateway"}
    return {
        "enabled": options.gateway,
        "name": f"{name}-gateway",
        "image": options.gateway_image or "",
        "replicas": scaling.min_replicas,
        "autoscaling": {
            "enabled": scaling.autoscaled,
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.most_replicas,
            # the resource metric of metrics-server (every managed cluster has it): no adapter, unlike Triton's
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": scaling.target_cpu_percent}}}],
        },
        "port": GATEWAY_PORT,
        "metricsPort": GATEWAY_METRICS_PORT,
        "resources": {"requests": {"cpu": scaling.cpu, "memory": _memory_request(scaling.memory)},
                      "limits": {"memory": scaling.memory}},
        "apiKeysSecret": options.gateway_api_keys_secret or "",
        "labels": {
            "app.kubernetes.io/name": "tritonforge",
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/component": "gateway",
            "app.kubernetes.io/managed-by": "tritonforge",
        },
        "selectorLabels": selector,
        "lifecycle": prestop_wait(),
        # the preStop wait, the gateway's drain of requests in flight (GatewayServer's grace), then a margin
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + DRAIN_SECONDS + 10,
        "topologySpreadConstraints": spread(selector, zones=False),
        "pdb": {"enabled": True, "maxUnavailable": 1},
        # Pod Security "restricted" in full: the gateway needs no root and writes nothing but /tmp (an emptyDir)
        "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
        "readOnlyRootFilesystem": True,
        "command": ["tritonforge", "gateway"],
        "args": [
            f"--triton={triton}",
            "--host=0.0.0.0",
            f"--port={GATEWAY_PORT}",
            f"--metrics-port={GATEWAY_METRICS_PORT}",
            "--api-keys-file=/etc/tritonforge/api-keys/keys",
            *(gateway_models_args(info) if options.gateway else []),
        ],
    }
