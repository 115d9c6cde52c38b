"""R44: the rate limiter's resource checks, which Triton makes only when it runs with ``--rate-limit=execution_count``.

With the default ``--rate-limit=off`` (how tritonforge's ``serve`` and ``deploy k8s`` run Triton) the rate limiter
registers no instance resources at all (core ``RateLimiter::RegisterModelInstance`` skips the resource manager when
``ignore_resources_and_priority_``), so a repository these rules refuse still loads. :class:`RateLimit` says how the
target server runs; the checks follow core's ``RateLimiter::ResourceManager`` (triton-inference-server/core,
``src/rate_limiter.cc``: ``AddModelInstance``, ``ParseAndValidateExplicitResources``, ``ValidateMaxResources``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from tritonforge.config_io import model_config_pb2
from tritonforge.errors import OptionError
from tritonforge.validation.common import _Model

RateLimitMode = Literal["off", "execution_count"]
RATE_LIMIT_MODES: tuple[RateLimitMode, ...] = ("off", "execution_count")
_GLOBAL = "global"  # the key of a global resource; a device-specific one is keyed by its device id


@dataclass(frozen=True)
class RateLimitResource:
    """One ``--rate-limit-resource=<name>:<count>[:<device>]``: ``count`` copies of ``name`` on ``device``, or on
    every device when ``device`` is None."""

    name: str
    count: int
    device: int | None = None

    def __post_init__(self) -> None:
        if not self.name or ":" in self.name:
            raise OptionError(f"rate-limit resource name {self.name!r}: must be non-empty and contain no ':'")
        if self.count < 0:
            raise OptionError(f"rate-limit resource {self.name!r}: count {self.count} must be 0 or more")
        if self.device is not None and self.device < 0:
            raise OptionError(
                f"rate-limit resource {self.name!r}: device {self.device} must be a device id (0 or more)"
            )

    @classmethod
    def parse(cls, text: str) -> RateLimitResource:
        """Parse tritonserver's ``<name>:<count>`` or ``<name>:<count>:<device>``."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
            raise OptionError(
                f"--rate-limit-resource {text!r}: expected '<name>:<count>' or '<name>:<count>:<device>' "
                "(as tritonserver takes it)"
            )
        try:
            numbers = [int(p) for p in parts[1:]]
        except ValueError:
            raise OptionError(f"--rate-limit-resource {text!r}: count and device must be integers") from None
        return cls(parts[0], numbers[0], numbers[1] if len(numbers) == 2 else None)


@dataclass(frozen=True)
class RateLimit:
    """How the target tritonserver rate-limits: ``--rate-limit`` and every ``--rate-limit-resource``."""

    mode: RateLimitMode = "off"
    resources: tuple[RateLimitResource, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in RATE_LIMIT_MODES:
            raise OptionError(f"--rate-limit {self.mode!r}: allowed are {', '.join(RATE_LIMIT_MODES)}")
        if self.resources and self.mode == "off":
            # tritonserver accepts and ignores them (checked with 2.51): refused here, as a likely forgotten flag
            raise OptionError(
                "--rate-limit-resource needs --rate-limit=execution_count: with rate limiting off tritonserver ignores "
                "every resource count; pass both, or neither"
            )

    @classmethod
    def from_options(cls, mode: str, resources: Iterable[str] = ()) -> RateLimit:
        return cls(mode, tuple(RateLimitResource.parse(r) for r in resources))  # type: ignore[arg-type]

    def server_args(self) -> list[str]:
        """tritonserver's flags for this rate limiting (none when off, Triton's default)."""
        if self.mode == "off":
            return []
        resources = [f"{r.name}:{r.count}" + ("" if r.device is None else f":{r.device}") for r in self.resources]
        return [f"--rate-limit={self.mode}", *(f"--rate-limit-resource={r}" for r in resources)]

    def available(self, name: str, key: int | str | None) -> int:
        """Core's explicit count for a resource an instance needs: a global one takes the largest count given for
        the name on any device; a device-specific one the largest given for its device or for every device. An
        unlisted resource has 0 copies. ``key`` None is a GPU instance whose device is unknown (validated with
        ``gpus=None``): every entry for the name counts, so nothing is refused on a guess."""
        counts = [
            r.count
            for r in self.resources
            if r.name == name and (key in (_GLOBAL, None) or r.device is None or r.device == key)
        ]
        return max(counts, default=0)


def _instance_needs(model: _Model) -> Iterator[tuple[str, int | str | None, int]]:
    """(resource, device key, count) for every instance of the model. Core keys a device-specific resource by the
    instance's device id: the GPU for KIND_GPU, 0 for KIND_CPU and KIND_MODEL instances."""
    gpu = model_config_pb2().ModelInstanceGroup.KIND_GPU
    for group in model.config.instance_group:
        devices: list[int | None] = (list(group.gpus) or [None]) if group.kind == gpu else [0]
        for resource in group.rate_limiter.resources:
            for device in devices:
                key = _GLOBAL if getattr(resource, "global") else device
                yield resource.name, key, resource.count


def check_rate_limiter(models: dict[str, _Model], rate_limit: RateLimit) -> None:
    """Append, to each model whose instances Triton would refuse, core's message. Explicit counts are checked
    first, as in core. Each model is judged on its own needs: core fails the model whose instance pushes a resource
    past its limit and then removes that model's instances, so the others load."""
    if rate_limit.mode == "off":
        return
    users = [m for m in models.values() if not m.findings.poll and not m.is_ensemble]
    if rate_limit.resources:
        for model in users:
            needs: dict[tuple[str, int | str | None], int] = {}
            for name, key, count in _instance_needs(model):
                needs[name, key] = max(count, needs.get((name, key), 0))
            for (name, key), need in sorted(needs.items(), key=str):
                limit = rate_limit.available(name, key)
                if limit < need:
                    model.cross.append(
                        f'Resource count for "{name}" is limited to {limit} which will prevent scheduling of one or '
                        f"more model instances, the minimum required count is {need}"
                    )
    scopes: dict[str, set[bool]] = {}
    for model in users:
        for name, key, _ in _instance_needs(model):
            scopes.setdefault(name, set()).add(key == _GLOBAL)
    for model in users:
        mixed = sorted({name for name, _, _ in _instance_needs(model) if len(scopes[name]) > 1})
        for name in mixed:
            model.cross.append(
                f'Resource "{name}" is present as both global and device-specific resource in the model configuration.'
            )
