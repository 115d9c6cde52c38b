"""Triton's HTTP/REST API over asyncio keep-alive connections: the asyncio client's (``AsyncClient(url, "http")``)
and the gateway's (``--triton-http``) transport; the calls are :class:`~tritonforge.triton.http_api.RestApi`'s.

Why not aiohttp (what ``tritonclient.http.aio`` sends with, and this client used before): per infer call it spent
about as much CPU as the gRPC aio client, 0.31 and 0.33 ms, against 0.20 ms on these connections (one ``write`` of
the request, httptools, uvicorn's parser, reading the reply), same Triton, same 16 requests of 4 texts in flight
(tests/bench/probe_triton_transports.py; docs/performance.md, "The gateway's Triton client"); and its client could
not check a certificate against ``TLSOptions.server_name``. A connection Triton closed while idle is replaced and
the request sent again (one Triton closed with no reply, only for GET and HEAD: the request may have run); a call
cancelled (its deadline) closes its connection, whose late reply must not reach the
next call; a reply cut off is a plain ConnectionError, which the error mapping does not retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any

import httptools

from tritonforge.triton.http_api import IDEMPOTENT, Headers, Reader, RestApi, encode_request, host_and_port, host_header

IDLE_CONNECTIONS = 64  # kept open between calls; more in flight open more, closed after use


class _Exchange(asyncio.Protocol):
    """One connection; one request at a time on it, its response read by httptools' parser."""

    def __init__(self) -> None:
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
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"unreadable HTTP response from Triton: {err}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        why = f": {exc}" if exc else ""
        if self.answered:  # the request ran: not one to send again
            self._fail(ConnectionError(f"Triton closed the connection mid-reply{why}"))
        else:
            self._fail(ConnectionResetError(f"Triton closed the connection{why}"))

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


class AsyncHttpTransport(RestApi):
    """HTTP/1.1 connections to one Triton, reused between calls; at most IDLE_CONNECTIONS kept when idle. Used in
    one event loop (AsyncConnection makes a new one for a new loop)."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext | None = None, server_name: str | None = None,
                 verbose: bool = False) -> None:
        self.host, self.port, self.verbose = host, port, verbose
        self._context, self._server_name = context, server_name
        self._idle: list[_Exchange] = []
        self._host_header = host_header(host, port, 443 if context is not None else 80)

    @classmethod
    def for_url(cls, base: str, *, context: ssl.SSLContext | None, server_name: str | None = None,
                verbose: bool = False) -> AsyncHttpTransport:
        """A transport for ``base`` (``http://host:port`` or ``https://...``)."""
        host, port = host_and_port(base)
        return cls(host, port, context=context, server_name=server_name, verbose=verbose)

    async def _open(self) -> _Exchange:
        loop = asyncio.get_running_loop()
        # the certificate checked against server_name when given (TLSOptions), else against the host dialled
        named = self._server_name if self._context is not None and self._server_name else None
        _, exchange = await loop.create_connection(_Exchange, self.host, self.port, ssl=self._context,
                                                   server_hostname=named)
        return exchange

    async def request(self, method: str, path: str, body: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
        """(status, lower-cased headers, body) of one request (its deadline: the caller's ``asyncio.timeout``)."""
        data = encode_request(method, path, self._host_header, body, headers or {})
        if self.verbose:
            print(f"{method} {path}, headers {headers}")
        while True:
            reused = bool(self._idle)
            exchange = self._idle.pop() if reused else await self._open()
            if reused and exchange.lost:
                continue  # closed by Triton while idle: the next one
            try:
                reply = await exchange.send(data)
            except ConnectionResetError:
                exchange.close()
                if reused and not exchange.answered and method in IDEMPOTENT:
                    continue  # closed with no reply: may have run, and may run again (http_api.IDEMPOTENT)
                raise
            except BaseException:  # cancelled (a deadline), cut off, unreadable: never reused
                exchange.close()
                raise
            if not exchange.lost and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(exchange)
            else:
                exchange.close()
            if self.verbose:
                print(reply[0], reply[1])
            return reply

    async def _send(self, method: str, path: str, body: bytes | None, headers: Headers, timeout: float | None,
                    read: Reader) -> Any:
        return read(*await self.request(method, path, body, headers))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for exchange in idle:
            # from another loop than theirs (closing a client after its loop ended): that loop cannot close them;
            # their sockets close when collected, as aiohttp's do
            with contextlib.suppress(RuntimeError):
                exchange.close()
