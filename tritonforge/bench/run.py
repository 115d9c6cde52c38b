"""One benchmark run: check the target, describe the model, run each level, collect the report."""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from tritonforge.bench.inputs import _datatype, _describe, _model_inputs, generate_inputs, load_data
from tritonforge.bench.loadgen import _closed_loop, _open_loop, _Pool, open_loop_cap
from tritonforge.bench.results import BenchReport, LevelResult, Percentiles, StreamStats
from tritonforge.bench.stats import _split, _Stats
from tritonforge.bench.target import MAX_CONCURRENCY, check_target, default_url, parse_concurrency
from tritonforge.errors import BenchError, BenchOptionsError, ClientError
from tritonforge.triton.connection import Connection
from tritonforge.triton.load import LoadSession, Sample
from tritonforge.triton.options import Protocol
from tritonforge.values import is_real


def _composing(fetch: Callable[[str], dict[str, Any]], config: Mapping[str, Any], seen: set[str]) -> list[str]:
    out = []
    for step in config.get("ensemble_scheduling", {}).get("step", []):
        name = step.get("model_name", "")
        if name and name not in seen:
            seen.add(name)
            out.append(name)
            with contextlib.suppress(Exception):
                out += _composing(fetch, fetch(name), seen)
    return out


def _level_result(
    mode: Literal["concurrency", "rate"],
    concurrency: int | None,
    rate: float | None,
    samples: list[Sample],
    wall: float,
    batch_size: int,
    streaming: bool,
) -> LevelResult:
    ok = [s for s in samples if s.ok]
    errors = Counter(s.error for s in samples if not s.ok)
    stream = None
    if streaming:
        tokens = sum(len(s.token_times) for s in ok)
        ttft = [s.token_times[0] - s.start for s in ok if s.token_times]
        gaps = [b - a for s in ok for a, b in zip(s.token_times, s.token_times[1:], strict=False)]
        stream = StreamStats(
            responses=tokens,
            responses_per_request=tokens / len(ok) if ok else 0.0,
            tokens_per_s=tokens / wall,
            ttft_ms=Percentiles.of_seconds(ttft),
            inter_token_ms=Percentiles.of_seconds(gaps),
        )
    return LevelResult(
        mode=mode,
        concurrency=concurrency,
        rate=rate,
        duration_s=wall,
        requests=len(ok),
        errors=sum(errors.values()),
        error_messages=dict(errors.most_common(10)),
        throughput_rps=len(ok) / wall,
        throughput_items_s=len(ok) * batch_size / wall,
        latency_ms=Percentiles.of_seconds([s.end - s.start for s in ok]),
        stream=stream,
    )


def run_bench(
    url: str | None,
    model: str,
    *,
    protocol: Protocol = "grpc",
    concurrency: str | int | Iterable[int] | None = (1, 4, 16),
    rate: float | None = None,
    duration_s: float = 5.0,
    warmup_s: float = 1.0,
    inputs: str | Path = "auto",
    batch_size: int = 1,
    max_requests: int | None = None,
    streaming: bool | None = None,
    timeout: float = 30.0,
    allow_remote: bool = False,
    max_inflight: int = 32,
    seq_length: int = 16,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> BenchReport:
    """Benchmark ``model`` at ``url`` (see the module docstring); one :class:`LevelResult` per level.

    ``rate`` (requests/s, open loop) takes precedence over ``concurrency`` (closed loop). ``max_requests`` bounds
    the measured requests of each level, ``timeout`` each request (s). ``streaming=None`` follows the model's
    ``model_transaction_policy.decoupled``.

    ``stop``, once set (the command line sets it on Ctrl-C and SIGTERM), ends the run after the requests in flight:
    the report holds the levels completed, ``interrupted`` is True and the level cut short is named in
    ``interrupted_during`` (its partial figures are not reported). A KeyboardInterrupt in the caller's thread
    stops the workers the same way before it propagates.
    """
    if protocol not in ("grpc", "http"):
        raise BenchOptionsError(f"protocol={protocol!r} is not one of 'grpc', 'http'")
    address = check_target(url or default_url(protocol), protocol=protocol, allow_remote=allow_remote)
    if not 0 < duration_s < math.inf or not 0 <= warmup_s < math.inf:  # inf never ended
        raise BenchOptionsError(
            f"duration_s={duration_s} (--duration) must be a finite number > 0 and warmup_s={warmup_s} (--warmup) "
            "a finite number >= 0"
        )
    if not 0 < timeout < math.inf:  # an infinite deadline is refused by the clients later, with no option named
        raise BenchOptionsError(f"timeout={timeout} (--timeout) must be a finite number > 0 seconds")
    if max_requests is not None and max_requests < 1:
        raise BenchOptionsError(f"max_requests={max_requests} (--max-requests) must be >= 1")
    if rate is not None:
        if not (is_real(rate) and rate > 0):
            raise BenchOptionsError(f"rate={rate} (--rate) must be > 0 requests/s")
        rate = float(rate)  # numpy's too: the report is JSON
        if not 1 <= max_inflight <= MAX_CONCURRENCY:
            raise BenchOptionsError(f"max_inflight={max_inflight} must be within 1..{MAX_CONCURRENCY}")
        # past the cap the schedule ended early and the level offered nothing for the rest of its time, while its
        # throughput was divided by the whole of it: refused before any request
        for seconds, option in ((duration_s, "--duration"), (warmup_s, "--warmup")):
            if why := open_loop_cap(rate, seconds, max_requests if option == "--duration" else None):
                bound = " (or bound the level with --max-requests)" if option == "--duration" else ""
                raise BenchOptionsError(f"--rate {rate:g} with {option} {seconds:g}: {why}; lower one of them{bound}")
        levels: list[int] = []
    else:
        levels = parse_concurrency(concurrency if concurrency is not None else (1, 4, 16))
    say = progress or (lambda _m: None)

    fetch, metadata = _describe_model(address, protocol, model, timeout)
    config = fetch(model)
    decoupled = bool(config.get("model_transaction_policy", {}).get("decoupled", False))
    streaming = decoupled if streaming is None else streaming
    if streaming and protocol != "grpc":
        raise BenchOptionsError(
            f"model '{model}' streams (decoupled): benchmark it over gRPC (--protocol grpc, not --protocol {protocol})"
        )
    if decoupled and not streaming:
        raise BenchOptionsError(f"model '{model}' is decoupled: its responses only come over a gRPC stream (streaming)")
    if str(inputs) == "auto":
        payloads = generate_inputs(config, batch_size=batch_size, seq_length=seq_length, seed=seed)
    else:
        payloads = load_data(inputs, config, batch_size=batch_size)
    datatypes = {i["name"]: _datatype(i.get("data_type", "")) for i in _model_inputs(config)}
    outputs = [o["name"] for o in metadata.get("outputs", [])]
    composing = _composing(fetch, config, {model})
    items = batch_size if int(config.get("max_batch_size", 0) or 0) > 0 else 1

    report = BenchReport(
        url=address,
        model=model,
        protocol=protocol,
        batch_size=items,
        streaming=streaming,
        inputs=_describe(payloads[0], datatypes),
        data=str(inputs),
        warmup_s=warmup_s,
        composing_models=composing,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    workers = max(levels) if levels else max_inflight
    stats = _Stats(address, protocol, [model, *composing], timeout)
    rng = random.Random(seed)
    halt = stop or threading.Event()
    pool: _Pool | None = None
    try:
        pool = _Pool(
            workers, lambda: LoadSession(address, protocol, model, payloads, datatypes, outputs, timeout, streaming)
        )
        plan: list[tuple[int | None, float | None]] = [(n, None) for n in levels] or [(None, rate)]
        for n, r in plan:
            if halt.is_set():
                break
            label = f"concurrency {n}" if n is not None else f"rate {r:g}/s"
            start = stats.snapshot()
            warm: list[Sample] = []
            if warmup_s > 0:
                say(f"{model}: warming up ({label}, {warmup_s:g}s)")
                if n is not None:
                    warm, _ = _closed_loop(pool, n, warmup_s, None, halt)
                else:
                    assert r is not None
                    warm, *_ = _open_loop(pool, workers, r, warmup_s, None, rng, halt)
            if halt.is_set():
                report.interrupted_during = _short_label(n, r)
                break
            before = stats.settled(start, model, len(warm)) if start is not None else None
            say(f"{model}: measuring {label} for {duration_s:g}s")
            if n is not None:
                samples, wall = _closed_loop(pool, n, duration_s, max_requests, halt)
                level = _level_result("concurrency", n, None, samples, wall, items, streaming)
            else:
                assert r is not None
                samples, wall, late, dropped = _open_loop(pool, workers, r, duration_s, max_requests, rng, halt)
                level = _level_result("rate", None, r, samples, wall, items, streaming)
                level.late, level.dropped = late, dropped
            if halt.is_set():  # cut short: its figures cover an unknown part of the level, so none is reported
                report.interrupted_during = level.label
                break
            after = stats.settled(before, model, len(samples)) if before is not None else None
            if before is not None and after is not None:
                level.server = _split(before, after, model)
                level.server_requests = level.server[0].requests
                level.server_mismatch = _mismatch(model, level.server_requests, level.requests)
            else:
                level.server_note = stats.error
            report.levels.append(level)
    except BaseException:
        halt.set()  # a KeyboardInterrupt here: the workers stop after their request in flight, not at the level's end
        raise
    finally:
        if pool is not None:
            pool.close()
        stats.close()
    report.interrupted = halt.is_set()
    return report


def _short_label(concurrency: int | None, rate: float | None) -> str:
    return f"c={concurrency}" if concurrency is not None else f"{rate:g}/s"


def _mismatch(model: str, server: int, client: int) -> str:
    """Why Triton's count of successful requests differs from the client's, or "" when they agree.

    Triton's statistics are per model, not per client: another client's requests in the same window are averaged
    into the split (and a request the client timed out on may still succeed on the server).
    """
    if server == client:
        return ""
    if server > client:
        return (
            f"Triton counted {server} successful requests of '{model}', this benchmark {client}: the split includes "
            f"{server - client} requests of other clients (or that this one gave up on)"
        )
    return (
        f"Triton counted {server} successful requests of '{model}', this benchmark {client}: its statistics had not "
        "caught up, so the split covers part of the level"
    )


def _describe_model(
    address: str, protocol: Protocol, model: str, timeout: float
) -> tuple[Callable[[str], dict[str, Any]], dict[str, Any]]:
    """A config fetcher and the model's metadata; a BenchError when the server or the model is not there."""
    cache: dict[str, dict[str, Any]] = {}
    with Connection(address, protocol, timeout=timeout, retries=0) as triton:

        def fetch(name: str) -> dict[str, Any]:
            if name not in cache:
                cache[name] = triton.model_config(name)
            return cache[name]

        try:
            up = triton.is_live()
        except ClientError as err:
            raise BenchError(f"cannot reach the {protocol} endpoint {address}: {err}") from err
        if not up:
            raise BenchError(f"cannot reach the {protocol} endpoint {address} (or the server is not live)")
        try:
            is_ready = triton.is_model_ready(model)
        except ClientError as err:
            raise BenchError(f"model '{model}' at {address}: {err}") from err
        if not is_ready:
            raise BenchError(f"model '{model}' is not ready at {address} (unknown, not loaded, or failed to load)")
        try:
            fetch(model)
            for name in _composing(fetch, fetch(model), {model}):
                fetch(name)
            metadata = triton.model_metadata(model)
        except ClientError as err:
            raise BenchError(f"cannot read the config of model '{model}' at {address}: {err}") from err
    return (lambda name: cache.get(name, {})), metadata
