"""The source packages type-check (mypy, configured in pyproject.toml: the pydantic plugin, third-party imports
untyped where they ship no types), the model.py files Triton runs (python_backends) among them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("tritonforge", "builders", "clients", "deploy", "ensembles", "gateway", "python_backends")
# the benchmarks are not in the default run; type-checking them keeps them runnable between runs
CHECKED = (*PACKAGES, "tests/bench")


def test_mypy_passes() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it comes with the `test` extra)")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *CHECKED],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_the_model_config_stubs_match_the_installed_tritonclient() -> None:
    """typings/ types configs as protobuf messages; regenerate it (typings/README.md) when tritonclient changes."""
    import re

    from tritonforge.config_io import model_config_pb2

    stub = (ROOT / "typings" / "tritonclient" / "grpc" / "model_config_pb2.pyi").read_text()
    pb = model_config_pb2()
    top_level = set(re.findall(r"^class (\w+)\(_message\.Message\)", stub, re.MULTILINE))
    assert top_level == set(pb.DESCRIPTOR.message_types_by_name)
    fields = set(re.findall(r"^    (\w+)_FIELD_NUMBER: _builtins\.int", stub[stub.index("class ModelConfig("):],
                            re.MULTILINE))
    assert {f.upper() for f in pb.ModelConfig.DESCRIPTOR.fields_by_name} == fields
