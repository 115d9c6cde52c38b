"""The runner's parameters a spec may set, checked once: by the runner when it loads (a hand-edited config) and by
tritonforge's spec when it is read (so a bad value fails the build, not the server's load). Pure Python: the runner
loads this file beside its model.py in NGC containers, where tritonforge is not installed."""

from __future__ import annotations

from collections.abc import Callable, Mapping

CHOICES = {"engine": ("onnxruntime", "torch"), "cpu_affinity": ("none", "instance")}
COUNTS = ("max_rows_per_call", "intra_op_thread_count", "inter_op_thread_count")  # whole numbers >= 0 (0: default)


def problems(params: Mapping[str, str], parse_call_cost: Callable[[str], object]) -> list[tuple[str, str]]:
    """``[(parameter, message)]`` for values the runner cannot use; ``parse_call_cost``: call_plan.parse, which
    raises ValueError naming the format (passed in: this file and call_plan.py are loaded separately)."""
    found: list[tuple[str, str]] = []
    for name, allowed in CHOICES.items():
        value = params.get(name)
        if value is not None and value.strip() not in (*allowed, ""):
            found.append((name, f"parameter {name} must be {' or '.join(repr(a) for a in allowed)}, got {value!r}"))
    for name in COUNTS:
        value = params.get(name)
        if value is not None and value.strip() and not value.strip().isdigit():
            found.append((name, f"parameter {name} must be a whole number >= 0 (0: the default), got {value!r}"))
    cost = params.get("call_cost")
    if cost is not None and cost.strip() != "auto":
        try:
            parse_call_cost(cost)
        except ValueError as err:
            found.append(("call_cost", f"{err} (or 'auto': fitted at load)"))
    return found
