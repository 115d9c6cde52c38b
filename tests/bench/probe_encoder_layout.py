"""Probe (not a test, not in any run): how the cpu encoder's instances and sessions share the two cores, served.

`examples/embed.yaml` on the cpu target runs two encoder instances, each with `cores // instances` = one one-thread
ONNX Runtime session. Served `embed` stays below the best in-process figure because each instance sits idle while
Triton hands it its next execution, and executions stay small (~19 sentences, docs/performance.md). This serves the
same build in three layouts side by side, alternating rounds, `embed` over gRPC with 16 requests x 4 sentences in
flight:

- shipped: 2 instances x 1 one-thread session;
- 2 instances x 2 one-thread sessions (`intra_op_thread_count: 2`): an execution's planned calls run on two threads,
  so an instance alone uses both cores while the other waits for work (four threads on two cores when both run);
- 1 instance x 2 one-thread sessions.

    python tests/bench/probe_encoder_layout.py        # ~5 min; writes docs/bench/encoder_layout.json
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))
from probe_call_plan import _targets_bench, _with_parameters, served_layouts  # noqa: E402

ROUNDS = 5
SERVED_S = 8.0


def _layouts(b: Any, work: Path) -> dict[str, Path]:
    shipped = b._build(work, "shipped")
    layouts: dict[str, Path] = {"2 instances x 1 session (shipped)": shipped}
    two_by_two = work / "two_by_two"
    shutil.copytree(shipped, two_by_two)
    _with_parameters(two_by_two, {"intra_op_thread_count": "2"})
    layouts["2 instances x 2 sessions"] = two_by_two
    layouts["1 instance x 2 sessions"] = b._build(work, "one_by_two", b._one_instance)
    return layouts


def main() -> None:
    served, medians = served_layouts("probe_encoder_layout_", _layouts, ROUNDS, SERVED_S)
    shipped_median = medians["2 instances x 1 session (shipped)"]
    result = {
        "command": "python tests/bench/probe_encoder_layout.py",
        "machine": _targets_bench().machine(),
        "rounds": ROUNDS,
        "measure_s": SERVED_S,
        "medians_sentences_per_s": medians,
        "vs_shipped": {k: round(v / shipped_median, 3) for k, v in medians.items()},
        "per_execution_sentences": {
            k: statistics.median(row["encoder_avg_batch_sentences"] for row in v) for k, v in served.items()
        },
        "served_rounds": served,
    }
    out = ROOT / "docs" / "bench" / "encoder_layout.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("medians_sentences_per_s", "vs_shipped", "per_execution_sentences")}, indent=2))


if __name__ == "__main__":
    main()
