"""Probe (not a test, not in any run): is the gateway's gap the closed loop's depth, or CPU?

Through the gateway a request spends part of its time outside Triton (HTTP, the gateway, a second hop), so 16 requests
in flight at the client are fewer at the encoder. If that mattered, plain gRPC with fewer requests in flight would
lose what the gateway loses. This serves one Triton (examples/embed.yaml, cpu target) and the shipped gateway, and
alternates the gateway at 16 in flight with plain gRPC at 16, 15, 14, 13 and 12 in flight.

    python tests/bench/probe_gateway_depth.py        # ~3 min; writes docs/bench/gateway_depth.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
GRPC_DEPTHS = (16, 15, 14, 13, 12)


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, shipped_gateway
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    server = TritonServer(b._build(Path(tempfile.mkdtemp(prefix="probe_gateway_depth_")), "fp32"))
    rounds: dict[str, list[float]] = {}
    p50: dict[str, list[float]] = {}
    try:
        server.start()
        with shipped_gateway(server) as port:
            for r in range(ROUNDS):
                for depth in (None, *GRPC_DEPTHS):
                    if depth is None:
                        name, row = "gateway, 16 in flight", targets._http(port, "minilm", "/v1/embeddings")
                    else:
                        name = f"gRPC, {depth} in flight"
                        row = b._closed_loop(server.endpoints.grpc, "embed", b._text_requests(), ["EMBEDDING"],
                                             concurrency=depth, measure_s=targets.SERVED_MEASURE_S)
                    assert not row["errors"], row
                    rounds.setdefault(name, []).append(row["sentences_per_s"])
                    p50.setdefault(name, []).append(row["p50_ms"])
                    print(f"[round {r}] {name}: {row['sentences_per_s']} sentences/s, p50 {row['p50_ms']} ms",
                          flush=True)
    finally:
        server.stop()
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {
        "command": "python tests/bench/probe_gateway_depth.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "medians_sentences_per_s": medians,
        "median_p50_ms": {name: statistics.median(v) for name, v in p50.items()},
        "vs_grpc_16": {name: round(v / medians["gRPC, 16 in flight"], 3) for name, v in medians.items()},
        "per_round": rounds,
    }
    (ROOT / "docs" / "bench" / "gateway_depth.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_sentences_per_s", "vs_grpc_16")}, indent=2))


if __name__ == "__main__":
    main()
