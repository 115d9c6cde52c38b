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

A request whose headers are complete is not affected: its body and its response keep their own deadlines. The
deadlines are kept by one watch per server that ticks only while a connection waits, not by a timer per request: a
request whose headers arrive in one read, as nearly all do, costs the guard ~2 us (9.5 → 11.8 us to parse and
start it, `python tests/bench/probe_header_guard.py`), ~0.2% of the ~0.9 ms of CPU a gateway request takes.
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
        self._headers_began = 0.0  # when (the loop's clock) this request's first byte came
        self._received = 0  # bytes received while in them (a read that also holds body bytes counts whole)
        self._reading = 0  # the size of the read being parsed
        self._oversized = False  # that request is refused: the rest of what the parser reads is ignored
        self._watch = _Watch.of(self)
        self._watch.add(self, self.loop.time() + self.timeout_keep_alive)  # nothing sent yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.discard(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._oversized:  # refused and closing
            return
        self._reading = len(data)
        super().data_received(data)  # the parser's callbacks below run inside it
        if self._oversized:
            self._refuse(431, f"the request's headers are over {self.header_bytes} bytes")
        elif self._in_headers and not self.transport.is_closing():
            # the parser holds every byte of unfinished headers: counted as they arrive, refused past the limit,
            # and watched until their deadline
            self._received += len(data)
            if self._received > self.header_bytes:
                self._oversized = True
                self._refuse(431, f"the request's headers are over {self.header_bytes} bytes")
            else:
                self._watch.add(self, self._headers_began + self.header_seconds)

    def on_message_begin(self) -> None:
        if self._oversized:
            return
        super().on_message_begin()
        self._in_headers, self._received, self._headers_began = True, 0, self.loop.time()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._watch.discard(self)
        # headers that ended within the reads counted so far are no larger than them: measured only when those
        # could be over the limit (the usual request's headers come in one read of a few hundred bytes)
        if self._oversized or (self._received + self._reading > self.header_bytes and self._size() > self.header_bytes):
            self._oversized = True  # no request cycle: data_received answers 431 once the parser returns
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._oversized:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._oversized:
            super().on_message_complete()

    def _size(self) -> int:
        """The request's URL and header fields as the parser gave them (": " and CRLF counted per field)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def expired(self) -> None:
        """The watch's call: this connection's deadline passed (its request's headers, or its first byte)."""
        if self.transport.is_closing():
            return
        if self._in_headers:
            self._refuse(408, f"the request's headers took more than {self.header_seconds:g} s to arrive")
        elif self.cycle is None:  # nothing sent since the connection opened
            self.transport.close()

    def _refuse(self, status: int, message: str) -> None:
        """``status`` and close; only the connection's request in progress (a pipelined earlier one) hears nothing,
        since a status line written into its response would corrupt it."""
        LOG.info("%s from %s: connection closed (%d)", message, _peer(self.client), status)
        if self.cycle is None or self.cycle.response_complete:
            data = message.encode()
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (status, _REASONS[status], len(data), data))
        self._in_headers = False
        self._watch.discard(self)
        self.transport.close()


class _Watch:
    """The connections of one server waiting for a request's headers (or for their first byte), and their
    deadlines; a tick checks them, scheduled only while there are some."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[HeaderGuardProtocol, float] = {}
        self.timer: asyncio.TimerHandle | None = None

    @staticmethod
    def of(protocol: HeaderGuardProtocol) -> _Watch:
        state = protocol.server_state  # one per uvicorn server, shared by its connections
        watch = getattr(state, "tritonforge_header_watch", None)
        if watch is None or watch.loop is not protocol.loop:
            watch = _Watch(protocol.loop)
            state.tritonforge_header_watch = watch  # type: ignore[attr-defined]
        return watch

    def add(self, protocol: HeaderGuardProtocol, deadline: float) -> None:
        self.waiting[protocol] = deadline
        if self.timer is None:
            self.timer = self.loop.call_later(self._tick_s(protocol), self.tick, self._tick_s(protocol))

    def discard(self, protocol: HeaderGuardProtocol) -> None:
        self.waiting.pop(protocol, None)

    def tick(self, every: float) -> None:
        self.timer = None
        now = self.loop.time()
        for protocol, deadline in list(self.waiting.items()):
            if now >= deadline:
                del self.waiting[protocol]
                protocol.expired()
        if self.waiting:
            self.timer = self.loop.call_later(every, self.tick, every)

    @staticmethod
    def _tick_s(protocol: HeaderGuardProtocol) -> float:
        """A deadline is kept within a quarter of the shorter bound (at most 1 s late)."""
        return min(1.0, protocol.header_seconds / 4, protocol.timeout_keep_alive / 4)


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
