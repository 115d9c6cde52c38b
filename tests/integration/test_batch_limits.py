"""A model's max_batch_size, as the clients and the gateway read it: requests no larger than it, and read again
when the model is reloaded with a smaller one (Triton then refuses what the cached limit allowed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from tritonforge.clients import AsyncClient, Client
from tritonforge.errors import BatchTooLargeError
from tritonforge.server import TritonServer, free_port

pytestmark = pytest.mark.integration

TEXTS = [f"text number {i}" for i in range(40)]


def _expected(toy_models: SimpleNamespace) -> np.ndarray:
    return np.array([toy_models.embedding(t) for t in TEXTS], dtype=np.float32)


def _set_limit(repo: Path, limit: int) -> None:
    config = repo / "embed" / "config.pbtxt"
    lines = [f"max_batch_size: {limit}" if ln.startswith("max_batch_size:") else ln
             for ln in config.read_text().splitlines()]
    config.write_text("\n".join(lines) + "\n")


@pytest.fixture()
def limits_server(tmp_path: Path, toy_models: SimpleNamespace) -> Iterator[tuple[TritonServer, Path]]:
    """The toy embed model (max_batch_size 16) on its own server, so a test may reload it with another limit."""
    toy_models.embed(tmp_path)
    with TritonServer(tmp_path, models=["embed"], startup_timeout=60) as server:
        yield server, tmp_path


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_reads_the_limit_again_after_a_reload(limits_server, toy_models, protocol: str) -> None:
    server, repo = limits_server
    with Client(getattr(server.endpoints, protocol), protocol, admin_key=server.admin_key) as client:
        np.testing.assert_array_equal(client.embed(TEXTS), _expected(toy_models))
        assert client.max_batch_size("embed") == 16  # cached by the embed above
        _set_limit(repo, 4)
        client.load_model("embed")  # reloaded: Triton now refuses requests of more than 4 rows
        with pytest.raises(BatchTooLargeError, match=r"batch-size must be <= 4"):
            client.embed(TEXTS, batch_size=16)  # an explicit batch_size is the caller's: not changed
        np.testing.assert_array_equal(client.embed(TEXTS), _expected(toy_models))
        assert client.max_batch_size("embed") == 4


def test_async_client_reads_the_limit_again_after_a_reload(limits_server, toy_models) -> None:
    server, repo = limits_server

    async def run() -> None:
        async with AsyncClient(server.endpoints.grpc) as client:
            np.testing.assert_array_equal(await client.embed(TEXTS), _expected(toy_models))
            _set_limit(repo, 4)
            with Client(server.endpoints.grpc, admin_key=server.admin_key) as admin:  # the repository API is the sync client's
                admin.load_model("embed")
            np.testing.assert_array_equal(await client.embed(TEXTS, requests_in_flight=4), _expected(toy_models))
            assert await client.max_batch_size("embed") == 4

    asyncio.run(run())


def test_gateway_chunks_at_the_model_limit_and_follows_a_reload(limits_server, toy_models) -> None:
    """embed_batch_size 32 over a model of max_batch_size 16 (then 4): requests still answer, rows in order."""
    import uvicorn

    from tritonforge.gateway import GatewayModels, create_app

    server, repo = limits_server
    models = GatewayModels(chat={}, embeddings={"toy": "embed"}, rerank={}, embed_batch_size=32)
    app = create_app(server.endpoints.grpc, api_keys=None, models=models)
    port = free_port()
    gateway = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=gateway.run, name="gateway", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not gateway.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            def embed() -> np.ndarray:
                reply = http.post("/v1/embeddings", json={"model": "toy", "input": TEXTS})
                assert reply.status_code == 200, reply.text
                return np.array([d["embedding"] for d in reply.json()["data"]], dtype=np.float32)

            np.testing.assert_array_equal(embed(), _expected(toy_models))
            _set_limit(repo, 4)
            with Client(server.endpoints.grpc, admin_key=server.admin_key) as client:
                client.load_model("embed")
            np.testing.assert_array_equal(embed(), _expected(toy_models))
            single = http.post("/v1/embeddings", json={"model": "toy", "input": "one text"})
            assert single.status_code == 200, single.text
    finally:
        gateway.should_exit = True
        thread.join(30)
