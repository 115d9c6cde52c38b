"""Probe (not a test, not in any run): `Client.embed` / `AsyncClient.embed` of 512 texts, requests of 32, with 1 or 2
requests in flight, against one Triton (examples/embed.yaml, cpu target: two encoder instances), nothing else
running; rotated rounds, median seconds per call.

    python tests/bench/probe_client_embed.py        # ~2 min; writes docs/bench/client_embed.json
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5
TEXTS = 512


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, rotated, write_result
    from probe_call_plan import _targets_bench

    from tritonforge.bench import SENTENCES
    from tritonforge.clients import AsyncClient, Client
    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(TEXTS)]
    server = TritonServer(b._build(Path(tempfile.mkdtemp(prefix="probe_client_embed_")), "fp32"))
    seconds: dict[str, list[float]] = {}
    try:
        server.start()
        url = server.endpoints.grpc

        async def async_embed(in_flight: int) -> None:
            async with AsyncClient(url) as client:
                await client.embed(texts, batch_size=32, requests_in_flight=in_flight)

        with Client(url) as client:
            client.embed(texts, batch_size=32)  # warm
            calls = {
                "Client, 1 in flight": lambda: client.embed(texts, batch_size=32, requests_in_flight=1),
                "Client, 2 in flight": lambda: client.embed(texts, batch_size=32, requests_in_flight=2),
                "AsyncClient, 1 in flight": lambda: asyncio.run(async_embed(1)),
                "AsyncClient, 2 in flight": lambda: asyncio.run(async_embed(2)),
            }
            for r in range(ROUNDS):
                for name in rotated(list(calls), r):
                    began = time.perf_counter()
                    calls[name]()
                    seconds.setdefault(name, []).append(round(time.perf_counter() - began, 3))
                    print(f"[round {r}] {name}: {seconds[name][-1]} s", flush=True)
    finally:
        server.stop()
    result = {
        "command": "python tests/bench/probe_client_embed.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "texts": TEXTS,
        "median_seconds": {name: statistics.median(v) for name, v in seconds.items()},
        "per_round": seconds,
    }
    write_result("client_embed.json", result, ["median_seconds"])


if __name__ == "__main__":
    main()
