"""Bounds on what a request's headers may cost, which uvicorn does not set.

uvicorn's httptools protocol keeps every header byte a client sends until the headers end, and waits for that end
without a deadline: one connection sending 300 MB of a single header took the gateway from 66 MB to 366 MB of
memory (its pod's limit is 1 GiB) and kept its event loop busy for 85 s, and a connection that opened and sent
nothing, or a header line every few seconds, stayed open for as long as the client liked, each holding a file
descriptor (robustness audit). The body already has its limits (gateway/schemas.py: 4 MiB, 60 s).

:class:`HeaderGuardProtocol` is uvicorn's httptools protocol with three bounds, as a proxy in front would set them
(nginx's ``client_header_timeout`` and header buffers, Envoy's ``max_request_headers_kb``):

- a request's headers (request line included) past ``HEADER_BYTES`` get a 431 and the connection is closed;
- headers not complete ``HEADER_SECONDS`` after the request's first byte get a 408 and the connection is closed;
- a new connection that sends nothing for uvicorn's keep-alive timeout (5 s) is closed, as uvicorn already closes
  one idle after a response.

A request whose headers are complete is not affected: its body and its response keep their own deadlines.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOG = logging.getLogger("tritonforge.gateway.requests")
HEADER_BYTES = 64 << 10  # Envoy's default is 60 KiB; OpenAI clients send well under 2 KiB, JWTs from proxies a few
HEADER_SECONDS = 20.0
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class HeaderGuardProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, its headers bounded in size and time (the module's docstring)."""

    header_bytes = HEADER_BYTES
    header_seconds = HEADER_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = False  # between a request's first byte and the end of its headers
        self._received = 0  # bytes received while in them (a read that also holds body bytes counts whole)
        self._header_size = 0  # the URL and header fields of the request being parsed, as the parser gives them
        self._oversized = False  # that request is refused: the rest of what the parser reads is ignored
        # nothing sent yet: closed after the keep-alive timeout unless a request begins (on_message_begin disarms)
        self._guard_timer: asyncio.TimerHandle | None = self.loop.call_later(self.timeout_keep_alive, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._oversized:  # refused and closing
            return
        super().data_received(data)  # the parser's callbacks below run inside it
        if self._oversized:
            self._refuse(431, f"the request's headers are over {self.header_bytes} bytes")
        elif self._in_headers and not self.transport.is_closing():
            # the parser holds every byte of unfinished headers: counted as they arrive, refused past the limit
            self._received += len(data)
            if self._received > self.header_bytes:
                self._oversized = True
                self._refuse(431, f"the request's headers are over {self.header_bytes} bytes")

    def on_message_begin(self) -> None:
        if self._oversized:
            return
        super().on_message_begin()
        self._in_headers, self._received, self._header_size = True, 0, 0
        self._disarm()
        self._guard_timer = self.loop.call_later(self.header_seconds, self._late)

    def on_url(self, url: bytes) -> None:
        self._header_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size += len(name) + len(value) + 4  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()
        if self._oversized or self._header_size > self.header_bytes:
            self._oversized = True  # no request cycle: data_received answers 431 once the parser returns
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._oversized:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._oversized:
            super().on_message_complete()

    def _disarm(self) -> None:
        if self._guard_timer is not None:
            self._guard_timer.cancel()
            self._guard_timer = None

    def _idle(self) -> None:
        self._guard_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _late(self) -> None:
        self._guard_timer = None
        if self._in_headers and not self.transport.is_closing():
            self._refuse(408, f"the request's headers took more than {self.header_seconds:g} s to arrive")

    def _refuse(self, status: int, message: str) -> None:
        """``status`` and close; only the connection's request in progress (a pipelined earlier one) hears nothing,
        since a status line written into its response would corrupt it."""
        LOG.info("%s from %s: connection closed (%d)", message, _peer(self.client), status)
        if self.cycle is None or self.cycle.response_complete:
            body = message.encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, _REASONS[status], len(body), body))
        self._in_headers = False
        self._disarm()
        self.transport.close()


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
