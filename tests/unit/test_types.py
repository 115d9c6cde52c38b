"""The source packages type-check (mypy, configured in pyproject.toml: the pydantic plugin, third-party imports
untyped where they ship no types)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tritonforge", "builders", "clients", "deploy", "ensembles", "gateway")


def test_mypy_passes() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the `test` extra)")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *PACKAGES],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
