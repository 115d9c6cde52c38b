"""Probe (not a test, not in any run): the dynamic batchers' queue delays on the retrieval path.

examples/rag.yaml gave the encoder 2000 us of queue delay, the retriever and the reranker 1000, and every small python
step (tokenizers, the retriever's select) 500 by default: a lone query waits for each in turn. This serves two
Tritons built from examples/rag.yaml's embedding, retriever and reranker (no LLM), as shipped before the change and
with every delay 0, and with the encoder's and the steps' 0 but the retriever's and the reranker's kept, and rotates
them round by round at: 1 query in flight on `search`, 1 and 8 on `search_rerank`
(top 10 reranked to 3; the reranker is examples/rag.yaml's tiny random stand-in, so only its cost is real).

    python tests/bench/probe_queue_delay_rag.py        # ~7 min; writes docs/bench/queue_delay_rag.json
"""

from __future__ import annotations

import functools
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
ROUNDS = 3
MEASURE_S = 6.0
QUERIES = ["how do I speed up inference on a GPU", "what makes thunder", "how do transformers attend to tokens",
           "what is a cold front", "how should I batch requests", "why is my model slow on CPU"]
BEFORE = {  # the delays examples/rag.yaml and the spec's defaults gave before the change
    "minilm": {"": 2000, "tokenizer": 500},
    "passages": {"": 1000, "select": 500},
    "reranker": {"": 1000, "tokenizer": 500},
}


def _spec(zero: set[tuple[str, str]]) -> dict[str, Any]:
    """examples/rag.yaml's three retrieval models with BEFORE's delays, 0 for the (model, part) pairs in ``zero``."""
    import yaml

    data = yaml.safe_load((EXAMPLES / "rag.yaml").read_text())
    data["models"] = {k: m for k, m in data["models"].items() if k in BEFORE}
    data["models"]["passages"]["corpus"] = str(EXAMPLES / data["models"]["passages"]["corpus"])
    for key, parts in BEFORE.items():
        model = data["models"][key]
        for part, delay in parts.items():
            block = model if not part else model.setdefault(part, {"max_batch_size": 64})
            block.setdefault("dynamic_batching", {})["max_queue_delay_microseconds"] = 0 if (key, part) in zero else delay
    return data


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, medians, rounds_across_servers, write_result
    from probe_call_plan import _targets_bench

    from tritonforge.build import build
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    b, targets = embed_bench(), _targets_bench()
    folder = Path(tempfile.mkdtemp(prefix="probe_queue_delay_rag_"))
    servers = {}
    every = {(key, part) for key, parts in BEFORE.items() for part in parts}
    variants = {
        "before (2000/1000/1000, steps 500 us)": set(),
        "no delay": every,
        "encoder and steps 0, retriever and reranker 1000": every - {("passages", ""), ("reranker", "")},
    }
    for i, (name, zero) in enumerate(variants.items()):
        repo = folder / f"variant{i}"
        build(parse_spec(_spec(zero), source_dir=EXAMPLES), repo, target="cpu")
        servers[name] = TritonServer(repo)
    requests = [{"QUERY": np.array([[q.encode()]], dtype=object)} for q in QUERIES]
    loads = {"search, 1 in flight": ("search", 1), "search_rerank, 1 in flight": ("search_rerank", 1),
             "search_rerank, 8 in flight": ("search_rerank", 8)}
    runs = {load: functools.partial(b._closed_loop, model=model, requests=requests, outputs=["DOC_IDS", "SCORES"],
                                    concurrency=in_flight, measure_s=MEASURE_S)
            for load, (model, in_flight) in loads.items()}
    rows = rounds_across_servers(servers, runs, ROUNDS,
                                 {"queries_per_s": "sentences_per_s", "p50_ms": "p50_ms", "p99_ms": "p99_ms"})
    result = {
        "command": "python tests/bench/probe_queue_delay_rag.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "measure_s": MEASURE_S,
        "medians": medians(rows),
        "per_round": rows,
    }
    write_result("queue_delay_rag.json", result, ["medians"])


if __name__ == "__main__":
    main()
