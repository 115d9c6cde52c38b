"""How the cpu runner cuts a batch's length-sorted rows into ONNX Runtime calls (shipped beside model.py).

A call on one CPU thread costs about `fixed + per_token * rows * width + per_token_width * rows * width**2` seconds,
width being the call's longest row (every row is padded to it). `fixed` is large for a small encoder: a call
streams every weight matrix from memory however few tokens it carries (all-MiniLM-L6-v2, one thread on a 2-core
AVX2 EPYC: ~4 ms fixed against ~0.24 ms per token, so a 1 x 8 call costs as much as ~17 more tokens). Fixed-size
calls either pay `fixed` too often (small calls) or pad too much (large calls of rows of different lengths);
`plan` picks the cut of the sorted rows with the least predicted cost instead (dynamic programming, exact for the
model). Measured in process, two 1-thread sessions, the benchmark's sentences: +4-6% over calls of 4 rows at
batch 20, +9-14% at batch 64 (four runs of tests/bench/probe_call_plan.py).

The cost is fitted once per model instance, at load, from a few timed calls of the instance's own session
(`measure`, ~0.5 s), so it follows the model and the machine; the config parameter `call_cost` may give it
instead ("fixed_ms,per_token_ms,per_token_width_ms").
"""

# no `from __future__ import annotations` here: CallCost is a dataclass, and a dataclass with string annotations
# looks its module up in sys.modules, where model.py's _load_sibling (loading this file by path) never puts it
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

# timed at load: wide enough to see the attention's quadratic term, small enough to take well under a second
CALIBRATION_ROWS = (1, 4)
CALIBRATION_WIDTHS = (8, 32, 96)


@dataclass(frozen=True)
class CallCost:
    """Predicted seconds of one call of `rows` rows padded to `width` tokens."""

    fixed: float
    per_token: float
    per_token_width: float

    def __call__(self, rows: int, width: int) -> float:
        tokens = rows * width
        return self.fixed + self.per_token * tokens + self.per_token_width * tokens * width

    def describe(self) -> str:
        return (f"{self.fixed * 1e3:.3g} ms per call + {self.per_token * 1e3:.3g} ms per token"
                f" + {self.per_token_width * 1e3:.3g} ms per token x width")


# when the calls cannot be timed: all-MiniLM-L6-v2's, one thread, 2-core AVX2 EPYC (a different model or machine
# only shifts where the cheapest cut lies; planned cuts measured as fast with the fixed part halved or doubled)
DEFAULT = CallCost(fixed=4e-3, per_token=2.5e-4, per_token_width=1.5e-7)


def parse(text: str) -> CallCost:
    """`call_cost` parameter: "fixed_ms,per_token_ms,per_token_width_ms", each a number >= 0."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) / 1e3 for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(not v >= 0 for v in values):
        raise ValueError(
            f"parameter call_cost must be three numbers >= 0, 'fixed_ms,per_token_ms,per_token_width_ms', got {text!r}"
        )
    return CallCost(*values)


def fit(samples: Sequence[tuple[int, int, float]]) -> CallCost:
    """Least-squares CallCost from (rows, width, seconds) samples, no term below zero (a negative one would make the
    plan prefer absurd cuts)."""
    design = np.array([[1.0, r * w, r * w * w] for r, w, _ in samples])
    seconds = np.array([s for _, _, s in samples])
    active = [0, 1, 2]
    while True:  # drop a term that comes out negative and refit: a tiny non-negative least squares
        coef, *_ = np.linalg.lstsq(design[:, active], seconds, rcond=None)
        if (coef >= 0).all() or len(active) == 1:
            break
        active.pop(int(np.argmin(coef)))
    full = [0.0, 0.0, 0.0]
    for index, value in zip(active, coef, strict=True):
        full[index] = max(0.0, float(value))
    return CallCost(*full)


def timing_feed(inputs: Iterable[tuple[str, type[np.generic]]], rows: int, width: int) -> dict[str, np.ndarray]:
    """A feed for timing a call: token id 1 under a full mask and 0 in any other input (segment 0 exists in every
    vocabulary of segments, 1 not always); `inputs` are (name, numpy dtype) pairs. It costs what real tokens do."""
    ones = ("input_ids", "attention_mask")
    return {name: np.full((rows, width), int(name in ones), dtype) for name, dtype in inputs}


def measure(run: Callable[[int, int], object], repeats: int = 2) -> CallCost:
    """Fit the cost of `run(rows, width)` (one call of that shape), the fastest of `repeats` timings after a warm-up
    call per shape: the fastest, because a neighbour's load only ever adds time."""
    samples = []
    for rows in CALIBRATION_ROWS:
        for width in CALIBRATION_WIDTHS:
            run(rows, width)
            best = float("inf")
            for _ in range(repeats):
                began = time.perf_counter()
                run(rows, width)
                best = min(best, time.perf_counter() - began)
            samples.append((rows, width, best))
    return fit(samples)


def plan(lengths: Sequence[int], cost: Callable[[int, int], float], max_rows: int) -> list[tuple[int, int]]:
    """Cut rows sorted by length (either direction) into consecutive calls of at most `max_rows` rows with the least
    total predicted cost; returns (start, stop) index pairs in order. A call is as wide as its longest row."""
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for stop in range(1, n + 1):
        for start in range(max(0, stop - max_rows), stop):
            width = max(lengths[start], lengths[stop - 1])  # sorted: the widest row is at one end
            total = best[start] + cost(stop - start, max(1, int(width)))
            if total < best[stop]:
                best[stop], cut[stop] = total, start
    calls, stop = [], n
    while stop > 0:
        calls.append((cut[stop], stop))
        stop = cut[stop]
    return calls[::-1]
