"""Finished BLS response iterators are kept past their end and then dropped by a Python thread: on Triton 2.51 the
stub's native thread dropping the last reference freed numpy arrays without the GIL and the stub segfaulted
(docs/serving.md). Checked here: the bookkeeping, and that each model iterating a decoupled BLS call on its own
threads keeps its iterators (fake pb_utils; the real server runs them in tests/integration)."""

from __future__ import annotations

import sys
import weakref
from typing import Any

import fake_pb_utils as fpb
import numpy as np
import pytest

from tritonforge import python_backends


class _Iterator:
    """A decoupled BLS call's responses (what exec(decoupled=True) returns); weak-referenceable, as pybind's are."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = responses

    def __iter__(self) -> Any:
        return iter(self.responses)


class _Sender:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, int]] = []

    def send(self, response: Any = None, flags: int = 0) -> None:
        self.sent.append((response, flags))


@pytest.fixture
def pb(monkeypatch: pytest.MonkeyPatch) -> Any:
    module = fpb.make_module()
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, fpb.MODULE_NAME, module)
    return module


def _piece(pb: Any, text: bytes) -> Any:
    return pb.InferenceResponse(output_tensors=[pb.Tensor("text_output", np.array([[text]], dtype=object))])


def test_an_iterator_is_kept_its_seconds_then_dropped_by_a_later_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    retired_module = python_backends.load_module("llm_bls", "bls_retired")
    clock = [100.0]
    monkeypatch.setattr(retired_module.time, "monotonic", lambda: clock[0])
    retired = retired_module.Retired(seconds=10.0)

    first = _Iterator([])
    retired.keep(first)
    gone = weakref.ref(first)
    del first
    assert gone() is not None  # kept past its end: the stub's thread cannot hold the last reference
    clock[0] += 5.0
    retired.keep(_Iterator([]))
    assert gone() is not None and len(retired.kept) == 2
    clock[0] += 6.0
    retired.keep(_Iterator([]))
    assert gone() is None  # 11 s after its end, dropped by the thread that kept the next one
    assert len(retired.kept) == 2


class _Request:
    """A BLS request whose exec(decoupled=True) returns ``iterator``."""

    def __init__(self, iterator: _Iterator) -> None:
        self.iterator = iterator

    def exec(self, decoupled: bool = False) -> _Iterator:
        assert decoupled
        return self.iterator


def test_the_relay_sends_sources_with_the_first_piece_and_an_error_alone(pb: Any) -> None:
    rag_answer = python_backends.load_module("rag_generate", "rag_answer")
    retired = python_backends.load_module("rag_generate", "bls_retired").Retired()
    sources = [pb.Tensor("SOURCE_IDS", np.array([[1]], dtype=np.int64))]
    sender = _Sender()
    answered = _Iterator([_piece(pb, b"Hel"), _piece(pb, b"lo")])
    rag_answer.relay(sender, _Request(answered), sources, retired)
    assert [flags for _r, flags in sender.sent] == [0, 0, 1]
    assert [t.name() for t in sender.sent[0][0].output_tensors()] == ["SOURCE_IDS", "text_output"]
    assert [t.name() for t in sender.sent[1][0].output_tensors()] == ["text_output"]

    refused = _Sender()
    error = _Iterator([pb.InferenceResponse(error=pb.TritonError("temperature must be >= 0"))])
    rag_answer.relay(refused, _Request(error), sources, retired)
    ((response, flags),) = refused.sent
    assert flags == 1 and "temperature" in response.error().message()
    assert [iterator for _when, iterator in retired.kept] == [answered, error]  # both kept past their end


@pytest.mark.parametrize("model", ["rag_generate", "llm_bls"])
def test_each_model_iterating_bls_on_its_threads_ships_the_keeper_beside_it(model: str) -> None:
    """Each python model folder ships alone (an NGC container has no tritonforge): the module it loads by path must
    be among the files its build writes (rag_bls, not in MODELS yet, is written by tests/bench/test_rag_paths.py
    from SHARED). tests/integration serve them on a real Triton."""
    assert python_backends.sources(model)["bls_retired.py"] == (python_backends.SHARED_DIR / "bls_retired.py").read_bytes()
