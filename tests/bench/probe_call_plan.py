"""Probe (not a test, not in any run): the cpu runner's planned calls against fixed calls of 4 rows.

The cpu runner (python_backends/onnx_runner) runs a batch's length-sorted rows in several ONNX Runtime calls.
Until 2026-12-04 it cut them into calls of 4 rows; now call_plan.py cuts them where a cost fitted at load predicts
the least time. This measures both ways on examples/embed.yaml built for the cpu target, alternating rounds:

- in process: two 1-thread sessions on two Python threads, the benchmark's sentences, batches of 16, 20 and 64; and
  passages of 4-16 of those sentences (~50-220 tokens, what a RAG corpus holds), batches of 16 and 64;
- served: two Tritons from the same build, one with the runner told to cut fewest calls of at most 4 rows
  (parameters ``max_rows_per_call: 4``, ``call_cost: "1,0,0"``: the old calls of 4, up to where the short one
  falls), the other as built; `embed` over gRPC, 16 requests in flight x 4 sentences;
- then, on the planned server, where the requests in flight are: Triton's per-model metrics (queue and compute time
  per request, executions) over one more measurement, turned into requests held by each step (Little's law).

    python tests/bench/probe_call_plan.py        # ~6 min; writes docs/bench/call_plan.json
"""

from __future__ import annotations

import functools
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from bench_support import embed_bench, rotated  # noqa: E402

ROUNDS = 4
IN_PROCESS_S = 3.0
SERVED_S = 8.0
BATCHES = (16, 20, 64)
OLD_WAY = {"max_rows_per_call": "4", "call_cost": "1,0,0"}


def _sessions(repo: Path) -> tuple[list[Any], list[str], str]:
    import onnxruntime as ort

    path = repo / "minilm_encoder" / "1" / "model.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]) for _ in range(2)]
    return sessions, [i.name for i in sessions[0].get_inputs()], sessions[0].get_outputs()[0].name


def _token_ids(repo: Path, passages: bool) -> list[np.ndarray]:
    """The benchmark's sentences tokenized, or passages of 4-16 of them (seeded), truncated at 256 tokens."""
    import random

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(repo / "minilm_tokenizer" / "1" / "tokenizer" / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    texts = embed_bench()._sentences()
    if passages:
        rng = random.Random(3)
        texts = [" ".join(rng.choice(texts) for _ in range(rng.randint(4, 16))) for _ in range(200)]
    return [np.asarray(e.ids, np.int64) for e in tokenizer.encode_batch(texts)]


def _in_process(
    repo: Path, cut: Callable[[list[int]], list[tuple[int, int]]], batch: int, ids: list[np.ndarray]
) -> float:
    """Rows/s of two 1-thread sessions side by side, each running batches of `batch` rows cut by `cut`."""
    sessions, inputs, output = _sessions(repo)

    def step(t: int) -> Callable[[int], int]:
        def run_batch(j: int) -> int:
            rows = sorted(((batch * j + k + 7 * t) % len(ids) for k in range(batch)), key=lambda r: -len(ids[r]))
            for start, stop in cut([len(ids[r]) for r in rows]):
                chunk = rows[start:stop]
                width = len(ids[chunk[0]])
                feed = {n: np.zeros((len(chunk), width), np.int64) for n in inputs}
                for i, r in enumerate(chunk):
                    feed["input_ids"][i, : len(ids[r])] = ids[r]
                    feed["attention_mask"][i, : len(ids[r])] = 1
                sessions[t].run([output], feed)
            return batch

        return run_batch

    return _targets_bench().side_by_side([step(0), step(1)], IN_PROCESS_S)


def _with_parameters(repo: Path, parameters: dict[str, str]) -> None:
    """Set (add or replace) string parameters of the encoder's config, as a ModelConfig message."""
    from tritonforge.config_io import read_config, render_config

    path = repo / "minilm_encoder" / "config.pbtxt"
    config = read_config(path)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    path.write_text(render_config(config))


def _served_row(b: Any, url: str, measure_s: float) -> dict[str, Any]:
    """`embed` over gRPC at the benchmark's load for ``measure_s``, with the sentences per encoder execution."""
    before = b._encoder_stats(url)
    row: dict[str, Any] = b._closed_loop(url, "embed", b._text_requests(), ["EMBEDDING"],
                                         concurrency=b.CONCURRENCY, measure_s=measure_s)
    after = b._encoder_stats(url)
    row["encoder_avg_batch_sentences"] = round((after[0] - before[0]) / max(1, after[1] - before[1]), 2)
    return row


def served_layouts(
    prefix: str,
    layouts: Callable[[Any, Path], dict[str, Path]],
    rounds: int,
    measure_s: float,
    *,
    started: Callable[[dict[str, Path]], None] | None = None,
    each_round: Callable[[int], None] | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, float]]:
    """The layout probes' runner: ``layouts(embed bench, work folder)`` builds the repositories to compare ({name:
    repository}, in a temporary folder removed after); each is served by its own Triton, all started, then (after
    ``started(repositories)``) for ``rounds`` rounds ``each_round(round)`` runs and every server takes a `_served_row`
    of ``measure_s``, the servers' order rotated round by round. Returns ({name: the rows}, {name: median
    sentences/s})."""
    from tritonforge.server import TritonServer

    b = embed_bench()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        repos = layouts(b, work)
        servers = {name: TritonServer(repo) for name, repo in repos.items()}
        served: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.start()
            if started is not None:
                started(repos)
            for r in range(rounds):
                if each_round is not None:
                    each_round(r)
                for name in rotated(list(servers), r):
                    row = _served_row(b, servers[name].endpoints.grpc, measure_s)
                    served[name].append(row)
                    print(f"[round {r}] {name}: {row['sentences_per_s']} sentences/s, "
                          f"{row['encoder_avg_batch_sentences']} per execution", flush=True)
        finally:
            for server in servers.values():
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return served, {k: statistics.median(row["sentences_per_s"] for row in v) for k, v in served.items()}


def _metrics(server: Any) -> dict[tuple[str, str], float]:
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://{server.endpoints.metrics}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r'(nv_inference_\w+)\{model="(\w+)",version="1"\} ([0-9.e+]+)', line)
        if match:
            found[(match.group(1), match.group(2))] = float(match.group(3))
    return found


def _where_requests_are(server: Any, b: Any) -> dict[str, Any]:
    """One more closed-loop measurement; per model: requests/s, requests per execution, queue and compute ms per
    request, and the requests it holds on average (rate x time)."""
    before = _metrics(server)
    row = b._closed_loop(server.endpoints.grpc, "embed", b._text_requests(), ["EMBEDDING"],
                         concurrency=b.CONCURRENCY, measure_s=SERVED_S, warmup_s=0.01)
    after = _metrics(server)
    seconds = row["measured_s"]
    out: dict[str, Any] = {"client": {"sentences_per_s": row["sentences_per_s"], "mean_ms": row.get("mean_ms")}}
    for model in ("embed", "minilm_tokenizer", "minilm_encoder"):
        delta = {name: after[(name, m)] - before.get((name, m), 0.0) for name, m in after if m == model}
        n = delta.get("nv_inference_request_success", 0.0)
        if not n:
            continue
        queue_ms = delta.get("nv_inference_queue_duration_us", 0.0) / n / 1e3
        compute_ms = delta.get("nv_inference_compute_infer_duration_us", 0.0) / n / 1e3
        request_ms = delta.get("nv_inference_request_duration_us", 0.0) / n / 1e3
        out[model] = {
            "requests_per_execution": round(n / max(1.0, delta.get("nv_inference_exec_count", 0.0)), 2),
            "queue_ms": round(queue_ms, 2), "compute_ms": round(compute_ms, 2), "request_ms": round(request_ms, 2),
            "held_queued": round(n / seconds * queue_ms / 1e3, 2), "held_computing": round(n / seconds * compute_ms / 1e3, 2),
            "held_in_all": round(n / seconds * request_ms / 1e3, 2),
        }
    return out


@functools.cache
def _targets_bench() -> Any:
    """tests/bench/test_embed_targets.py as a module: its `side_by_side` runner and `machine()` CPU record."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_probe_embed_targets", ROOT / "tests" / "bench" / "test_embed_targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    from tritonforge.python_backends import load_module
    from tritonforge.server import TritonServer

    call_plan: Any = load_module("onnx_runner", "call_plan")
    b = embed_bench()
    work = Path(tempfile.mkdtemp(prefix="probe_call_plan_"))
    try:
        planned_repo = b._build(work, "planned")
        fours_repo = work / "fours"
        shutil.copytree(planned_repo, fours_repo)
        _with_parameters(fours_repo, OLD_WAY)

        sessions, inputs, output = _sessions(planned_repo)
        names = [(n, np.int64) for n in inputs]
        cost = call_plan.measure(lambda r, w: sessions[0].run([output], call_plan.timing_feed(names, r, w)))
        ways: dict[str, Callable[[list[int]], list[tuple[int, int]]]] = {
            "calls of 4": lambda lengths: [(s, min(s + 4, len(lengths))) for s in range(0, len(lengths), 4)],
            "planned": lambda lengths: call_plan.plan(lengths, cost, 16),
        }
        loads = {"": (_token_ids(planned_repo, False), BATCHES), "passages, ": (_token_ids(planned_repo, True), (16, 64))}
        in_process: dict[str, list[float]] = {
            f"{w}, {kind}batch {n}": [] for kind, (_, batches) in loads.items() for n in batches for w in ways
        }
        for r in range(ROUNDS):
            for kind, (ids, batches) in loads.items():
                for n in batches:
                    for w in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
                        rate = _in_process(planned_repo, ways[w], n, ids)
                        in_process[f"{w}, {kind}batch {n}"].append(round(rate, 1))
            print(f"[in process, round {r}] {json.dumps({k: v[-1] for k, v in in_process.items()})}", flush=True)

        servers = {"calls of 4 (served)": TritonServer(fours_repo), "planned (served)": TritonServer(planned_repo)}
        served: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        try:
            for server in servers.values():
                server.start()
            for r in range(ROUNDS):
                for name in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
                    row = _served_row(b, servers[name].endpoints.grpc, SERVED_S)
                    served[name].append(row)
                    print(f"[served, round {r}] {name}: {row['sentences_per_s']} sentences/s, "
                          f"{row['encoder_avg_batch_sentences']} per execution", flush=True)
            where = _where_requests_are(servers["planned (served)"], b)
            fitted = [line.split('"')[1] for line in servers["planned (served)"].log_text().splitlines()
                      if "call cost fitted at load" in line]
        finally:
            for server in servers.values():
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {k: statistics.median(v) for k, v in in_process.items()}
    medians.update({k: statistics.median(row["sentences_per_s"] for row in v) for k, v in served.items()})
    result = {
        "command": "python tests/bench/probe_call_plan.py",
        "machine": _targets_bench().machine(),
        "in_process_cost_fitted": cost.describe(),
        "served_costs_fitted_at_load": fitted,
        "rounds": ROUNDS,
        "where_requests_are_planned_served": where,
        "medians_sentences_per_s": medians,
        "planned_vs_calls_of_4": {
            **{f"in process, batch {n}": round(medians[f"planned, batch {n}"] / medians[f"calls of 4, batch {n}"], 3)
               for n in BATCHES},
            **{f"in process, passages, batch {n}": round(
                medians[f"planned, passages, batch {n}"] / medians[f"calls of 4, passages, batch {n}"], 3)
               for n in (16, 64)},
            "served": round(medians["planned (served)"] / medians["calls of 4 (served)"], 3),
        },
        "in_process_rounds": in_process,
        "served_rounds": served,
    }
    out = ROOT / "docs" / "bench" / "call_plan.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"medians": medians, "ratios": result["planned_vs_calls_of_4"]}, indent=2))


if __name__ == "__main__":
    main()
