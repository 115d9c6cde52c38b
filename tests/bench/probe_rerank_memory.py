"""Probe (not a test, not in any run): what one large rerank request costs in memory, one padded call against the
runner's calls of at most 16 pairs (python_backends/onnx_runner/model.py, max_rows_per_call).

The gateway accepts up to 512 documents per /v1/rerank; the pairs' attention holds [pairs, heads, width, width]
floats per layer. This exports the MiniLM-sized stand-in cross-encoder of probe_rerank_rows.py and, in a fresh
process each, scores 512 pairs of 256 tokens on one 1-thread ONNX Runtime session: as one [1, 512, 256] call, and as
calls of 16 pairs; it reports each process's peak RSS and time.

    python tests/bench/probe_rerank_memory.py        # ~3 min; writes docs/bench/rerank_memory.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAIRS, WIDTH = 512, 256

_SCORE = """
import resource, sys, time
import numpy as np, onnxruntime as ort
path, pairs, width, per_call = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
began = time.perf_counter()
for start in range(0, pairs, per_call):
    n = min(per_call, pairs - start)
    ones = np.ones((1, n, width), np.int64)
    session.run(["SCORES"], {"input_ids": ones, "attention_mask": ones, "token_type_ids": np.zeros_like(ones)})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, loaded / 1024, time.perf_counter() - began)
"""


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "bench")]
    from probe_call_plan import _targets_bench
    from probe_rerank_rows import _checkpoint

    from tritonforge.builders.cross_encoder import export_cross_encoder

    work = Path(tempfile.mkdtemp(prefix="probe_rerank_memory_"))
    artifact = export_cross_encoder(_checkpoint(work / "checkpoint"), max_seq_length=WIDTH, cache_dir=work / "cache")
    rows = {}
    for per_call in (PAIRS, 16):
        out = subprocess.run([sys.executable, "-c", _SCORE, str(artifact.onnx_path), str(PAIRS), str(WIDTH),
                              str(per_call)], capture_output=True, text=True, check=True).stdout.split()
        peak, loaded, seconds = (float(v) for v in out)
        name = "one padded call" if per_call == PAIRS else f"calls of {per_call} pairs"
        rows[name] = {"peak_rss_mib": round(peak), "rss_after_load_mib": round(loaded), "seconds": round(seconds, 1)}
        print(name, rows[name], flush=True)
    result = {"command": "python tests/bench/probe_rerank_memory.py", "machine": _targets_bench().machine(),
              "pairs": PAIRS, "width_tokens": WIDTH, "rows": rows}
    (ROOT / "docs" / "bench" / "rerank_memory.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
