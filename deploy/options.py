"""`tritonforge deploy k8s`'s options (DeployOptions), checked for type before anything is read: the command line
cannot give a wrong type, the Python API can."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from tritonforge.errors import DeployError, Problem
from tritonforge.rate_limit import RateLimit
from tritonforge.trtllm.images import image_name_problem
from tritonforge.values import is_whole

if TYPE_CHECKING:
    from tritonforge.spec import DeploySettings


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

    def __post_init__(self) -> None:
        # a numpy integer (a count read from an array or a DataFrame) is taken as the int it is: stored as one, the
        # rendered YAML and JSON stay plain (`replicas: 2`, not a numpy object tag or a TypeError)
        for name in ("replicas", "gpus_per_replica"):
            value = getattr(self, name)
            if is_whole(value) and type(value) is not int:
                object.__setattr__(self, name, int(value))


# ------------------------------------------------------------------------------------------- argument types

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
    "gateway_image": ("--gateway-image", (str, type(None)), "an image name (str), or None"),
    "gateway_api_keys_secret": ("--gateway-api-keys-secret", (str, type(None)), "a Secret name (str), or None"),
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
