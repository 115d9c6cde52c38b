"""Probe (not a test, not in any run): what the dynamic batchers' queue delays cost at low load, and buy at high load.

examples/embed.yaml gave the encoder `max_queue_delay_microseconds: 2000` (preferred batch sizes 16/32/64) and the
tokenizer 500 (until the ninth session; now 0 and 0). A lone request cannot reach a preferred size, so Triton holds
it for the whole delay before running it. This serves two Tritons, examples/embed.yaml with the old delays and with
both delays 0 (a free instance takes whatever is queued), and alternates them round by round at: 1 request of 1 sentence in flight (a query being embedded), 1 of
4 sentences, and issue #17's load (16 x 4 sentences in flight).

    python tests/bench/probe_queue_delay.py        # ~5 min; writes docs/bench/queue_delay.json
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
MEASURE_S = 6.0


def _delays(encoder_us: int, tokenizer_us: int) -> Callable[[dict[str, Any]], None]:
    def change(model: dict[str, Any]) -> None:
        model["dynamic_batching"]["max_queue_delay_microseconds"] = encoder_us
        model["tokenizer"]["dynamic_batching"]["max_queue_delay_microseconds"] = tokenizer_us

    return change


def _embed_load(b: Any, per_request: int, in_flight: int, url: str) -> dict[str, Any]:
    return b._closed_loop(url, "embed", b._text_requests(per_request), ["EMBEDDING"], concurrency=in_flight,
                          measure_s=MEASURE_S)


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from bench_support import embed_bench, medians, rounds_across_servers, write_result
    from probe_call_plan import _targets_bench

    from tritonforge.server import TritonServer

    b, targets = embed_bench(), _targets_bench()
    folder = Path(tempfile.mkdtemp(prefix="probe_queue_delay_"))
    servers = {
        "before (2000 / 500 us)": TritonServer(b._build(folder, "before", _delays(2000, 500))),
        "no delay (0 / 0)": TritonServer(b._build(folder, "no_delay", _delays(0, 0))),
    }
    loads = {  # name: (sentences per request, requests in flight)
        "1 x 1 sentence": (1, 1),
        "1 x 4 sentences": (4, 1),
        "16 x 4 sentences": (4, 16),
    }
    runs = {load: functools.partial(_embed_load, b, per_request, in_flight)
            for load, (per_request, in_flight) in loads.items()}
    rows = rounds_across_servers(servers, runs, ROUNDS,
                                 {"sentences_per_s": "sentences_per_s", "p50_ms": "p50_ms", "p99_ms": "p99_ms"})
    result = {
        "command": "python tests/bench/probe_queue_delay.py",
        "machine": targets.machine(),
        "rounds": ROUNDS,
        "measure_s": MEASURE_S,
        "medians": medians(rows),
        "per_round": rows,
    }
    write_result("queue_delay.json", result, ["medians"])


if __name__ == "__main__":
    main()
