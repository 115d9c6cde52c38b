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
    # a host without a port is dialled on gRPC's 8001: the banner and the warning say so (new-user audit)
    result = CliRunner().invoke(app, ["gateway", "--triton", "127.0.0.2", "--port", str(port), "--insecure-no-auth"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "-> Triton gRPC 127.0.0.2:8001," in result.output  # (whatever answers there: not this test's point)


# ---------------------------------------------------------------------------------------- the headers' bounds


async def _slow_hello(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """_hello, answering after 1.5 s: longer than the short header deadline these tests set."""
    import asyncio

    if scope["type"] == "http":
        await asyncio.sleep(1.5)
    await _hello(scope, receive, send)


@pytest.fixture()
def guarded_server(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A GatewayServer whose header deadline is 0.5 s and keep-alive timeout 0.5 s; yields (port, server)."""
    from tritonforge.gateway.connection_guard import GuardedProtocol

    monkeypatch.setattr(GuardedProtocol, "header_seconds", 0.5)
    sock = bind("127.0.0.1", 0)
    server = GatewayServer(_slow_hello, sock, keep_alive=0.5)  # `gateway --keep-alive 0.5`
    server.start()
    try:
        yield sock.getsockname()[1], server
    finally:
        server.stop()


def _read_all(conn: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    import time

    conn.settimeout(timeout)
    started, data = time.monotonic(), b""
    while chunk := conn.recv(65536):
        data += chunk
    return data, time.monotonic() - started


def test_headers_over_the_limit_are_refused_with_431_and_memory_is_not_spent(guarded_server) -> None:  # type: ignore[no-untyped-def]
    """uvicorn kept every header byte until the headers ended: 300 MB of one header took the gateway from 66 to
    366 MB. Past 64 KiB the request is refused and the connection closed; the server serves the next one."""
    from tritonforge.gateway.connection_guard import HEADER_BYTES

    port, _ = guarded_server
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        with pytest.raises(OSError):  # the server closes while we still send: reset, or a broken pipe
            for _ in range(256):  # 64 MiB, which a server reading them all would take
                conn.sendall(b"a" * (256 << 10))
                sent += 256 << 10
            _read_all(conn, 5)
    # refused once past the limit: what was sent beyond it sat in the two sockets' buffers (loopback: a few MiB)
    assert sent <= 16 << 20
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (HEADER_BYTES + 1) + b"\r\n\r\n")
        reply, _ = _read_all(conn, 5)
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert f"the request's headers are over {HEADER_BYTES} bytes".encode() in reply
    assert httpx.get(f"http://127.0.0.1:{port}/", headers={"X-Fine": "a" * 30_000}).text == "hello"


def test_headers_that_do_not_arrive_in_time_get_408_on_new_and_kept_alive_connections(guarded_server) -> None:  # type: ignore[no-untyped-def]
    """A header line every few seconds held a connection for as long as the client liked."""
    port, _ = guarded_server
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        reply, waited = _read_all(conn, 10)
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply
    assert b"connection: close" in reply and b"took more than 0.5 s to arrive" in reply
    assert 0.4 < waited < 5
    with socket.create_connection(("127.0.0.1", port)) as conn:  # a second request on a kept-alive connection
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.settimeout(10)
        first = b""
        while not first.endswith(b"0\r\n\r\n"):  # the chunked body's end
            first += conn.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"hello" in first
        conn.sendall(b"GET / HTTP/1.1\r\n")
        reply, _ = _read_all(conn, 10)
    assert reply.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), reply


def test_a_connection_that_sends_nothing_is_closed_after_the_keep_alive_timeout(guarded_server) -> None:  # type: ignore[no-untyped-def]
    port, _ = guarded_server
    with socket.create_connection(("127.0.0.1", port)) as conn:
        reply, waited = _read_all(conn, 10)
    assert reply == b"" and 0.4 < waited < 5


def test_a_request_whose_headers_arrived_is_not_cut_by_the_header_deadline(guarded_server) -> None:  # type: ignore[no-untyped-def]
    """The app takes 1.5 s, three times the header deadline; pipelined requests are each answered."""
    port, _ = guarded_server
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text == "hello"
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply, _ = _read_all(conn, 10)
    assert reply.count(b"HTTP/1.1 200 OK") == 2 and reply.count(b"hello") == 2, reply


def test_the_gateway_server_uses_the_guarded_httptools_protocol() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from tritonforge.gateway.connection_guard import GuardedProtocol

    sock = bind("127.0.0.1", 0)
    with sock:
        config = GatewayServer(_hello, sock).server.config
        config.load()
    assert config.http_protocol_class is GuardedProtocol and issubclass(GuardedProtocol, HttpToolsProtocol)


def test_a_response_the_client_does_not_read_is_cut_after_the_send_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """uvicorn's send waited for ever on a client that read nothing once the socket's buffers were full: the request
    kept its admission slot, and a stream's engine was never stopped. Past the send deadline the connection is
    closed, the app's sends return, and it hears the client leave (http.disconnect)."""
    import asyncio
    import threading
    import time

    from tritonforge.gateway.connection_guard import GuardedProtocol

    monkeypatch.setattr(GuardedProtocol, "send_seconds", 0.5)
    ended = threading.Event()
    heard: list[str] = []

    async def flood(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
        if scope["type"] != "http":
            await _hello(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        for _ in range(256):  # 64 MiB: far more than the two sockets' buffers hold
            await send({"type": "http.response.body", "body": b"x" * (256 << 10), "more_body": True})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b""})  # type: ignore[operator]
        heard.append((await asyncio.wait_for(receive(), 5))["type"])  # type: ignore[operator]
        ended.set()

    sock = bind("127.0.0.1", 0)
    server = GatewayServer(flood, sock)
    server.start()
    try:
        with socket.socket() as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            conn.connect(("127.0.0.1", sock.getsockname()[1]))
            began = time.monotonic()
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and then reads nothing
            assert ended.wait(15), "the app's sends still wait on a client that reads nothing"
            assert 0.4 < time.monotonic() - began < 10
        assert heard == ["http.disconnect"]
        assert httpx.get(f"http://127.0.0.1:{sock.getsockname()[1]}/", timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_stop_signal_the_process_was_started_ignoring_stays_ignored() -> None:
    """`tritonforge gateway &` in a script without job control starts with SIGINT ignored: uvicorn's handler used to
    replace that, and the Ctrl-C meant for the script stopped the gateway with exit code 0 (serve keeps it)."""
    import os
    import signal
    import threading
    import time

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = GatewayServer(_hello, sock, grace=1.0)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    served: list[str] = []

    def poke() -> None:
        while not server.server.started:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # ignored: the gateway keeps serving
        time.sleep(0.3)
        served.append(httpx.get(f"http://127.0.0.1:{port}/").text)
        server.server.should_exit = True

    poker = threading.Thread(target=poke)
    poker.start()
    try:
        server.run()  # on the main thread, as `tritonforge gateway` runs it
    finally:
        poker.join(10)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.signal(signal.SIGINT, previous)
    assert served == ["hello"]


def test_the_gateway_setup_names_each_model_and_split_arm_triton_does_not_serve(tmp_path: Path) -> None:
    from tritonforge.cli_gateway import prepare_gateway

    splits = tmp_path / "splits.yaml"
    splits.write_text("splits:\n  canary:\n    control: {model: minilm, weight: 9}\n"
                      "    treatment: {model: minilm, version: 3, weight: 1}\n")
    setup = prepare_gateway("127.0.0.1", None, None, ["embeddings:minilm=embed", "chat:chat=llm"], splits, False)
    asked: list[tuple[str, str]] = []

    def ready(model: str, version: str) -> bool:
        asked.append((model, version))
        return (model, version) != ("embed", "3")

    assert setup.unserved(ready) == ["embed version 3 (split canary, arm treatment)"]
    assert sorted(asked) == [("embed", ""), ("embed", "3"), ("llm", "")]  # the control arm is the model itself
    assert setup.unserved(lambda model, version: False) == [
        "llm (chat model chat)", "embed (embeddings model minilm; split canary, arm control)",
        "embed version 3 (split canary, arm treatment)",
    ]
