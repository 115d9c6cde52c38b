"""gateway/embeddings.py and tritonforge/triton/bounded.py: a request's chunks in flight together, bounded, answered in
order, failing as one."""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from tritonforge.errors import ClientError
from tritonforge.gateway import GatewayModels
from tritonforge.gateway.embeddings import embed_texts
from tritonforge.triton.bounded import gather_bounded


@dataclass
class FakeTriton:
    """An embed ensemble: row = [index of the text, its length]; NUM_TOKENS = length. Answers in reverse order of
    arrival (the later chunk first) so that order is the gateway's to keep."""

    fail_on: str | None = None
    in_flight: int = 0
    most_in_flight: int = 0
    started: list[str] = field(default_factory=list)
    cancelled: int = 0
    max_batch: int = 0  # the ensemble's max_batch_size (0: it does not batch)
    chunk_sizes: list[int] = field(default_factory=list)

    async def max_batch_size(self, model: str, *, version: str = "", timeout: Any = None, refresh: bool = False) -> int:
        return self.max_batch

    async def infer(self, model: str, inputs: dict[str, np.ndarray], **_: Any) -> dict[str, np.ndarray]:
        texts = [t.decode() for t in inputs["TEXT"].reshape(-1)]
        self.started.append(texts[0])
        self.chunk_sizes.append(len(texts))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.05 / len(self.started))
            if self.fail_on in texts:
                raise ClientError(f"bad text {self.fail_on!r}")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1
        rows = np.array([[float(t.split()[1]), float(len(t))] for t in texts], np.float32)
        return {"EMBEDDING": rows, "NUM_TOKENS": np.array([[len(t)] for t in texts], np.int32)}


@dataclass
class FakeGateway:
    client: FakeTriton
    models: GatewayModels
    timeout: float | None = None

    @property
    def infer_client(self) -> FakeTriton:  # the gateway's HTTP client when it has one (--triton-http), else gRPC's
        return self.client


def _gateway(triton: FakeTriton, batch: int, in_flight: int) -> FakeGateway:
    return FakeGateway(triton, GatewayModels(embed_batch_size=batch, embed_requests_in_flight=in_flight))


TEXTS = [f"text {i}" for i in range(100)]


@pytest.mark.parametrize("in_flight", [1, 3, 8])
def test_chunks_come_back_in_order_with_at_most_the_bound_in_flight(in_flight: int) -> None:
    triton = FakeTriton()
    rows, tokens, *_ = asyncio.run(embed_texts(_gateway(triton, 8, in_flight), "embed", TEXTS, ""))  # type: ignore[arg-type]
    assert rows.shape == (100, 2)
    np.testing.assert_array_equal(rows[:, 0], np.arange(100))
    assert tokens == sum(len(t) for t in TEXTS)
    assert len(triton.started) == 13  # 100 texts in chunks of 8
    assert triton.most_in_flight == in_flight


def test_one_chunk_is_one_call() -> None:
    triton = FakeTriton()
    rows, *_ = asyncio.run(embed_texts(_gateway(triton, 32, 4), "embed", TEXTS[:32], ""))  # type: ignore[arg-type]
    assert rows.shape == (32, 2) and triton.started == ["text 0"]


def test_a_failing_chunk_fails_the_request_and_cancels_the_chunks_in_flight() -> None:
    triton = FakeTriton(fail_on="text 40")

    async def run() -> None:
        await embed_texts(_gateway(triton, 10, 4), "embed", TEXTS, "")  # type: ignore[arg-type]

    with pytest.raises(ClientError, match="bad text 'text 40'"):
        asyncio.run(run())
    assert triton.in_flight == 0  # nothing left running
    assert triton.cancelled >= 1  # the chunks beside the failing one were stopped, not waited for
    assert "text 90" not in triton.started  # chunks behind the bound were never sent


def test_the_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="embed_requests_in_flight=0 must be >= 1"):
        GatewayModels(embed_requests_in_flight=0)


def test_gather_bounded_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit=0 must be >= 1"):
        asyncio.run(gather_bounded([], 0))


def test_a_cancelled_caller_cancels_every_call() -> None:
    started, cancelled = [], []

    async def call(i: int) -> int:
        started.append(i)
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def run() -> None:
        outer = asyncio.ensure_future(gather_bounded([functools.partial(call, i) for i in range(6)], 2))
        await asyncio.sleep(0.05)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer

    asyncio.run(run())
    assert started == [0, 1] and sorted(cancelled) == [0, 1]  # the other four never started


def test_the_gateway_command_sets_both_and_refuses_a_bad_value(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from tritonforge.cli_gateway import prepare_gateway as _gateway_setup

    setup = _gateway_setup("127.0.0.1", None, None, ["embeddings:minilm=embed"], None, False, 16, 3)
    assert (setup.models.embed_batch_size, setup.models.embed_requests_in_flight) == (16, 3)
    assert _gateway_setup("127.0.0.1", None, None, None, None, False).models.embed_requests_in_flight == 2
    with pytest.raises(typer.Exit) as info:
        _gateway_setup("127.0.0.1", None, None, None, None, False, None, 0)
    assert info.value.exit_code == 1
    assert "embed_requests_in_flight=0 must be >= 1" in capsys.readouterr().err.replace("\n", "")


@pytest.mark.parametrize(("max_batch", "size"), [(0, 32), (64, 32), (8, 8)])
def test_chunks_are_never_larger_than_the_ensemble_max_batch_size(max_batch: int, size: int) -> None:
    triton = FakeTriton(max_batch=max_batch)
    rows, *_ = asyncio.run(embed_texts(_gateway(triton, 32, 2), "embed", TEXTS, ""))  # type: ignore[arg-type]
    assert rows[:, 0].tolist() == list(range(100))
    assert max(triton.chunk_sizes) == size and sum(triton.chunk_sizes) == 100


@dataclass
class ConfiguredTriton(FakeTriton):
    """FakeTriton behind the gateway: its config declares the EMBEDDING output's dims (rows are 2 wide)."""

    dims: list[str] = field(default_factory=lambda: ["2"])  # Triton's JSON writes int64 dims as strings
    config_error: ClientError | None = None
    config_reads: int = 0

    async def model_config(self, model: str, version: str = "", *, timeout: Any = None) -> dict[str, Any]:
        if model == "embed":
            self.config_reads += 1
            if self.config_error is not None:
                raise self.config_error
        return {"max_batch_size": 8, "output": [{"name": "NUM_TOKENS", "dims": ["1"]},
                                                {"name": "EMBEDDING", "dims": list(self.dims)}]}

    async def close(self) -> None:
        pass


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Any:
    """(TestClient, ConfiguredTriton): the gateway app over the fake."""
    from starlette.testclient import TestClient

    from tritonforge.gateway import create_app, state

    triton = ConfiguredTriton()
    monkeypatch.setattr(state, "AsyncClient", lambda *_, **__: triton)
    with TestClient(create_app("127.0.0.1:1", api_keys=None), raise_server_exceptions=True) as client:
        yield client, triton


def _embed(client: Any, dimensions: int | None, n: int = 1) -> Any:
    body: dict[str, Any] = {"model": "minilm", "input": [f"text {i}" for i in range(n)]}
    if dimensions is not None:
        body["dimensions"] = dimensions
    return client.post("/v1/embeddings", json=body)


def _refused(reply: Any, width: int) -> None:
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["message"] == f"'dimensions' must be {width} for `minilm` (no truncation)", error
    assert (error["param"], error["code"]) == ("dimensions", "unsupported_parameter")


def test_a_wrong_dimensions_is_refused_before_the_texts_are_embedded(served: Any) -> None:
    """Was refused only after every text had been embedded; now the config's width refuses it up front, read once."""
    client, triton = served
    _refused(_embed(client, 3, n=20), 2)
    _refused(_embed(client, 384), 2)
    assert triton.started == [] and triton.config_reads == 1  # nothing embedded; the width read once, then cached
    reply = _embed(client, 2, n=3)
    assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) == 2
    assert _embed(client, None).status_code == 200
    assert triton.config_reads == 1


@pytest.mark.parametrize("problem", ["variable dims", "config unreadable"])
def test_a_width_the_config_does_not_tell_is_learned_from_the_first_embedding(served: Any, problem: str) -> None:
    client, triton = served
    if problem == "variable dims":
        triton.dims = ["-1"]
    else:  # e.g. the model-config API restricted on this Triton
        triton.config_error = ClientError("model-config is restricted")
    _refused(_embed(client, 3), 2)  # checked after the embedding, as before
    assert len(triton.started) == 1
    _refused(_embed(client, 3), 2)  # now known: refused up front
    assert len(triton.started) == 1 and triton.config_reads == 1
    assert _embed(client, 2).status_code == 200


def test_a_triton_that_is_down_fails_the_width_read_as_it_fails_an_embedding(served: Any) -> None:
    from tritonforge.errors import TransientError

    client, triton = served
    triton.config_error = TransientError("unavailable")
    reply = _embed(client, 3)
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "service_unavailable", reply.text
    assert triton.started == []  # not waited for a second time


def test_a_model_reloaded_with_another_width_is_noticed(served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A known width is only trusted against a disagreeing `dimensions` for WIDTH_REFRESH_SECONDS; then the config
    is read again, so a model reloaded with another width is not refused by a stale entry for long."""
    from tritonforge.gateway import embeddings

    client, triton = served
    _refused(_embed(client, 5), 2)
    triton.dims = ["5"]  # the config now says 5 (the fake's rows stay 2 wide: the rows have the last word)
    _refused(_embed(client, 5), 2)  # trusted for now
    assert triton.config_reads == 1
    monkeypatch.setattr(embeddings, "WIDTH_REFRESH_SECONDS", 0.0)
    reply = _embed(client, 5)
    assert triton.config_reads == 2 and len(triton.started) == 1  # re-read, the config allowed it, the rows refused
    _refused(reply, 2)


def test_config_width() -> None:
    from tritonforge.gateway.embeddings import config_width

    assert config_width({"max_batch_size": 8, "output": [{"name": "EMBEDDING", "dims": ["384"]}]}) == 384
    assert config_width({"max_batch_size": 8, "output": [{"name": "EMBEDDING", "dims": [2, 3]}]}) == 6
    assert config_width({"max_batch_size": 0, "output": [{"name": "EMBEDDING", "dims": ["-1", "384"]}]}) == 384
    assert config_width({"max_batch_size": 0, "output": [{"name": "EMBEDDING", "dims": ["384"]}]}) is None
    assert config_width({"max_batch_size": 8, "output": [{"name": "EMBEDDING", "dims": ["-1"]}]}) is None
    assert config_width({"max_batch_size": 8, "output": [{"name": "OTHER", "dims": ["4"]}]}) is None
    assert config_width({}) is None


def test_the_default_max_tokens_of_chat_is_set_by_the_gateway_command(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from tritonforge.cli_gateway import prepare_gateway as _gateway_setup

    assert _gateway_setup("127.0.0.1", None, None, None, None, False).models.chat_max_tokens == 64
    assert _gateway_setup("127.0.0.1", None, None, None, None, False, None, None, 512).models.chat_max_tokens == 512
    with pytest.raises(typer.Exit):
        _gateway_setup("127.0.0.1", None, None, None, None, False, None, None, 0)
    assert "chat_max_tokens=0 must be in [1, 2147483647]" in capsys.readouterr().err.replace("\n", "")
    with pytest.raises(ValueError, match="completion_max_tokens=2147483648"):
        GatewayModels(completion_max_tokens=2**31)


def test_the_texts_cut_are_named_across_chunks_in_their_order() -> None:
    """TRUNCATED rows from several chunks in flight (answered out of order) name the request's own indices."""
    from tritonforge.gateway.embeddings import truncation_error

    class Cutting(FakeTriton):
        async def infer(self, model: str, inputs: dict[str, np.ndarray], **kw: Any) -> dict[str, np.ndarray]:
            out = await super().infer(model, inputs, **kw)
            texts = [t.decode() for t in inputs["TEXT"].reshape(-1)]
            out["TRUNCATED"] = np.array([[t.endswith(("7", "42"))] for t in texts])
            out["NUM_TOKENS"] = np.array([[256 if t.endswith(("7", "42")) else 3] for t in texts], np.int32)
            return out

    embedded = asyncio.run(embed_texts(_gateway(Cutting(), 8, 3), "embed", TEXTS[:50], ""))  # type: ignore[arg-type]
    error = truncation_error(embedded, "minilm")
    assert error is not None and (error.status, error.code, error.param) == (400, "context_length_exceeded", "input")
    assert error.message.startswith("This model's maximum context length is 256 tokens, and input[7], input[17], "
                                    "input[27], input[37], input[42] and 1 more are longer")
    assert truncation_error(asyncio.run(embed_texts(_gateway(FakeTriton(), 8, 3), "embed", TEXTS[:9], "")),  # type: ignore[arg-type]
                            "minilm") is None  # an ensemble without TRUNCATED: nothing to tell
