"""Overload: a model with a tiny queue (``max_queue_size: 2``) rejects the excess at once, and keeps serving.

The ``slow`` toy model takes 0.2 s per request, one at a time (``max_batch_size: 1``, one instance); its default
queue policy holds two more. Thirty simultaneous requests: two or three are served (a few more if they arrive
late), the rest must come back with Triton's "Exceeds maximum queue size" (gRPC UNAVAILABLE, HTTP 503) in
milliseconds, long before a queued request would have been answered.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.errors import OverloadedError

pytestmark = pytest.mark.integration

N = 30
SLOW_S = 0.2
QUEUE_FULL = "Exceeds maximum queue size"


def _client(server, protocol: str):  # type: ignore[no-untyped-def]
    if protocol == "grpc":
        import tritonclient.grpc as mod

        return mod.InferenceServerClient(server.endpoints.grpc)
    import tritonclient.http as mod

    return mod.InferenceServerClient(server.endpoints.http, connection_timeout=10, network_timeout=10)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_excess_requests_are_rejected_fast(misbehaving_server, robust, protocol: str) -> None:
    clients = [_client(misbehaving_server, protocol) for _ in range(N)]
    inputs = [robust.slow_request(SLOW_S, protocol) for _ in range(N)]
    start = threading.Barrier(N)

    def one(k: int) -> tuple[str, str, float]:
        kwargs = {"client_timeout": 10} if protocol == "grpc" else {}
        start.wait(timeout=10)
        began = time.perf_counter()
        try:
            clients[k].infer("slow", inputs[k], **kwargs)
        except Exception as err:
            return str(err.status()), err.message(), time.perf_counter() - began  # type: ignore[attr-defined]
        return "ok", "", time.perf_counter() - began

    began = time.perf_counter()
    try:
        with ThreadPoolExecutor(N) as pool:
            results = list(pool.map(one, range(N)))
    finally:
        for c in clients:
            c.close()
    wall = time.perf_counter() - began

    served = [r for r in results if r[0] == "ok"]
    rejected = [r for r in results if r[0] != "ok"]
    expected_status = "StatusCode.UNAVAILABLE" if protocol == "grpc" else "503"
    assert all(status == expected_status and QUEUE_FULL in message for status, message, _ in rejected), rejected
    # one runs and two wait; a request that arrives after the first one finished may take a freed place. When the
    # whole burst lands before the instance has taken the first request out of the queue, that one still counts
    # toward max_queue_size and only two are served (seen once under load: 0.23 s and 0.43 s, the rest refused)
    assert 2 <= len(served) <= 6, results
    assert len(rejected) >= N - 6
    rejection_s = [t for *_, t in rejected]
    assert statistics.median(rejection_s) < 0.1, rejection_s  # refused on arrival, not after waiting
    assert max(rejection_s) < 0.5, rejection_s
    assert max(t for *_, t in served) >= 2 * SLOW_S  # the queued ones really waited behind the running one
    assert wall < 5, f"{N} requests took {wall:.1f}s"

    # still healthy: the server, the overloaded model and its neighbour answer
    with Client(misbehaving_server.endpoints.grpc, timeout=10, retries=0) as client:
        assert client.is_ready()
        for model in ("slow", "steady"):
            out = client.infer(model, {"SECONDS": np.zeros((1, 1), np.float32)}, ["SLEPT"])
            assert out["SLEPT"].shape == (1, 1)


def test_client_reports_queue_full_as_overloaded_without_retrying(misbehaving_server, robust) -> None:
    """tritonforge's Client reports a queue-full rejection as an OverloadedError naming Triton's reason, and does
    not retry it (retries=3 here): re-sending at once would only add to the overload."""
    import tritonclient.grpc as grpcclient

    # One request runs, one may already be staged for the instance by the scheduler, two wait in the queue: six
    # requests of 4 s each overfill that (at least one is shed) and keep it full for seconds on a loaded machine
    # (2 s each was not enough once in CI: the last requests arrived so late that the first had ended by the probe).
    # The wait ends on a shed request or on the pending gauge at its limit, never on a served one: a completion
    # frees a place, and the probe below could then be admitted (seen in CI when the five busy requests of an
    # earlier version arrived more slowly than the first one ran).
    busy = [grpcclient.InferenceServerClient(misbehaving_server.endpoints.grpc) for _ in range(6)]
    done: list[object] = []
    try:
        for c in busy:
            c.async_infer("slow", robust.slow_request(4.0), callback=lambda result, error: done.append(error), client_timeout=30)
        assert robust.wait_for(
            lambda: any(e is not None for e in done) or _queue_full(misbehaving_server), timeout=10
        ), f"the slow model's queue never filled: {done}"
        assert all(e is not None for e in done), f"a busy request finished before the probe could be sent: {done}"
        began = time.perf_counter()
        with Client(misbehaving_server.endpoints.grpc, timeout=10, retries=3) as client, pytest.raises(
            OverloadedError, match=QUEUE_FULL
        ):
            client.infer("slow", {"SECONDS": np.zeros((1, 1), np.float32)})
        assert time.perf_counter() - began < 0.3  # rejected at once, not retried
        assert robust.wait_for(lambda: len(done) == len(busy), timeout=30)
        served = [e for e in done if e is None]
        assert len(served) >= 3, done  # the admitted requests were served
        assert all(QUEUE_FULL in str(e) for e in done if e is not None), done
    finally:
        for c in busy:
            c.close()


def _queue_full(server) -> bool:  # type: ignore[no-untyped-def]
    """Triton's pending-request gauge for `slow` shows the queue at its limit (2 waiting + 1 staged)."""
    import urllib.request

    with urllib.request.urlopen(f"http://{server.endpoints.metrics}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith("nv_inference_pending_request_count") and 'model="slow"' in line:
            return float(line.rsplit(" ", 1)[1]) >= 3
    return False
