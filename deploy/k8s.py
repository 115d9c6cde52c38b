"""`tritonforge deploy k8s`: a built repository + options -> checked values -> Kubernetes manifests, Helm, KServe.

One values dict (the Helm chart's values.yaml) drives all three formats. Everything is checked before anything is
written (every problem at once, as a DeployError): the repository (Triton's load rules with the replica's GPU count
and the pods' rate limiting, and its TensorRT-LLM engine manifests against the image), the image against the one
the build recorded, the GPUs per replica against the instance groups and tensor/pipeline parallel sizes, the
TensorRT-LLM launch (an engine of tp_size × pp_size > 1 runs as upstream's mpirun launch, one tritonserver rank per
GPU), the repository URL and its credentials secret, the gateway's settings. The output folder is written to a
temporary sibling and renamed into place.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tritonforge.build_manifest import MANIFEST_NAME
from tritonforge.deploy.autoscaling import (
    ENGINE_SERIES,
    QUEUE_METRIC,
    WAITING_METRIC,
    backlog_engines,
    pods_metric,
    prometheus_adapter_rules,
)
from tritonforge.deploy.gateway_workload import gateway_values
from tritonforge.deploy.gpu_notes import driver_notes, memory_notes
from tritonforge.deploy.launch import GPUNeed, gpu_need, triton_command, triton_launch
from tritonforge.deploy.options import (
    DNS_LABEL,
    SECRET_NAME,
    DeployOptions,
    monitor_labels,
    monitoring,
    option_type_problems,
    option_value_problems,
    path_problem,
    rate_limit,
)
from tritonforge.deploy.pods import PRESTOP_SECONDS, network_policy, prestop_wait, spread
from tritonforge.deploy.revision import REVISION, repository_revision
from tritonforge.errors import DeployError, Problem
from tritonforge.triton.options import restricted_api_args
from tritonforge.trtllm.images import REPOSITORY, image_name_problem, image_release, tag_parts, without_digest

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

    from tritonforge.spec import DeploySettings

Format = Literal["manifests", "helm", "kserve"]
TEMPLATES = Path(__file__).parent / "templates"
DATA = Path(__file__).parent / "data"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
KSERVE_HTTP_PORT = 8080  # KServe's kserve-tritonserver runtime runs tritonserver --http-port=8080
ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"
ADMIN_KEY_SECRET_KEY = "admin-key"  # the key of --admin-key-secret's Secret that holds it
MANIFEST_FILES = (
    "deployment.yaml",
    "services.yaml",
    "servicemonitor.yaml",
    "hpa.yaml",
    "prometheus-adapter.yaml",
    "pdb.yaml",
    "gateway.yaml",
    "networkpolicy.yaml",
)


@dataclass(frozen=True)
class DeployReport:
    out: Path
    format: Format
    files: tuple[str, ...]
    values: dict[str, Any]
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------ the built repository


def read_build_info(repo: Path) -> dict[str, Any]:
    """tritonforge.json, written by `tritonforge build` at the repository's root (a DeployError saying why not)."""
    path = repo / MANIFEST_NAME
    if not Path(repo).is_dir():  # not "tritonforge.json: missing", which read as a repository without its record
        raise DeployError([Problem(str(repo), "no such folder: give the repository `tritonforge build` wrote")])
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeployError(
            [Problem(str(path), "missing: deploy a repository written by `tritonforge build` (it records the spec)")]
        ) from None
    except (OSError, ValueError) as err:
        raise DeployError([Problem(str(path), f"unreadable: {err}")]) from None
    if not isinstance(info, dict) or info.get("target") not in ("cpu", "gpu"):
        raise DeployError([Problem(str(path), "no target (cpu or gpu) recorded; rebuild the repository")])
    return info


def _configs(repo: Path) -> dict[str, ModelConfig]:
    from tritonforge.config_io import read_config

    return {p.parent.name: read_config(p) for p in sorted(repo.glob("*/config.pbtxt"))}


# ------------------------------------------------------------------------------------------------------ checks


REPOSITORY_MOUNT = "/models"


def mounted_paths(configs: dict[str, ModelConfig]) -> list[str]:
    """"model: parameter = value" for each config parameter naming a path under /models (what the engine path's
    builder writes, e.g. gpt_model_path /models/tensorrt_llm/1/engine): they hold only where the repository itself
    is mounted at /models. Triton copies an object-store repository to a temporary folder first, and KServe mounts
    one at /mnt/models, so there TensorRT-LLM finds no engine ("Decoder (GPT) model path ... does not exist")."""
    return [
        f"{name}: {key} = {param.string_value}"
        for name, config in sorted(configs.items())
        for key, param in sorted(config.parameters.items())
        if param.string_value.startswith(f"{REPOSITORY_MOUNT}/")
    ]


def _repository_source(url: str, secret: str | None, region: str,
                       service_account: str | None = None) -> tuple[dict[str, Any], list[Problem]]:
    """--model-repository, env, volumes and mounts for where the pods read the repository. Without a Secret, a
    ``service_account`` bound to a cloud role gives the credentials (the AWS SDK reads IRSA's web identity token,
    Google's client the metadata server: the env names no key)."""
    from tritonforge.deploy.object_store import parse_object_store_url

    problems: list[Problem] = []
    if url.startswith("pvc://"):
        claim, _, sub = url.removeprefix("pvc://").partition("/")
        if not DNS_LABEL.fullmatch(claim):
            problems.append(Problem("--repository-url", f"{url!r}: claim {claim!r} is not a valid PVC name"))
        if any(part in (".", "..") for part in sub.split("/")):  # the API server refuses a subPath that climbs
            problems.append(Problem("--repository-url", f"{url!r}: give the path in the claim without '.' or '..'"))
        # the repository itself is mounted at /models (the claim's sub-folder through subPath): the engine path's
        # configs hold absolute /models/<model>/1/... paths (gpt_model_path, lora_prefetch_dir)
        mount = {"name": "model-repository", "mountPath": REPOSITORY_MOUNT, "readOnly": True}
        if sub.strip("/"):
            mount["subPath"] = sub.strip("/")
        return {
            "kind": "pvc",
            "tritonUrl": REPOSITORY_MOUNT,
            "storageUri": url,
            "env": [],
            "volumes": [{"name": "model-repository", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
            "volumeMounts": [mount],
        }, problems
    try:
        store = parse_object_store_url(url)
    except DeployError as err:
        allowed = "s3://[host:port/]bucket/prefix, gs://bucket/prefix or pvc://claim[/path]"
        detail = err.problems[0].message if err.problems else str(err)
        return {}, [Problem("--repository-url", f"{detail} (pods read the repository from {allowed})")]
    if not secret and not service_account:
        problems.append(
            Problem(
                "--credentials-secret",
                f"missing: {url} needs the name of a Secret with the object-store credentials "
                + (
                    "(keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
                    if store.scheme == "s3"
                    else "(key key.json: a service-account key)"
                )
                + ", or --service-account naming one bound to a cloud role (EKS IRSA, GKE Workload Identity)",
            )
        )
    elif secret and not SECRET_NAME.fullmatch(secret):
        problems.append(Problem("--credentials-secret", f"{secret!r} is not a valid Secret name"))
    if store.scheme == "s3" and (found := region_problem(region, custom_endpoint=store.endpoint is not None)):
        problems.append(Problem("--region", found))
    source: dict[str, Any] = {
        "kind": store.scheme,
        "tritonUrl": store.triton_url,
        "storageUri": store.plain_url,
        "endpoint": store.endpoint,
    }
    if store.scheme == "s3":
        keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if secret or not service_account else ()
        source["env"] = [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": secret or "", "key": key}}} for key in keys
        ] + [{"name": "AWS_DEFAULT_REGION", "value": region}]
        source["volumes"], source["volumeMounts"] = [], []
    elif service_account and not secret:  # Workload Identity: the metadata server, no key file
        source["env"], source["volumes"], source["volumeMounts"] = [], [], []
    else:
        source["env"] = [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/google/key.json"}]
        source["volumes"] = [{"name": "gcs-credentials", "secret": {"secretName": secret or ""}}]
        source["volumeMounts"] = [{"name": "gcs-credentials", "mountPath": "/var/secrets/google", "readOnly": True}]
    return source, problems


# AWS's region names (us-east-1, ap-southeast-2, us-gov-west-1, eu-central-2...): a typo's S3 client failed in the
# pod, at Triton's start, with an endpoint that does not resolve. An S3-compatible server takes any name it is set to.
AWS_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")


def region_problem(region: str, *, custom_endpoint: bool) -> str | None:
    if custom_endpoint:
        return None if region.strip() and not any(c.isspace() for c in region) else (
            f"{region!r}: give the region the S3-compatible server is set to (no spaces)")
    if AWS_REGION.fullmatch(region):
        return None
    return f"{region!r} is not an AWS region name (e.g. us-east-1, eu-west-3, ap-southeast-2)"


REVISION_ANNOTATION = "tritonforge.dev/repository-revision"


def ephemeral_storage(repo: Path) -> str:
    """The local disk a pod needs for a copy of ``repo`` (its files' bytes, and a quarter more for Triton's and the
    python stubs' own files), in MiB as a Kubernetes quantity."""
    size = sum(p.stat().st_size for p in Path(repo).rglob("*") if p.is_file())
    return f"{math.ceil(size * 1.25 / 2**20) + 512}Mi"


def _gpus_problems(requested: int, need: GPUNeed, where: str, target: str) -> list[Problem]:
    because = "; ".join(need.why)
    if target == "cpu":
        return [Problem(where, f"{requested}: the cpu target uses no GPU; deploy a gpu build to request GPUs")]
    if requested < need.needed:
        return [Problem(where, f"{requested} GPU(s) per replica, but the repository needs {need.needed}: {because}")]
    if need.usable is not None and requested > need.usable:
        return [
            Problem(
                where,
                f"{requested} GPU(s) per replica, more than the parallel sizes allow ({need.usable}: {because}); "
                f"the other GPUs would sit idle: ask for {need.usable}, or raise tp_size/pp_size or the instances",
            )
        ]
    return []


def pull_policy(image: str) -> str:
    """Kubernetes' own default, said out loud: Always for ':latest' (or no tag), whose content moves, so a node does
    not keep a stale copy; IfNotPresent for a fixed tag or a digest."""
    name = without_digest(image).rsplit("/", 1)[-1]
    moving = "@" not in image and (":" not in name or name.endswith(":latest"))
    return "Always" if moving else "IfNotPresent"


def _non_root(user: int | None) -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": user, "runAsGroup": user} if user else {}


def _image_problems(built_for: Any, image: str) -> list[Problem]:
    """The build chose the model set for its image (an engine-path repository needs an image that still ships the
    tensorrtllm backend; the LLM API's model.yaml follows that image's TensorRT-LLM): deploy that image's release and
    flavour. A recorded image without a flavour (e.g. '24.12') pins the release only."""
    if not isinstance(built_for, str) or not built_for:
        return []
    built, deploying = image_release(built_for), image_release(image)
    if built is None:
        return []
    if deploying is None:  # ':latest', a digest alone: what it runs cannot be checked against the build
        if image_name_problem(image, pullable=True):
            return []  # untagged: reported on its own
        return [Problem("--image", (
            f"{image!r} names no release, and the repository was built for {built_for}: tag the image with its "
            f"release (…:{built[0]}{built[1] or '-<flavour>'}, a digest may follow: …@sha256:…)"
        ))]
    # an image built FROM the recorded one (deploy's Dockerfile) in another repository names its own flavour
    # ('26.07-trtllm-python-py3-faiss', '26.07-1'): its release is held to the build's, its flavour is its own
    custom = (tag_parts(image) or ("", "", ""))[2] != REPOSITORY
    same_flavour = not built[1] or built[1] == deploying[1] or (custom and not deploying[1])
    if built[0] == deploying[0] and same_flavour:
        return []
    return [
        Problem(
            "--image",
            f"repository built for {built_for}, deploying {image}: rebuild with --image {image} or deploy {built_for}",
        )
    ]


def _deploy_settings(repo: Path, info: dict[str, Any]) -> DeploySettings:
    """tritonforge.json's `deploy:` section (the spec's, recorded by the build) as DeploySettings, or a DeployError
    naming the file and every field."""
    from pydantic import ValidationError as PydanticValidationError

    from tritonforge.spec import DeploySettings, format_errors

    try:
        return DeploySettings.model_validate(info.get("deploy") or {})
    except PydanticValidationError as err:
        where = str(repo / "tritonforge.json")
        problems = format_errors(err, DeploySettings)
        raise DeployError(
            [Problem(where, f"deploy{f'.{p.where}' if p.where else ''}: {p.message}") for p in problems]
        ) from None


@dataclass(frozen=True)
class DeploymentCheck:
    """The chart's values and what deploy_k8s's own checks and notes need from the same reading of the repository
    (each config.pbtxt read once)."""

    values: dict[str, Any]
    configs: dict[str, ModelConfig]
    info: dict[str, Any]  # tritonforge.json
    silent_engines: list[str]  # LLM engines that publish no backlog (see autoscaling.backlog_engines)
    rate_limit_off: bool
    mutable_prefix: bool  # an object-store prefix that is not a release's (see push --release)


def build_values(repo: str | Path, options: DeployOptions) -> dict[str, Any]:
    """Check the repository and options (every problem at once) and return the chart's values."""
    return check_deployment(repo, options).values


def check_deployment(repo: str | Path, options: DeployOptions) -> DeploymentCheck:
    """:func:`build_values`, with what it read."""
    from tritonforge.validator import check_repository

    found = option_type_problems(options)
    if problem := path_problem("repo", repo):
        found.insert(0, problem)
    if found:  # checked before anything is read: the checks below need the right types
        raise DeployError(found, "cannot deploy (nothing was written)")
    repo = Path(repo)
    info = read_build_info(repo)
    settings = _deploy_settings(repo, info)
    target: str = info["target"]
    configs = _configs(repo)
    name, problems = option_value_problems(options, settings, str(info.get("spec") or "tritonforge"))
    problems += _image_problems(info.get("image"), options.image)
    need = gpu_need(repo, info, configs)
    launch, found = triton_launch(repo, info, configs)
    problems += found
    if options.gpus_per_replica is not None:
        gpus = options.gpus_per_replica
        problems += _gpus_problems(gpus, need, "--gpus", target)
    elif settings.gpus_per_replica is not None and target == "gpu":
        gpus = settings.gpus_per_replica
        problems += _gpus_problems(gpus, need, "deploy.gpus_per_replica", target)
    else:
        gpus = need.needed

    # Triton's load rules with this replica's GPUs and rate limiting, and every engine manifest against the image
    gpu = target == "gpu"
    limits = rate_limit(options, settings)
    for p in check_repository(repo, gpus=gpus if gpu else None, image=options.image, image_backends=gpu,
                              rate_limit=limits):
        problems.append(Problem(p.where, p.message))

    source, found = _repository_source(options.repository_url, options.credentials_secret, options.region,
                                       options.service_account)
    problems += found
    revision = repository_revision(repo)
    released = False  # the URL names a release prefix (push --release): written once, what every pod reads
    if source.get("kind") in ("s3", "gs"):
        from tritonforge.deploy.object_store import parse_object_store_url

        named = parse_object_store_url(options.repository_url).prefix.rsplit("/", 1)[-1]
        released = REVISION.fullmatch(named) is not None
        if released and named != revision:
            problems.append(Problem("--repository-url", (
                f"{options.repository_url} names release {named}, but {repo} is release {revision}: render from "
                "the repository pushed there, or push this one with `tritonforge push --release`"
            )))
    if source.get("kind") in ("s3", "gs") and (paths := mounted_paths(configs)):
        problems.append(Problem("--repository-url", (
            f"{options.repository_url}: Triton copies an object-store repository to a temporary folder, where "
            f"these paths do not exist: {'; '.join(paths)}. Serve it from a volume (pvc://claim[/path], mounted "
            "at /models), or build with engine_dir_in_container naming where the pods have the engine"
        )))

    models = sorted(configs)
    publishing, silent = backlog_engines(repo, configs, target)
    ensembles = {n for n, c in configs.items() if c.platform == "ensemble"}
    watched = list(settings.autoscaling.models) or [m for m in models if m not in ensembles]
    for m in settings.autoscaling.models:
        if m not in configs:
            problems.append(
                Problem("deploy.autoscaling.models", f"{m!r} is not a model of the repository ({', '.join(models)})")
            )
    if options.gateway:
        if not options.gateway_image:
            problems.append(Problem("--gateway-image", "missing: the gateway needs an image with tritonforge[gateway]"))
        if not options.gateway_api_keys_secret:
            problems.append(
                Problem("--gateway-api-keys-secret", "missing: a cluster gateway serves only with API keys (a Secret)")
            )
    policy = settings.network_policy
    if policy.enabled and not (options.gateway or policy.client_namespaces or policy.client_pod_labels):
        problems.append(Problem("deploy.network_policy", (
            "enabled, but nothing may call Triton: deploy with --gateway, or name client_namespaces or "
            "client_pod_labels"
        )))
    if problems:
        raise DeployError(problems, "cannot deploy (nothing was written)")

    replicas = options.replicas if options.replicas is not None else settings.replicas
    labels = {
        "app.kubernetes.io/name": "tritonforge",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": "triton",
        "app.kubernetes.io/managed-by": "tritonforge",
    }
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "triton"}
    resources: dict[str, Any] = {
        "requests": {"cpu": settings.cpu, "memory": settings.memory},
        "limits": {"memory": settings.memory},
    }
    if target == "cpu":
        # the CPU engine and the ONNX runner size their threads by the cgroup's CPU limit: without one every
        # replica ran a thread per core of the node (pinned to the same cores) on a request of deploy.cpu
        resources["limits"]["cpu"] = settings.cpu
    if source["kind"] in ("s3", "gs"):
        # Triton copies an object-store repository into the container's writable layer (KServe's storage
        # initializer into an emptyDir): without a request the scheduler may place the pod on a node whose disk
        # cannot hold it, and the kubelet evicts it mid-load
        resources["requests"]["ephemeral-storage"] = ephemeral_storage(repo)
    node_selector = dict(settings.node_selector)
    tolerations: list[dict[str, Any]] = []
    if target == "gpu" and gpus:
        resources["requests"][settings.gpu_resource] = gpus
        resources["limits"][settings.gpu_resource] = gpus
        # no node selector of our own: the GPU request already schedules the pod on nodes that have the resource, and
        # GPU feature discovery's nvidia.com/gpu.present is missing where it does not run (GKE's own driver set-up,
        # EKS without the operator), which left pods Pending; GPU nodes are tainted nvidia.com/gpu whatever the
        # resource a pod asks for (a MIG profile's too)
        for key in dict.fromkeys(("nvidia.com/gpu", settings.gpu_resource)):
            tolerations.append({"key": key, "operator": "Exists", "effect": "NoSchedule"})
    args = [
        f"--model-repository={source['tritonUrl']}",
        # every model loads at start-up; load/unload over the network stays off in a cluster
        "--model-control-mode=none",
        "--disable-auto-complete-config",
        "--strict-readiness=true",
        f"--http-port={PORTS['http']}",
        f"--grpc-port={PORTS['grpc']}",
        f"--metrics-port={PORTS['metrics']}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if target == 'gpu' else 'false'}",
        f"--exit-timeout-secs={settings.drain_seconds}",
        *limits.server_args(),  # rank 0's only: MPI worker ranks never schedule a request (see triton_command)
        # Kubernetes expands $(TRITON_ADMIN_KEY) from the container's env: the key stays in the Secret
        *(restricted_api_args(f"$({ADMIN_KEY_ENV})") if options.admin_key_secret else []),
    ]
    command, args = triton_command(launch, args, source["tritonUrl"], settings.drain_seconds)
    env = list(source["env"])
    if options.admin_key_secret:
        env.append({"name": ADMIN_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": options.admin_key_secret,
                                                                        "key": ADMIN_KEY_SECRET_KEY}}})
    if command[:1] == ["mpirun"]:
        # Open MPI forwards the pod's SIGTERM to the ranks and SIGKILLs them 1 s later (odls_base_sigkill_timeout):
        # Triton's --exit-timeout-secs drain of in-flight requests would be cut short (Open MPI 4: OMPI_MCA_, 5: PRTE)
        env += [{"name": f"{prefix}_MCA_odls_base_sigkill_timeout", "value": str(settings.drain_seconds)}
                for prefix in ("OMPI", "PRTE")]
    probe = {"periodSeconds": 10, "timeoutSeconds": 5}
    scaling = settings.autoscaling
    gateway = gateway_values(name, options, info, PORTS["grpc"], settings.gateway)
    startup: dict[str, Any] = {
        "httpGet": {"path": "/v2/health/ready", "port": "http"},
        **probe,
        "failureThreshold": max(3, math.ceil(settings.startup_seconds / probe["periodSeconds"])),
    }
    readiness: dict[str, Any] = {
        "httpGet": {"path": "/v2/health/ready", "port": "http"}, **probe, "failureThreshold": 3,
    }
    values: dict[str, Any] = {
        "name": name,
        "namespace": options.namespace,
        "target": target,
        "image": options.image,
        "imagePullPolicy": pull_policy(options.image),
        "imagePullSecrets": [{"name": n} for n in options.image_pull_secrets],
        "replicas": replicas,
        "gpus": gpus,
        "labels": labels,
        "selectorLabels": selector,
        "podAnnotations": {REVISION_ANNOTATION: revision},
        "ports": dict(PORTS),
        "modelRepository": {
            "url": options.repository_url,
            "kind": source["kind"],
            "credentialsSecret": options.credentials_secret or "",
        },
        "triton": {
            "serviceAccountName": options.service_account or "",
            "ranks": launch.ranks,  # tritonserver processes (MPI ranks) per pod
            "command": command,
            "args": args,
            "env": env,
            "resources": resources,
            "nodeSelector": node_selector,
            "tolerations": tolerations,
            "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}}]
            + source["volumes"],
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, *source["volumeMounts"]],
            "lifecycle": prestop_wait(),
            # the preStop wait, Triton's drain of requests in flight, then a margin before the SIGKILL
            "terminationGracePeriodSeconds": PRESTOP_SECONDS + settings.drain_seconds + 20,
            "topologySpreadConstraints": spread(selector, zones=True),
        },
        "probes": {
            # Triton opens its ports only once every model is loaded: the start-up probe covers engine loading
            "startup": startup,
            "readiness": readiness,
            "liveness": {"httpGet": {"path": "/v2/health/live", "port": "http"}, **probe, "failureThreshold": 3},
        },
        # a rollout counts as stalled after this long without a new pod ready: past the start-up probe's allowance,
        # or a slow engine load reads as a failed rollout (Kubernetes' default is 600 s)
        "progressDeadlineSeconds": settings.startup_seconds + 300,
        "serviceMonitor": {
            "enabled": monitoring(options, settings),
            "interval": "15s",
            "labels": monitor_labels(options.monitor_labels),  # beside `labels` (an override of those reaches it)
        },
        "autoscaling": {
            "enabled": settings.autoscaling.enabled,
            "minReplicas": settings.autoscaling.min_replicas,
            "maxReplicas": settings.autoscaling.max_replicas,
            "metrics": [
                pods_metric(m, WAITING_METRIC, scaling.target_waiting_requests) if m in publishing
                else pods_metric(m, QUEUE_METRIC, scaling.target_queue_time_us)  # the metric's unit: µs
                for m in watched
            ],
        },
        "prometheusAdapter": {
            "enabled": settings.autoscaling.enabled,
            "rules": prometheus_adapter_rules(engines=any(m in publishing for m in watched)),
        },
        "pdb": {"enabled": True, "maxUnavailable": 1},
        # what Pod Security's "restricted" level asks that these images allow; the NGC images run as root unless
        # deploy.run_as_user names a user (1000, their triton-server, as NVIDIA's own charts run them)
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
            **_non_root(settings.run_as_user),
        },
        # the volumes' files readable by that user's group (a PVC's, the downloaded repository's)
        "podSecurityContext": {"fsGroup": settings.run_as_user} if settings.run_as_user else {},
        "gateway": gateway,
        "networkPolicy": network_policy(policy, selector, gateway["selectorLabels"] if options.gateway else None),
        "kserve": {
            # KServe's kserve-tritonserver runtime sets limits.cpu "1"; merged with a larger request the predictor's
            # pod is invalid (a request above its limit) and never created
            "resources": {**resources, "limits": {**resources["limits"], "cpu": settings.cpu}},
            "storageUri": source["storageUri"],
            "endpoint": source.get("endpoint") or "",
            # the user's ServiceAccount (bound to a cloud role), else one made to carry the credentials Secret
            "serviceAccountName": options.service_account or (f"{name}-storage" if options.credentials_secret else ""),
            "createServiceAccount": bool(options.credentials_secret) and not options.service_account,
            # the runtime declares no probes: a pod got traffic while Triton still loaded, and Knative's 10 min
            # progress deadline failed slow GPU loads the manifests allow 30 min for
            "probes": {
                kind: {**check, "httpGet": {**check["httpGet"], "port": KSERVE_HTTP_PORT}}
                for kind, check in (("startup", startup), ("readiness", readiness))
            },
            "progressDeadline": f"{settings.startup_seconds + 300}s",
            "shmSize": settings.shm_size,
        },
    }
    mutable = source.get("kind") in ("s3", "gs") and not released
    return DeploymentCheck(values, configs, info, silent, limits.mode == "off", mutable)


# ---------------------------------------------------------------------------------------------------- rendering


def _environment() -> Any:
    import jinja2
    import yaml

    def toyaml(value: Any, indent: int) -> str:
        """Helm's `toYaml | nindent N`: a newline, then the block indented by N."""
        text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, width=1 << 16).rstrip("\n")
        return "\n" + "\n".join(" " * indent + line if line else line for line in text.splitlines())

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    env.filters["toyaml"] = toyaml
    env.filters["tojson"] = lambda v: json.dumps(v)
    return env


def render_manifests(values: dict[str, Any]) -> dict[str, str]:
    """File name -> YAML (documents separated by ---); disabled parts render to nothing and are left out."""
    env = _environment()
    out = {}
    for filename in MANIFEST_FILES:
        text = env.get_template(f"manifests/{filename}.j2").render(v=values)
        if text.strip():
            out[filename] = text
    return out


def render_kserve(values: dict[str, Any]) -> dict[str, str]:
    # the kserve-tritonserver runtime owns the container's command (one tritonserver; the InferenceService only adds
    # args to it), so an MPI launch of several ranks cannot be expressed there
    ranks = values["triton"]["ranks"]
    if ranks > 1:
        raise DeployError(
            [
                Problem(
                    "--format",
                    f"kserve: the repository's TensorRT-LLM engines need an MPI launch of {ranks} tritonserver ranks, "
                    "which KServe's kserve-tritonserver runtime cannot start: use --format manifests or helm",
                )
            ],
            "cannot deploy (nothing was written)",
        )
    text = _environment().get_template("kserve/inferenceservice.yaml.j2").render(v=values)
    return {"inferenceservice.yaml": text}


def app_version(image: str) -> str:
    """Chart.yaml's appVersion: the image's tag, a digest pinned beside it aside (the last ':' of
    'tritonserver:26.07-py3@sha256:…' made it the digest's hex), or the digest when the image has no tag."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else (digest or "latest")


def helm_chart(values: dict[str, Any]) -> dict[str, bytes]:
    """The chart: Chart.yaml, values.yaml (these values) and the Go templates shipped in deploy/templates/helm."""
    import yaml

    from tritonforge import __version__

    chart = {
        "apiVersion": "v2",
        "name": "tritonforge",
        "description": f"Triton Inference Server serving {values['name']} (rendered by tritonforge deploy k8s)",
        "type": "application",
        "version": __version__,
        "appVersion": app_version(values["image"]),
    }
    values = {k: v for k, v in values.items() if k != "namespace"}  # the release's namespace (helm -n)
    files: dict[str, bytes] = {
        "Chart.yaml": yaml.safe_dump(chart, sort_keys=False).encode(),
        "values.yaml": (
            "# Generated by tritonforge deploy k8s --format helm: edit, or override with --set / -f.\n"
            f"# {', '.join(FIXED_VALUES)} are fixed when the chart is rendered (they are in triton.args and\n"
            "# triton.resources, or the repository was checked against them): change them by rendering again with\n"
            "# tritonforge deploy k8s (values.schema.json refuses an override, which would have left the server's\n"
            "# flags and the pod's ports disagreeing, or served an image the repository was not checked against).\n"
            + yaml.safe_dump(values, sort_keys=False, width=1 << 16)
        ).encode(),
        "values.schema.json": json.dumps(_values_schema(values), indent=2).encode() + b"\n",
    }
    for path in sorted((TEMPLATES / "helm").rglob("*")):
        if path.is_file():
            files[path.relative_to(TEMPLATES / "helm").as_posix()] = path.read_bytes()
    return files


# image too: the repository was checked against it (its release's TensorRT-LLM and backends), and an override
# such as --set image=...:24.05-... bypassed that check. name too: it is in the labels, selectors, the gateway's
# --triton address and the adapter's rules, so --set name=b renamed the objects but left those pointing at the
# first name; a second release in one namespace is rendered again with --name.
FIXED_VALUES = ("ports", "modelRepository", "gpus", "image", "name")


def _values_schema(values: dict[str, Any]) -> dict[str, Any]:
    """values.schema.json: Helm checks values against it at install, upgrade and template time. The values that
    the rendered server flags and resources already hold may not change (a ports.http of 9000 moved the pod's port
    and Service, not Triton's --http-port, and the probes failed)."""
    return {
        "$schema": "https://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {
            key: {"const": values[key], "description": "fixed when the chart was rendered: render again to change"}
            for key in FIXED_VALUES
        },
    }


def render(values: dict[str, Any], fmt: Format) -> dict[str, bytes]:
    if fmt == "manifests":
        return {k: v.encode() for k, v in render_manifests(values).items()}
    if fmt == "kserve":
        return {k: v.encode() for k, v in render_kserve(values).items()}
    if fmt == "helm":
        return helm_chart(values)
    raise DeployError([Problem("--format", f"{fmt!r} is not a format; choose manifests, helm or kserve")])


def deploy_k8s(repo: str | Path, out: str | Path, options: DeployOptions, fmt: Format = "manifests") -> DeployReport:
    """Check everything, render `fmt`, and write it as the folder `out` (temp folder, then renamed into place)."""
    from tritonforge.repository import check_output, write_repository

    if fmt not in ("manifests", "helm", "kserve"):
        raise DeployError([Problem("--format", f"{fmt!r} is not a format; choose manifests, helm or kserve")])
    paths = [p for p in (path_problem("repo", repo), path_problem("out", out)) if p is not None]
    if found := paths + option_type_problems(options):
        raise DeployError(found, "cannot deploy (nothing was written)")
    from tritonforge.deploy.image import DOCKERFILE, image_recipe, unknown_python_models

    check_output(out, [repo])  # before rendering: a folder that is not an earlier output is never replaced
    checked = check_deployment(repo, options)
    values, configs = checked.values, checked.configs
    if fmt == "kserve" and (mounted := mounted_paths(configs)):
        raise DeployError([Problem("--format", (
            f"KServe mounts the repository at /mnt/models, where these paths do not exist: {'; '.join(mounted)}; "
            "deploy it as manifests or helm, or build with engine_dir_in_container naming where the pods have it"
        ))], "cannot deploy (nothing was written)")
    if fmt == "kserve" and options.gateway:  # accepted and ignored: no gateway object was rendered
        raise DeployError([Problem("--gateway", (
            "--format kserve renders the InferenceService only: deploy the gateway with --format manifests or helm"
        ))], "cannot deploy (nothing was written)")
    if fmt == "kserve" and values["networkPolicy"]["enabled"]:  # accepted and dropped: Triton left open
        raise DeployError([Problem("deploy.network_policy", (
            "--format kserve renders the InferenceService only, no NetworkPolicy: deploy as manifests or helm, or "
            "fence KServe's predictor pods with a policy of your own"
        ))], "cannot deploy (nothing was written)")
    if fmt == "kserve" and options.monitor_labels:  # the same: KServe's InferenceService has no ServiceMonitor
        raise DeployError([Problem("--monitor-label", (
            "--format kserve renders no ServiceMonitor to label: scrape KServe's predictor as your cluster does"
        ))], "cannot deploy (nothing was written)")
    if fmt == "kserve" and len(host := f"{values['name']}-predictor-{values['namespace']}") > 63:
        # KServe names the predictor's host <name>-predictor-<namespace>, one DNS label: it cannot reconcile a longer
        raise DeployError([Problem("--name", (
            f"KServe's predictor host {host!r} is {len(host)} characters, over a DNS label's 63: shorten --name "
            "or --namespace"
        ))], "cannot deploy (nothing was written)")
    files = render(values, fmt)
    notes: list[str] = []
    if not options.admin_key_secret:
        notes.append("Triton's shared-memory, logging and trace APIs answer any pod that reaches its Services (model "
                     "control is off in a cluster): --admin-key-secret guards them with a key, as `serve` does")
    if fmt == "kserve" and values["modelRepository"]["kind"] == "gs" and options.credentials_secret:
        notes.append(f"KServe's storage initializer takes a GCS key only from the Secret's key "
                     f"gcloud-application-credentials.json (KServe's default), not key.json: put the service-account "
                     f"key under that name in {options.credentials_secret}")
    if fmt == "kserve" and values["modelRepository"]["kind"] == "s3":  # its storage initializer ignores the pods' env
        holder = f"ServiceAccount {options.service_account}" if options.service_account else "credentials Secret"
        notes.append(f"KServe's storage initializer reads the bucket's region from an annotation: annotate the "
                     f"{holder} with serving.kserve.io/s3-region: {options.region}")
    if options.gateway and "gateway_models" not in checked.info:
        notes.append("the build recorded no gateway models (built by an earlier tritonforge): the gateway serves "
                     "examples/rag.yaml's ids (chat, minilm, reranker); rebuild the repository to serve its own")
    recipe = image_recipe(Path(repo), options.image)
    if recipe is not None:  # pods on this image would fail to load some python models: say which image would not
        files[DOCKERFILE] = recipe[0].encode()
        notes.append(recipe[1])
    unknown = unknown_python_models(Path(repo))
    if unknown:
        notes.append(f"{', '.join(unknown)}: python models whose packages could not be told (model.py not this "
                     "tritonforge's, and no record of it in tritonforge.json): check the image has what they import, "
                     "or rebuild the repository")
    if fmt != "kserve" and values["autoscaling"]["enabled"]:
        notes.append(f"the autoscaler's metrics come from prometheus-adapter: merge the rules in the ConfigMap "
                     f"{values['name']}-prometheus-adapter-rules into the adapter's config (its chart's rules.custom); "
                     "until then the HorizontalPodAutoscaler reports FailedGetPodsMetric and does not scale")
    if checked.mutable_prefix:
        to_release = ("`tritonforge push --release` writes each release once to <prefix>/<revision>"
                      if values["modelRepository"]["kind"] == "s3" else
                      "copy each release once to <prefix>/<revision> (`gcloud storage rsync`; `push` writes S3 only)")
        notes.append(f"{options.repository_url} is read by each pod at its start: one the autoscaler adds or a "
                     "restart brings back later serves whatever the prefix holds then, and `kubectl rollout undo` "
                     f"does not bring older files back. {to_release} (this repository: "
                     f"{values['podAnnotations'][REVISION_ANNOTATION]}): render with that URL")
    if values["autoscaling"]["enabled"] and checked.silent_engines:
        notes.append(f"{', '.join(checked.silent_engines)}: the LLM API's model publishes no backlog "
                     f"({ENGINE_SERIES}) without llmapi.enable_iter_perf_stats, and takes every request at once, so "
                     "Triton's queue time, which its autoscaling metric reads, stays near zero under load: rebuild "
                     "with enable_iter_perf_stats "
                     "(the default), scale it on a metric of your own, or fix the replicas")
    notes += driver_notes(checked.info, options.image)
    notes += memory_notes(Path(repo), checked.info, values["triton"]["resources"]["limits"]["memory"])
    if checked.rate_limit_off and (limited := sorted(name for name, c in configs.items()
                                                     if any(g.rate_limiter.resources for g in c.instance_group))):
        notes.append(f"{', '.join(limited)}: instance groups name rate-limiter resources, which tritonserver ignores "
                     "with its default --rate-limit=off, as these pods run it; deploy with --rate-limit "
                     "execution_count (or the spec's deploy.rate_limit) to apply them (docs/deploy.md)")
    written = write_repository(files, out, protect=[repo])
    return DeployReport(written, fmt, tuple(sorted(files)), values, tuple(notes))


def load_documents(texts: Iterable[str]) -> list[dict[str, Any]]:
    """Every YAML document of the rendered files (empty documents skipped)."""
    import yaml

    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]
