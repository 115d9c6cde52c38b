"""Probe (not a test, not in any run): a MiniLM-sized cross-encoder served in bf16 (`cpu_quantization: bf16`, the
runner's PyTorch engine) against the shipped fp32 (ONNX Runtime), on this CPU.

bf16 pays off where the CPU computes it natively (AMX: `amx_bf16`); the build's AMX note says "~2x" from the embedding
encoder's figure (docs/performance.md, "bf16 on the AMX Xeon"). This measures the reranker. No real cross-encoder can
be had here, so it is probe_rerank_rows.py's stand-in: all-MiniLM-L6-v2's weights under a seeded random one-logit
head, whose scores mean nothing and whose cost is a real MiniLM cross-encoder's. Two Tritons serve the two builds;
the load alternates between them: 1 or 4 queries in flight, each with 20 passages of 4-16 of the benchmark's
sentences. The bf16 build's gate figure (largest score difference from fp32 over the parity pairs) is recorded.

    python tests/bench/probe_rerank_bf16.py        # ~4 min; writes docs/bench/rerank_bf16.json
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
MEASURE_S = 10.0
PRECISIONS = ("fp32", "bf16")


def _build(checkpoint: Path, repo: Path, precision: str) -> dict[str, Any]:
    from tritonforge.build import build
    from tritonforge.spec import parse_spec

    quantization = "none" if precision == "fp32" else precision
    spec = {"name": "rerank-probe", "target": "cpu", "models": {"reranker": {
        "kind": "reranker", "checkpoint": str(checkpoint), "max_batch_size": 16, "cpu_quantization": quantization,
        "dynamic_batching": {"max_queue_delay_microseconds": 0}}}}
    report = build(parse_spec(spec, source_dir=checkpoint.parent), repo, target="cpu")
    (artifact,) = report.artifacts
    return {"kind": artifact.kind, "precision": artifact.precision, "gate": artifact.quantization_gate}


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench
    from probe_call_plan import _targets_bench
    from probe_rerank_rows import CONCURRENCY, PASSAGES_PER_QUERY, _checkpoint, alternate

    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    work = Path(tempfile.mkdtemp(prefix="probe_rerank_bf16_"))
    servers: dict[str, TritonServer] = {}
    rounds: dict[str, list[float]] = {}
    try:
        checkpoint = _checkpoint(work / "checkpoint")
        builds = {p: _build(checkpoint, work / p, p) for p in PRECISIONS}
        print(json.dumps(builds), flush=True)
        for name in PRECISIONS:
            servers[name] = TritonServer(work / name)
            servers[name].start()
        rounds = alternate(b, {name: s.endpoints.grpc for name, s in servers.items()}, ROUNDS, MEASURE_S)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {
        "command": "python tests/bench/probe_rerank_bf16.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "measure_s": MEASURE_S,
        "passages_per_query": PASSAGES_PER_QUERY,
        "builds": builds,
        "medians_pairs_per_s": medians,
        "bf16_vs_fp32": {f"{c} in flight": round(medians[f"bf16, {c} in flight"] / medians[f"fp32, {c} in flight"], 3)
                         for c in CONCURRENCY},
        "per_round": rounds,
    }
    (ROOT / "docs" / "bench" / "rerank_bf16.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("builds", "medians_pairs_per_s", "bf16_vs_fp32")}, indent=2))


if __name__ == "__main__":
    main()
