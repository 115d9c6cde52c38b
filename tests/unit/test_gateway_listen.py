"""The gateway's socket is bound before anything starts: an address in use is a one-line error, not uvicorn's exit 3
after the banner (or after Triton has started, for `serve --gateway`)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tritonforge.cli import app
from tritonforge.errors import ServerError

pytest.importorskip("uvicorn")
from tritonforge.gateway.listen import GatewayServer, bind


def _busy_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def test_bind_refuses_an_address_in_use_or_not_of_this_host() -> None:
    holder, port = _busy_port()
    with holder, pytest.raises(ServerError, match=rf"cannot listen on 127\.0\.0\.1:{port}: Address already in use"):
        bind("127.0.0.1", port)
    with pytest.raises(ServerError, match=r"cannot listen on 10\.255\.255\.1:"):
        bind("10.255.255.1", 9000)
    with pytest.raises(ServerError, match=r"cannot listen on 127\.0\.0\.1:70000"):
        bind("127.0.0.1", 70000)


async def _hello(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()  # type: ignore[operator]
            await send({"type": message["type"] + ".complete"})  # type: ignore[operator]
            if message["type"] == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": b"hello"})  # type: ignore[operator]


def test_the_server_serves_on_the_bound_socket_and_stops() -> None:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = GatewayServer(_hello, sock)
    server.start()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "hello"
    finally:
        server.stop()
    assert not server.is_alive()
    bind("127.0.0.1", port).close()  # the port is free again


def test_gateway_command_with_a_port_in_use_fails_before_its_banner(tmp_path: Path) -> None:
    holder, port = _busy_port()
    with holder:
        result = CliRunner().invoke(app, ["gateway", "--port", str(port), "--insecure-no-auth"],
                                    env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert f"the gateway cannot listen on 127.0.0.1:{port}: Address already in use" in result.output
    assert "gateway on http" not in result.output


def test_gateway_command_warns_when_triton_does_not_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tritonforge serve` picks free ports and `gateway` defaults to 127.0.0.1:8001: started that way it answered
    every request 503 without a word at start (first-run audit). It says so now, and still starts (Triton may come
    up after it)."""
    from tritonforge.gateway import listen as gateway_listen

    ran: list[bool] = []
    monkeypatch.setattr(gateway_listen.GatewayServer, "run", lambda self: ran.append(True))
    holder, port = _busy_port()
    holder.close()
    result = CliRunner().invoke(app, ["gateway", "--triton", "127.0.0.1:9", "--port", str(port), "--insecure-no-auth"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "warning: Triton does not answer at 127.0.0.1:9 (yet): requests fail with 503" in result.output
    assert ran == [True]
