"""The load generators' stop event and backoff, over fake sessions (tests/integration/test_bench.py runs them
against a real Triton): found by the quality/bench audit."""

from __future__ import annotations

import random
import threading
import time

import pytest

from tritonforge.bench.loadgen import _closed_loop, _open_loop, _Pool, connection_failure
from tritonforge.triton.load import Sample

REFUSED = "UNAVAILABLE: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Connection refused"


class _Session:
    """Answers after ``seconds``, or fails at once with ``error``."""

    def __init__(self, seconds: float = 0.01, error: str = "") -> None:
        self.seconds, self.error = seconds, error

    def send(self, index: int, due: float | None = None) -> Sample:
        start = time.perf_counter()
        if self.error:
            return Sample(start if due is None else due, time.perf_counter(), False, self.error)
        time.sleep(self.seconds)
        return Sample(start if due is None else due, time.perf_counter(), True)

    def close(self) -> None:
        pass


def _stop_after(seconds: float) -> threading.Event:
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    return stop


@pytest.mark.parametrize("open_loop", [False, True])
def test_a_stop_ends_a_level_after_the_requests_in_flight(open_loop: bool) -> None:
    """Ctrl-C went on loading the server until the level's --duration ended."""
    pool = _Pool(4, _Session)
    try:
        stop = _stop_after(0.3)
        began = time.perf_counter()
        if open_loop:
            samples, *_ = _open_loop(pool, 4, 50.0, 30.0, None, random.Random(0), stop)
        else:
            samples, _ = _closed_loop(pool, 4, 30.0, None, stop)
        took = time.perf_counter() - began
    finally:
        pool.close()
    assert took < 1.0, f"a 30 s level ran {took:.1f}s after a stop at 0.3 s"
    assert samples and all(s.ok for s in samples)


def test_a_closed_loop_backs_off_after_connection_failures() -> None:
    """A dead server got ~16,000 requests per second per level (tens of thousands of 'connection refused')."""
    pool = _Pool(2, lambda: _Session(error=REFUSED))
    try:
        began = time.perf_counter()
        samples, _ = _closed_loop(pool, 2, 1.0, None)
        took = time.perf_counter() - began
    finally:
        pool.close()
    assert 0.9 < took < 1.5  # the backoff never outlasts the level
    assert 2 <= len(samples) <= 2 * 12, len(samples)  # 50 ms, doubling to 1 s: ~6 attempts per worker in 1 s


def test_a_model_error_is_not_backed_off() -> None:
    pool = _Pool(1, lambda: _Session(error="INVALID_ARGUMENT: TEXT must not be empty"))
    try:
        samples, _ = _closed_loop(pool, 1, 0.2, None)
    finally:
        pool.close()
    assert len(samples) > 100  # the model's answer: measured as fast as it comes


@pytest.mark.parametrize(
    "error, expected",
    [
        (REFUSED, True),
        ("UNAVAILABLE: Stream removed (Socket closed)", True),
        ("[Errno 111] Connection refused", True),  # HTTP
        ("Connection reset by peer", True),
        ("INVALID_ARGUMENT: TEXT must not be empty", False),
        ("DEADLINE_EXCEEDED: Deadline Exceeded", False),
        ("NOT_FOUND: Request for unknown model: 'embed' has no available versions", False),
    ],
)
def test_connection_failures_are_told_from_the_models_answers(error: str, expected: bool) -> None:
    assert connection_failure(error) is expected
