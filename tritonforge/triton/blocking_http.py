"""Triton's HTTP/REST API for the synchronous client: keep-alive sockets of its own, httptools' parser, no gevent.

Why not ``tritonclient.http`` (geventhttpclient on gevent), which the synchronous client used before:
- gevent leaves every thread that used it a hub it never frees, even once the thread ends (gevent issue 1601):
  measured, 2 file descriptors and ~55 KB a thread, so a server calling Triton from a thread per request failed with
  "Too many open files" after ~500 requests;
- its connections belong to the thread that made them (shared, about half the calls of 16 threads failed with
  "Cannot switch to a different thread"), so the client kept transports per thread and per deadline;
- a forked child inherited the hub in the parent's state and its new client hung for good.
Here one pool of keep-alive connections serves every thread, each call with its own deadline, and a forked child
starts with an empty pool. Triton's calls, in tritonclient's names with gRPC's ``client_timeout`` for the
deadline, are :class:`~tritonforge.triton.http_api.RestApi`'s (tritonclient's bodies, its refusals).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import httptools

from tritonforge.errors import ClientError
from tritonforge.triton.http_api import (
    IDEMPOTENT,
    Headers,
    Reader,
    RestApi,
    encode_request,
    host_and_port,
    host_header,
)

IDLE_CONNECTIONS = 64  # kept open between calls; more threads in flight open more, closed after use
_READ_SIZE = 1 << 18
Reply = tuple[int, dict[bytes, bytes], bytes]  # status, lower-cased headers, body


# the start of the ConnectionError raised when what answered is not HTTP/1.1 (Triton's gRPC port, say): the release
# commands' model control tells it apart from a version that failed to load by it
UNREADABLE_RESPONSE = "unreadable HTTP response from Triton"


class _Deadline:
    def __init__(self, timeout: float | None) -> None:
        self.at = None if timeout is None else time.monotonic() + timeout
        self.timeout = timeout

    def left(self) -> float | None:
        """Seconds left for the next socket operation (None: no deadline); TimeoutError once none are."""
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"the deadline of {self.timeout:g}s passed")
        return left


class _Exchange:
    """One keep-alive connection: a socket, one request at a time on it, its response read by httptools' parser
    (the C parser uvicorn uses; http.client's header parsing, in Python, cost ~20% more CPU a call from 4 threads)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = httptools.HttpResponseParser(self)
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.complete, self.status, self.keep = False, 0, False
        self.unsent = False  # the last request could not be written (send)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:  # the parser's status and keep-alive are read here, while they hold
        self.complete, self.status, self.keep = True, self.parser.get_status_code(), self.parser.should_keep_alive()

    def dropped(self) -> bool:
        """Whether the server closed this idle connection: an idle socket that reads as ready holds its end (or
        bytes nobody asked for). Checked before reuse, so a request is not written into a closed connection."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):  # closed already
            return True
        return bool(readable)

    def send(self, data: bytes, deadline: _Deadline) -> tuple[Reply, bool]:
        """(the reply, whether the connection may be kept). ConnectionResetError (or BrokenPipeError) when the
        connection closed with no byte of a reply: ``unsent`` says whether writing the request failed (the server
        had reset the connection: it never read it), else it may have run; a reply cut off is a plain
        ConnectionError, which the error mapping does not retry (the request ran)."""
        self.headers, self.body, self.complete = {}, [], False
        self.sock.settimeout(deadline.left())
        self.unsent = True
        self.sock.sendall(data)
        self.unsent = False
        answered = False
        while not self.complete:
            self.sock.settimeout(deadline.left())  # each wait gets what is left: a trickling reply cannot outlast it
            try:
                data = self.sock.recv(_READ_SIZE)
            except ConnectionError as err:
                if answered:
                    raise ConnectionError(f"Triton's reply was cut off: {err}") from err
                raise
            if not data:
                if answered:
                    raise ConnectionError("Triton closed the connection mid-reply")
                raise ConnectionResetError("Triton closed the connection")
            answered = True
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as err:
                raise ConnectionError(f"{UNREADABLE_RESPONSE}: {err}") from None
        return (self.status, self.headers, b"".join(self.body)), self.keep

    def close(self) -> None:
        self.sock.close()


class BlockingHttpTransport(RestApi):
    """Keep-alive HTTP/1.1 connections to one Triton, shared by every thread; at most IDLE_CONNECTIONS kept idle.
    Triton's calls (``get_model_config``, ``infer``...) are :class:`~tritonforge.triton.http_api.RestApi`'s."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext | None = None, server_name: str | None = None,
                 verbose: bool = False) -> None:
        self.host, self.port = host, port
        self._context, self._server_name, self.verbose = context, server_name, verbose
        self._host_header = host_header(host, port, 443 if context is not None else 80)
        self._idle: list[_Exchange] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    @classmethod
    def for_url(cls, base: str, *, context: ssl.SSLContext | None, server_name: str | None = None,
                verbose: bool = False) -> BlockingHttpTransport:
        """A transport for ``base`` (``http://host:port`` or ``https://...``)."""
        host, port = host_and_port(base)
        return cls(host, port, context=context, server_name=server_name, verbose=verbose)

    # connections --------------------------------------------------------------------------------------------------
    def _take(self) -> _Exchange | None:
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not ours to talk on
            self._idle, self._lock, self._pid = [], threading.Lock(), os.getpid()
        with self._lock:
            if self._closed:
                raise ClientError(f"the HTTP connections to {self.host}:{self.port} are closed")
            return self._idle.pop() if self._idle else None

    def _give(self, exchange: _Exchange) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(exchange)
                return
        exchange.close()

    def _open(self, deadline: _Deadline) -> _Exchange:
        sock = socket.create_connection((self.host, self.port), timeout=deadline.left())
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # one write a request: nothing to coalesce
            if self._context is not None:  # the certificate checked against server_name when given (TLSOptions)
                sock = self._context.wrap_socket(sock, server_hostname=self._server_name or self.host)
        except BaseException:
            sock.close()
            raise
        return _Exchange(sock)

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Reply:
        """(status, lower-cased headers, body) of one request. ``timeout`` bounds the call: connecting, sending and
        each wait for the reply get what is left of it."""
        deadline = _Deadline(timeout)
        data = encode_request(method, path, self._host_header, body, headers or {})
        if self.verbose:
            print(f"{method} {path}, headers {headers}")
        while True:
            exchange = self._take()
            reused = exchange is not None
            if exchange is not None and exchange.dropped():
                exchange.close()  # Triton closed it while it was idle (a restart, a timeout): the next one
                continue
            if exchange is None:
                exchange = self._open(deadline)
            try:
                reply, keep = exchange.send(data, deadline)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                exchange.close()
                if reused and (exchange.unsent or method in IDEMPOTENT):
                    continue  # never read (it could not be written), or one that may run again
                raise
            except BaseException:  # a deadline, an unreadable reply: what is left of the reply would be read next
                exchange.close()
                raise
            if keep:
                self._give(exchange)
            else:
                exchange.close()
            if self.verbose:
                print(reply[0], reply[1])
            return reply

    def _send(self, method: str, path: str, body: bytes | None, headers: Headers, timeout: float | None,
              read: Reader) -> Any:
        return read(*self.request(method, path, body, headers, timeout))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
