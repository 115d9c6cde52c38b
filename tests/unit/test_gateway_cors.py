"""CORS, opt-in (`tritonforge gateway --cors-origin`): a browser page of an allowed origin may call the gateway, its
preflight answered; without the option nothing changes (no Triton needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")

from starlette.testclient import TestClient
from typer.testing import CliRunner

from tritonforge.cli import app as cli
from tritonforge.gateway import create_app
from tritonforge.gateway.app import check_cors_origins
from tritonforge.server import free_port

KEY = {"Authorization": "Bearer sk-user"}
PAGE = "https://app.example.com"
# what the openai JS SDK's preflight asks for (its x-stainless-* headers change between releases)
SDK_HEADERS = "authorization,content-type,x-stainless-lang,x-stainless-os,x-stainless-retry-count"
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}


def _client(origins: list[str]) -> Any:
    return TestClient(create_app(f"127.0.0.1:{free_port()}", api_keys=["sk-user"], retries=0, timeout=5,
                                 cors_origins=origins))


def _preflight(client: TestClient, origin: str = PAGE, method: str = "POST", headers: str = SDK_HEADERS) -> Any:
    return client.options("/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers,
    })


@pytest.fixture(scope="module")
def page_client() -> Iterator[TestClient]:
    with _client([PAGE, "http://localhost:5173"]) as c:
        yield c


def test_without_cors_origins_a_preflight_gets_no_cors_headers() -> None:
    with _client([]) as client:
        reply = _preflight(client)
        assert reply.status_code == 405, reply.text
        assert not [h for h in reply.headers if h.lower().startswith("access-control-")], reply.headers
        reply = client.post("/v1/chat/completions", headers={**KEY, "Origin": PAGE}, json=CHAT)
        assert "access-control-allow-origin" not in reply.headers


def test_a_preflight_from_an_allowed_origin_allows_the_key_and_json(page_client: TestClient) -> None:
    """The audit: OPTIONS with Origin and Access-Control-Request-Method was a 405 without CORS headers, so no
    browser page could call the gateway."""
    reply = _preflight(page_client)
    assert reply.status_code == 200, reply.text
    assert reply.headers["access-control-allow-origin"] == PAGE
    assert "POST" in reply.headers["access-control-allow-methods"]
    allowed = {h.strip().lower() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-stainless-os"} <= allowed, allowed
    assert "access-control-allow-credentials" not in reply.headers  # a key in a header, never cookies
    assert _preflight(page_client, origin="http://localhost:5173").status_code == 200


@pytest.mark.parametrize(("origin", "method", "refused"), [
    ("https://evil.example", "POST", "origin"), ("https://app.example.com:8443", "POST", "origin"),
    (PAGE, "PUT", "method"), (PAGE, "DELETE", "method"),
])
def test_a_refused_preflight_is_a_400_in_openais_shape(
    page_client: TestClient, origin: str, method: str, refused: str
) -> None:
    reply = _preflight(page_client, origin=origin, method=method)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "cors_refused" and f"Disallowed CORS {refused}" in error["message"], error
    if refused == "origin":
        assert "access-control-allow-origin" not in reply.headers


def test_answers_to_an_allowed_page_carry_cors_headers_errors_too(page_client: TestClient) -> None:
    """A page must be able to read a 401 or a 503 (its error message, Retry-After) as well as an answer."""
    for headers, status in (({}, 401), (KEY, 503)):  # no key; a key, but Triton is not there
        reply = page_client.post("/v1/chat/completions", headers={**headers, "Origin": PAGE}, json=CHAT)
        assert reply.status_code == status, reply.text
        assert reply.headers["access-control-allow-origin"] == PAGE
        exposed = reply.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed and "retry-after" in exposed
    reply = page_client.post("/v1/chat/completions", headers={**KEY, "Origin": "https://evil.example"}, json=CHAT)
    assert "access-control-allow-origin" not in reply.headers


def test_any_origin() -> None:
    with _client(["*"]) as client:
        assert _preflight(client, origin="https://anywhere.example").headers["access-control-allow-origin"] == "*"
        reply = client.get("/v1/models", headers={"Origin": "https://anywhere.example"})
        assert reply.status_code == 401 and reply.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("origin", [
    "https://app.example.com/", "https://app.example.com/chat", "app.example.com", "HTTPS://App.example.com",
    "https://app.example.com:99999", "https://app.example.com:x", "null", "", "https://user@app.example.com",
    "https://app.example.com:443", "http://app.example.com:80",  # browsers leave the default port out (review)
])
def test_an_origin_no_browser_would_send_is_refused(origin: str) -> None:
    """``https://app.example.com/`` never matches a browser's Origin: CORS would fail in the browser, silently."""
    with pytest.raises(ValueError, match="is not an origin"):
        check_cors_origins([origin])
    with pytest.raises(ValueError, match="is not an origin"):
        create_app("127.0.0.1:1", api_keys=None, cors_origins=[PAGE, origin])


@pytest.mark.parametrize("origin", [PAGE, "http://localhost:5173", "http://127.0.0.1:8080", "*",
                                    "chrome-extension://abcdefgh", "http://[::1]:3000", "https://app.example.com:8443",
                                    "http://app.example.com:443"])
def test_origins_as_browsers_send_them_are_accepted(origin: str) -> None:
    check_cors_origins([origin])


def test_the_cli_takes_cors_origins_and_refuses_a_bad_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonforge.gateway import listen as gateway_listen

    served: list[Any] = []
    def run(self: Any) -> None:
        served.append(self)
        self.sock.close()

    monkeypatch.setattr(gateway_listen.GatewayServer, "run", run)
    env = {"COLUMNS": "200"}
    base = ["gateway", "--triton", "127.0.0.1:9", "--port", str(free_port())]
    ran = CliRunner().invoke(cli, [*base, "--cors-origin", PAGE, "--cors-origin", "http://localhost:5173",
                                   "--insecure-no-auth"], env=env)
    assert ran.exit_code == 0, ran.output
    assert f"CORS for {PAGE}, http://localhost:5173" in ran.output
    assert "without API keys: any page of those origins can use the gateway" in ran.output  # no keys: warned
    (server,) = served
    with TestClient(server.server.config.app) as client:
        assert _preflight(client).headers["access-control-allow-origin"] == PAGE
    bad = CliRunner().invoke(cli, [*base, "--cors-origin", f"{PAGE}/", "--insecure-no-auth"], env=env)
    assert bad.exit_code == 1 and f"CORS origin '{PAGE}/' is not an origin" in bad.output, bad.output


def test_serve_passes_cors_origins_to_its_gateway_only_with_gateway(tmp_path: Any) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    alone = CliRunner().invoke(cli, ["serve", str(repo), "--gateway-cors-origin", PAGE], env={"COLUMNS": "200"})
    assert alone.exit_code == 2 and "--gateway-cors-origin needs --gateway" in alone.output, alone.output
