"""Load patterns: closed-loop concurrency and open-loop Poisson arrivals over a pool of worker sessions."""

from __future__ import annotations

import queue
import random
import re
import threading
import time
from collections.abc import Callable, Sequence

from tritonforge.triton.load import LoadSession, Sample

MAX_OPEN_LOOP_REQUESTS = 1_000_000
# After a failure that never reached the model (the server is gone, the port refuses), a closed-loop worker waits
# before its next request, doubling up to the maximum: without it a dead server got tens of thousands of requests
# (and as many "connection refused" lines) per level. Reset by the next success.
BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0
_CONNECTION_FAILURE = re.compile(
    r"^UNAVAILABLE\b|connection refused|connection reset|failed to connect|broken pipe|server ?disconnected"
    r"|stream removed|socket closed|name or service not known",
    re.IGNORECASE,
)


def connection_failure(error: str) -> bool:
    """True for a failed request whose message says the connection failed (not the model's answer)."""
    return bool(_CONNECTION_FAILURE.search(error))

# ----------------------------------------------------------------------------------------------- load patterns


def _budget(max_requests: int | None) -> Callable[[], bool]:
    """A thread-safe ticket counter: True while requests may still be sent."""
    if max_requests is None:
        return lambda: True
    lock = threading.Lock()
    left = [max_requests]

    def take() -> bool:
        with lock:
            if left[0] <= 0:
                return False
            left[0] -= 1
            return True

    return take


class _Pool:
    """Worker threads that each own one session for the whole benchmark.

    A session's gRPC stream is read by the thread that opened it, and each worker measures one request at a time on
    a connection of its own: sessions live in long-lived threads and each phase is handed to them.
    """

    def __init__(self, size: int, make: Callable[[], LoadSession]) -> None:
        self._jobs: list[queue.Queue[Callable[[LoadSession], None] | None]] = [queue.Queue() for _ in range(size)]
        self._done: queue.Queue[BaseException | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._serve, args=(q, make), daemon=True, name=f"bench-{i}")
            for i, q in enumerate(self._jobs)
        ]
        for t in self._threads:
            t.start()
        self._collect(size)  # every session made (or the first failure raised)

    def _serve(self, jobs: queue.Queue[Callable[[LoadSession], None] | None], make: Callable[[], LoadSession]) -> None:
        try:
            session = make()
        except BaseException as err:
            self._done.put(err)
            return
        self._done.put(None)
        try:
            while (job := jobs.get()) is not None:
                try:
                    job(session)
                except BaseException as err:  # a bug in a worker must not vanish with its thread
                    self._done.put(err)
                else:
                    self._done.put(None)
        finally:
            session.close()

    def _collect(self, count: int) -> None:
        errors = [e for e in (self._done.get() for _ in range(count)) if e is not None]
        if errors:
            self.close()
            raise errors[0]

    def run(self, jobs: Sequence[Callable[[LoadSession], None]]) -> None:
        """Run ``jobs[i]`` on worker ``i``; return when all are done."""
        for q, job in zip(self._jobs, jobs, strict=False):
            q.put(job)
        self._collect(len(jobs))

    def close(self) -> None:
        for q in self._jobs:
            q.put(None)
        for t in self._threads:
            t.join(timeout=60)


def _closed_loop(
    pool: _Pool, workers: int, seconds: float, max_requests: int | None, stop: threading.Event | None = None
) -> tuple[list[Sample], float]:
    """``stop`` (set on Ctrl-C or SIGTERM) ends every worker after its request in flight: the caller discards the
    level's partial samples."""
    samples: list[Sample] = []
    lock = threading.Lock()
    take = _budget(max_requests)
    halt = stop or threading.Event()
    begin = time.perf_counter()
    stop_at = begin + seconds

    def worker(k: int) -> Callable[[LoadSession], None]:
        def run(session: LoadSession) -> None:
            i = k
            backoff = 0.0
            while not halt.is_set() and time.perf_counter() < stop_at and take():
                sample = session.send(i)
                i += 1
                with lock:
                    samples.append(sample)
                if sample.ok or not connection_failure(sample.error):
                    backoff = 0.0
                    continue
                backoff = min(max(backoff * 2, BACKOFF_S), MAX_BACKOFF_S)
                halt.wait(max(0.0, min(backoff, stop_at - time.perf_counter())))  # an interrupt still ends it

        return run

    pool.run([worker(k) for k in range(workers)])
    end = max(s.end for s in samples) if samples else time.perf_counter()
    return samples, max(end - begin, 1e-9)


def open_loop_cap(rate: float, seconds: float, max_requests: int | None) -> str:
    """Why ``rate`` for ``seconds`` cannot be offered (the schedule would pass MAX_OPEN_LOOP_REQUESTS), or ""."""
    if max_requests is not None and max_requests <= MAX_OPEN_LOOP_REQUESTS:
        return ""  # the schedule stops at max_requests, and the level's window with it
    if rate * seconds <= MAX_OPEN_LOOP_REQUESTS:
        return ""
    return (
        f"{rate:g} requests/s for {seconds:g}s is {rate * seconds:,.0f} arrivals, above the open loop's "
        f"{MAX_OPEN_LOOP_REQUESTS:,} per level"
    )


def _arrivals(rate: float, seconds: float, max_requests: int | None, rng: random.Random) -> list[float]:
    times: list[float] = []
    t = 0.0
    cap = min(max_requests if max_requests is not None else MAX_OPEN_LOOP_REQUESTS, MAX_OPEN_LOOP_REQUESTS)
    while len(times) < cap:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        times.append(t)
    return times


def _open_loop(
    pool: _Pool,
    workers: int,
    rate: float,
    seconds: float,
    max_requests: int | None,
    rng: random.Random,
    stop: threading.Event | None = None,
) -> tuple[list[Sample], float, int, int]:
    schedule = _arrivals(rate, seconds, max_requests, rng)
    halt = stop or threading.Event()
    samples: list[Sample] = []
    lock = threading.Lock()
    nxt = [0]
    late = [0]
    dropped = [0]
    begin = time.perf_counter()
    stop_at = begin + seconds

    def run(session: LoadSession) -> None:
        while not halt.is_set():
            with lock:
                if nxt[0] >= len(schedule):
                    return
                k = nxt[0]
                nxt[0] += 1
            due = begin + schedule[k]
            now = time.perf_counter()
            if now < due:
                if halt.wait(due - now):  # interrupted while waiting for this arrival: it is not sent
                    return
            elif now >= stop_at:  # the level's time is up and this arrival was never sent
                with lock:
                    dropped[0] += 1
                continue
            elif now - due > 0.005:
                with lock:
                    late[0] += 1
            sample = session.send(k, due=due)
            with lock:
                samples.append(sample)

    pool.run([run] * workers)
    end = max([s.end for s in samples] + [time.perf_counter() if not samples else begin])
    # not cut short (by max_requests, or the cap on arrivals that run_bench refuses to reach): the window is the
    # whole level; cut short, it ends with the last response, so the throughput is over the load actually offered
    cap = min(max_requests if max_requests is not None else MAX_OPEN_LOOP_REQUESTS, MAX_OPEN_LOOP_REQUESTS)
    if len(schedule) < cap:
        end = max(end, begin + seconds)
    return samples, max(end - begin, 1e-9), late[0], dropped[0]
