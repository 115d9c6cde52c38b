"""Probe (not a test, not in any run): how much of the float-JSON gateway's gap is the load generator's JSON parsing?

Issue #17's gateway figure parses each response with the standard library's json, as most clients do: 4 x 384
floats per response, ~0.30 ms of Python per response on the load generator, which shares the two cores with Triton
and the gateway (base64 + decode: ~0.05 ms). This serves one Triton (examples/embed.yaml, cpu target) and the
shipped gateway and alternates, round by round: plain gRPC, the gateway with float JSON read by json (the target's
measurement), the same read by orjson, and base64. Only the client changes between the two float rows: what the
second gains is the client's cost, not the gateway's. The issue's figure stays the json one.

    python tests/bench/probe_float_parse.py        # ~3 min; writes docs/bench/float_parse.json
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 4


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    import orjson
    from bench_support import embed_bench, rotated, shipped_gateway, write_result
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    server = TritonServer(b._build(Path(tempfile.mkdtemp(prefix="probe_float_parse_")), "fp32"))

    def http(port: int, encoding: str | None, parse: object) -> dict[str, object]:
        return b._http_closed_loop(port, "minilm", concurrency=b.CONCURRENCY, measure_s=targets.SERVED_MEASURE_S,
                                   path="/v1/embeddings", encoding_format=encoding, parse=parse)

    rounds: dict[str, list[float]] = {}
    try:
        server.start()
        with shipped_gateway(server) as port:
            measures = {
                "gRPC": lambda: b._closed_loop(server.endpoints.grpc, "embed", b._text_requests(), ["EMBEDDING"],
                                               concurrency=b.CONCURRENCY, measure_s=targets.SERVED_MEASURE_S),
                "gateway float, json": lambda: http(port, None, json.loads),
                "gateway float, orjson": lambda: http(port, None, orjson.loads),
                "gateway base64": lambda: http(port, "base64", json.loads),
            }
            names = list(measures)
            for r in range(ROUNDS):
                for name in rotated(names, r):
                    row = measures[name]()
                    assert not row["errors"], row
                    rounds.setdefault(name, []).append(row["sentences_per_s"])
                    print(f"[round {r}] {name}: {row['sentences_per_s']} sentences/s", flush=True)
    finally:
        server.stop()
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {
        "command": "python tests/bench/probe_float_parse.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "medians_sentences_per_s": medians,
        "vs_grpc": {name: round(v / medians["gRPC"], 3) for name, v in medians.items()},
        "per_round": rounds,
    }
    write_result("float_parse.json", result, ["medians_sentences_per_s", "vs_grpc"])


if __name__ == "__main__":
    main()
