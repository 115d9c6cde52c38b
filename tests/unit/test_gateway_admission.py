"""The gateway's bounds on what it takes on at once: requests in flight, per API key, and the bytes of their
bodies (gateway/admission.py). No Triton: the bounds answer before any model runs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")

from starlette.testclient import TestClient

from tritonforge.gateway import GatewayLimits, create_app
from tritonforge.gateway.admission import Admission
from tritonforge.server import free_port


def _scope(path: str = "/v1/embeddings", key: str | None = "sk-a") -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    return {"type": "http", "path": path, "method": "POST", "headers": headers}


class _Held:
    """An app whose requests wait until released, then answer 200."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def _call(admission: Admission, scope: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await admission(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], json.loads(body), headers


def test_requests_over_the_limit_in_all_and_per_key_get_a_429_with_retry_after() -> None:
    async def run() -> None:
        held = _Held()
        admission = Admission(held, GatewayLimits(requests_in_flight=3, requests_in_flight_per_key=2))
        first = [asyncio.ensure_future(_call(admission, _scope(key="sk-a"))) for _ in range(2)]
        await asyncio.sleep(0.05)
        status, body, headers = await _call(admission, _scope(key="sk-a"))  # a third for this key
        assert status == 429 and headers["retry-after"] == "1"
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert "this API key has 2 requests in flight, the limit per key" in body["error"]["message"]
        other = asyncio.ensure_future(_call(admission, _scope(key="sk-b")))  # another key still gets in
        await asyncio.sleep(0.05)
        status, body, _ = await _call(admission, _scope(key="sk-c"))
        assert status == 429 and "the gateway has 3 requests in flight, its limit" in body["error"]["message"]
        # cheap routes are never held back: probes, model lists and the scrape still answer a full gateway
        for path in ("/ready", "/v1/models", "/metrics"):
            task = asyncio.ensure_future(_call(admission, _scope(path=path, key="sk-c")))
            await asyncio.sleep(0.01)
            assert not task.done()  # it reached the app (which holds it), not a 429
            task.cancel()
        held.gate.set()
        assert [s for s, _, _ in await asyncio.gather(*first, other)] == [200, 200, 200]
        assert admission.in_flight == 0 and admission.by_key == {}  # keys seen once do not pile up
        assert (await _call(admission, _scope(key="sk-a")))[0] == 200

    asyncio.run(run())


def test_a_gateway_without_api_keys_counts_every_client_as_one_key() -> None:
    """Without API keys a bearer token is whatever a client sends: counted apart, a new token per request passed
    the per-key limit (docs audit)."""
    async def run() -> None:
        held = _Held()
        admission = Admission(held, GatewayLimits(requests_in_flight_per_key=1), keyed=False)
        first = asyncio.ensure_future(_call(admission, _scope(key="a")))
        await asyncio.sleep(0.05)
        for key in ("b", None):
            status, body, _ = await _call(admission, _scope(key=key))
            assert status == 429 and "the limit per key" in body["error"]["message"]
        held.gate.set()
        assert (await first)[0] == 200

    asyncio.run(run())
    for keys, keyed in ((None, False), (["sk-user"], True)):  # what create_app tells the middleware
        app = create_app(f"127.0.0.1:{free_port()}", api_keys=keys)
        (entry,) = [m for m in app.user_middleware if m.cls is Admission]
        assert entry.kwargs["keyed"] is keyed


def test_a_request_that_fails_or_is_cancelled_gives_its_slot_and_bytes_back() -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        scope["state"]["gw_admission"].take_body(100)
        raise RuntimeError("a bug")

    async def run() -> None:
        admission = Admission(broken, GatewayLimits(requests_in_flight=1))
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await _call(admission, _scope())
        assert admission.in_flight == 0 and admission.body_bytes == 0 and admission.by_key == {}
        held = _Held()
        admission = Admission(held, GatewayLimits(requests_in_flight=1))
        task = asyncio.ensure_future(_call(admission, _scope()))
        await asyncio.sleep(0.05)
        assert admission.in_flight == 1
        task.cancel()  # the client went away, or the stop's grace ended
        with pytest.raises(asyncio.CancelledError):
            await task
        assert admission.in_flight == 0 and admission.by_key == {}

    asyncio.run(run())


def _app(**limits: int) -> Any:
    return create_app(f"127.0.0.1:{free_port()}", api_keys=["sk-user"], retries=0, timeout=5,
                      limits=GatewayLimits(**limits))


@pytest.mark.parametrize("chunked", [False, True])
def test_bodies_past_the_budget_in_flight_are_a_429_and_the_budget_comes_back(chunked: bool) -> None:
    """350 bodies of 3.7 MiB at once took the gateway to 1.36 GB, past its pod's 1 GiB (operations audit)."""
    body = json.dumps({"model": "minilm", "input": "x" * 3000}).encode()
    with TestClient(_app(body_bytes=2_500, body_bytes_in_flight=4_000)) as client:
        headers = {"Authorization": "Bearer sk-user", "Content-Type": "application/json"}
        app = client.app
        # another request holds 2,000 bytes of the budget: this body's 3,000 would pass the 4,000
        held = next(m for m in _middlewares(app) if isinstance(m, Admission))
        held.body_bytes = 2_000
        small_body = json.dumps({"model": "minilm", "input": "x" * 1000}).encode()
        content: Any = iter([small_body[:500], small_body[500:]]) if chunked else small_body
        assert client.post("/v1/embeddings", content=content, headers=headers).status_code != 429  # 1,0xx fits
        content = iter([body[:1000], body[1000:]]) if chunked else body
        reply = client.post("/v1/embeddings", content=content, headers=headers)
        assert reply.status_code in (413, 429), reply.text  # 413: over body_bytes, found first when declared
        reply = client.post("/v1/embeddings", content=iter([small_body, small_body]), headers=headers)
        assert reply.status_code == 429 and reply.headers["retry-after"] == "1", reply.text
        assert "bytes of request bodies" in reply.json()["error"]["message"]
        held.body_bytes = 0
        small = client.post("/v1/embeddings", json={"model": "minilm", "input": "fine"}, headers=headers)
        assert small.status_code != 429, small.text  # the budget came back (Triton is not there: a 503)
        assert held.body_bytes == 0


def _middlewares(app: Any) -> list[Any]:
    """The middleware instances Starlette built (outermost first)."""
    found, layer = [], app.middleware_stack
    while layer is not None:
        found.append(layer)
        layer = getattr(layer, "app", None)
    return found


def test_a_body_larger_than_the_budget_for_all_bodies_is_refused_as_an_option() -> None:
    from tritonforge.errors import OptionError

    with pytest.raises(OptionError, match="one body must fit"):
        GatewayLimits(body_bytes=10, body_bytes_in_flight=5)
