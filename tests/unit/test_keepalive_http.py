"""tritonforge/triton/keepalive_http.py against small asyncio HTTP servers that misbehave on purpose (the calls
against a real Triton are in tests/integration: test_client.py's HTTP cases, test_gateway.py's --triton-http)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

pytest.importorskip("httptools")

from tritonforge.triton.keepalive_http import KeepAlivePool

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return await reader.readexactly(length)


def _reply(body: bytes, status: str = "200 OK", close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body


async def _serve(handler: Handler) -> tuple[asyncio.Server, list[int]]:
    """A server on a free loopback port; the list counts the connections it accepted."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        try:
            await handler(reader, writer, len(accepted))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0), accepted


def _port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def test_connections_are_kept_and_reused() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            writer.write(_reply(b"echo:" + await _read_request(reader)))
            await writer.drain()

    async def main() -> None:
        server, accepted = await _serve(echo)
        pool = KeepAlivePool("127.0.0.1", _port(server))
        for i in range(5):
            status, headers, body = await pool.post("/x", {"X-Test": "1"}, f"call {i}".encode())
            assert (status, body, headers[b"content-length"]) == (200, f"echo:call {i}".encode(), b"11")
        replies = await asyncio.gather(*(pool.post("/x", {}, str(i).encode()) for i in range(8)))
        assert [r[2] for r in replies] == [f"echo:{i}".encode() for i in range(8)]  # each its own connection
        assert len(accepted) == 8  # one for the five calls one after another, eight for eight at once
        pool.close()
        server.close()

    asyncio.run(main())


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_once() -> None:
    """Triton closing an idle keep-alive connection (an idle timeout, a restart) must not fail the next call."""
    seen: list[bytes] = []

    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append(await _read_request(reader))
        writer.write(_reply(b"ok"))  # keep-alive by HTTP/1.1's default, then closed anyway
        await writer.drain()

    async def main() -> None:
        server, accepted = await _serve(one_each)
        pool = KeepAlivePool("127.0.0.1", _port(server))
        assert (await pool.post("/x", {}, b"first"))[2] == b"ok"
        await asyncio.sleep(0.1)  # the server's close reaches the idle connection
        assert (await pool.post("/x", {}, b"second"))[2] == b"ok"
        # closed while our request was on its way: a request the server never read is sent again on a new one
        assert (await pool.post("/x", {}, b"third"))[2] == b"ok"
        assert seen == [b"first", b"second", b"third"] and len(accepted) == 3
        server.close()

    asyncio.run(main())


def test_a_connection_closed_with_no_answer_fails_the_call_when_it_was_new() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)  # read, then closed without a reply

    async def main() -> None:
        server, accepted = await _serve(hang_up)
        pool = KeepAlivePool("127.0.0.1", _port(server))
        with pytest.raises(ConnectionResetError, match="Triton closed the connection"):
            await pool.post("/x", {}, b"lost")
        assert len(accepted) == 1  # a new connection: not sent twice
        server.close()

    asyncio.run(main())


def test_a_call_cut_by_its_deadline_never_leaves_its_connection_for_the_next() -> None:
    """Its reply may still come; read by the next call, it would be the wrong request's answer."""

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            body = await _read_request(reader)
            if n == 1:
                await asyncio.sleep(0.5)
            writer.write(_reply(b"answer to " + body))
            await writer.drain()

    async def main() -> None:
        server, accepted = await _serve(slow_first)
        pool = KeepAlivePool("127.0.0.1", _port(server))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.post("/x", {}, b"slow"), 0.1)
        await asyncio.sleep(0.6)  # the slow answer is sent now, to a connection the pool no longer holds
        assert (await pool.post("/x", {}, b"next"))[2] == b"answer to next"
        assert len(accepted) == 2
        pool.close()
        server.close()

    asyncio.run(main())


def test_connection_close_is_honoured_and_refusals_read_as_tritonclient_raises_them() -> None:
    from tritonclient.utils import InferenceServerException

    from tritonforge.errors import ModelNotFoundError
    from tritonforge.triton.errors import classify_error
    from tritonforge.triton.http_bodies import refusal

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(_reply(b'{"error":"Request for unknown model: \'m\' is not found"}', "400 Bad Request", True))
        await writer.drain()

    async def main() -> None:
        server, accepted = await _serve(refuse)
        pool = KeepAlivePool("127.0.0.1", _port(server))
        for _ in range(2):
            status, _, body = await pool.post("/x", {}, b"")
            assert status == 400
        assert len(accepted) == 2 and not pool._idle  # "Connection: close": a new connection each time
        err = refusal(status, body)
        assert isinstance(err, InferenceServerException) and err.status() == "400"
        mapped = classify_error(err, model="m", url="u", timeout=1.0, protocol="http")
        assert isinstance(mapped, ModelNotFoundError) and "unknown model" in str(mapped)
        assert "unreadable error response" in str(refusal(502, b"<html>bad gateway</html>"))
        server.close()

    asyncio.run(main())


def test_the_host_header_names_an_ipv6_address_in_brackets() -> None:
    assert KeepAlivePool("::1", 8000)._host_header == b"[::1]:8000"
    assert KeepAlivePool("triton.local", 8000)._host_header == b"triton.local:8000"
