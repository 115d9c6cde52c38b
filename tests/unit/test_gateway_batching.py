"""gateway/batching.py: concurrent /v1/embeddings requests joined into fewer Triton requests, and kept apart again
(rows, token counts, errors) — against a scripted Triton call that records what it was sent."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tritonforge.errors import ClientError, TransientError
from tritonforge.gateway.batching import EmbeddingBatcher


class FakeEnsemble:
    """Answers each text with the vector [len(text), ord(text[0])] and len(text) tokens; a call waits for ``gate``
    when one is set; a call holding a text in ``refused`` fails as Triton refuses an input."""

    def __init__(self, refused: set[str] | None = None, error: Exception | None = None) -> None:
        self.calls: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.refused, self.error = refused or set(), error

    async def __call__(self, ensemble: str, inputs: dict[str, np.ndarray], version: str) -> dict[str, Any]:
        assert ensemble == "embed"
        texts = [t.decode() for t in inputs["TEXT"].reshape(-1)]
        assert inputs["TEXT"].shape == (len(texts), 1)
        self.calls.append(texts)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        if self.refused & set(texts):
            raise ClientError("model 'embed': in ensemble 'embed', input 'TEXT' is not valid UTF-8")
        return {
            "EMBEDDING": np.array([[len(t), ord(t[0])] for t in texts], np.float32),
            "NUM_TOKENS": np.array([[len(t)] for t in texts], np.int32),
        }


def _expected(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), ord(t[0])] for t in texts], np.float32)


async def _settle_loop() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_request_goes_at_once_as_its_own_call() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=2)
        out = await batcher.embed("embed", ["hello", "a"])
        assert triton.calls == [["hello", "a"]]
        np.testing.assert_array_equal(out.vectors, _expected(["hello", "a"]))
        assert out.tokens is not None and out.tokens.tolist() == [5, 1]

    asyncio.run(run())


def test_requests_queued_behind_the_calls_in_flight_go_as_one_call_and_get_their_own_rows() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=1)
        first = asyncio.create_task(batcher.embed("embed", ["x"]))
        await _settle_loop()
        queued = [asyncio.create_task(batcher.embed("embed", t)) for t in (["bb", "ccc"], ["dddd"], ["e"])]
        await _settle_loop()
        assert triton.calls == [["x"]]  # the others wait: one call in flight
        triton.gate.set()
        results = await asyncio.gather(first, *queued)
        assert triton.calls == [["x"], ["bb", "ccc", "dddd", "e"]]
        for texts, out in zip((["x"], ["bb", "ccc"], ["dddd"], ["e"]), results, strict=True):
            np.testing.assert_array_equal(out.vectors, _expected(texts))
            assert out.tokens is not None and out.tokens.tolist() == [len(t) for t in texts]

    asyncio.run(run())


def test_a_joined_call_never_exceeds_max_rows() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=4, max_calls=1)
        tasks = [asyncio.create_task(batcher.embed("embed", [c * 2, c * 3])) for c in "abcde"]
        await _settle_loop()
        triton.gate.set()
        await asyncio.gather(*tasks)
        assert [len(c) for c in triton.calls] == [2, 4, 4]
        assert all(len(c) <= 4 for c in triton.calls)

    asyncio.run(run())


def test_one_refused_input_fails_only_its_own_request() -> None:
    async def run() -> None:
        triton = FakeEnsemble(refused={"bad"})
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=1)
        first = asyncio.create_task(batcher.embed("embed", ["x"]))
        await _settle_loop()
        good, bad, other = (asyncio.create_task(batcher.embed("embed", t)) for t in (["ok"], ["bad"], ["fine"]))
        await _settle_loop()
        triton.gate.set()
        await first
        np.testing.assert_array_equal((await good).vectors, _expected(["ok"]))
        np.testing.assert_array_equal((await other).vectors, _expected(["fine"]))
        with pytest.raises(ClientError, match="not valid UTF-8"):
            await bad
        assert triton.calls[1] == ["ok", "bad", "fine"]  # joined, refused, then each alone
        assert sorted(triton.calls[2:]) == [["bad"], ["fine"], ["ok"]]

    asyncio.run(run())


def test_a_server_failure_fails_every_joined_request_without_retrying_each() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=1)
        first = asyncio.create_task(batcher.embed("embed", ["x"]))
        await _settle_loop()
        queued = [asyncio.create_task(batcher.embed("embed", [t])) for t in ("a", "b")]
        await _settle_loop()
        triton.error = TransientError("model 'embed': grpc server 127.0.0.1:1 is unavailable")
        triton.gate.set()
        for task in (first, *queued):
            with pytest.raises(TransientError, match="unavailable"):
                await task
        assert triton.calls == [["x"], ["a", "b"]]

    asyncio.run(run())


def test_a_request_cancelled_while_queued_is_left_out_of_the_next_call() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=1)
        first = asyncio.create_task(batcher.embed("embed", ["x"]))
        await _settle_loop()
        gone, kept = (asyncio.create_task(batcher.embed("embed", [t])) for t in ("gone", "kept"))
        await _settle_loop()
        gone.cancel()
        await _settle_loop()
        triton.gate.set()
        await first
        np.testing.assert_array_equal((await kept).vectors, _expected(["kept"]))
        assert triton.calls == [["x"], ["kept"]]

    asyncio.run(run())


def test_no_joining_sends_every_request_alone_and_at_once() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=0)
        tasks = [asyncio.create_task(batcher.embed("embed", [t])) for t in ("a", "b", "c")]
        await _settle_loop()
        assert triton.calls == [["a"], ["b"], ["c"]]  # all in flight together, none joined
        triton.gate.set()
        await asyncio.gather(*tasks)

    asyncio.run(run())


def test_versions_are_never_joined_and_bad_settings_are_refused() -> None:
    async def run() -> None:
        triton = FakeEnsemble()
        triton.gate = asyncio.Event()
        batcher = EmbeddingBatcher(triton, max_rows=8, max_calls=1)
        tasks = [asyncio.create_task(batcher.embed("embed", [t], v)) for t, v in (("a", "1"), ("b", "2"))]
        await _settle_loop()
        assert triton.calls == [["a"], ["b"]]  # one lane per version: both go at once
        triton.gate.set()
        await asyncio.gather(*tasks)
        with pytest.raises(ValueError, match="between 1 and max_rows=8"):
            await batcher.embed("embed", ["t"] * 9)

    asyncio.run(run())
    with pytest.raises(ValueError, match="max_calls=-1"):
        EmbeddingBatcher(FakeEnsemble(), max_rows=8, max_calls=-1)
