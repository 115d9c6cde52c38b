"""Probe (not a test, not in any run): does pinning each cpu encoder instance to its own core help `embed`?

The cpu target runs two encoder instances (python backend stubs, one one-thread ONNX Runtime session each) on two
cores shared with the tokenizer stub, tritonserver and the load generator. Unpinned, Linux moves the stubs' threads
between the cores as the other processes wake; pinned, each instance keeps its core's caches but cannot move to
the idle core when the other process on its own core runs. This serves the same build twice side by side, one
with encoder instance k pinned to core k (the runner's parameter `cpu_affinity: instance`, python_backends/
onnx_runner/affinity.py; the probe reads each stub's Cpus_allowed_list to confirm it), alternating rounds, `embed` over gRPC with issue #17's 16 requests x 4 sentences in flight. Each
round also runs the best in-process configuration (2 x 1-thread sessions, planned calls, batch 64) unpinned and with
thread k pinned to core k, so that the served figure is judged against the in-process limit pinned the same way.

    python tests/bench/probe_stub_affinity.py        # ~4 min; writes docs/bench/stub_affinity.json
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))
from probe_call_plan import _targets_bench, _with_parameters, served_layouts  # noqa: E402

ROUNDS = 6
SERVED_S = 8.0


def _stubs(repo: Path) -> dict[str, int]:
    """Python backend stub processes serving models of ``repo``: instance name -> pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"triton_python_backend_stub"):
            continue
        if not argv[1].decode().startswith(str(repo)):
            continue
        # argv[8] is the model instance name ("minilm_encoder_0_1")
        found[argv[8].decode()] = int(entry.name)
    return found


def _allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "?"


def _in_process_rows(repo: Path) -> dict[str, Any]:
    """Sentences/s of the best in-process layout at batch 64, unpinned and pinned (thread k on core k)."""
    import threading

    targets = _targets_bench()
    encoders = targets._layouts(repo)[targets.TWO_SESSIONS + targets.SORTED]

    def pinned(k: int) -> Any:
        def encode(texts: list[str]) -> Any:
            if threading.current_thread() is not threading.main_thread():  # not the warm-up call
                os.sched_setaffinity(0, {k})
            return encoders[k](texts)
        return encode

    return {
        "in process, unpinned": lambda: targets._in_process(encoders, 64, 1.5),
        "in process, thread k on core k": lambda: targets._in_process([pinned(0), pinned(1)], 64, 1.5),
    }


def main() -> None:
    in_process: dict[str, Any] = {}
    local: dict[str, list[float]] = {}
    pins: dict[str, str] = {}

    def layouts(b: Any, work: Path) -> dict[str, Path]:
        # examples/embed.yaml pins its encoders (since the fourteenth session): each variant sets the parameter
        # itself, or both would be pinned (which a run on 2026-12-06 measured as 1.002 of "unpinned")
        unpinned = b._build(work, "unpinned")
        _with_parameters(unpinned, {"cpu_affinity": "none"})
        pinned_repo = work / "pinned"
        shutil.copytree(unpinned, pinned_repo)
        _with_parameters(pinned_repo, {"cpu_affinity": "instance"})
        in_process.update(_in_process_rows(unpinned))
        local.update({name: [] for name in in_process})
        return {"unpinned": unpinned, "encoder instance k on core k (shipped)": pinned_repo}

    def started(repos: dict[str, Path]) -> None:
        stubs = _stubs(repos["encoder instance k on core k (shipped)"].resolve())
        encoders = sorted(name for name in stubs if name.startswith("minilm_encoder"))
        assert len(encoders) == 2, stubs
        pins.update({name: _allowed(stubs[name]) for name in encoders})
        print(f"encoder stubs' cores: {pins}", flush=True)

    def in_process_round(r: int) -> None:
        for name, measure in in_process.items():
            local[name].append(round(measure(), 1))
            print(f"[round {r}] {name}: {local[name][-1]} sentences/s", flush=True)

    served, medians = served_layouts(
        "probe_stub_affinity_", layouts, ROUNDS, SERVED_S, started=started, each_round=in_process_round
    )
    base = medians["unpinned"]
    local_medians = {k: statistics.median(v) for k, v in local.items()}
    result = {
        "command": "python tests/bench/probe_stub_affinity.py",
        "machine": _targets_bench().machine(),
        "rounds": ROUNDS,
        "measure_s": SERVED_S,
        "pinned_stub_cores": pins,
        "medians_sentences_per_s": medians,
        "vs_unpinned": {k: round(v / base, 3) for k, v in medians.items()},
        "per_round_ratio": [round(p["sentences_per_s"] / u["sentences_per_s"], 3)
                            for u, p in zip(*served.values(), strict=True)],
        "in_process_medians": local_medians,
        "served_vs_in_process": {
            "unpinned": round(base / local_medians["in process, unpinned"], 3),
            "pinned": round(medians["encoder instance k on core k (shipped)"] / local_medians["in process, thread k on core k"], 3),
        },
        "in_process_rounds": local,
        "served_rounds": served,
    }
    out = ROOT / "docs" / "bench" / "stub_affinity.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_sentences_per_s", "vs_unpinned", "per_round_ratio",
                                                 "in_process_medians", "served_vs_in_process")}, indent=2))


if __name__ == "__main__":
    main()
