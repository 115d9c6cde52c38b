"""Probe (not a test, not in any run): two ways the gateway's `/v1/embeddings` might cost less, served side by side.

`probe_gateway_cpu.py` puts the gateway's extra CPU per request mostly in gRPC's aio client and in uvicorn's socket
writes (headers and body go out in two `send`s). This serves one Triton (examples/embed.yaml, cpu target) with three
gateways in front of it, each its own process, and alternates the issue #17 load over them and over plain gRPC:

- shipped: `tritonforge gateway` as it is (gRPC client to Triton, uvicorn's httptools protocol);
- corked writes (an experiment, not shipped): every write of one event-loop step joined into one `send`;
- HTTP client (an experiment, not shipped): the gateway's Triton client speaks HTTP/REST instead of gRPC for
  everything (binary tensors; measured with tritonclient's aiohttp client for infer, before the keep-alive
  connections of `--triton-http` replaced it there).

- sync gRPC in threads (an experiment, not shipped; `--threads`, against the shipped gateway only): each infer on
  tritonclient's blocking gRPC client in a thread pool instead of the aio client and its polling thread.

    python tests/bench/probe_gateway_variants.py            # ~6 min; writes docs/bench/gateway_variants.json
    python tests/bench/probe_gateway_variants.py --threads  # ~5 min; writes docs/bench/gateway_threads.json
    python tests/bench/probe_gateway_variants.py --granian  # ~4 min; docs/bench/gateway_granian.json; needs
                                                            # `pip install granian==2.8.7` (not a dependency)

- granian (an experiment, not shipped; `--granian`): the same app on granian's Rust HTTP server instead of uvicorn.
- gc tuned (an experiment, not shipped; `--gc`, ~4 min, docs/bench/gateway_gc.json): the shipped gateway with its
  start-up objects frozen out of the garbage collector's walks and young collections 14x rarer.
- Triton's HTTP endpoint for infer (`--triton-http`, ~4 min, docs/bench/gateway_triton_http.json): the gateway on
  gRPC alone against the same gateway given `--triton-http` (embeddings over tritonforge's keep-alive HTTP
  connections, tritonforge/triton/keepalive_http.py; what `serve --gateway` does).
- corked writes on top of `--triton-http` (`--corked`, ~4 min, docs/bench/gateway_corked_http.json).
- without request checks (`--checks`, ~4 min, docs/bench/gateway_checks.json): the shipped gateway with the three
  checks the fifteenth session added taken out again (the JSON Content-Type, repeated JSON keys, the embedding width
  remembered per model): what they cost, measured interleaved rather than in two runs minutes apart.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 6
VARIANTS = ("shipped", "corked writes", "HTTP client")


class _CorkedTransport:
    """Writes made in one event-loop step leave in one send (flushed by call_soon, before any I/O wait)."""

    def __init__(self, transport: Any, loop: Any) -> None:
        self._transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _serve(variant: str, grpc_url: str, http_url: str, port: int) -> None:
    """One gateway, as `tritonforge gateway --model embeddings:minilm=embed --insecure-no-auth` starts it."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    import tritonforge.gateway.state as state
    from tritonforge.cli_gateway import prepare_gateway as _gateway_setup

    protocol: Any = "httptools"
    if variant.endswith("corked writes"):  # "corked writes" and "--triton-http, corked writes"

        class Corked(HttpToolsProtocol):  # type: ignore[misc]
            def connection_made(self, transport: Any) -> None:
                super().connection_made(_CorkedTransport(transport, self.loop))  # type: ignore[arg-type]

        protocol = Corked
    elif variant == "HTTP client":
        real = state.AsyncClient
        state.AsyncClient = lambda url, proto, **kw: real(http_url, "http", **kw)  # type: ignore[assignment,misc]
    elif variant == "sync gRPC in threads":
        import asyncio
        from concurrent.futures import ThreadPoolExecutor

        from tritonforge.clients.client import Client

        class Threaded(state.AsyncClient):  # type: ignore[misc,name-defined]
            """The aio client for everything but infer, which a blocking gRPC client runs in a thread per call."""

            def __init__(self, url: str, proto: Any, **kw: Any) -> None:
                super().__init__(url, proto, **kw)
                self._sync = Client(url, "grpc", **kw)
                asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(32))

            async def infer(self, model: str, inputs: Any, outputs: Any = None, **kw: Any) -> Any:
                return await asyncio.to_thread(self._sync.infer, model, inputs, outputs, **kw)

        state.AsyncClient = Threaded  # type: ignore[misc]
    elif variant == "without request checks":
        import json as _json

        import tritonforge.gateway.routes as routes
        import tritonforge.gateway.schemas as schemas

        schemas.check_content_type = lambda request: None  # type: ignore[assignment]
        schemas._loads = _json.loads  # type: ignore[assignment]  # no object_pairs_hook: repeated keys pass
        routes.remember_width = lambda *args: None  # type: ignore[assignment]
    setup = _gateway_setup("127.0.0.1", None, None, ["embeddings:minilm=embed"], None, True)
    if variant in ("--triton-http", "--triton-http, corked writes"):
        uvicorn.run(setup.app(grpc_url, triton_http=http_url),  # type: ignore[arg-type]
                    host="127.0.0.1", port=port, log_level="warning", http=protocol)
        return
    if variant == "gc tuned":  # the app's objects out of the collector's walks, young collections 14x rarer
        import gc

        app_ = setup.app(grpc_url)
        gc.freeze()
        gc.set_threshold(10_000, 10, 10)
        uvicorn.run(app_, host="127.0.0.1", port=port, log_level="warning", http=protocol)  # type: ignore[arg-type]
        return
    if variant == "granian":  # the same app on granian's Rust HTTP server (embedded in this uvloop loop)
        import uvloop
        from granian.constants import Interfaces
        from granian.server.embed import Server

        uvloop.run(Server(setup.app(grpc_url), address="127.0.0.1", port=port, interface=Interfaces.ASGI,
                          log_enabled=False).serve())
        return
    uvicorn.run(setup.app(grpc_url),  # type: ignore[arg-type]
                host="127.0.0.1", port=port, log_level="warning", http=protocol)


def main(variants: tuple[str, ...] = VARIANTS, out: str = "gateway_variants.json") -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer, free_port

    b, targets = embed_bench(), _targets_bench()
    server = TritonServer(b._build(Path(tempfile.mkdtemp(prefix="probe_gateway_variants_")), "fp32"))
    gateways: dict[str, subprocess.Popen[bytes]] = {}
    try:
        server.start()
        ports = {}
        for variant in variants:
            ports[variant] = free_port()
            gateways[variant] = subprocess.Popen(
                [sys.executable, __file__, "--serve", variant, server.endpoints.grpc, server.endpoints.http,
                 str(ports[variant])], stdout=subprocess.DEVNULL)
            if b._wait_healthy(ports[variant], gateways[variant], 60, poll_s=0.5) is not None:
                raise RuntimeError(f"gateway {variant!r} did not start")
        rounds: dict[str, list[float]] = {name: [] for name in (*variants, "gRPC")}
        for r in range(ROUNDS):
            order = list(rounds)[r % len(rounds):] + list(rounds)[: r % len(rounds)]  # rotated each round
            for name in order:
                row = (targets._grpc(server.endpoints.grpc) if name == "gRPC"
                       else targets._http(ports[name], "minilm", "/v1/embeddings"))
                assert not row["errors"], row
                rounds[name].append(row["sentences_per_s"])
                print(f"[round {r}] {name}: {row['sentences_per_s']} sentences/s", flush=True)
    finally:
        for proc in gateways.values():
            proc.terminate()
        server.stop()
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {
        "command": "python tests/bench/probe_gateway_variants.py" + {
            VARIANTS: "", ("shipped", "granian"): " --granian", ("shipped", "gc tuned"): " --gc",
            ("shipped", "without request checks"): " --checks", ("shipped", "--triton-http"): " --triton-http",
            ("--triton-http", "--triton-http, corked writes"): " --corked",
        }.get(variants, " --threads"),
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "medians_sentences_per_s": medians,
        "vs_grpc": {name: round(medians[name] / medians["gRPC"], 3) for name in variants},
        "vs_shipped": {name: round(medians[name] / medians[variants[0]], 3) for name in variants},  # the first: as shipped
        "per_round": rounds,
    }
    (ROOT / "docs" / "bench" / out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_sentences_per_s", "vs_grpc", "vs_shipped")}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif sys.argv[1:2] == ["--threads"]:
        main(("shipped", "sync gRPC in threads"), "gateway_threads.json")
    elif sys.argv[1:2] == ["--granian"]:
        main(("shipped", "granian"), "gateway_granian.json")
    elif sys.argv[1:2] == ["--gc"]:
        main(("shipped", "gc tuned"), "gateway_gc.json")
    elif sys.argv[1:2] == ["--triton-http"]:
        main(("shipped", "--triton-http"), "gateway_triton_http.json")
    elif sys.argv[1:2] == ["--corked"]:
        main(("--triton-http", "--triton-http, corked writes"), "gateway_corked_http.json")
    elif sys.argv[1:2] == ["--checks"]:
        main(("shipped", "without request checks"), "gateway_checks.json")
    else:
        main()
