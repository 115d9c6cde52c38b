"""Fixtures for the robustness suite: toy python models that misbehave on purpose, and helpers to check health.

Every server here runs on free loopback ports and is always stopped; every request has a deadline, so a case that
goes wrong fails in seconds instead of hanging the run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

# ------------------------------------------------------------------------------------------------ toy models

# A model with a tiny queue: one request runs, two wait, the rest must be rejected at once.
SLOW_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 1
input [ {{ name: "SECONDS" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "SLEPT" data_type: TYPE_FP32 dims: [ 1 ] }} ]
dynamic_batching {{ default_queue_policy {{ max_queue_size: 2 }} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

# Sleeps for SECONDS (at most 10 s), answers with what it slept and its own pid (to tell a restarted stub).
SLOW_MODEL = """\
import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            seconds = pb_utils.get_input_tensor_by_name(request, "SECONDS").as_numpy().astype(np.float32)
            time.sleep(float(min(max(seconds.max(), 0.0), 10.0)))
            out = np.full_like(seconds, float(os.getpid()))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("SLEPT", out)]))
        return responses
"""

# A model whose initialize raises: the load fails with this reason.
BROKEN_MODEL = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("weights file is corrupt: checksum mismatch (robustness test)")

    def execute(self, requests):
        return []
"""

BROKEN_REASON = "RuntimeError: weights file is corrupt: checksum mismatch (robustness test)"


def write_model(repo: Path, name: str, config: str, model_py: str) -> Path:
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config.format(name=name), encoding="utf-8")
    (repo / name / "1" / "model.py").write_text(model_py, encoding="utf-8")
    return repo / name


def slow_request(seconds: float, protocol: str = "grpc") -> list[object]:
    """The inputs of one request to a SLOW model (tritonclient objects for ``protocol``)."""
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    tensor = mod.InferInput("SECONDS", [1, 1], "FP32")
    tensor.set_data_from_numpy(np.array([[seconds]], dtype=np.float32))
    return [tensor]


@pytest.fixture(scope="session")
def misbehaving_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``slow`` (overload), ``fragile`` (its stub gets killed), ``steady`` (must keep serving), ``broken``."""
    repo = tmp_path_factory.mktemp("misbehaving_repo")
    for name in ("slow", "fragile", "steady"):
        write_model(repo, name, SLOW_CONFIG, SLOW_MODEL)
    write_model(repo, "broken", SLOW_CONFIG, BROKEN_MODEL)
    return repo


@pytest.fixture(scope="session")
def misbehaving_server(misbehaving_repo: Path) -> Iterator[object]:
    """A tritonserver on the repository above with ``allow_partial=True`` (``broken`` fails to load)."""
    from tritonforge.server import TritonServer

    # heal_stubs=False: these tests document what Triton itself does with a dead stub (the healing is tested apart)
    server = TritonServer(misbehaving_repo, allow_partial=True, startup_timeout=60, exit_timeout=1, heal_stubs=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -------------------------------------------------------------------------------------------------- helpers


def stub_pids(server: object, model: str) -> list[int]:
    """Live ``triton_python_backend_stub`` processes of ``server`` that run ``model`` (from /proc)."""
    pids = []
    script = str(Path(server.repo) / model / "1" / "model.py")  # type: ignore[attr-defined]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z" or int(fields[1]) != server.pid:  # type: ignore[attr-defined]
            continue  # a zombie, or another server's stub
        if argv and os.path.basename(argv[0]) == b"triton_python_backend_stub" and argv[1].decode() == script:
            pids.append(int(entry.name))
    return pids


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture(scope="session")
def robust() -> SimpleNamespace:
    """Helpers for the robustness tests: ``robust.stub_pids(server, model)``, ``robust.slow_request(s)``..."""
    return SimpleNamespace(
        stub_pids=stub_pids,
        slow_request=slow_request,
        wait_for=wait_for,
        write_model=write_model,
        slow_config=SLOW_CONFIG,
        slow_model=SLOW_MODEL,
        broken_model=BROKEN_MODEL,
        broken_reason=BROKEN_REASON,
    )
