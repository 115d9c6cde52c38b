"""Probe (not a test, not in any run): the synchronous HTTP transport against tritonclient's gevent client it replaced.

One Triton serves the toy `add_one` model (tests/integration/conftest.py); this process calls it three ways:
- tritonclient.http.InferenceServerClient (geventhttpclient on gevent): what `Client(url, "http")` used before,
  one per thread;
- tritonforge/triton/blocking_http.py: what it uses now, one pool for every thread;
- tritonclient.grpc, for scale.
Measured: wall and this process's CPU per call, one thread and four; then file descriptors and RSS after 500
short-lived threads each made one call (a server running each request on a new thread).

    python tests/bench/probe_sync_http.py        # ~1 min; writes docs/bench/sync_http.json
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CALLS, THREADS, SHORT_LIVED = 2000, 4, 500


def _toy_repo(where: Path) -> Path:
    spec = importlib.util.spec_from_file_location("toy_conftest", ROOT / "tests" / "integration" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_add_one(where)
    return where


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _timed(call: Callable[[], Any], threads: int) -> dict[str, float]:
    call()  # connected, warmed
    per = CALLS // threads

    def work() -> None:
        for _ in range(per):
            call()

    workers = [threading.Thread(target=work) for _ in range(threads)]
    wall, cpu = time.perf_counter(), time.process_time()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls = per * threads
    return {"calls_per_s": round(calls / wall, 1), "wall_us_per_call": round(wall / calls * 1e6, 1),
            "client_cpu_us_per_call": round(cpu / calls * 1e6, 1)}


def main() -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from tritonforge.server import TritonServer
    from tritonforge.triton.blocking_http import BlockingHttpTransport

    data = np.arange(4, dtype=np.float32).reshape(1, 4)
    results: dict[str, Any] = {"calls": CALLS, "threads": THREADS, "short_lived_threads": SHORT_LIVED}
    with tempfile.TemporaryDirectory() as tmp, TritonServer(_toy_repo(Path(tmp)), startup_timeout=60) as server:
        http_url, grpc_url = server.endpoints.http, server.endpoints.grpc
        name = "INPUT0"
        meta = BlockingHttpTransport.for_url(f"http://{http_url}", context=None).get_model_metadata("add_one")
        name, output = meta["inputs"][0]["name"], meta["outputs"][0]["name"]
        datatype = meta["inputs"][0]["datatype"]
        data = data.astype(np.float32 if datatype == "FP32" else np.int64)

        def http_inputs() -> tuple[list[Any], list[Any]]:
            tensor = httpclient.InferInput(name, list(data.shape), datatype)
            tensor.set_data_from_numpy(data, binary_data=True)
            return [tensor], [httpclient.InferRequestedOutput(output, binary_data=True)]

        local = threading.local()

        def gevent_call() -> None:  # one client per thread, as the old Connection kept them
            if not hasattr(local, "client"):
                local.client = httpclient.InferenceServerClient(http_url, connection_timeout=30, network_timeout=30)
            inputs, outputs = http_inputs()
            local.client.infer("add_one", inputs, outputs=outputs).as_numpy(output)

        pool = BlockingHttpTransport.for_url(f"http://{http_url}", context=None)

        def blocking_call() -> None:
            inputs, outputs = http_inputs()
            pool.infer("add_one", inputs, outputs=outputs, client_timeout=30).as_numpy(output)

        grpc = grpcclient.InferenceServerClient(grpc_url)

        def grpc_call() -> None:
            tensor = grpcclient.InferInput(name, list(data.shape), datatype)
            tensor.set_data_from_numpy(data)
            grpc.infer("add_one", [tensor], client_timeout=30).as_numpy(output)

        ways = {"tritonclient.http (gevent; before)": gevent_call, "blocking_http (now)": blocking_call,
                "tritonclient.grpc": grpc_call}
        for threads in (1, THREADS):
            for _ in range(2):  # twice, interleaved: the second round is the one kept
                for label, call in ways.items():
                    results.setdefault(f"{threads} thread{'s' * (threads > 1)}", {})[label] = _timed(call, threads)
        for label, call in list(ways.items())[:2]:
            fds, rss = _fds(), _rss_mb()
            for _i in range(SHORT_LIVED):
                worker = threading.Thread(target=call)
                worker.start()
                worker.join()
            results.setdefault("short-lived threads", {})[label] = {
                "fds_added": _fds() - fds, "rss_added_mb": round(_rss_mb() - rss, 1)}
        grpc.close()
        pool.close()
    print(json.dumps(results, indent=2))
    out = ROOT / "docs" / "bench" / "sync_http.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
