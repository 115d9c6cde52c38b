"""The validator's rate-limiter rules (R44) against a real tritonserver started with and without rate limiting."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tritonforge.server import serve
from tritonforge.validator import RateLimit, check_repository

pytestmark = pytest.mark.integration

MIXED = 'Resource "R" is present as both global and device-specific resource in the model configuration.'


def _model(repo: Path, toy_models: SimpleNamespace, name: str, resources: str) -> None:
    """The toy add_one model with one KIND_CPU instance that needs ``resources`` (rate_limiter text)."""
    folder = toy_models.add_one(repo, name)
    config = (folder / "config.pbtxt").read_text()
    limited = f"instance_group [ {{ kind: KIND_CPU count: 1 rate_limiter {{ {resources} }} }} ]"
    (folder / "config.pbtxt").write_text(config.replace("instance_group [ { kind: KIND_CPU count: 1 } ]", limited))
    assert "rate_limiter" in (folder / "config.pbtxt").read_text()


def _flagged(repo: Path, rate_limit: RateLimit) -> dict[str, list[str]]:
    flagged: dict[str, list[str]] = {}
    for problem in check_repository(repo, gpus=0, rate_limit=rate_limit):
        flagged.setdefault(Path(problem.where).parent.name, []).append(problem.message)
    return flagged


def test_mixed_global_and_device_resource(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    _model(tmp_path, toy_models, "a", 'resources { name: "R" global: true count: 1 }')
    _model(tmp_path, toy_models, "b", 'resources { name: "R" count: 1 }')

    # Triton's default (how tritonforge serves): no resources are registered and both models load
    assert _flagged(tmp_path, RateLimit()) == {}
    with serve(tmp_path, startup_timeout=90) as server:
        assert server.failed_models == {}

    # with rate limiting the model that registers second fails (models load concurrently: either one)
    limited = RateLimit("execution_count")
    assert _flagged(tmp_path, limited) == {"a": [MIXED], "b": [MIXED]}
    with serve(tmp_path, allow_partial=True, startup_timeout=90, extra_args=["--rate-limit=execution_count"]) as server:
        assert len(server.failed_models) == 1, server.failed_models
        ((name, reason),) = server.failed_models.items()
        assert name in ("a", "b")
        assert MIXED in reason


def test_explicit_resource_counts(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    _model(tmp_path, toy_models, "big", 'resources { name: "R" count: 4 }')
    _model(tmp_path, toy_models, "small", 'resources { name: "R" count: 1 }')
    _model(tmp_path, toy_models, "shared", 'resources { name: "G" global: true count: 2 }')
    # a KIND_CPU instance is device 0; G is global, so its count on device 5 is the one that applies
    flags = ["R:2:0", "R:9:1", "G:3:5"]
    limited = RateLimit.from_options("execution_count", flags)
    expected = (
        'Resource count for "R" is limited to 2 which will prevent scheduling of one or more model instances, '
        "the minimum required count is 4"
    )
    assert _flagged(tmp_path, limited) == {"big": [expected]}
    extra = limited.server_args()
    assert extra == ["--rate-limit=execution_count", *(f"--rate-limit-resource={f}" for f in flags)]
    with serve(tmp_path, allow_partial=True, startup_timeout=90, extra_args=extra) as server:
        assert set(server.failed_models) == {"big"}
        assert expected in server.failed_models["big"]


def test_serve_command_runs_triton_with_the_rate_limiter(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    import os
    import subprocess
    import sys

    _model(tmp_path, toy_models, "big", 'resources { name: "R" count: 4 }')
    cli = [sys.executable, "-m", "tritonforge.cli", "serve", str(tmp_path)]
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run([*cli, "--rate-limit", "execution_count", "--rate-limit-resource", "R:2"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 1, result.stderr
    assert "big: " in result.stderr and 'Resource count for "R" is limited to 2' in result.stderr
    result = subprocess.run([*cli, "--rate-limit-resource", "R:2"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1 and "--rate-limit-resource needs --rate-limit=execution_count" in result.stderr
