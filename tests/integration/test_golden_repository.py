"""model_repository/ is the committed golden output of the demo build: its configs, no weights and no code.

A fresh build must reproduce every config.pbtxt byte for byte, and ship as each python model's model.py exactly one
of the sources in python_backends/ (so a backend edit is one file, not a source and its golden copy).

Regenerate after an intended change with:  TRITONFORGE_UPDATE_GOLDEN=1 pytest tests/integration/test_golden_repository.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tritonforge import python_backends

GOLDEN = Path(__file__).resolve().parents[2] / "model_repository"


def golden_files(repo: Path) -> dict[str, bytes]:
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in sorted(repo.rglob("config.pbtxt"))}


def test_fresh_build_reproduces_the_golden_repository_byte_for_byte(demo_repo: Path) -> None:
    built = golden_files(demo_repo)
    if os.environ.get("TRITONFORGE_UPDATE_GOLDEN") == "1":
        for model in (child for child in GOLDEN.glob("*") if child.is_dir()):  # the README stays
            shutil.rmtree(model)
        for rel, data in built.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_bytes(data)
    assert set(built) == set(golden_files(GOLDEN)), "the set of models changed"
    for rel, data in built.items():
        assert data == (GOLDEN / rel).read_bytes(), f"{rel} differs from the golden copy"


def test_every_shipped_model_py_is_a_python_backends_source(demo_repo: Path) -> None:
    shipped = sorted(demo_repo.rglob("model.py"))
    assert shipped
    for path in shipped:
        # a model's model.py and the modules it loads from next to itself (cpu_llm_engine.py) come whole from one
        # python_backends/<name>/ folder
        files = {p.name: p.read_bytes() for p in path.parent.glob("*.py")}
        assert any(files == python_backends.sources(name) for name in python_backends.MODELS), (
            f"{path.parent.relative_to(demo_repo)}: {sorted(files)} is not one python_backends/*/ folder"
        )


def test_golden_configs_hold_no_placeholders() -> None:
    for rel, data in golden_files(GOLDEN).items():
        assert b"${" not in data, rel
