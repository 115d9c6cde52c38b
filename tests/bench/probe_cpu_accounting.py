"""Probe (not a test, not in any run): where the two cores' time goes under issue #17's load, process by process.

The target `embed` >= 0.95 of the best in-process configuration compares a served path, whose load generator,
Triton, tokenizer step (and gateway) share the two cores with the encoder, with a loop where the encoder has them
to itself. This reads every process's CPU time (utime + stime from /proc) and the machine's idle time over the
same measured window, for: the in-process best layout (2 x 1-thread sessions, planned calls, batch 64), `embed` over
gRPC, and the gateway's `/v1/embeddings` (float JSON), rounds rotated. What the encoder does per core-second served
against in process separates "the encoder runs slower when served" from "the encoder gets fewer core-seconds";
the same in-process layout at smaller batches, per core-second of this process, shows what an execution's size
alone costs (served executions carry what the load assembles: Triton's statistics give their mean size).

    python tests/bench/probe_cpu_accounting.py        # ~4 min; writes docs/bench/cpu_accounting.json
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
MEASURE_S = 8.0
IN_PROCESS_BATCH = 64
BATCH_SWEEP = (64, 32, 20, 16, 8)
_TICKS = os.sysconf("SC_CLK_TCK")
IN_PROCESS = "in-process best (2 x 1-thread sessions, planned calls, batch 64)"
ENCODER = "encoder instances (python backend stubs)"


def _component(command: str, me: int, pid: int) -> str | None:
    if pid == me:
        return "load generator (this process)"
    if "minilm_encoder" in command:
        return ENCODER
    if "minilm_tokenizer" in command:
        return "tokenizer step (python backend stub)"
    if "tritonserver" in command:
        return "tritonserver (gRPC, ensemble scheduling)"
    if "--serve" in command or "tritonforge.cli gateway" in command:
        return "gateway"
    return None


def _process_ticks() -> dict[int, tuple[str, int]]:
    """{pid: (command line, utime + stime ticks)} of every process still readable."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (command, int(fields[11]) + int(fields[12]))
    return out


def _accounted(run: Callable[[], dict[str, Any]], targets: Any) -> dict[str, Any]:
    """``run()``'s row, with each component's share of all CPU time (cores x wall) over it and the machine's idle."""
    me, cores = os.getpid(), os.cpu_count() or 1
    row: dict[str, Any] = {}
    before, started = _process_ticks(), time.perf_counter()
    with targets.cpu_window(row):
        row.update(run())
    after, wall = _process_ticks(), time.perf_counter() - started
    shares: dict[str, float] = {}
    for pid, (command, ticks) in after.items():
        name = _component(command, me, pid)
        if name is not None and pid in before:
            shares[name] = shares.get(name, 0.0) + (ticks - before[pid][1]) / _TICKS / (cores * wall)
    row["cpu_share"] = {k: round(v, 4) for k, v in sorted(shares.items())}
    row["idle_share"] = row["cpu"]["idle"]
    return row


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, rotated, shipped_gateway, write_result
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    repo = b._build(Path(tempfile.mkdtemp(prefix="probe_cpu_accounting_")), "shipped")
    best = targets._layouts(repo)[targets.TWO_SESSIONS + targets.SORTED]
    server = TritonServer(repo)
    server.start()
    try:
        with shipped_gateway(server) as port:
            url = server.endpoints.grpc

            def in_process() -> dict[str, Any]:
                # the bench's in-process runner warms up before its window: time only the window
                return {"sentences_per_s": targets._in_process(best, IN_PROCESS_BATCH, MEASURE_S), "errors": 0}

            runs: dict[str, Callable[[], dict[str, Any]]] = {
                IN_PROCESS: in_process,
                "embed over gRPC": lambda: b._closed_loop(url, "embed", b._text_requests(), ["EMBEDDING"],
                                                          concurrency=b.CONCURRENCY, measure_s=MEASURE_S,
                                                          warmup_s=0.0),
                "gateway /v1/embeddings, float JSON": lambda: b._http_closed_loop(
                    port, "minilm", concurrency=b.CONCURRENCY, measure_s=MEASURE_S, path="/v1/embeddings"),
            }
            b._closed_loop(url, "embed", b._text_requests(), ["EMBEDDING"], concurrency=b.CONCURRENCY, measure_s=3)
            rows: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
            for r in range(ROUNDS):
                for name in rotated(list(runs), r):
                    row = _accounted(runs[name], targets)
                    assert not row["errors"], row
                    rows[name].append(row)
                    print(f"[round {r}] {name}: {row['sentences_per_s']} sentences/s, {row['cpu_share']}, "
                          f"idle {row['idle_share']}", flush=True)
            sweep = _batch_sweep(targets, best)
            executions = b._encoder_stats(url)
    finally:
        server.stop()
    result = {
        "command": "python tests/bench/probe_cpu_accounting.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "measure_s": MEASURE_S,
        "note": "shares are of all CPU time (cores x wall) over the measured block; the served rows' blocks include "
                "the load generator's 2 s warm-up (the HTTP one) or none (gRPC); the in-process row's block is its "
                "window plus a warm-up call per session",
        "medians": _medians(rows),
        "encoder_sentences_per_execution_served": round(executions[0] / executions[1], 2) if executions[1] else None,
        "in_process_by_batch": sweep,
        "per_round": rows,
    }
    write_result("cpu_accounting.json", result, ["medians", "encoder_sentences_per_execution_served",
                                                  "in_process_by_batch"])


def _batch_sweep(targets: Any, best: list[Any]) -> dict[str, dict[str, float]]:
    """The in-process best layout at each of BATCH_SWEEP's batches (2 rounds, medians): sentences/s, the cores this
    process used, and sentences per core-second."""
    from bench_support import rotated  # on sys.path once main() ran
    rounds: dict[int, list[tuple[float, float]]] = {batch: [] for batch in BATCH_SWEEP}
    for r in range(2):
        for batch in rotated(list(BATCH_SWEEP), r):
            cpu, wall = time.process_time(), time.perf_counter()
            rate = targets._in_process(best, batch, MEASURE_S * 0.75)
            cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
            rounds[batch].append((rate, cores))
    return {
        str(batch): {
            "sentences_per_s": round(statistics.median(rate for rate, _ in runs), 1),
            "cores_used": round(statistics.median(cores for _, cores in runs), 3),
            "sentences_per_core_s": round(statistics.median(rate / cores for rate, cores in runs), 1),
        }
        for batch, runs in rounds.items()
    }


def _medians(rows: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    in_process_per_core_s: float | None = None
    for name, runs in rows.items():
        names = sorted({k for r in runs for k in r["cpu_share"]})
        shares = {k: round(statistics.median(r["cpu_share"].get(k, 0.0) for r in runs), 4) for k in names}
        shares = {k: v for k, v in shares.items() if v >= 0.002}  # a process the row does not use
        rate = statistics.median(r["sentences_per_s"] for r in runs)
        # in process, all of this process's CPU is the encoder's (tokenizer included, as in the bench's loop)
        encoder_share = shares["load generator (this process)" if name == IN_PROCESS else ENCODER]
        cores = os.cpu_count() or 1
        per_core_s = rate / (encoder_share * cores) if encoder_share else None
        if in_process_per_core_s is None:
            in_process_per_core_s = per_core_s
        out[name] = {
            "sentences_per_s": rate,
            "cpu_share": shares,
            "idle_share": round(statistics.median(r["idle_share"] for r in runs), 4),
            "encoder_sentences_per_core_s": round(per_core_s, 1) if per_core_s else None,
            "encoder_efficiency_vs_in_process": (
                round(per_core_s / in_process_per_core_s, 3) if per_core_s and in_process_per_core_s else None
            ),
        }
    return out


if __name__ == "__main__":
    main()
