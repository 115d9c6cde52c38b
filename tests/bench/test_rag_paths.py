"""Benchmark (not in the default run): RAG three ways on one real tritonserver, same queries, same answers.

    pytest tests/bench/test_rag_paths.py -s

Builds examples/rag.yaml as `tritonforge demo` does (real MiniLM encoder and FAISS index over the example corpus;
tiny RANDOM cross-encoder and decoder stand-ins, so the answers mean nothing but every step is real), adds the
`rag_bls` python model (python_backends/rag_bls, config rendered with builders.model_configs), serves it, and
answers the same queries (greedy, exactly MAX_TOKENS tokens, non-streamed; TOP_K candidates, TOP_N kept):

(a) `rag` ensemble: one gRPC call (`Client.rag`);
(b) `rag_bls`: one gRPC call to a decoupled BLS model that calls search → rerank → select → prompt → llm
    (`Client.rag(model="rag_bls")`: same contract, same transport as (a));
(c) client-side chaining with `Client`: search → rerank → best TOP_N and the prompt built in the client (the spec's
    jinja2 template, trimmed with the LLM's tokenizer as the prompt step does) → generate: three round trips.

Checked first: the three paths give the same sources, prompt and answer text per query. Then p50/p95 latency at
concurrency 1 and answers/s (and p50/p95) at concurrency 4, with Triton's per-model split (statistics deltas). The
cores are shared with other work, so the paths take turns in short windows (ROUNDS x WINDOW_S each) rather than
one long run each: a burst of outside load then hits every path, and each window's 1-minute load is recorded.
Results: docs/bench/rag_paths.json and docs/bench/rag_paths.png. No target is asserted (the issue sets none).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_support import embed_bench

from tritonforge import python_backends

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "bench"

QUERIES = [
    "how do I speed up inference on a GPU",
    "what makes thunder",
    "how does dynamic batching work",
    "what is a model repository",
    "why run a transformer in half precision",
    "how do I bake a cake",
    "what does TensorRT do",
    "how are embeddings compared",
]
TOP_K = 10
TOP_N = 3
MAX_TOKENS = 32
SAMPLING: dict[str, Any] = {"temperature": 0.0, "end_id": -1}  # greedy; end_id -1: always MAX_TOKENS tokens
WARMUP_S = 1.0  # per window
WINDOW_S = 5.0  # measured per window; ROUNDS windows per path and level
ROUNDS = 3  # the paths take turns window by window, so load from other work on the cores hits them alike
CONCURRENCY = 4
LOAD_WAIT_S = 30.0  # once per level (the embed bench waits 60 s); the paths are interleaved anyway
PATHS = ("ensemble", "bls", "client")


def _wait_idle(label: str, loads: dict[str, float]) -> None:
    bench = embed_bench()
    bench.LOAD_WAIT_S = LOAD_WAIT_S
    bench._wait_idle(label, loads)


# ---------------------------------------------------------------------------------------------- build and serve


def _build(tmp_path: Path) -> tuple[Path, Any]:
    """examples/rag.yaml with the demo's stand-ins, plus the rag_bls model; returns (repo, spec)."""
    from tritonforge.build import build
    from tritonforge.demo import demo_spec

    spec, notes = demo_spec(ROOT / "examples" / "rag.yaml")
    for note in notes:
        print(f"note: {note}", flush=True)
    repo = tmp_path / "model_repository"
    build(spec, repo, target="cpu")
    _add_bls(repo, spec)
    return repo, spec


def _add_bls(repo: Path, spec: Any) -> None:
    """Render rag_bls with the project's renderers (inputs/outputs as the `rag` ensemble's) and write it in."""
    from tritonforge.builders.llm import llm_names
    from tritonforge.builders.model_configs import ModelSet, Signature, TensorSpec, render_model
    from tritonforge.builders.rag import PROMPT_OUTPUTS, generation_controls
    from tritonforge.repository import materialize
    from tritonforge.spec import LLMModel, RagModel, RetrieverModel, Serving
    from tritonforge.validator import check_repository

    (key, rag), *_ = spec.of_kind(RagModel).items()
    retriever = spec.models[rag.retriever]
    llm = spec.models[rag.llm]
    assert isinstance(retriever, RetrieverModel) and isinstance(llm, LLMModel)
    controls = generation_controls(llm)
    inputs = (
        TensorSpec("QUERY", "TYPE_STRING", (1,)),
        TensorSpec("TOP_K", "TYPE_INT32", (1,), optional=True),
        TensorSpec("TOP_N", "TYPE_INT32", (1,), optional=True),
        TensorSpec("max_tokens", "TYPE_INT32", (1,), optional=True),
        TensorSpec("MIN_SCORE", "TYPE_FP32", (1,), optional=True),  # rag_bls passes it to the prompt step
        *controls,
    )
    outputs = (TensorSpec("text_output", "TYPE_STRING", (-1,)), *PROMPT_OUTPUTS[:4])
    # no dynamic batching: execute() only starts threads, so a queue delay would add latency and batch nothing
    serving = Serving(max_batch_size=16, dynamic_batching=None)
    params = {
        "search_model": retriever.ensemble,
        "rerank_model": spec.models[str(retriever.reranker)].ensemble,
        "select_model": f"{rag.retriever}_select",
        "prompt_model": f"{key}_prompt",
        "llm_model": llm_names(rag.llm, llm).ensemble,
    }
    config, _ = render_model(
        "rag_bls",
        serving,
        Signature(inputs, outputs),
        target="cpu",
        backend="python",
        parameters=params,
        cpu_only=True,
        decoupled=True,
    )
    bls = ModelSet()
    # read from the source tree: python_backends.MODELS (which `source()` checks) does not list rag_bls yet
    shared = ROOT / "python_backends" / "shared"
    bls.add(config, {"model.py": (ROOT / "python_backends" / "rag_bls" / "model.py").read_bytes(),
                     **{f"{m}.py": (shared / f"{m}.py").read_bytes() for m in python_backends.SHARED["rag_bls"]}})
    materialize(bls.files, repo)
    problems = check_repository(repo)
    assert not problems, [f"{p.where}: {p.message}" for p in problems]


# ----------------------------------------------------------------------------------------------- three paths


@dataclass(frozen=True)
class Answer:
    text: str
    source_ids: tuple[str, ...]
    prompt: str


class ClientPrompt:
    """The prompt step, done in the client: the spec's template, passages dropped (lowest first) until it fits."""

    def __init__(self, repo: Path, spec: Any) -> None:
        import jinja2.sandbox
        from transformers import AutoTokenizer

        from tritonforge.spec import RagModel

        (key, rag), *_ = spec.of_kind(RagModel).items()
        llm = spec.models[rag.llm]
        self.template = jinja2.sandbox.ImmutableSandboxedEnvironment().from_string(rag.prompt_template)
        self.tokenizer = AutoTokenizer.from_pretrained(str(repo / f"{key}_prompt" / "1" / "tokenizer"))
        self.add_special_tokens = llm.preprocessing.add_special_tokens
        self.max_input_len, self.max_seq_len = llm.max_input_len, llm.max_seq_len

    def __call__(self, query: str, passages: list[dict[str, Any]], max_tokens: int) -> tuple[str, int]:
        budget = min(self.max_input_len, self.max_seq_len - max_tokens)
        for keep in range(len(passages), -1, -1):
            prompt = self.template.render(query=query, passages=passages[:keep])
            if len(self.tokenizer.encode(prompt, add_special_tokens=self.add_special_tokens)) <= budget:
                return prompt, keep
        raise ValueError(f"the prompt of {query!r} does not fit even without passages")


def _paths(prompt: ClientPrompt) -> dict[str, Callable[[Any, str], Answer]]:
    def via(model: str) -> Callable[[Any, str], Answer]:
        def run(client: Any, query: str) -> Answer:
            a = client.rag(query, top_k=TOP_K, top_n=TOP_N, max_tokens=MAX_TOKENS, model=model, **SAMPLING)
            return Answer(a.text, tuple(s.id for s in a.sources), a.prompt)

        return run

    def chained(client: Any, query: str) -> Answer:
        hits = client.search([query], top_k=TOP_K)[0]
        scores = client.rerank(query, [h.text for h in hits])
        order = sorted(range(len(hits)), key=lambda j: -float(scores[j]))[:TOP_N]  # stable, as the select step
        passages = [{"id": hits[j].id, "text": hits[j].text, "score": float(scores[j])} for j in order]
        text_prompt, kept = prompt(query, passages, MAX_TOKENS)
        text = client.generate(text_prompt, max_tokens=MAX_TOKENS, **SAMPLING)
        return Answer(text, tuple(p["id"] for p in passages[:kept]), text_prompt)

    return {"ensemble": via("rag"), "bls": via("rag_bls"), "client": chained}


# ------------------------------------------------------------------------------------------------- measuring


def _percentiles(seconds: list[float]) -> dict[str, float | None]:
    ms = np.asarray(seconds) * 1000.0
    if not len(ms):
        return {"p50_ms": None, "p95_ms": None, "mean_ms": None}
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


@dataclass
class Window:
    latencies: list[float]
    errors: list[str]


def _closed_loop(url: str, run: Callable[[Any, str], Answer], concurrency: int) -> Window:
    """One window: ``concurrency`` workers (own client each) ask the next query as soon as their answer is
    complete; only answers started after the warm-up and finished inside the window count."""
    from tritonforge.clients import Client

    start = time.perf_counter() + WARMUP_S
    end = start + WINDOW_S
    lock = threading.Lock()
    window = Window([], [])

    def worker(idx: int) -> None:
        with Client(url, timeout=120) as client:
            i = idx
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    run(client, QUERIES[i % len(QUERIES)])
                except Exception as err:  # counted and reported
                    with lock:
                        window.errors.append(f"{type(err).__name__}: {str(err)[:200]}")
                    continue
                t1 = time.perf_counter()
                if t0 >= start and t1 <= end:
                    with lock:
                        window.latencies.append(t1 - t0)
                i += concurrency

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=WARMUP_S + WINDOW_S + 180)
    return window


def _summary(windows: list[Window], concurrency: int, loads: list[float]) -> dict[str, Any]:
    latencies = [x for w in windows for x in w.latencies]
    errors = [e for w in windows for e in w.errors]
    measured = WINDOW_S * len(windows)
    return {
        "concurrency": concurrency,
        "answers": len(latencies),
        "errors": len(errors),
        "error_examples": sorted(set(errors))[:3],
        "measured_s": measured,
        "windows": len(windows),
        "answers_per_s": round(len(latencies) / measured, 2),
        "tokens_per_s": round(len(latencies) * MAX_TOKENS / measured, 1),
        **_percentiles(latencies),
        "answers_per_s_by_window": [round(len(w.latencies) / WINDOW_S, 2) for w in windows],
        "load_1min_at_window_starts": loads,
    }


def _statistics(url: str) -> dict[str, dict[str, int]]:
    """Cumulative Triton statistics per model: request count and ns of success / queue / compute infer."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics("", as_json=True).get("model_stats", [])
    finally:
        client.close()
    out = {}
    for s in stats:
        inf = s.get("inference_stats", {})
        out[s["name"]] = {
            "count": int(inf.get("success", {}).get("count", 0)),
            "success_ns": int(inf.get("success", {}).get("ns", 0)),
            "queue_ns": int(inf.get("queue", {}).get("ns", 0)),
            "compute_infer_ns": int(inf.get("compute_infer", {}).get("ns", 0)),
            "executions": int(s.get("execution_count", 0)),
        }
    return out


def _accumulate(
    total: dict[str, dict[str, int]], before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> None:
    """Add one window's statistics (after - before) to ``total``, per model."""
    for name, a in after.items():
        b = before.get(name, {k: 0 for k in a})
        into = total.setdefault(name, {k: 0 for k in a})
        for k in a:
            into[k] += a[k] - b[k]


def _split(total: dict[str, dict[str, int]], answers: int) -> dict[str, Any]:
    """Per model used: requests (warm-ups included, so a bit more than ``answers`` x steps) and average ms per
    request (total, queue, compute infer), as Triton counts them."""
    out = {}
    for name, t in sorted(total.items()):
        n = t["count"]
        if n <= 0:
            continue
        out[name] = {
            "requests": n,
            "request_ms": round(t["success_ns"] / n / 1e6, 3),
            "queue_ms": round(t["queue_ns"] / n / 1e6, 3),
            "compute_infer_ms": round(t["compute_infer_ns"] / n / 1e6, 3),
            "avg_batch": round(n / t["executions"], 2) if t["executions"] else None,
        }
    return out


# ------------------------------------------------------------------------------------------------------ test


def test_rag_three_paths(tmp_path: Path) -> None:
    pytest.importorskip("all_minilm_l6_v2", reason="the MiniLM checkpoint ships in the `cpu` extra")
    from tritonforge.clients import Client
    from tritonforge.server import TritonServer

    repo, spec = _build(tmp_path)
    paths = _paths(ClientPrompt(repo, spec))
    loads: dict[str, float] = {}
    results: dict[str, Any] = {p: {} for p in PATHS}
    with TritonServer(repo) as server:
        url = server.endpoints.grpc
        # same answer from every path, per query (greedy): the comparison below is of the same work
        answers: dict[str, list[Answer]] = {}
        with Client(url, timeout=120) as client:
            for name, run in paths.items():
                answers[name] = [run(client, q) for q in QUERIES]
        mismatches = [
            {"query": q, **{p: asdict(answers[p][i]) for p in PATHS}}
            for i, q in enumerate(QUERIES)
            if len({answers[p][i] for p in PATHS}) != 1
        ]
        for level, concurrency in (("c1", 1), (f"c{CONCURRENCY}", CONCURRENCY)):
            _wait_idle(f"rag {level}", loads)
            windows: dict[str, list[Window]] = {p: [] for p in PATHS}
            window_loads: dict[str, list[float]] = {p: [] for p in PATHS}
            calls: dict[str, dict[str, dict[str, int]]] = {p: {} for p in PATHS}
            for _ in range(ROUNDS):
                for name, run in paths.items():
                    window_loads[name].append(round(os.getloadavg()[0], 2))
                    before = _statistics(url)
                    windows[name].append(_closed_loop(url, run, concurrency))
                    _accumulate(calls[name], before, _statistics(url))
            for name in PATHS:
                results[name][level] = _summary(windows[name], concurrency, window_loads[name])
                results[name][f"server_split_{level}"] = _split(calls[name], results[name][level]["answers"])
                print(f"[{name} {level}] {json.dumps(results[name][level])}", flush=True)

    base = results["ensemble"]
    result = {
        "command": "pytest tests/bench/test_rag_paths.py -s",
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "models": "examples/rag.yaml as `tritonforge demo` builds it: all-MiniLM-L6-v2 fp32 encoder, flat FAISS "
        "index over examples/data/corpus.jsonl, tiny RANDOM cross-encoder and decoder stand-ins, cpu target",
        "request": f"{len(QUERIES)} queries cycled, TOP_K {TOP_K}, TOP_N {TOP_N}, greedy, exactly {MAX_TOKENS} "
        "tokens (end_id -1), non-streamed, gRPC, loopback",
        "paths": {
            "ensemble": "`rag` ensemble, one call (Client.rag)",
            "bls": "`rag_bls` decoupled BLS python model (search -> rerank -> select -> prompt -> llm), one call "
            "(Client.rag(model='rag_bls'))",
            "client": "Client.search -> Client.rerank -> top-N + jinja2 prompt in the client -> Client.generate "
            "(3 round trips)",
        },
        "schedule": f"per concurrency level: {ROUNDS} rounds, each path in turn for a {WARMUP_S:.0f} s warm-up + "
        f"{WINDOW_S:.0f} s window, so each figure pools {ROUNDS * WINDOW_S:.0f} s",
        "same_answers": not mismatches,
        "mismatches": mismatches,
        "example": {"query": QUERIES[0], **asdict(answers["ensemble"][0])},
        "load_1min_at_start": loads,
        "results": results,
        "ratios_vs_ensemble": {
            name: {
                "c1_p50": round(results[name]["c1"]["p50_ms"] / base["c1"]["p50_ms"], 3),
                f"c{CONCURRENCY}_answers_per_s": round(
                    results[name][f"c{CONCURRENCY}"]["answers_per_s"] / base[f"c{CONCURRENCY}"]["answers_per_s"], 3
                ),
            }
            for name in PATHS
            if results[name]["c1"]["p50_ms"] and base["c1"]["p50_ms"] and base[f"c{CONCURRENCY}"]["answers_per_s"]
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "rag_paths.json").write_text(json.dumps(result, indent=2) + "\n")
    _plot(result, OUT / "rag_paths.png")
    print(json.dumps(result, indent=2))

    assert not mismatches, mismatches
    for name in PATHS:
        for level in ("c1", f"c{CONCURRENCY}"):
            assert results[name][level]["errors"] == 0, (name, level, results[name][level]["error_examples"])


def _plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = {"ensemble": "rag ensemble", "bls": "BLS model", "client": "client chaining"}
    colors = ["#3182bd", "#fd8d3c", "#74c476"]
    res = result["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.arange(len(PATHS))
    p50 = [res[p]["c1"]["p50_ms"] or 0 for p in PATHS]
    p95 = [res[p]["c1"]["p95_ms"] or 0 for p in PATHS]
    left.bar(x - 0.2, p50, 0.4, label="p50", color=colors)
    left.bar(x + 0.2, p95, 0.4, label="p95", color=colors, alpha=0.5)
    for i in range(len(PATHS)):
        left.text(x[i] - 0.2, p50[i], f"{p50[i]:.0f}", ha="center", va="bottom", fontsize=8)
        left.text(x[i] + 0.2, p95[i], f"{p95[i]:.0f}", ha="center", va="bottom", fontsize=8)
    left.set(
        xticks=x, xticklabels=[labels[p] for p in PATHS], ylabel="ms", title="latency at concurrency 1 (p50 | p95)"
    )
    tput = [res[p][f"c{CONCURRENCY}"]["answers_per_s"] for p in PATHS]
    right.bar(x, tput, color=colors)
    for i, v in enumerate(tput):
        right.text(x[i], v, f"{v:.2f}", ha="center", va="bottom")
    right.set(
        xticks=x,
        xticklabels=[labels[p] for p in PATHS],
        ylabel="answers/s",
        title=f"throughput at concurrency {CONCURRENCY}",
    )
    fig.suptitle(f"RAG on 2 CPU cores: top-{TOP_K} → rerank → top-{TOP_N} → {MAX_TOKENS} greedy tokens (tiny decoder)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
