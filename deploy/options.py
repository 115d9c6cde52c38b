"""`tritonforge deploy k8s`'s options (DeployOptions), checked for type before anything is read: the command line
cannot give a wrong type, the Python API can."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from tritonforge.errors import DeployError, Problem
from tritonforge.rate_limit import RateLimit
from tritonforge.trtllm.images import image_name_problem
from tritonforge.values import is_whole

if TYPE_CHECKING:
    from tritonforge.spec import DeploySettings

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # RFC 1123: namespaces, claims
# a label's key: an optional DNS-subdomain prefix and '/', then a name; its value: a name or empty (both <= 63)
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
SERVICE_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # RFC 1035: Services (and KServe's names) start a-z
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
MAX_REPLICAS = 2**31 - 1  # a Deployment's replicas is an int32
MAX_NAME = 40  # the longest object name is <name>-prometheus-adapter... within 63: the suffixes follow the name


@dataclass(frozen=True)
class DeployOptions:
    """What the command line adds to the built repository (None: from the spec's `deploy:` section or a default)."""

    image: str
    repository_url: str  # s3://[host:port/]bucket/prefix, gs://bucket/prefix or pvc://claim[/sub/path]
    name: str | None = None  # default: the spec's name
    namespace: str = "default"
    credentials_secret: str | None = None
    region: str = "us-east-1"
    replicas: int | None = None
    gpus_per_replica: int | None = None
    gateway: bool = False
    gateway_image: str | None = None
    gateway_api_keys_secret: str | None = None
    rate_limit: RateLimit | None = None  # tritonserver's --rate-limit flags; None: the spec's deploy.rate_limit
    image_pull_secrets: tuple[str, ...] = ()  # Secrets the pods pull their images with (a private registry)
    # "key=value" labels added to the ServiceMonitor: a Prometheus picks ServiceMonitors by label (kube-prometheus-
    # stack's by default by `release: <its release name>`), so without it Triton's metrics were never scraped
    monitor_labels: tuple[str, ...] = ()
    # a Secret whose key `admin-key` guards Triton's admin APIs (shared memory, logging, trace, model control) as
    # `tritonforge serve`'s admin key does; without it they answer any pod that reaches Triton's Services
    admin_key_secret: str | None = None
    # prometheus-operator ServiceMonitors for Triton's and the gateway's /metrics; None: the spec's
    # deploy.service_monitor. Off on a cluster without prometheus-operator: `kubectl apply` fails on the unknown kind
    service_monitor: bool | None = None
    # the ServiceAccount Triton's pods run as: one bound to a cloud role (EKS IRSA, GKE Workload Identity) reads an
    # object-store repository without a --credentials-secret of static keys
    service_account: str | None = None

    def __post_init__(self) -> None:
        # a numpy integer (a count read from an array or a DataFrame) is taken as the int it is: stored as one, the
        # rendered YAML and JSON stay plain (`replicas: 2`, not a numpy object tag or a TypeError)
        for name in ("replicas", "gpus_per_replica"):
            value = getattr(self, name)
            if is_whole(value) and type(value) is not int:
                object.__setattr__(self, name, int(value))


# ------------------------------------------------------------------------------------------- argument types

def monitoring(options: DeployOptions, settings: DeploySettings) -> bool:
    """Whether ServiceMonitors are rendered: the command line's choice, else the spec's."""
    return settings.service_monitor if options.service_monitor is None else options.service_monitor


def _whole_or_none(value: object) -> bool:
    return value is None or is_whole(value)


# DeployOptions field -> (its command-line flag, the types it takes or the check it passes, what is allowed); `image`
# is image_name_problem's
_OPTION_TYPES: dict[str, tuple[str, tuple[type, ...] | Callable[[object], bool], str]] = {
    "repository_url": ("--repository-url", (str,), "a URL (str): s3://, gs:// or pvc://"),
    "name": ("--name", (str, type(None)), "a name (str), or None for the spec's name"),
    "namespace": ("--namespace", (str,), "a namespace name (str)"),
    "credentials_secret": ("--credentials-secret", (str, type(None)), "a Secret name (str), or None"),
    "region": ("--region", (str,), "an AWS region name (str)"),
    "replicas": ("--replicas", _whole_or_none, "a whole number, 1 or more, or None for the spec's"),
    "gpus_per_replica": ("--gpus", _whole_or_none, "a whole number of GPUs, or None for what the repository needs"),
    "gateway": ("--gateway", (bool,), "True or False"),
    "service_monitor": ("--service-monitor", (bool, type(None)), "True, False, or None for the spec's"),
    "service_account": ("--service-account", (str, type(None)), "a ServiceAccount name (str), or None"),
    "gateway_image": ("--gateway-image", (str, type(None)), "an image name (str), or None"),
    "gateway_api_keys_secret": ("--gateway-api-keys-secret", (str, type(None)), "a Secret name (str), or None"),
    "image_pull_secrets": (
        "--image-pull-secret",
        lambda v: isinstance(v, (tuple, list)) and all(isinstance(i, str) for i in v),
        "a tuple of Secret names (str)",
    ),
    "admin_key_secret": ("--admin-key-secret", (str, type(None)), "a Secret name (str), or None"),
    "monitor_labels": (
        "--monitor-label",
        lambda v: isinstance(v, (tuple, list)) and all(isinstance(i, str) for i in v),
        "a tuple of 'key=value' labels (str)",
    ),
    "rate_limit": (
        "--rate-limit",
        (RateLimit, type(None)),
        "a RateLimit (tritonforge.validator.RateLimit.from_options('execution_count', ['NAME:COUNT'])), or None for "
        "the spec's deploy.rate_limit",
    ),
}


def _given(value: object) -> str:
    return f"{value!r} ({type(value).__name__})"


def option_type_problems(options: object) -> list[Problem]:
    """Every DeployOptions field of the wrong type (the command line cannot give one; the Python API can), named by
    its flag and its field; a DeployError when ``options`` is not a DeployOptions at all."""
    if not isinstance(options, DeployOptions):
        allowed = ", ".join(f.name for f in fields(DeployOptions))
        message = f"got {_given(options)}; give DeployOptions(image=..., repository_url=...) (fields: {allowed})"
        raise DeployError([Problem("options", message)], "cannot deploy (nothing was written)")
    problems: list[Problem] = []
    if not isinstance(options.image, str):
        problems.append(Problem("--image", image_name_problem(options.image, pullable=True) or "not a str"))
    for name, (flag, accepts, allowed) in _OPTION_TYPES.items():
        value = getattr(options, name)
        if not (isinstance(value, accepts) if isinstance(accepts, tuple) else accepts(value)):
            problems.append(Problem(flag, f"DeployOptions.{name} is {_given(value)}: give {allowed}"))
    return problems


def path_problem(what: str, value: object) -> Problem | None:
    """A folder argument that is not a path (str or os.PathLike)."""
    if isinstance(value, str | os.PathLike):
        return None
    return Problem(what, f"got {_given(value)}; give a folder path (str or pathlib.Path)")


def rate_limit(options: DeployOptions, settings: DeploySettings) -> RateLimit:
    """The command line's (or the Python API's) rate limiting, else the spec's `deploy:` section's (default off)."""
    return options.rate_limit if options.rate_limit is not None else settings.rate_limiting()


# ------------------------------------------------------------------------------------------- argument values

def name_from_spec(value: str) -> str:
    """A DNS-1123 label from a spec name: lowercase, '-' for anything else."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", value.lower())).strip("-")


def option_value_problems(
    options: DeployOptions, settings: DeploySettings, spec_name: str
) -> tuple[str, list[Problem]]:
    """The objects' name (--name, else the spec's made a label) and every option value Kubernetes would refuse or
    that would not do what it says."""
    problems: list[Problem] = []
    name = name_from_spec(options.name or spec_name)
    if options.name is not None and name != options.name:  # the spec's name is made a label; a given one is kept
        problems.append(Problem("--name", f"{options.name!r}: use lowercase letters, digits and '-' (e.g. {name!r})"))
    elif not name or len(name) > MAX_NAME or not SERVICE_NAME.fullmatch(name):
        # the Services are named after it: Kubernetes refuses a Service name that starts with a digit
        problems.append(Problem("--name", (
            f"{name!r}: use 1-{MAX_NAME} lowercase letters, digits and '-', starting with a letter (suffixes follow)"
        )))
    if not DNS_LABEL.fullmatch(options.namespace) or len(options.namespace) > 63:
        problems.append(Problem("--namespace", f"{options.namespace!r} is not a valid namespace name"))
    if image_problem := image_name_problem(options.image, pullable=True):
        problems.append(Problem("--image", image_problem))
    problems += _replicas_problems(options.replicas, settings)
    for secret in options.image_pull_secrets:
        if not SECRET_NAME.fullmatch(secret):
            problems.append(Problem("--image-pull-secret", f"{secret!r} is not a valid Secret name"))
    problems += [Problem("--monitor-label", p) for p in monitor_label_problems(options.monitor_labels)]
    if options.monitor_labels and not monitoring(options, settings):
        problems.append(Problem("--monitor-label", "labels the ServiceMonitor, which --no-service-monitor (or the "
                                                   "spec's deploy.service_monitor: false) leaves out"))
    if options.service_account is not None and not SECRET_NAME.fullmatch(options.service_account):
        problems.append(Problem("--service-account", f"{options.service_account!r} is not a valid ServiceAccount name"))
    if options.admin_key_secret is not None and not SECRET_NAME.fullmatch(options.admin_key_secret):
        problems.append(Problem("--admin-key-secret", f"{options.admin_key_secret!r} is not a valid Secret name"))
    if not options.gateway:  # accepted and ignored, they read as if a gateway were deployed
        for flag, given in (("--gateway-image", options.gateway_image),
                            ("--gateway-api-keys-secret", options.gateway_api_keys_secret)):
            if given is not None:
                problems.append(Problem(flag, "needs --gateway (no gateway is deployed without it)"))
    else:
        if options.gateway_image and (found := image_name_problem(options.gateway_image, pullable=True)):
            problems.append(Problem("--gateway-image", found))
        if options.gateway_api_keys_secret and not SECRET_NAME.fullmatch(options.gateway_api_keys_secret):
            problems.append(Problem(
                "--gateway-api-keys-secret", f"{options.gateway_api_keys_secret!r} is not a valid Secret name"
            ))
    return name, problems


def monitor_labels(given: tuple[str, ...]) -> dict[str, str]:
    """The ServiceMonitor's added labels from "key=value" strings (checked by monitor_label_problems)."""
    return dict(label.partition("=")[::2] for label in given)


def monitor_label_problems(given: tuple[str, ...]) -> list[str]:
    problems = []
    for label in given:
        key, eq, value = label.partition("=")
        prefix, slash, short = key.rpartition("/")
        if not eq:
            problems.append(f"{label!r}: give key=value (e.g. release=kube-prometheus-stack)")
        elif not LABEL_NAME.fullmatch(short) or (slash and not LABEL_PREFIX.fullmatch(prefix)):
            problems.append(f"{label!r}: {key!r} is not a label key ([prefix/]name, name 1-63 of A-Z a-z 0-9 -_.)")
        elif value and not LABEL_NAME.fullmatch(value):
            problems.append(f"{label!r}: {value!r} is not a label value (0-63 of A-Z a-z 0-9 -_., alphanumeric ends)")
        elif key.startswith("app.kubernetes.io/"):
            problems.append(f"{label!r}: tritonforge sets the app.kubernetes.io/ labels (they select the pods)")
    keys = [label.partition("=")[0] for label in given]
    problems += [f"{key!r} is given more than once" for key in sorted({k for k in keys if keys.count(k) > 1})]
    return problems


def _replicas_problems(replicas: int | None, settings: DeploySettings) -> list[Problem]:
    if replicas is None:
        return []
    if not 1 <= replicas <= MAX_REPLICAS:
        return [Problem("--replicas", f"{replicas}: give 1 to {MAX_REPLICAS} (Kubernetes' int32)")]
    scaling = settings.autoscaling
    if scaling.enabled:
        # the HorizontalPodAutoscaler owns the count (no replicas is rendered): the flag would do nothing
        return [Problem("--replicas", (
            f"{replicas}: the spec's deploy.autoscaling is enabled, and its HorizontalPodAutoscaler keeps "
            f"{scaling.min_replicas}-{scaling.max_replicas} replicas: change min_replicas/max_replicas in the spec, "
            "or set autoscaling.enabled: false to fix the count"
        ))]
    return []
