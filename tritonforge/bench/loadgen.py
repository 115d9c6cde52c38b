"""Load patterns: closed-loop concurrency and open-loop Poisson arrivals over a pool of worker sessions."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Sequence

from tritonforge.triton.load import LoadSession, Sample

MAX_OPEN_LOOP_REQUESTS = 1_000_000

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

    tritonclient's HTTP client runs on gevent, whose hub belongs to the thread that made the client: a client must
    be created and used in one thread, so sessions live in long-lived threads and each phase is handed to them.
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


def _closed_loop(pool: _Pool, workers: int, seconds: float, max_requests: int | None) -> tuple[list[Sample], float]:
    samples: list[Sample] = []
    lock = threading.Lock()
    take = _budget(max_requests)
    begin = time.perf_counter()
    stop_at = begin + seconds

    def worker(k: int) -> Callable[[LoadSession], None]:
        def run(session: LoadSession) -> None:
            i = k
            while time.perf_counter() < stop_at and take():
                sample = session.send(i)
                i += 1
                with lock:
                    samples.append(sample)

        return run

    pool.run([worker(k) for k in range(workers)])
    end = max(s.end for s in samples) if samples else time.perf_counter()
    return samples, max(end - begin, 1e-9)


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
) -> tuple[list[Sample], float, int, int]:
    schedule = _arrivals(rate, seconds, max_requests, rng)
    samples: list[Sample] = []
    lock = threading.Lock()
    nxt = [0]
    late = [0]
    dropped = [0]
    begin = time.perf_counter()
    stop_at = begin + seconds

    def run(session: LoadSession) -> None:
        while True:
            with lock:
                if nxt[0] >= len(schedule):
                    return
                k = nxt[0]
                nxt[0] += 1
            due = begin + schedule[k]
            now = time.perf_counter()
            if now < due:
                time.sleep(due - now)
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
    if max_requests is None or len(schedule) < max_requests:  # not cut short: the window is the whole level
        end = max(end, begin + seconds)
    return samples, max(end - begin, 1e-9), late[0], dropped[0]
