"""R44: the rate limiter's resource checks, which Triton makes only when it runs with ``--rate-limit=execution_count``.

With the default ``--rate-limit=off`` (how tritonforge's ``serve`` and ``deploy k8s`` run Triton unless told) the
rate limiter registers no instance resources at all (core ``RateLimiter::RegisterModelInstance`` skips the resource
manager when ``ignore_resources_and_priority_``), so a repository these rules refuse still loads. :class:`RateLimit`
(defined in :mod:`tritonforge.rate_limit`, re-exported here) says how the target server runs; the checks follow
core's ``RateLimiter::ResourceManager`` (triton-inference-server/core, ``src/rate_limiter.cc``: ``AddModelInstance``,
``ParseAndValidateExplicitResources``, ``ValidateMaxResources``).
"""

from __future__ import annotations

from collections.abc import Iterator

from tritonforge.config_io import model_config_pb2
from tritonforge.rate_limit import GLOBAL, RATE_LIMIT_MODES, RateLimit, RateLimitMode, RateLimitResource
from tritonforge.validation.common import _Model

__all__ = ["RATE_LIMIT_MODES", "RateLimit", "RateLimitMode", "RateLimitResource", "check_rate_limiter"]


def _instance_needs(model: _Model) -> Iterator[tuple[str, int | str | None, int]]:
    """(resource, device key, count) for every instance of the model. Core keys a device-specific resource by the
    instance's device id: the GPU for KIND_GPU, 0 for KIND_CPU and KIND_MODEL instances."""
    gpu = model_config_pb2().ModelInstanceGroup.KIND_GPU
    for group in model.config.instance_group:
        devices: list[int | None] = (list(group.gpus) or [None]) if group.kind == gpu else [0]
        for resource in group.rate_limiter.resources:
            for device in devices:
                key = GLOBAL if getattr(resource, "global") else device
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
            scopes.setdefault(name, set()).add(key == GLOBAL)
    for model in users:
        mixed = sorted({name for name, _, _ in _instance_needs(model) if len(scopes[name]) > 1})
        for name in mixed:
            model.cross.append(
                f'Resource "{name}" is present as both global and device-specific resource in the model configuration.'
            )
