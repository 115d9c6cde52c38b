"""Triton's HTTP/REST API in tritonclient's method names, written once for the two keep-alive transports of our own:
``BlockingHttpTransport`` (blocking_http.py, the synchronous client's) and ``AsyncHttpTransport`` (keepalive_http.py,
the asyncio client's and the gateway's).

Each method describes its request (method, path, body, headers) and how its reply is read, and hands both to the
transport's ``_send``, which returns the result (blocking) or an awaitable of it (asyncio): one list of calls, no
sync/async mirror. The bodies are tritonclient's (``generate_request_body``, ``InferResult.from_response_body``) and a
refusal is raised as tritonclient's HTTP clients raise it (``InferenceServerException`` with the HTTP status), so the
one error mapping (tritonforge/triton/errors.py) reads it unchanged. ``client_timeout`` is gRPC's keyword, taken by
the blocking transport (the asyncio one is bounded by its caller's ``asyncio.timeout``).
"""

from __future__ import annotations

import functools
import gzip
import json
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from tritonforge.errors import InvalidInputError

Headers = Mapping[str, str] | None
Reader = Callable[[int, Mapping[bytes, bytes], bytes], Any]  # (status, lower-cased headers, body) -> the result
# methods the transports send again when a reused connection closes with no reply: the request may have run, and
# only these may run twice (RFC 9110 9.2.2); another goes to the caller's retry policy, which retries=0 switches off
# (a Triton stopped while an infer computed got it a second time: client audit)
IDEMPOTENT = frozenset({"GET", "HEAD"})
_SET_BY_THE_CLIENT = frozenset({"content-length", "transfer-encoding"})  # bodies go whole, with their length
# HTTP's "deflate" is zlib's format (RFC 9110), as tritonclient sends it
_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "deflate": zlib.compress}


def host_and_port(base: str) -> tuple[str, int]:
    """(host, port) of ``http://host:port`` or ``https://...`` (80 or 443 when none is given)."""
    where = urllib.parse.urlsplit(base)
    return where.hostname or "localhost", where.port or (443 if where.scheme == "https" else 80)


def host_header(host: str, port: int, default_port: int) -> str:
    netloc = f"[{host}]" if ":" in host else host  # IPv6 in brackets
    return netloc if port == default_port else f"{netloc}:{port}"


def encode_request(method: str, path: str, host: str, body: bytes | None, headers: Mapping[str, str]) -> bytes:
    """One HTTP/1.1 request, whole; headers that would break it are an InvalidInputError, before anything is sent."""
    head = [f"{method} {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name in headers):
        head.append(f"Host: {host}")
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


# in the message of a refusal whose body is not Triton's {"error": ...}: what answered may not be Triton at all (a
# proxy's or ingress's own 404), which the error mapping must not read as Triton's words (an unknown model)
NOT_TRITON = "no Triton error in the reply"


def refusal(status: int, body: bytes) -> Exception:
    """The exception tritonclient's HTTP clients raise for a non-200 reply (Triton's ``{"error": ...}``)."""
    from tritonclient.utils import InferenceServerException

    try:
        message = json.loads(body)["error"] if body else f"{NOT_TRITON}: an empty body"
    except (ValueError, KeyError, TypeError):
        message = f"{NOT_TRITON}: {body[:200]!r}"
    return InferenceServerException(msg=str(message), status=str(status))


def _is_ok(status: int, headers: Mapping[bytes, bytes], body: bytes) -> bool:
    return status == 200


def _json(status: int, headers: Mapping[bytes, bytes], body: bytes) -> Any:
    if status != 200:
        raise refusal(status, body)
    return json.loads(body) if body else {}


def _generated(status: int, headers: Mapping[bytes, bytes], body: bytes) -> Any:
    """The generate extension's JSON reply. Triton answers a /generate request whose model sends more than one
    response ("stream": true to a decoupled model) with status 200 and only an error ("generate expects model to
    produce exactly 1 response"): a refusal, not a reply without text."""
    reply = _json(status, headers, body)
    if isinstance(reply, dict) and set(reply) == {"error"}:
        raise refusal(status, body)
    return reply


def _done(status: int, headers: Mapping[bytes, bytes], body: bytes) -> None:
    if status != 200:
        raise refusal(status, body)


def _infer_result(http_module: Any, verbose: bool, status: int, headers: Mapping[bytes, bytes], body: bytes) -> Any:
    if status != 200:
        raise refusal(status, body)
    length, encoding = headers.get(b"inference-header-content-length"), headers.get(b"content-encoding")
    return http_module.InferResult.from_response_body(body, verbose, int(length) if length else None,
                                                      encoding.decode() if encoding else None)


def _model_path(model: str, version: str) -> str:
    path = f"/v2/models/{urllib.parse.quote(model)}"
    return f"{path}/versions/{urllib.parse.quote(version)}" if version else path


class RestApi:
    """The calls; a transport implements ``_send``."""

    verbose = False

    def _send(self, method: str, path: str, body: bytes | None, headers: Headers, timeout: float | None,
              read: Reader) -> Any:
        raise NotImplementedError

    def is_server_live(self, headers: Headers = None, client_timeout: float | None = None) -> Any:
        return self._send("GET", "/v2/health/live", None, headers, client_timeout, _is_ok)

    def is_server_ready(self, headers: Headers = None, client_timeout: float | None = None) -> Any:
        return self._send("GET", "/v2/health/ready", None, headers, client_timeout, _is_ok)

    def is_model_ready(self, model_name: str, model_version: str = "", headers: Headers = None,
                       client_timeout: float | None = None) -> Any:
        path = f"{_model_path(model_name, model_version)}/ready"
        return self._send("GET", path, None, headers, client_timeout, _is_ok)

    def get_model_metadata(self, model_name: str, model_version: str = "", headers: Headers = None,
                           client_timeout: float | None = None) -> Any:
        return self._send("GET", _model_path(model_name, model_version), None, headers, client_timeout, _json)

    def get_model_config(self, model_name: str, model_version: str = "", headers: Headers = None,
                         client_timeout: float | None = None) -> Any:
        path = f"{_model_path(model_name, model_version)}/config"
        return self._send("GET", path, None, headers, client_timeout, _json)

    def get_inference_statistics(self, model_name: str = "", model_version: str = "", headers: Headers = None,
                                 client_timeout: float | None = None) -> Any:
        path = f"{_model_path(model_name, model_version)}/stats" if model_name else "/v2/models/stats"
        return self._send("GET", path, None, headers, client_timeout, _json)

    def get_model_repository_index(self, headers: Headers = None, client_timeout: float | None = None) -> Any:
        return self._send("POST", "/v2/repository/index", b"", headers, client_timeout, _json)

    def load_model(self, model_name: str, headers: Headers = None, config: str | None = None,
                   client_timeout: float | None = None) -> Any:
        body = {"parameters": {"config": config}} if config is not None else {}
        path = f"/v2/repository/models/{urllib.parse.quote(model_name)}/load"
        return self._send("POST", path, json.dumps(body).encode(), headers, client_timeout, _done)

    def unload_model(self, model_name: str, headers: Headers = None, unload_dependents: bool = False,
                     client_timeout: float | None = None) -> Any:
        body = {"parameters": {"unload_dependents": unload_dependents}}
        path = f"/v2/repository/models/{urllib.parse.quote(model_name)}/unload"
        return self._send("POST", path, json.dumps(body).encode(), headers, client_timeout, _done)

    def generate(self, model_name: str, request: Mapping[str, Any], headers: Headers = None,
                 client_timeout: float | None = None) -> Any:
        """Triton's generate extension: the JSON reply to ``request`` (``text_input`` and the sampling fields)."""
        path = f"{_model_path(model_name, '')}/generate"
        sent = {**(headers or {}), "Content-Type": "application/json"}
        return self._send("POST", path, json.dumps(request).encode("utf-8"), sent, client_timeout, _generated)

    def infer(
        self,
        model_name: str,
        inputs: list[Any],
        model_version: str = "",
        outputs: list[Any] | None = None,
        request_id: str = "",
        headers: Headers = None,
        parameters: Mapping[str, Any] | None = None,
        request_compression_algorithm: str | None = None,
        response_compression_algorithm: str | None = None,
        client_timeout: float | None = None,
    ) -> Any:
        """``tritonclient.http.InferResult`` of one call (``inputs``/``outputs``: tritonclient.http's, binary; none
        named: every output, in binary)."""
        import tritonclient.http as mod

        body, json_size = mod.InferenceServerClient.generate_request_body(
            inputs, outputs, request_id=request_id, parameters=dict(parameters) if parameters else None
        )
        sent = {"Content-Type": "application/octet-stream", **(headers or {})}
        if json_size is not None:
            sent["Inference-Header-Content-Length"] = str(json_size)
        if request_compression_algorithm:
            body = _COMPRESSORS[request_compression_algorithm](body)
            sent["Content-Encoding"] = request_compression_algorithm
        if response_compression_algorithm:
            sent["Accept-Encoding"] = response_compression_algorithm
        path = f"{_model_path(model_name, model_version)}/infer"
        read = functools.partial(_infer_result, mod, self.verbose)
        return self._send("POST", path, body, sent, client_timeout, read)
