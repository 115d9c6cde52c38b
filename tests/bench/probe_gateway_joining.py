"""Probe (not a test, not in any run): the gateway joining concurrent `/v1/embeddings` requests, by calls in flight.

`probe_gateway_cpu.py` found the gateway's cost a fixed ~1.1 ms of CPU per Triton request (gRPC's aio client, its
polling thread, uvicorn): gateway/batching.py keeps at most N Triton requests in flight per ensemble and joins the
requests queued behind them into one. This serves one Triton (examples/embed.yaml, cpu target) with one gateway per
setting of `embed_calls_in_flight` (0: no joining, every request its own Triton request, as before), and alternates
the issue #17 load (16 requests in flight x 4 sentences) over them and over plain gRPC, rotated each round.

    python tests/bench/probe_gateway_joining.py        # ~8 min; writes docs/bench/gateway_joining.json
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5
SETTINGS = (0, 2, 4, 8)


def _name(calls: int) -> str:
    return "no joining" if calls == 0 else f"{calls} calls in flight"


def _serve(calls: int, grpc_url: str, port: int) -> None:
    """One gateway as `tritonforge gateway --model embeddings:minilm=embed --insecure-no-auth
    --embed-calls-in-flight <calls>` starts it."""
    import uvicorn

    import tritonforge.gateway.models as models
    from tritonforge.cli import _gateway_setup

    parse = models.GatewayModels.parse
    models.GatewayModels.parse = classmethod(  # type: ignore[method-assign,assignment]
        lambda cls, entries: dataclasses.replace(parse(entries), embed_calls_in_flight=calls))
    setup = _gateway_setup("127.0.0.1", None, None, ["embeddings:minilm=embed"], None, True)
    uvicorn.run(setup.app(grpc_url),  # type: ignore[arg-type]
                host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer, free_port

    b, targets = embed_bench(), _targets_bench()
    server = TritonServer(b._build(Path(tempfile.mkdtemp(prefix="probe_gateway_joining_")), "fp32"))
    gateways: dict[int, subprocess.Popen[bytes]] = {}
    ports: dict[int, int] = {}
    try:
        server.start()
        for calls in SETTINGS:
            ports[calls] = free_port()
            gateways[calls] = subprocess.Popen(
                [sys.executable, __file__, "--serve", str(calls), server.endpoints.grpc, str(ports[calls])],
                stdout=subprocess.DEVNULL)
            if b._wait_healthy(ports[calls], gateways[calls], 60, poll_s=0.5) is not None:
                raise RuntimeError(f"gateway with {calls} calls in flight did not start")
        names = [*(_name(c) for c in SETTINGS), "gRPC"]
        rounds: dict[str, list[float]] = {name: [] for name in names}
        for r in range(ROUNDS):
            for name in names[r % len(names):] + names[: r % len(names)]:
                setting = next((c for c in SETTINGS if _name(c) == name), None)
                row = (targets._grpc(server.endpoints.grpc) if setting is None
                       else targets._http(ports[setting], "minilm", "/v1/embeddings"))
                assert not row["errors"], row
                rounds[name].append(row["sentences_per_s"])
                print(f"[round {r}] {name}: {row['sentences_per_s']} sentences/s", flush=True)
    finally:
        for proc in gateways.values():
            proc.terminate()
        server.stop()
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {
        "command": "python tests/bench/probe_gateway_joining.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "medians_sentences_per_s": medians,
        "vs_grpc": {name: round(medians[name] / medians["gRPC"], 3) for name in names[:-1]},
        "per_round": rounds,
    }
    (ROOT / "docs" / "bench" / "gateway_joining.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_sentences_per_s", "vs_grpc")}, indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        _serve(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        main()
