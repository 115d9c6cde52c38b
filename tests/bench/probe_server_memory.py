"""Probe (not a test, not in any run): does tritonserver's memory grow under steady load, and by how much a request?

Builds an example (cpu target), serves it with tritonforge's launcher on free loopback ports, and sends it a closed
loop from tritonforge's own clients (a request id on every call) for ``--minutes``: `embed` texts over gRPC, or
`llm` (or `rag`) streams of which every ``--leave-every``-th is left after its first piece (the client cancels the
stream and sends the engine its stop, as the gateway does for a client that goes away). Every 15 s it reads the tritonserver
process's VmRSS, RssAnon and RssShmem (the python stubs are other processes, not counted) with its threads and file
descriptors, and reports the slope (least squares) from minute 2 to the end and for each half of that window: a
leak keeps its slope, a warm-up's second half is flatter than its first.

    python tests/bench/probe_server_memory.py --example llm --minutes 15 --leave-every 3   # docs/bench/server_memory_llm.json
    python tests/bench/probe_server_memory.py --example embed --minutes 6                  # docs/bench/server_memory_embed.json
    python tests/bench/probe_server_memory.py --example rag --minutes 15 --leave-every 3   # docs/bench/server_memory_rag.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_S = 15.0
PROMPTS = ["Write one sentence about the sea.", "Name three colours.", "What is two plus two?",
           "Say hello in French.", "Describe a cat in five words."]
TEXTS = ["how do I speed up inference on a GPU", "what makes thunder", "a short sentence",
         "Triton serves models over HTTP and gRPC, with dynamic batching and ensembles of several steps"]


def _status(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    mb = {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "RssAnon", "RssShmem")}
    return {**mb, "threads": int(fields["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def _slope_mb_per_min(samples: list[dict[str, float]], key: str, start: float, end: float) -> float | None:
    window = [s for s in samples if start <= s["t"] <= end]
    if len(window) < 3:
        return None
    t = np.array([s["t"] for s in window]) / 60.0
    return round(float(np.polyfit(t, np.array([s[key] for s in window]), 1)[0]), 4)


def _load(example: str, endpoint: str, stop: threading.Event, counts: list[int], errors: list[str], i: int,
          leave_every: int) -> None:
    from tritonforge.clients import Client

    with Client(endpoint, timeout=120) as client:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                if example == "embed":
                    client.embed([TEXTS[(n + i + k) % len(TEXTS)] for k in range(4)])
                else:
                    prompt = PROMPTS[(n + i) % len(PROMPTS)]
                    stream: Any = (client.rag_stream(prompt, top_n=2, max_tokens=32) if example == "rag"
                                   else client.stream(prompt, max_tokens=32))
                    if leave_every and n % leave_every == 0:
                        next(iter(stream), None)
                        stream.close()
                    else:
                        "".join(stream)
                counts[i] += 1
            except Exception as err:  # counted and reported; the loop goes on
                errors.append(f"{type(err).__name__}: {err}"[:200])
                time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--example", choices=("embed", "llm", "rag"), default="llm")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--leave-every", type=int, default=3, help="llm, rag: leave every N-th stream early (0: none)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--triton-log", type=Path, help="keep Triton's log (and its python stubs' stderr) here")
    args = parser.parse_args()
    from tritonforge.server import TritonServer

    out = args.json or ROOT / "docs" / "bench" / f"server_memory_{args.example}.json"
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run([sys.executable, "-m", "tritonforge", "build", str(ROOT / "examples" / f"{args.example}.yaml"),
                        "-o", str(repo), "--target", "cpu"], check=True, stdout=subprocess.DEVNULL)
        with TritonServer(repo, log_file=args.triton_log) as server:
            pid = server.pid
            assert pid is not None
            stop, counts = threading.Event(), [0] * args.concurrency
            errors: list[str] = []
            leave = args.leave_every if args.example != "embed" else 0
            workers = [threading.Thread(target=_load, args=(args.example, server.endpoints.grpc, stop, counts, errors,
                                                            i, leave), daemon=True) for i in range(args.concurrency)]
            started = time.monotonic()
            for worker in workers:
                worker.start()
            samples: list[dict[str, Any]] = []
            while (elapsed := time.monotonic() - started) <= args.minutes * 60:
                samples.append({"t": round(elapsed, 1), "requests": sum(counts), **_status(pid)})
                print(json.dumps(samples[-1]), flush=True)
                time.sleep(SAMPLE_S)
            stop.set()
            for worker in workers:
                worker.join(timeout=150)
            alive = server.is_running()
            heals = dict(server.watchdog.healed) if server.watchdog else {}  # stubs that died and were reloaded
    end = samples[-1]["t"]
    middle = (120 + end) / 2
    served = samples[-1]["requests"] - next(s["requests"] for s in samples if s["t"] >= 120)
    result = {
        "command": " ".join(["python", "tests/bench/probe_server_memory.py", *sys.argv[1:]]),
        "example": args.example, "concurrency": args.concurrency, "leave_every": leave, "minutes": args.minutes,
        "requests": samples[-1]["requests"], "errors": len(errors), "error_examples": sorted(set(errors))[:3],
        "server_alive_at_end": alive, "stub_heals": heals,
        "slope_mb_per_min": {key: {"minute 2 to end": _slope_mb_per_min(samples, key, 120, end),
                                   "first half": _slope_mb_per_min(samples, key, 120, middle),
                                   "second half": _slope_mb_per_min(samples, key, middle, end)}
                             for key in ("VmRSS", "RssAnon", "RssShmem")},
        "growth_kb_per_1000_requests": round((samples[-1]["VmRSS"] - next(s["VmRSS"] for s in samples
                                                                          if s["t"] >= 120)) * 1024
                                             / max(served, 1) * 1000, 2),
        "threads": [samples[0]["threads"], samples[-1]["threads"]], "fds": [samples[0]["fds"], samples[-1]["fds"]],
        "samples": samples,
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0 if alive and not errors and not heals else 1


if __name__ == "__main__":
    sys.exit(main())
