"""A gateway given a dns:/// Triton address (a cluster's headless Service: every Triton pod) resolves it again every
RESOLVE_SECONDS: gRPC resolves a name only when a channel starts or loses a connection, so pods an autoscaler added
got no gateway traffic. Calls in flight on the replaced channel finish on it; it closes after their timeout."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

pytestmark = pytest.mark.integration


def test_a_dns_address_is_resolved_again_and_old_channels_close_after_their_calls(
    toy_server, toy_models: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tritonforge.gateway import GatewayModels
    from tritonforge.gateway import state as gateway_state

    monkeypatch.setattr(gateway_state, "RESOLVE_SECONDS", 0.2)
    port = toy_server.endpoints.grpc.rsplit(":", 1)[1]
    texts = ["one", "two"]
    want = np.array([toy_models.embedding(t) for t in texts], dtype=np.float32)

    async def run() -> None:
        gw = gateway_state.Gateway(f"dns:///127.0.0.1:{port}", api_keys=None, models=GatewayModels(), timeout=0.5,
                                   retries=0, splits=None, admin_keys=None, limits=None)
        await gw.open()
        try:
            first = gw.client
            slow = asyncio.ensure_future(first.embed(texts))  # in flight on the channel about to be replaced
            await asyncio.sleep(0.3)
            second = gw.client
            assert second is not first and first in gw._retired
            np.testing.assert_array_equal(await slow, want)
            np.testing.assert_array_equal(await second.embed(texts), want)
            await asyncio.sleep(0.5 + 5.0 + 0.5)  # the old channel's calls have had their timeout: it is closed
            assert first not in gw._retired and not gw._closing
        finally:
            await gw.close()

    asyncio.run(run())


def test_a_host_port_address_keeps_its_channel(toy_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonforge.gateway import GatewayModels
    from tritonforge.gateway import state as gateway_state

    monkeypatch.setattr(gateway_state, "RESOLVE_SECONDS", 0.0)

    async def run() -> None:
        gw = gateway_state.Gateway(toy_server.endpoints.grpc, api_keys=None, models=GatewayModels(), timeout=5,
                                   retries=0, splits=None, admin_keys=None, limits=None)
        await gw.open()
        try:
            first = gw.client
            await asyncio.sleep(0.05)
            assert gw.client is first and await first.is_live()
        finally:
            await gw.close()

    asyncio.run(run())


def test_a_gateway_whose_models_triton_does_not_serve_is_not_ready(toy_server) -> None:
    """/ready answered 200 when none of the gateway's models was served (all failed to load, or none loaded yet):
    a model never seen was not counted, and nothing counted read as ready (session review)."""
    from starlette.testclient import TestClient

    from tritonforge.gateway import GatewayModels, create_app

    ghost = create_app(toy_server.endpoints.grpc, api_keys=None, retries=0, timeout=5,
                       models=GatewayModels.parse(["embeddings:ghost=not_in_this_repository"]))
    with TestClient(ghost) as client:
        reply = client.get("/ready")
        assert reply.status_code == 503 and reply.json()["triton_live"] is True, reply.text
        assert client.get("/live").status_code == 200
    served = create_app(toy_server.endpoints.grpc, api_keys=None, retries=0, timeout=5,
                        models=GatewayModels.parse(["embeddings:toy=embed", "embeddings:ghost=not_in_this_repository"]))
    with TestClient(served) as client:
        assert client.get("/ready").status_code == 200  # one model answers: ready
