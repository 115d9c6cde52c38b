"""Small asyncio HTTP servers that misbehave on purpose, for the two HTTP transports' unit tests
(test_keepalive_http.py runs them in its own loop, test_blocking_http.py in a thread). tests/ is on sys.path
(tests/conftest.py), so `from http_servers import serve`."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(the request's head, its body); a request without Content-Length (a GET) has none."""
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    return head, await reader.readexactly(lengths[0]) if lengths else b""


def reply(body: bytes, status: str = "200 OK", close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body


async def serve(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, list[int]]:
    """A server on a free loopback port running ``handler(reader, writer, n)`` for its n-th connection; the list
    counts the connections it accepted."""
    accepted: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(len(accepted))
        try:
            await handler(reader, writer, len(accepted))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=tls), accepted


def port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


def every_second_unanswered(seen: list[bytes]) -> Handler:
    """A handler answering "ok" to every other request it reads (the 1st, 3rd...), and closing the connection without
    a reply after the 2nd, 4th... as if the request ran and the server then went away; ``seen`` gets b"METHOD body"
    of each request."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head, body = await read_request(reader)
            seen.append(head.split(b" ")[0] + b" " + body)
            if len(seen) % 2 == 0:
                await asyncio.sleep(0.2)  # it "ran", then the server went away without a reply
                return
            writer.write(reply(b"ok"))
            await writer.drain()

    return handle
