"""Probe (not a test, not in any run): how many of one /v1/embeddings request's chunks should be in flight?

The gateway splits a request's texts into Triton requests of ``embed_batch_size`` (32) texts. This serves one Triton
(examples/embed.yaml, cpu target: two encoder instances) and one gateway per setting of
``GatewayModels.embed_requests_in_flight`` (1 = the gateway before the change: one chunk at a time), and measures,
alternating the settings round by round:

- idle: the latency of one request of 512 texts (the gateway's limit), nothing else running;
- jobs: two clients sending 512-text requests back to back (an indexing job), sentences/s;
- mixed: the issue #17 load (16 x 4 sentences in flight) with one client sending 512-text requests beside it:
  the small requests' sentences/s and p50/p99, and the large requests' latency.

    python tests/bench/probe_embed_chunks.py        # ~6 min; writes docs/bench/embed_chunks.json
"""

from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
SETTINGS = (1, 2, 4, 8)
LARGE = 512
IDLE_REPEATS = 3
JOB_CLIENTS = 2
JOB_S = 10.0


def _serve(grpc_url: str, port: int, in_flight: int) -> None:
    """One gateway: `tritonforge gateway --model embeddings:minilm=embed --insecure-no-auth` with the setting."""
    import uvicorn

    from tritonforge.gateway import GatewayModels, create_app

    models = GatewayModels(chat={}, embeddings={"minilm": "embed"}, rerank={}, embed_requests_in_flight=in_flight)
    uvicorn.run(create_app(grpc_url, api_keys=None, models=models), host="127.0.0.1", port=port,
                log_level="warning", http="httptools")


def _large_body(offset: int) -> bytes:
    from tritonforge.bench import SENTENCES

    texts = [SENTENCES[(offset + i) % len(SENTENCES)] for i in range(LARGE)]
    return json.dumps({"model": "minilm", "input": texts, "encoding_format": "base64"}).encode()


def _post(conn: http.client.HTTPConnection, body: bytes) -> float:
    began = time.perf_counter()
    conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    if len(json.loads(data)["data"]) != LARGE:
        raise RuntimeError("wrong number of embeddings")
    return time.perf_counter() - began


def _idle(port: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        _post(conn, _large_body(0))  # warm
        return statistics.median(_post(conn, _large_body(r + 1)) for r in range(IDLE_REPEATS))
    finally:
        conn.close()


def _large_loop(port: int, stop: threading.Event, latencies: list[float], offset: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = offset
    try:
        while not stop.is_set():
            latencies.append(_post(conn, _large_body(i)))
            i += 7
    finally:
        conn.close()


def _jobs(port: int) -> float:
    stop, latencies = threading.Event(), []  # type: ignore[var-annotated]
    threads = [threading.Thread(target=_large_loop, args=(port, stop, latencies, c * 1000)) for c in range(JOB_CLIENTS)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(JOB_S)
    stop.set()
    for t in threads:
        t.join()
    return len(latencies) * LARGE / (time.perf_counter() - began)


def _mixed(port: int, targets: Any) -> dict[str, Any]:
    stop, latencies = threading.Event(), []  # type: ignore[var-annotated]
    large = threading.Thread(target=_large_loop, args=(port, stop, latencies, 5000))
    large.start()
    try:
        row = targets._http(port, "minilm", "/v1/embeddings", "base64")
    finally:
        stop.set()
        large.join()
    assert not row["errors"], row
    return {"small_sentences_per_s": row["sentences_per_s"], "small_p50_ms": row["p50_ms"],
            "small_p99_ms": row["p99_ms"], "large_requests": len(latencies),
            "large_median_s": round(statistics.median(latencies), 3) if latencies else None}


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, rotated, write_result
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer, free_port

    b, targets = embed_bench(), _targets_bench()
    server = TritonServer(b._build(Path(tempfile.mkdtemp(prefix="probe_embed_chunks_")), "fp32"))
    gateways: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in SETTINGS}
    try:
        server.start()
        for n in SETTINGS:
            port = free_port()
            proc = subprocess.Popen([sys.executable, __file__, "--serve", server.endpoints.grpc, str(port), str(n)])
            gateways[n] = (proc, port)
            if b._wait_healthy(port, proc, 60, poll_s=0.5) is not None:
                raise RuntimeError(f"the gateway with {n} in flight did not start")
        for r in range(ROUNDS):
            for n in rotated(SETTINGS, r):
                port = gateways[n][1]
                row = {"idle_512_s": round(_idle(port), 3), "jobs_sentences_per_s": round(_jobs(port), 1)}
                row.update(_mixed(port, targets))
                rows[n].append(row)
                print(f"[round {r}] {n} in flight: {json.dumps(row)}", flush=True)
    finally:
        for proc, _ in gateways.values():
            proc.terminate()
        server.stop()
    medians = {n: {k: statistics.median(row[k] for row in rows[n]) for k in rows[n][0]} for n in SETTINGS}
    result = {
        "command": "python tests/bench/probe_embed_chunks.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "large_request_texts": LARGE,
        "medians_by_requests_in_flight": medians,
        "per_round": rows,
    }
    write_result("embed_chunks.json", result, ["medians_by_requests_in_flight"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
