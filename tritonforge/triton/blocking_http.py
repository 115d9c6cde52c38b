"""Triton's HTTP/REST API for the synchronous client: keep-alive sockets of its own, httptools' parser, no gevent.

Why not ``tritonclient.http`` (geventhttpclient on gevent), which the synchronous client used before:
- gevent leaves every thread that used it a hub it never frees, even once the thread ends (gevent issue 1601):
  measured, 2 file descriptors and ~55 KB a thread, so a server calling Triton from a thread per request failed with
  "Too many open files" after ~500 requests;
- its connections belong to the thread that made them (shared, about half the calls of 16 threads failed with
  "Cannot switch to a different thread"), so the client kept transports per thread and per deadline;
- a forked child inherited the hub in the parent's state and its new client hung for good.
Here one pool of keep-alive connections serves every thread, each call with its own deadline, and a forked child
starts with an empty pool. The bodies are still tritonclient's (``generate_request_body``,
``InferResult.from_response_body``) and a refusal is raised as tritonclient raises it (``InferenceServerException``
with the HTTP status), so the one error mapping (tritonforge/triton/errors.py) reads it unchanged. The method names
and keywords are tritonclient's, with gRPC's ``client_timeout`` for the deadline.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import httptools

from tritonforge.errors import ClientError, InvalidInputError
from tritonforge.triton.http_bodies import infer_request, infer_result, refusal

IDLE_CONNECTIONS = 64  # kept open between calls; more threads in flight open more, closed after use
_READ_SIZE = 1 << 18
_SET_BY_THE_CLIENT = frozenset({"content-length", "transfer-encoding"})  # bodies go whole, with their length
# HTTP's "deflate" is zlib's format (RFC 9110), as tritonclient sends it
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}
Reply = tuple[int, dict[bytes, bytes], bytes]  # status, lower-cased headers, body


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

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:  # the parser's status and keep-alive are read here, while they hold
        self.complete, self.status, self.keep = True, self.parser.get_status_code(), self.parser.should_keep_alive()

    def send(self, data: bytes, deadline: _Deadline) -> tuple[Reply, bool]:
        """(the reply, whether the connection may be kept). ConnectionResetError (or BrokenPipeError) only when no
        byte of a reply came: the request may be sent again on a connection found closed while idle; a reply cut
        off is a plain ConnectionError, which the error mapping does not retry (the request ran)."""
        self.headers, self.body, self.complete = {}, [], False
        self.sock.settimeout(deadline.left())
        self.sock.sendall(data)
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
                raise ConnectionError(f"unreadable HTTP response from Triton: {err}") from None
        return (self.status, self.headers, b"".join(self.body)), self.keep

    def close(self) -> None:
        self.sock.close()


class BlockingHttpTransport:
    """Keep-alive HTTP/1.1 connections to one Triton, shared by every thread; at most IDLE_CONNECTIONS kept idle."""

    def __init__(self, host: str, port: int, *, context: ssl.SSLContext | None = None, server_name: str | None = None,
                 verbose: bool = False) -> None:
        self.host, self.port = host, port
        self._context, self._server_name, self._verbose = context, server_name, verbose
        default_port = 443 if context is not None else 80
        netloc = f"[{host}]" if ":" in host else host  # IPv6 in brackets
        self._host_header = netloc if port == default_port else f"{netloc}:{port}"
        self._idle: list[_Exchange] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    @classmethod
    def for_url(cls, base: str, *, context: ssl.SSLContext | None, server_name: str | None = None,
                verbose: bool = False) -> BlockingHttpTransport:
        """A transport for ``base`` (``http://host:port`` or ``https://...``)."""
        where = urllib.parse.urlsplit(base)
        port = where.port or (443 if where.scheme == "https" else 80)
        return cls(where.hostname or "localhost", port, context=context, server_name=server_name, verbose=verbose)

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

    def _encode(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
        head = [f"{method} {path} HTTP/1.1"]
        if not any(name.lower() == "host" for name in headers):
            head.append(f"Host: {self._host_header}")
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        for name, value in headers.items():
            if name.lower() in _SET_BY_THE_CLIENT:
                raise InvalidInputError(f"the header {name} cannot be set: the client sends each body whole, "
                                        "with its Content-Length")
            if any(c in name or c in value for c in "\r\n\0"):  # would end the header early: request smuggling
                raise InvalidInputError(f"the header {name!r} holds a line break or NUL, which HTTP headers cannot")
            head.append(f"{name}: {value}")
        head += ["", ""]
        try:
            data = "\r\n".join(head).encode("latin-1")
        except UnicodeEncodeError as err:
            raise InvalidInputError(f"a header holds {err.object[err.start:err.end]!r}: HTTP header values are "
                                    "latin-1 (encode others, e.g. as base64)") from None
        return data + body if body else data

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Reply:
        """(status, lower-cased headers, body) of one request. ``timeout`` bounds the call: connecting, sending and
        each wait for the reply get what is left of it."""
        deadline = _Deadline(timeout)
        data = self._encode(method, path, body, headers or {})
        if self._verbose:
            print(f"{method} {path}, headers {headers}")
        while True:
            exchange = self._take()
            reused = exchange is not None
            if exchange is None:
                exchange = self._open(deadline)
            try:
                reply, keep = exchange.send(data, deadline)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                exchange.close()
                if reused:
                    continue  # Triton closed it while it was idle (a restart, a timeout): not run, sent again
                raise
            except BaseException:  # a deadline, an unreadable reply: what is left of the reply would be read next
                exchange.close()
                raise
            if keep:
                self._give(exchange)
            else:
                exchange.close()
            if self._verbose:
                print(reply[0], reply[1])
            return reply

    def _json(self, method: str, path: str, body: bytes | None, headers: Mapping[str, str] | None,
              timeout: float | None) -> Any:
        status, _, data = self.request(method, path, body, headers, timeout)
        if status != 200:
            raise refusal(status, data)
        return json.loads(data) if data else {}

    def _ok(self, path: str, headers: Mapping[str, str] | None, timeout: float | None) -> bool:
        return self.request("GET", path, None, headers, timeout)[0] == 200

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    # Triton's API, in tritonclient's names --------------------------------------------------------------------------
    def is_server_live(self, headers: Mapping[str, str] | None = None, client_timeout: float | None = None) -> bool:
        return self._ok("/v2/health/live", headers, client_timeout)

    def is_server_ready(self, headers: Mapping[str, str] | None = None, client_timeout: float | None = None) -> bool:
        return self._ok("/v2/health/ready", headers, client_timeout)

    def is_model_ready(self, model_name: str, model_version: str = "", headers: Mapping[str, str] | None = None,
                       client_timeout: float | None = None) -> bool:
        return self._ok(f"{_model_path(model_name, model_version)}/ready", headers, client_timeout)

    def get_model_metadata(self, model_name: str, model_version: str = "", headers: Mapping[str, str] | None = None,
                           client_timeout: float | None = None) -> Any:
        return self._json("GET", _model_path(model_name, model_version), None, headers, client_timeout)

    def get_model_config(self, model_name: str, model_version: str = "", headers: Mapping[str, str] | None = None,
                         client_timeout: float | None = None) -> Any:
        return self._json("GET", f"{_model_path(model_name, model_version)}/config", None, headers, client_timeout)

    def get_inference_statistics(self, model_name: str = "", model_version: str = "",
                                 headers: Mapping[str, str] | None = None, client_timeout: float | None = None) -> Any:
        path = f"{_model_path(model_name, model_version)}/stats" if model_name else "/v2/models/stats"
        return self._json("GET", path, None, headers, client_timeout)

    def get_model_repository_index(self, headers: Mapping[str, str] | None = None,
                                   client_timeout: float | None = None) -> Any:
        return self._json("POST", "/v2/repository/index", b"", headers, client_timeout)

    def load_model(self, model_name: str, headers: Mapping[str, str] | None = None, config: str | None = None,
                   client_timeout: float | None = None) -> None:
        body = {"parameters": {"config": config}} if config is not None else {}
        path = f"/v2/repository/models/{urllib.parse.quote(model_name)}/load"
        self._json("POST", path, json.dumps(body).encode(), headers, client_timeout)

    def unload_model(self, model_name: str, headers: Mapping[str, str] | None = None, unload_dependents: bool = False,
                     client_timeout: float | None = None) -> None:
        body = {"parameters": {"unload_dependents": unload_dependents}}
        path = f"/v2/repository/models/{urllib.parse.quote(model_name)}/unload"
        self._json("POST", path, json.dumps(body).encode(), headers, client_timeout)

    def infer(
        self,
        model_name: str,
        inputs: list[Any],
        model_version: str = "",
        outputs: list[Any] | None = None,
        request_id: str = "",
        headers: Mapping[str, str] | None = None,
        parameters: Mapping[str, Any] | None = None,
        request_compression_algorithm: str | None = None,
        response_compression_algorithm: str | None = None,
        client_timeout: float | None = None,
    ) -> Any:
        """``tritonclient.http.InferResult`` of one call (``inputs``/``outputs``: tritonclient.http's)."""
        import tritonclient.http as mod

        body, sent = infer_request(mod, inputs, outputs, request_id=request_id, parameters=parameters,
                                   headers=headers)
        if request_compression_algorithm:
            body = _COMPRESSORS[request_compression_algorithm](body)
            sent["Content-Encoding"] = request_compression_algorithm
        if response_compression_algorithm:
            sent["Accept-Encoding"] = response_compression_algorithm
        path = f"{_model_path(model_name, model_version)}/infer"
        return infer_result(mod, *self.request("POST", path, body, sent, client_timeout), verbose=self._verbose)


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{urllib.parse.quote(model)}"
    return f"{path}/versions/{version}" if version else path
