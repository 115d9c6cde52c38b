"""Probe (not a test, not in any run): the CPU one asyncio process spends per infer call, by way of reaching Triton.

What the gateway pays per embeddings request for its Triton client, measured alone: one Triton serves
examples/embed.yaml (cpu target); this process runs issue #17's load (16 requests of 4 texts in flight, uvloop, as
the gateway runs) for 8 s per way, in rotated rounds, and divides its own CPU time (every thread: gRPC's polling
thread too) by the calls made:

- `AsyncClient` gRPC: what the gateway uses without `--triton-http` (tritonclient.grpc.aio underneath);
- `AsyncClient` HTTP: tritonforge/triton/keepalive_http.py (what `--triton-http` uses);
- tritonclient.http.aio: aiohttp, what `AsyncClient` over HTTP used before;
- gRPC stream: every call a message on one `ModelStreamInfer` stream (grpc.aio, requests matched by id): the other
  way considered to cut gRPC's cost per call, with no second endpoint (not shipped).

    python tests/bench/probe_triton_transports.py        # ~3 min; writes docs/bench/triton_transports.json
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
from bench_support import embed_bench  # noqa: E402

CONCURRENCY, SECONDS, ROUNDS = 16, 8.0, 3
Call = Callable[[np.ndarray], Awaitable[Any]]


async def _load(call: Call, tensors: list[np.ndarray]) -> tuple[int, float, float]:
    """(calls, seconds, CPU seconds of this process) of CONCURRENCY closed loops for SECONDS."""
    done = 0
    stop = time.monotonic() + SECONDS

    async def loop(i: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            await call(tensors[i % len(tensors)])
            i += CONCURRENCY
            done += 1

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(loop(i) for i in range(CONCURRENCY)))
    return done, time.monotonic() - wall, time.process_time() - cpu


async def _client(url: str, protocol: str, tensors: list[np.ndarray]) -> tuple[int, float, float]:
    from tritonforge.clients import AsyncClient

    async with AsyncClient(url, protocol) as client:  # type: ignore[arg-type]
        async def call(t: np.ndarray) -> Any:
            return (await client.infer("embed", {"TEXT": t}, timeout=30))["EMBEDDING"]

        await call(tensors[0])
        return await _load(call, tensors)


async def _aiohttp(url: str, tensors: list[np.ndarray]) -> tuple[int, float, float]:
    import tritonclient.http.aio as httpaio

    client = httpaio.InferenceServerClient(url, conn_limit=CONCURRENCY)

    async def call(t: np.ndarray) -> Any:
        tensor = httpaio.InferInput("TEXT", list(t.shape), "BYTES")
        tensor.set_data_from_numpy(t, binary_data=True)
        outputs = [httpaio.InferRequestedOutput(n, binary_data=True) for n in ("EMBEDDING", "NUM_TOKENS")]
        return (await client.infer("embed", [tensor], outputs=outputs)).as_numpy("EMBEDDING")

    try:
        await call(tensors[0])
        return await _load(call, tensors)
    finally:
        await client.close()


async def _stream(url: str, tensors: list[np.ndarray]) -> tuple[int, float, float]:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc
    from tritonclient.utils import serialize_byte_tensor

    channel = grpc.aio.insecure_channel(url)
    stream = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer()
    waiting: dict[str, asyncio.Future[Any]] = {}
    writing = asyncio.Lock()  # one write at a time on a stream
    ids = iter(range(1 << 62))

    async def read() -> None:
        while (reply := await stream.read()) is not grpc.aio.EOF:
            waiting.pop(reply.infer_response.id).set_result(reply)

    async def call(t: np.ndarray) -> Any:
        request = service_pb2.ModelInferRequest(model_name="embed", id=str(next(ids)))
        request.inputs.add(name="TEXT", datatype="BYTES", shape=list(t.shape))
        request.raw_input_contents.append(serialize_byte_tensor(t).item())  # one bytes object, as tritonclient
        answer = waiting[request.id] = asyncio.get_running_loop().create_future()
        async with writing:
            await stream.write(request)
        message = await answer
        if message.error_message:
            raise RuntimeError(message.error_message)
        reply = message.infer_response
        index = [o.name for o in reply.outputs].index("EMBEDDING")
        return np.frombuffer(reply.raw_output_contents[index], np.float32)

    reader = asyncio.create_task(read())
    try:
        await call(tensors[0])
        return await _load(call, tensors)
    finally:
        await stream.done_writing()
        reader.cancel()
        await channel.close()


def main() -> None:
    import uvloop

    from tritonforge.server import TritonServer

    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from probe_call_plan import _targets_bench

    b = embed_bench()
    tensors = [r["TEXT"] for r in b._text_requests()]
    work = Path(tempfile.mkdtemp(prefix="probe_transports_"))
    server = TritonServer(b._build(work, "fp32"))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        server.start()
        grpc_url, http_url = server.endpoints.grpc, server.endpoints.http
        ways: dict[str, Callable[[], Coroutine[Any, Any, tuple[int, float, float]]]] = {
            "AsyncClient gRPC (tritonclient.grpc.aio)": lambda: _client(grpc_url, "grpc", tensors),
            "AsyncClient HTTP (keepalive_http)": lambda: _client(http_url, "http", tensors),
            "tritonclient.http.aio (aiohttp)": lambda: _aiohttp(http_url, tensors),
            "gRPC stream, one for every call (grpc.aio)": lambda: _stream(grpc_url, tensors),
        }
        names = list(ways)
        for r in range(ROUNDS):
            for name in names[r % len(names):] + names[: r % len(names)]:
                calls, seconds, cpu = uvloop.run(ways[name]())
                row = results.setdefault(name, {"cpu_ms_per_call": [], "calls_per_s": []})
                row["cpu_ms_per_call"].append(round(cpu / calls * 1e3, 4))
                row["calls_per_s"].append(round(calls / seconds, 1))
                print(f"[round {r}] {name}: {row['cpu_ms_per_call'][-1]} ms CPU a call, {row['calls_per_s'][-1]}/s",
                      flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "python tests/bench/probe_triton_transports.py",
        "machine": _targets_bench().machine(),
        "load": f"{CONCURRENCY} calls of 4 texts in flight, {SECONDS:g} s per way, {ROUNDS} rotated rounds",
        "median_cpu_ms_per_call": {k: statistics.median(v["cpu_ms_per_call"]) for k, v in results.items()},
        "median_calls_per_s": {k: statistics.median(v["calls_per_s"]) for k, v in results.items()},
        "per_round": results,
    }
    (ROOT / "docs" / "bench" / "triton_transports.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_cpu_ms_per_call", "median_calls_per_s")}, indent=2))


if __name__ == "__main__":
    main()
