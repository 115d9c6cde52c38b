"""python_backends/onnx_runner/call_plan.py: where the cpu runner cuts length-sorted rows into ONNX Runtime calls."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from tritonforge.python_backends import load_module

plan_module: Any = load_module("onnx_runner", "call_plan")
CallCost = plan_module.CallCost


def cuts_cost(lengths: list[int], cuts: list[tuple[int, int]], cost: Any) -> float:
    return sum(cost(stop - start, max(lengths[start:stop])) for start, stop in cuts)


def every_cut(n: int, max_rows: int) -> list[list[tuple[int, int]]]:
    """Every way to cut n rows into consecutive calls of at most max_rows (brute force, n <= 9)."""
    found = []
    for bits in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, b in enumerate(bits) if b] + [n]
        cuts = list(itertools.pairwise(bounds))
        if all(stop - start <= max_rows for start, stop in cuts):
            found.append(cuts)
    return found


def test_the_plan_is_the_cheapest_cut_of_every_possible_one() -> None:
    rng = random.Random(17)
    for _ in range(60):
        n = rng.randint(1, 9)
        lengths = sorted((rng.randint(1, 64) for _ in range(n)), reverse=rng.random() < 0.5)
        cost = CallCost(rng.choice([0.0, 1e-3, 4e-3]), rng.choice([0.0, 2e-4]), rng.choice([0.0, 2e-7]))
        max_rows = rng.randint(1, 6)
        cuts = plan_module.plan(lengths, cost, max_rows)
        assert cuts[0][0] == 0 and cuts[-1][1] == n and all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
        assert all(0 < stop - start <= max_rows for start, stop in cuts)
        best = min(cuts_cost(lengths, c, cost) for c in every_cut(n, max_rows))
        assert cuts_cost(lengths, cuts, cost) == pytest.approx(best)


def test_a_large_fixed_cost_fills_calls_and_no_fixed_cost_never_pads() -> None:
    lengths = [30, 29, 29, 20, 12, 12, 11, 9]
    assert plan_module.plan(lengths, CallCost(1.0, 0.0, 0.0), 4) == [(0, 4), (4, 8)]
    assert plan_module.plan(lengths, CallCost(0.0, 1.0, 0.0), 4) == [(0, 1), (1, 3), (3, 4), (4, 6), (6, 7), (7, 8)]
    assert plan_module.plan([], CallCost(1.0, 1.0, 0.0), 4) == []


def test_fit_recovers_the_cost_it_was_sampled_from_and_never_goes_negative() -> None:
    truth = CallCost(4e-3, 2.4e-4, 1.6e-7)
    samples = [(r, w, truth(r, w)) for r in (1, 4) for w in (8, 32, 96)]
    fitted = plan_module.fit(samples)
    for got, want in zip((fitted.fixed, fitted.per_token, fitted.per_token_width), (4e-3, 2.4e-4, 1.6e-7), strict=True):
        assert got == pytest.approx(want, rel=1e-6)
    # per-token only, a little noise that would make the fixed part negative: that term is dropped, not kept < 0
    noisy = [(r, w, 1e-4 * r * w - (1e-5 if w == 8 else 0.0)) for r in (1, 4) for w in (8, 32, 96)]
    fitted = plan_module.fit(noisy)
    assert min(fitted.fixed, fitted.per_token, fitted.per_token_width) >= 0
    assert fitted(4, 32) == pytest.approx(1e-4 * 128, rel=0.05)


def test_measure_times_each_calibration_shape_and_keeps_the_fastest(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(plan_module.time, "perf_counter", lambda: clock[0])

    def run(rows: int, width: int) -> None:
        calls.append((rows, width))
        slow = 1.0 if len(calls) % 3 == 2 else 0.0  # the first timed call of each shape is disturbed by a neighbour
        clock[0] += 2e-3 + 1e-4 * rows * width + slow

    cost = plan_module.measure(run, repeats=2)
    shapes = [(r, w) for r in plan_module.CALIBRATION_ROWS for w in plan_module.CALIBRATION_WIDTHS]
    assert calls == [shape for shape in shapes for _ in range(3)]  # warm-up + 2 timed each
    assert cost.fixed == pytest.approx(2e-3) and cost.per_token == pytest.approx(1e-4)
    assert cost.per_token_width == pytest.approx(0.0, abs=1e-12)


def test_parse_reads_milliseconds_and_describe_prints_them() -> None:
    cost = plan_module.parse("4, 0.24, 0.00016")
    assert (cost.fixed, cost.per_token, cost.per_token_width) == pytest.approx((4e-3, 2.4e-4, 1.6e-7))
    assert cost.describe() == "4 ms per call + 0.24 ms per token + 0.00016 ms per token x width"


def test_the_timing_feed_holds_token_1_under_a_full_mask_and_segment_0() -> None:
    import numpy as np

    feed = plan_module.timing_feed(
        [("input_ids", np.int64), ("attention_mask", np.int64), ("token_type_ids", np.int32)], 2, 5
    )
    assert {n: (a.shape, a.dtype, int(a.min()), int(a.max())) for n, a in feed.items()} == {
        "input_ids": ((2, 5), np.int64, 1, 1),
        "attention_mask": ((2, 5), np.int64, 1, 1),
        "token_type_ids": ((2, 5), np.int32, 0, 0),
    }
