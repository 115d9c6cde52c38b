"""Triton's HTTP infer endpoint over asyncio keep-alive connections: the HTTP/1.1 framing only.

Why not aiohttp (what ``tritonclient.http.aio`` sends with): per call it spent about as much CPU as the gRPC aio
client, 0.31 and 0.33 ms, against 0.20 ms for ``AsyncClient.infer`` on these connections (one ``write`` of the request,
httptools, uvicorn's parser, reading the reply), same Triton, same 16 requests of 4 texts in flight
(tests/bench/probe_triton_transports.py; docs/performance.md, "The gateway's Triton client"). The bodies
are still tritonclient's (``generate_request_body``, ``InferResult.from_response_body``), and a refusal is raised as
tritonclient raises it (``InferenceServerException`` with the HTTP status), so the one error mapping
(tritonforge/triton/errors.py) reads it unchanged. Used only where httptools is installed (the gateway's and the cpu
extras); without it, or with compression, ``AsyncConnection`` keeps tritonclient's aiohttp client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any

from tritonforge.triton.http_bodies import infer_request, infer_result

IDLE_CONNECTIONS = 64  # kept open between calls; more in flight open more, closed after use


def available() -> bool:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


class _Exchange(asyncio.Protocol):
    """One connection; one request at a time on it, its response read by httptools' parser."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.reply: asyncio.Future[tuple[int, dict[bytes, bytes], bytes]] | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.lost = False
        self.answered = False  # any byte of a response arrived since the request went out

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        import httptools

        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"unreadable HTTP response from Triton: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(ConnectionResetError(f"Triton closed the connection{f': {exc}' if exc else ''}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        reply, status = self.reply, self.parser.get_status_code()
        headers, body = self.headers, b"".join(self.body)
        self.reply, self.headers, self.body = None, {}, []
        if not self.parser.should_keep_alive():
            self.close()
        if reply is not None and not reply.done():
            reply.set_result((status, headers, body))

    def _fail(self, err: Exception) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_exception(err)

    def send(self, data: bytes) -> asyncio.Future[tuple[int, dict[bytes, bytes], bytes]]:
        if self.lost or self.transport is None:  # asyncio drops writes to a closed transport: nothing would answer
            raise ConnectionResetError("Triton closed the connection")
        self.reply = asyncio.get_running_loop().create_future()
        self.answered = False
        self.transport.write(data)
        return self.reply

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class KeepAlivePool:
    """HTTP/1.1 connections to one Triton, reused between calls; at most IDLE_CONNECTIONS kept when idle."""

    def __init__(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.ssl_context = host, port, ssl_context
        self._idle: list[_Exchange] = []
        self._host_header = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}").encode()  # IPv6 in brackets

    async def _open(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        _, exchange = await loop.create_connection(_Exchange, self.host, self.port, ssl=self.ssl_context)
        return exchange

    async def post(self, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, lower-cased headers, body) of a POST of ``body`` to ``path``."""
        head = [b"POST ", path.encode(), b" HTTP/1.1\r\nHost: ", self._host_header,
                b"\r\nContent-Length: ", str(len(body)).encode(), b"\r\n"]
        for name, value in headers.items():
            head += [name.encode(), b": ", value.encode(), b"\r\n"]
        data = b"".join([*head, b"\r\n", body])
        while True:
            reused = bool(self._idle)
            exchange = self._idle.pop() if reused else await self._open()
            if reused and exchange.lost:
                continue  # closed by Triton while idle: the next one
            try:
                reply = await exchange.send(data)
            except ConnectionError:
                exchange.close()
                if reused and not exchange.answered:
                    continue  # Triton closed it as it went out (an idle timeout, a restart): not run, sent again
                raise
            except BaseException:  # cancelled (a deadline): its response may still come, so never reused
                exchange.close()
                raise
            if not exchange.lost and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(exchange)
            else:
                exchange.close()
            return reply

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for exchange in idle:
            # from another loop than theirs (closing a client after its loop ended): that loop cannot close them;
            # their sockets close when collected, as aiohttp's do
            with contextlib.suppress(RuntimeError):
                exchange.close()


async def infer(
    pool: KeepAlivePool,
    http_module: Any,
    path: str,
    headers: Mapping[str, str] | None,
    inputs: list[Any],
    outputs: list[Any] | None,
    *,
    request_id: str,
    parameters: Mapping[str, Any] | None,
) -> Any:
    """``tritonclient.http.InferResult`` of one infer call (``inputs``/``outputs``: tritonclient's, binary)."""
    body, sent = infer_request(http_module, inputs, outputs, request_id=request_id, parameters=parameters,
                               headers=headers)
    status, got, reply = await pool.post(path, sent, body)
    return infer_result(http_module, status, got, reply)
