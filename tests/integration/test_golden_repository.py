"""model_repository/ is the committed golden output of the demo build: configs and model.py files, no weights.

Regenerate after an intended change with:  TRITONFORGE_UPDATE_GOLDEN=1 pytest tests/integration/test_golden_repository.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[2] / "model_repository"
KEPT = ("config.pbtxt", "model.py")


def golden_files(repo: Path) -> dict[str, bytes]:
    return {
        p.relative_to(repo).as_posix(): p.read_bytes()
        for p in sorted(repo.rglob("*"))
        if p.is_file() and p.name in KEPT
    }


def test_fresh_build_reproduces_the_golden_repository_byte_for_byte(demo_repo: Path) -> None:
    built = golden_files(demo_repo)
    if os.environ.get("TRITONFORGE_UPDATE_GOLDEN") == "1":
        shutil.rmtree(GOLDEN, ignore_errors=True)
        for rel, data in built.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
    assert set(built) == set(golden_files(GOLDEN)), "the set of models/files changed"
    for rel, data in built.items():
        assert data == (GOLDEN / rel).read_bytes(), f"{rel} differs from the golden copy"


def test_golden_configs_hold_no_placeholders() -> None:
    for rel, data in golden_files(GOLDEN).items():
        if rel.endswith(".pbtxt"):
            assert b"${" not in data, rel
