"""Triton's dynamic-batching rules (R28-R30), one copy: the validator applies them to a config on disk
(:func:`tritonforge.validation.config_rules._dynamic_batching_rules`), the spec to a model's `dynamic_batching`
while it is loaded, so both answer in Triton's words. Each problem comes with the field it is about."""

from __future__ import annotations

from collections.abc import Iterable


def dynamic_batching_problems(
    name: str | None,
    *,
    max_batch_size: int | None,
    preferred_batch_sizes: Iterable[int],
    priority_levels: int,
    default_priority_level: int,
    policy_levels: Iterable[int],
    preserve_ordering: bool,
    delays_on_timeout: bool,
) -> list[tuple[str, str]]:
    """``[(field, Triton's message)]``; ``max_batch_size`` None: not known here (the preferred-size bound is left to
    whoever knows it); ``delays_on_timeout``: a queue policy has timeout_action DELAY with a default timeout."""
    whose = "" if name is None else f" for {name}"  # the spec names the model by its field path instead
    found: list[tuple[str, str]] = []
    for size in preferred_batch_sizes:  # R28
        if size <= 0:
            found.append(("preferred_batch_sizes", f"dynamic batching preferred size must be positive{whose}"))
        elif max_batch_size is not None and size > max_batch_size:
            found.append(
                ("preferred_batch_sizes", f"dynamic batching preferred size must be <= max batch size{whose}")
            )
    if priority_levels != 0:  # R29
        if not 1 <= default_priority_level <= priority_levels:
            found.append((
                "default_priority_level",
                f"default priority level must be in range [1, {priority_levels}]{whose}",
            ))
        if any(not 1 <= level <= priority_levels for level in policy_levels):
            found.append((
                "priority_queue_policy",
                f"priority queue policy must have priority level in range [1, {priority_levels}]{whose}",
            ))
    if preserve_ordering:  # R30
        if priority_levels > 1:
            found.append((
                "preserve_ordering",
                f"Only one priority level is allowed when 'preserve_ordering' is true{whose}",
            ))
        if delays_on_timeout:
            found.append((
                "preserve_ordering",
                f"Queue policy can not have DELAY as timeout action when 'preserve_ordering' is true{whose}",
            ))
    return found
