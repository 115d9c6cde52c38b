"""How a tritonserver rate-limits (``--rate-limit``, ``--rate-limit-resource``): the one option type that ``serve``,
``validate`` and ``deploy k8s`` share, with its parsing and its checks.

It sits at the spec level (it imports only the error tree) so that the spec's ``deploy:`` section checks its
rate-limit fields with the same rules as the command line; the validator (:mod:`tritonforge.validation.rate_limit`,
rule R44) checks a repository against it, and serve and deploy turn it into tritonserver's flags.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tritonforge.errors import OptionError

RateLimitMode = Literal["off", "execution_count"]
RATE_LIMIT_MODES: tuple[RateLimitMode, ...] = ("off", "execution_count")
GLOBAL = "global"  # the key of a global resource; a device-specific one is keyed by its device id


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
            if r.name == name and (key in (GLOBAL, None) or r.device is None or r.device == key)
        ]
        return max(counts, default=0)
