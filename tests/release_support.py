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
