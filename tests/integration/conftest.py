"""Shared helpers for the integration tests (each section owns its fixture names)."""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

# ------------------------------------------------------------------------------------------------------------------
# Toy python-backend models (server and client tests): tiny, deterministic, no weights.
# ------------------------------------------------------------------------------------------------------------------


def toy_embedding(text: str) -> list[float]:
    """What the toy ``embed`` model computes for one text (the same source runs inside the model)."""
    data = text.encode("utf-8")
    return [float(len(text)), float(len(data)), float(sum(data) % 997), float(data[0] if data else 0)]


ADD_ONE_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

ADD_ONE_MODEL = '''\
import ssl  # a C extension of the interpreter's stdlib: needs this interpreter's libpython
import sys

import numpy as np
import tritonclient  # installed only in the launcher's virtual environment
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.where = sys.prefix

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT", (x + 1).astype(np.float32))]))
        return responses
'''

EMBED_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 16
input [ {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 4 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

EMBED_MODEL = '''\
import time

import numpy as np
import triton_python_backend_utils as pb_utils

{toy_embedding}

class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = [t.decode("utf-8") for t in pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()[:, 0]]
            if any(not t for t in texts):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "TEXT must not be empty", pb_utils.TritonError.INVALID_ARG)))
                continue
            if any(t.startswith("fail:") for t in texts):  # the model's own fault: Triton's INTERNAL
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    "RuntimeError: the toy model failed")))
                continue
            for t in texts:  # "sleep:<seconds>" makes a slow request (deadline tests)
                if t.startswith("sleep:"):
                    time.sleep(float(t.split(":", 1)[1]))
            out = np.array([toy_embedding(t) for t in texts], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDING", out)]))
        return responses
'''

BROKEN_MODEL = "import this_module_does_not_exist_anywhere  # noqa\n"


def _write(repo: Path, name: str, config: str, model_py: str) -> Path:
    (repo / name / "1").mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config.format(name=name), encoding="utf-8")
    (repo / name / "1" / "model.py").write_text(model_py, encoding="utf-8")
    return repo / name


def write_add_one(repo: Path, name: str = "add_one") -> Path:
    return _write(repo, name, ADD_ONE_CONFIG, ADD_ONE_MODEL)


def write_toy_embed(repo: Path, name: str = "embed") -> Path:
    source = textwrap.dedent(inspect.getsource(toy_embedding))
    return _write(repo, name, EMBED_CONFIG, EMBED_MODEL.format(toy_embedding=source))


def write_broken(repo: Path, name: str = "broken") -> Path:
    """A model whose model.py fails to import (the load fails with ModuleNotFoundError)."""
    return _write(repo, name, ADD_ONE_CONFIG, BROKEN_MODEL)


@pytest.fixture(scope="session")
def toy_models() -> SimpleNamespace:
    """The writers above, for tests that build their own repository: ``toy_models.add_one(repo)``..."""
    return SimpleNamespace(add_one=write_add_one, embed=write_toy_embed, broken=write_broken, embedding=toy_embedding)


@pytest.fixture(scope="session")
def toy_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("toy_repo")
    write_add_one(repo)
    write_toy_embed(repo)
    return repo


@pytest.fixture(scope="session")
def toy_server(toy_repo: Path) -> Iterator[object]:
    """A tritonserver serving ``add_one`` and ``embed`` (the toy models above) for the whole session."""
    from tritonforge.server import TritonServer

    server = TritonServer(toy_repo, startup_timeout=60)
    server.start()
    try:
        yield server
    finally:
        server.stop()
