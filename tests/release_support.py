"""The `scorer` model repository the release tests work on (test_releases.py, test_releases_bad_input.py,
test_api_bad_input.py). tests/ is on sys.path (tests/conftest.py), so `from release_support import scorer_repo`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

SCORER_CONFIG = """name: "scorer"
backend: "python"
max_batch_size: {max_batch_size}
input {{ name: "X" data_type: TYPE_FP32 dims: 4 }}
output {{ name: "Y" data_type: TYPE_FP32 dims: 4 }}
"""


def scorer_repo(
    root: Path,
    weights: Mapping[int, bytes],
    *,
    max_batch_size: int = 8,
    model_py: bool = False,
    pipeline: bool = False,
) -> Path:
    """``root`` made a repository holding the python model `scorer` (SCORER_CONFIG), one version folder per entry of
    ``weights`` ({version: its weights.bin}), each with a model.py if ``model_py``; with ``pipeline``, an ensemble
    `pipeline` (version 1) beside it. Returns ``root``."""
    for version, content in weights.items():
        (root / "scorer" / str(version)).mkdir(parents=True)
        (root / "scorer" / str(version) / "weights.bin").write_bytes(content)
        if model_py:
            (root / "scorer" / str(version) / "model.py").write_text("# model\n")
    (root / "scorer" / "config.pbtxt").write_text(SCORER_CONFIG.format(max_batch_size=max_batch_size))
    if pipeline:
        (root / "pipeline" / "1").mkdir(parents=True)
        (root / "pipeline" / "config.pbtxt").write_text('name: "pipeline"\nplatform: "ensemble"\n')
    return root


# ------------------------------------------------------------------ a real python model `m` for a real Triton

M_CONFIG = """\
name: "m"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
# a version answers INPUT + {add}; its initialize sleeps {sleep} s first, then {then}
M_MODEL = """\
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        time.sleep({sleep})
        {then}

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(
                "OUTPUT", (pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() + {add}).astype(np.float32))])
            for r in requests
        ]
"""


def slow_version(root: Path, *, add: int, sleep: float = 0, fails: bool = False) -> Path:
    """``root`` made a repository holding the python model `m` (version 1, as `tritonforge build` writes one), which
    answers its input + ``add``; its load takes ``sleep`` s and then, with ``fails``, raises. Returns ``root``."""
    (root / "m" / "1").mkdir(parents=True)
    (root / "m" / "config.pbtxt").write_text(M_CONFIG)
    then = "raise RuntimeError('this version cannot load')" if fails else "pass"
    (root / "m" / "1" / "model.py").write_text(M_MODEL.format(sleep=sleep, then=then, add=add))
    return root


def answer(server: object) -> float:
    """What the version of `m` serving on ``server`` (a TritonServer) adds to its input."""
    import numpy as np

    from tritonforge.triton.connection import Connection

    with Connection(server.endpoints.grpc, "grpc", timeout=30, retries=0) as triton:  # type: ignore[attr-defined]
        out = triton.infer("m", {"INPUT": np.zeros((1, 4), np.float32)})["OUTPUT"]
    return float(out[0, 0])
