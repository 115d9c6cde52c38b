"""Probe (not a test, not in any run): what the gateway's `/v1/embeddings` costs in CPU per request, by process.

Serves examples/embed.yaml (cpu target) and the gateway in front of it as `serve --gateway` runs it (its own
process, `--triton-http`: embeddings over Triton's HTTP endpoint), and a second gateway on gRPC alone (as a cluster
deploys it); runs the issue #17 load (16 requests in flight x 4 sentences) over gRPC and through each gateway, and
reads each process's CPU seconds from /proc: the load generator (this process), the gateway, Triton, and Triton's
python stubs (the tokenizer and encoder instances). Divided by the requests served, the extra CPU the gateway path spends per
request predicts its throughput ratio to gRPC on a CPU-bound machine. With py-spy on PATH it then samples the
gateway (200 Hz, 8 s) during one more measurement and records the frames that hold the most samples.

    python tests/bench/probe_gateway_cpu.py        # ~2 min; writes docs/bench/gateway_cpu.json
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
from bench_support import embed_bench  # noqa: E402
from probe_call_plan import _targets_bench  # noqa: E402


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _descendants(pid: int) -> list[int]:
    found = []
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        found += [int(child), *_descendants(int(child))]
    return found


def _profile(pid: int, run: Any) -> dict[str, Any] | None:
    """py-spy's own-time frames over `run()`, grouped by function; None without py-spy."""
    if shutil.which("py-spy") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", "8", "-r", "200", "-f", "raw", "-o", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run()
        spy.wait(60)
        own: collections.Counter[str] = collections.Counter()
        for line in out.read_text().splitlines():
            if line.strip():
                stack, count = line.rsplit(" ", 1)
                own[stack.split(";")[-1]] += int(count)
    total = sum(own.values())
    return {"samples": total, "top_own_frames": {k: round(v / total, 3) for k, v in own.most_common(15)}}


def main() -> None:
    from tritonforge.server import TritonServer

    b = embed_bench()
    targets = _targets_bench()
    work = Path(tempfile.mkdtemp(prefix="probe_gateway_cpu_"))
    server = TritonServer(b._build(work, "fp32"))
    try:
        server.start()
        triton_pid = server.pid
        assert triton_pid is not None
        stubs = _descendants(triton_pid)
        with targets._gateway(server.endpoints.grpc, server.endpoints.http) as port, \
                targets._gateway(server.endpoints.grpc) as grpc_port:
            def pid_of(p: int) -> int:
                (pid,) = [c for c in _descendants(os.getpid()) if f"{p}" in Path(f"/proc/{c}/cmdline").read_text()]
                return pid

            gateway, grpc_gateway = pid_of(port), pid_of(grpc_port)
            procs = {"load generator": os.getpid(), "gateway": gateway, "triton": triton_pid}
            rows = {}
            ways = {"grpc": lambda: targets._grpc(server.endpoints.grpc),
                    "gateway": lambda: targets._http(port, "minilm", "/v1/embeddings"),
                    "gateway, gRPC only": lambda: targets._http(grpc_port, "minilm", "/v1/embeddings")}
            for name, run in ways.items():
                procs["gateway"] = grpc_gateway if name == "gateway, gRPC only" else gateway
                before = {k: _cpu_s(p) for k, p in procs.items()} | {"python stubs": sum(map(_cpu_s, stubs))}
                row = run()
                after = {k: _cpu_s(p) for k, p in procs.items()} | {"python stubs": sum(map(_cpu_s, stubs))}
                per_request = {k: round((after[k] - before[k]) / row["requests"] * 1e3, 3) for k in after}
                rows[name] = {"sentences_per_s": row["sentences_per_s"], "requests": row["requests"],
                              "cpu_ms_per_request": per_request, "cpu_ms_per_request_total": round(sum(per_request.values()), 3)}
                print(name, rows[name], flush=True)
            procs["gateway"] = gateway
            profile = _profile(gateway, ways["gateway"])
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "command": "python tests/bench/probe_gateway_cpu.py",
        "machine": targets.machine(),
        "rows": rows,
        "measured_gateway_vs_grpc": round(rows["gateway"]["sentences_per_s"] / rows["grpc"]["sentences_per_s"], 3),
        "predicted_by_cpu_per_request": round(
            rows["grpc"]["cpu_ms_per_request_total"] / rows["gateway"]["cpu_ms_per_request_total"], 3),
        "measured_gateway_grpc_only_vs_grpc": round(
            rows["gateway, gRPC only"]["sentences_per_s"] / rows["grpc"]["sentences_per_s"], 3),
        "predicted_gateway_grpc_only": round(
            rows["grpc"]["cpu_ms_per_request_total"] / rows["gateway, gRPC only"]["cpu_ms_per_request_total"], 3),
        "gateway_profile": profile,
    }
    (ROOT / "docs" / "bench" / "gateway_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("measured", "predicted"))}))


if __name__ == "__main__":
    main()
