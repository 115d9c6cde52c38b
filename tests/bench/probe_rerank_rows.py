"""Probe (not a test, not in any run): the cpu runner scoring a cross-encoder's pairs sorted by length in planned
calls, against the one padded call per batch it made before (python_backends/onnx_runner/model.py).

No real cross-encoder can be had here, so the reranker is MiniLM-sized: all-MiniLM-L6-v2's weights under a fresh,
seeded one-logit head (a stand-in whose scores mean nothing, and whose cost is a real MiniLM cross-encoder's: the
head is one 384 x 1 product). Two Tritons serve the same build, one with the shipped runner, one with the runner as
it was at BEFORE (one padded call per batch, a 2-thread session); the load alternates between them: 1 or 4 queries
in flight, each with 20 passages of 4-16 of the benchmark's sentences (~50-220 tokens, what a RAG corpus holds).

    python tests/bench/probe_rerank_rows.py        # ~6 min; writes docs/bench/rerank_rows.json
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BEFORE = "4b4b789"  # the last commit whose runner ran a cross-encoder's batch as one padded call
ROUNDS = 3
CONCURRENCY = (1, 4)
PASSAGES_PER_QUERY = 20
MEASURE_S = 20.0


def _checkpoint(folder: Path) -> Path:
    """all-MiniLM-L6-v2 with a seeded random 1-logit classifier head, saved as a cross-encoder checkpoint."""
    import all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    BertForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def _build(checkpoint: Path, repo: Path) -> None:
    from tritonforge.build import build
    from tritonforge.spec import parse_spec

    spec = {"name": "rerank-probe", "target": "cpu", "models": {"reranker": {
        "kind": "reranker", "checkpoint": str(checkpoint), "max_batch_size": 16,
        "dynamic_batching": {"max_queue_delay_microseconds": 1000}}}}
    build(parse_spec(spec, source_dir=checkpoint.parent), repo, target="cpu")


def _requests(n: int = 32) -> list[dict[str, Any]]:
    from tritonforge.bench import SENTENCES
    from tritonforge.clients.pipelines import rerank_request

    rng = random.Random(0)
    sentences = list(SENTENCES)
    out = []
    for _ in range(n):
        passages = [" ".join(rng.choice(sentences) for _ in range(rng.randint(4, 16)))
                    for _ in range(PASSAGES_PER_QUERY)]
        out.append(rerank_request(rng.choice(sentences), passages)[0])
    return out


def alternate(b: Any, endpoints: dict[str, str], rounds: int, measure_s: float) -> dict[str, list[float]]:
    """pairs/s of each served rerank model (name: gRPC endpoint) at each of CONCURRENCY, ``rounds`` rounds, the order
    of the models reversed every other round; keyed "<name>, <concurrency> in flight"."""
    requests = _requests()
    names = list(endpoints)
    found: dict[str, list[float]] = {}
    for r in range(rounds):
        for concurrency in CONCURRENCY:
            for name in names if r % 2 == 0 else names[::-1]:
                row = b._closed_loop(endpoints[name], "rerank", requests, ["SCORES"], concurrency=concurrency,
                                     measure_s=measure_s)
                assert not row["errors"], row
                pairs = round(row["requests"] * PASSAGES_PER_QUERY / measure_s, 1)
                found.setdefault(f"{name}, {concurrency} in flight", []).append(pairs)
                print(f"[round {r}] {name}, {concurrency} in flight: {pairs} pairs/s, p50 {row['p50_ms']} ms",
                      flush=True)
    return found


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    work = Path(tempfile.mkdtemp(prefix="probe_rerank_rows_"))
    servers: dict[str, TritonServer] = {}
    rounds: dict[str, list[float]] = {}
    try:
        _build(_checkpoint(work / "checkpoint"), work / "shipped")
        shutil.copytree(work / "shipped", work / "before")
        runner = work / "before" / "reranker_cross_encoder" / "1" / "model.py"
        old = subprocess.run(["git", "show", f"{BEFORE}:python_backends/onnx_runner/model.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        runner.write_text(old)
        for name in ("shipped", "before"):
            servers[name] = TritonServer(work / name)
            servers[name].start()
        rounds = alternate(b, {name: s.endpoints.grpc for name, s in servers.items()}, ROUNDS, MEASURE_S)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(v) for name, v in rounds.items()}
    result = {
        "command": "python tests/bench/probe_rerank_rows.py",
        "machine": targets.machine(),
        "before": BEFORE,
        "rounds": ROUNDS,
        "passages_per_query": PASSAGES_PER_QUERY,
        "medians_pairs_per_s": medians,
        "shipped_vs_before": {f"{c} in flight": round(medians[f"shipped, {c} in flight"]
                                                      / medians[f"before, {c} in flight"], 3) for c in CONCURRENCY},
        "per_round": rounds,
    }
    (ROOT / "docs" / "bench" / "rerank_rows.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_pairs_per_s", "shipped_vs_before")}, indent=2))


if __name__ == "__main__":
    main()
