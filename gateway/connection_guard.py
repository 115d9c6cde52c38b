"""Bounds on what a connection may hold: its request's headers, and a response its client does not read. uvicorn
sets neither.

uvicorn's httptools protocol keeps every header byte a client sends until the headers end, and waits for that end
without a deadline: one connection sending 300 MB of a single header took the gateway from 66 MB to 366 MB of
memory (its pod's limit is 1 GiB) and kept its event loop busy for 85 s, and a connection that opened and sent
nothing, or a header line every few seconds, stayed open for as long as the client liked, each holding a file
descriptor (robustness audit). The other way round, a response the client does not read waited for ever once the
socket's buffers were full (uvicorn's send awaits the transport's drain without a deadline): the request kept its
admission slot, and a stream its Triton request. The body already has its limits (gateway/schemas.py:
4 MiB, 60 s).

:class:`GuardedProtocol` is uvicorn's httptools protocol with four bounds, as a proxy in front would set them
(nginx's ``client_header_timeout``, header buffers and ``send_timeout``, Envoy's ``max_request_headers_kb``):

- a request's headers (request line included) past ``HEADER_BYTES`` get a 431 and the connection is closed;
- headers not complete ``HEADER_SECONDS`` after the request's first byte get a 408 and the connection is closed;
- a new connection that sends nothing for the keep-alive timeout (uvicorn's 5 s; `tritonforge gateway --keep-alive`)
  is closed, as uvicorn already closes one idle after a response;
- a response whose writes stay blocked ``SEND_SECONDS`` (the client read nothing of a full buffer in that time) is
  cut: the connection is closed, which the app sees as a client that left (a stream still generating gets its
  stop).

A request whose headers are complete and whose client reads its response is not affected. The deadlines are kept by
one watch per server that ticks only while a connection waits, not by a timer per request: a request whose headers
arrive in one read, as nearly all do, costs the guard ~2 us (9.5 → 11.8 us to parse and start it, `python
tests/bench/probe_connection_guard.py`), ~0.2% of the ~0.9 ms of CPU a gateway request takes.

It overrides uvicorn's parser callbacks and reads the protocol's internals (``cycle``, ``flow``, ``url``,
``headers``, ``server_state``), which uvicorn does not promise to keep: pyproject.toml caps uvicorn at the releases
the guard's tests passed on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LOG = logging.getLogger("tritonforge.gateway.requests")
HEADER_BYTES = 64 << 10  # Envoy's default is 60 KiB; OpenAI clients send well under 2 KiB, JWTs from proxies a few
HEADER_SECONDS = 20.0
SEND_SECONDS = 60.0  # a blocked write: nginx's send_timeout is 60 s
_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, a request's headers bounded in size and time, an idle connection and a blocked
    response in time (the module's docstring)."""

    header_bytes = HEADER_BYTES
    header_seconds = HEADER_SECONDS
    send_seconds = SEND_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._in_headers = False  # between a request's first byte and the end of its headers
        self._headers_began = 0.0  # when (the loop's clock) this request's first byte came
        self._received = 0  # bytes received while in them (a read that also holds body bytes counts whole)
        self._reading = 0  # the size of the read being parsed
        self._oversized = False  # that request is refused: the rest of what the parser reads is ignored
        self._fresh = True  # no request has begun on this connection
        self._headers_watched = False  # this request's headers are in the watch (they took more than one read)
        self._watch = _Watch.of(self)
        self._watch.add(self, _FIRST_BYTE, self.loop.time() + self.timeout_keep_alive)  # nothing sent yet

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch.forget(self)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()  # the transport's buffer is over its high-water mark: the response's send waits
        self._watch.add(self, _SEND, self.loop.time() + self.send_seconds)

    def resume_writing(self) -> None:
        self._watch.discard(self, _SEND)
        super().resume_writing()

    def data_received(self, data: bytes) -> None:
        if self._oversized:  # refused and closing
            return
        self._reading = len(data)
        super().data_received(data)  # the parser's callbacks below run inside it
        if not self._oversized and self._in_headers and not self.transport.is_closing():
            # the parser holds every byte of unfinished headers: counted as they arrive, refused past the limit,
            # and watched until their deadline
            self._received += len(data)
            self._oversized = self._received > self.header_bytes
            if not self._oversized:
                self._headers_watched = True
                self._watch.add(self, _HEADERS, self._headers_began + self.header_seconds)
        if self._oversized:
            self._refuse(431, f"the request's headers are over {self.header_bytes} bytes")

    def on_message_begin(self) -> None:
        if self._oversized:
            return
        super().on_message_begin()
        self._in_headers, self._received, self._headers_began = True, 0, self.loop.time()
        if self._fresh:
            self._fresh = False
            self._watch.discard(self, _FIRST_BYTE)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        if self._headers_watched:
            self._headers_watched = False
            self._watch.discard(self, _HEADERS)
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

    def expired(self, what: str) -> None:
        """The watch's call: this connection's deadline for ``what`` passed."""
        if self.transport.is_closing():
            return
        if what == _HEADERS and self._in_headers:
            self._refuse(408, f"the request's headers took more than {self.header_seconds:g} s to arrive")
        elif what == _FIRST_BYTE and self._fresh:  # nothing sent since the connection opened
            self.transport.close()
        elif what == _SEND and self.flow.write_paused:
            LOG.info("a response's writes were blocked %g s (the client reads nothing) to %s: connection closed",
                     self.send_seconds, _peer(self.client))
            self.transport.abort()  # close() would wait for the unread buffer to be written

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
        self._watch.discard(self, _HEADERS)
        self.transport.close()


_FIRST_BYTE, _HEADERS, _SEND = "first byte", "headers", "send"  # what a connection waits for


class _Watch:
    """The connections of one server waiting for something with a deadline (their first byte, a request's headers,
    the client to read), and those deadlines; a tick checks them, scheduled only while there are some."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[tuple[GuardedProtocol, str], float] = {}
        self.timer: asyncio.TimerHandle | None = None

    @staticmethod
    def of(protocol: GuardedProtocol) -> _Watch:
        state = protocol.server_state  # one per uvicorn server, shared by its connections
        watch = getattr(state, "tritonforge_connection_watch", None)
        if watch is None or watch.loop is not protocol.loop:
            watch = _Watch(protocol.loop)
            state.tritonforge_connection_watch = watch  # type: ignore[attr-defined]
        return watch

    def add(self, protocol: GuardedProtocol, what: str, deadline: float) -> None:
        self.waiting[protocol, what] = deadline
        if self.timer is None:
            every = self._tick_s(protocol)
            self.timer = self.loop.call_later(every, self.tick, every)

    def discard(self, protocol: GuardedProtocol, what: str) -> None:
        self.waiting.pop((protocol, what), None)

    def forget(self, protocol: GuardedProtocol) -> None:
        for what in (_FIRST_BYTE, _HEADERS, _SEND):
            self.waiting.pop((protocol, what), None)

    def tick(self, every: float) -> None:
        self.timer = None
        now = self.loop.time()
        for (protocol, what), deadline in list(self.waiting.items()):
            if now >= deadline:
                del self.waiting[protocol, what]
                protocol.expired(what)
        if self.waiting:
            self.timer = self.loop.call_later(every, self.tick, every)

    @staticmethod
    def _tick_s(protocol: GuardedProtocol) -> float:
        """A deadline is kept within a quarter of the shortest bound (at most 1 s late)."""
        return min(1.0, protocol.header_seconds / 4, protocol.timeout_keep_alive / 4, protocol.send_seconds / 4)


def _peer(client: Any) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
