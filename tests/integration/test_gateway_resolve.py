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
