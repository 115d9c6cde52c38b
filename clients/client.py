"""Typed Triton clients over tritonclient: numpy in, numpy out, one error tree, bounded retries.

    from tritonforge.clients import Client

    with Client("127.0.0.1:8001") as client:                 # gRPC; protocol="http" for the HTTP endpoint
        vectors = client.embed(["hello", "world"])           # float32 [2, dim]
        out = client.infer("add_one", {"INPUT": np.ones((1, 4), np.float32)})

    async with AsyncClient("127.0.0.1:8001") as client:      # the same surface, awaitable
        vectors = await client.embed(["hello"])

Errors: every failure is a :class:`~tritonforge.errors.ClientError` naming the model and carrying the server's
message. Only transport failures that cannot have reached the server (gRPC ``UNAVAILABLE``; for HTTP a refused or
reset connection) are retried, ``retries`` times with capped exponential backoff and jitter; when they run out a
:class:`~tritonforge.errors.TransientError` is raised. A deadline (``timeout``, seconds, per call) that expires is a
ClientError saying the deadline, and is not retried: the request may be running on the server.

tritonclient (and grpc/gevent/aiohttp under it) is imported when the first transport is created, not on import.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from tritonforge.clients.generation import (
    AsyncRagStream,
    RagAnswer,
    RagStream,
    Sampling,
    generate_payload,
    generation_inputs,
    grpc_stream,
    grpc_stream_async,
    http_generate,
    rag_inputs,
)
from tritonforge.clients.pipelines import Hit, rerank_request, rerank_scores, search_request, search_results
from tritonforge.errors import ClientError, OverloadedError, TransientError

__all__ = [
    "AsyncClient",
    "Client",
    "ClientOptions",
    "KeepAliveOptions",
    "RetryPolicy",
    "TLSOptions",
    "classify_error",
    "grpc_client_kwargs",
    "http_aio_client_kwargs",
    "http_client_kwargs",
    "triton_dtype",
]

LOG = logging.getLogger(__name__)

Protocol = Literal["grpc", "http"]
Compression = Literal["gzip", "deflate"]
T = TypeVar("T")

INT32_MAX = 2**31 - 1
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
_MAX_HTTP_TRANSPORTS = 4

# numpy kind/itemsize -> Triton datatype; object, bytes and str arrays travel as BYTES
_NUMPY_TO_TRITON: dict[np.dtype[Any], str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}


# ------------------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class TLSOptions:
    """TLS for either protocol. Paths are PEM files.

    ``root_certificates``: CA bundle that signed the server (None: the system's). ``certificate_chain`` and
    ``private_key``: the client's certificate for mutual TLS (both or neither). ``server_name``: the name to verify
    the server's certificate against when it differs from the URL's host. ``insecure``: skip verification (HTTP).
    """

    root_certificates: str | Path | None = None
    certificate_chain: str | Path | None = None
    private_key: str | Path | None = None
    server_name: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ClientError("TLSOptions: mutual TLS needs both certificate_chain and private_key (or neither)")

    def check_files(self) -> None:
        for name in ("root_certificates", "certificate_chain", "private_key"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ClientError(f"TLSOptions.{name}: {path} is not a file")


@dataclass(frozen=True)
class KeepAliveOptions:
    """gRPC keepalive (milliseconds), as tritonclient's KeepAliveOptions; the defaults are gRPC's."""

    time_ms: int = INT32_MAX
    timeout_ms: int = 20_000
    permit_without_calls: bool = False
    max_pings_without_data: int = 2

    def __post_init__(self) -> None:
        if self.time_ms <= 0 or self.timeout_ms <= 0 or self.max_pings_without_data < 0:
            raise ClientError(f"KeepAliveOptions: times must be > 0 ms and pings >= 0, got {self}")


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first; the n-th wait is ``min(max_backoff, backoff * 2**n)`` scaled by a
    random factor in ``[1 - jitter, 1]``."""

    retries: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ClientError(f"retries={self.retries} must be >= 0")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ClientError(f"backoff={self.backoff} and max_backoff={self.max_backoff} must be >= 0 seconds")
        if not 0 <= self.jitter <= 1:
            raise ClientError(f"jitter={self.jitter} must be within [0, 1]")

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        base = min(self.max_backoff, self.backoff * (2.0**retry))
        return base * (1.0 - self.jitter * rng())


@dataclass(frozen=True)
class ClientOptions:
    """Everything a client is configured with besides its URL and protocol."""

    timeout: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    tls: TLSOptions | None = None
    keepalive: KeepAliveOptions | None = None
    compression: Compression | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.timeout is not None and not self.timeout > 0:
            raise ClientError(f"timeout={self.timeout} must be > 0 seconds (or None for no deadline)")
        if self.compression not in (None, "gzip", "deflate"):
            raise ClientError(f"compression={self.compression!r} is not one of 'gzip', 'deflate', None")


def _split_url(url: str, protocol: str) -> tuple[str, bool]:
    """``host:port`` for tritonclient, and whether the scheme asked for TLS (https://, grpcs://)."""
    if not isinstance(url, str) or not url.strip():
        raise ClientError(f"url must be 'host:port' (or scheme://host:port), got {url!r}")
    rest, secure = url.strip(), False
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        scheme = scheme.lower()
        if scheme not in ("http", "https", "grpc", "grpcs"):
            raise ClientError(f"url {url!r}: scheme {scheme!r} is not one of http, https, grpc, grpcs")
        secure = scheme in ("https", "grpcs")
    rest = rest.rstrip("/")
    if not rest or "/" in rest:
        raise ClientError(f"url {url!r} must be host:port without a path")
    # [ipv6]:port, host:port; a bare IPv6 address is left as given
    has_port = "]:" in rest if rest.startswith("[") else ":" in rest
    if not has_port:
        rest = f"{rest}:{DEFAULT_PORTS[protocol]}"
    return rest, secure


# ------------------------------------------------------------------------------------- tritonclient construction


def grpc_client_kwargs(url: str, options: ClientOptions) -> dict[str, Any]:
    """Keyword arguments for ``tritonclient.grpc(.aio).InferenceServerClient``.

    Channel arguments are always given whole (tritonclient then ignores ``keepalive_options``): message size limits
    as tritonclient's defaults, keepalive, a reconnect backoff that follows the retry policy (gRPC's own starts at
    1 s and would make fast retries fail without trying), and the TLS server-name override.
    """
    kwargs: dict[str, Any] = {"url": url, "verbose": options.verbose}
    tls = options.tls
    if tls is not None:
        if tls.insecure:
            raise ClientError("TLSOptions.insecure is not supported over gRPC: give root_certificates instead")
        kwargs.update(
            ssl=True,
            root_certificates=None if tls.root_certificates is None else str(tls.root_certificates),
            private_key=None if tls.private_key is None else str(tls.private_key),
            certificate_chain=None if tls.certificate_chain is None else str(tls.certificate_chain),
        )
    ka = options.keepalive or KeepAliveOptions()
    retry = options.retry
    initial_ms = max(50, int(retry.backoff * 1000))
    max_ms = max(initial_ms, int(retry.max_backoff * 1000))
    channel_args: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", INT32_MAX),
        ("grpc.max_receive_message_length", INT32_MAX),
        ("grpc.keepalive_time_ms", ka.time_ms),
        ("grpc.keepalive_timeout_ms", ka.timeout_ms),
        ("grpc.keepalive_permit_without_calls", int(ka.permit_without_calls)),
        ("grpc.http2.max_pings_without_data", ka.max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", initial_ms),
        ("grpc.min_reconnect_backoff_ms", initial_ms),
        ("grpc.max_reconnect_backoff_ms", max_ms),
    ]
    if tls is not None and tls.server_name:
        channel_args.append(("grpc.ssl_target_name_override", tls.server_name))
    kwargs["channel_args"] = channel_args
    return kwargs


def http_client_kwargs(url: str, options: ClientOptions, timeout: float | None) -> dict[str, Any]:
    """Keyword arguments for ``tritonclient.http.InferenceServerClient`` (geventhttpclient underneath)."""
    kwargs: dict[str, Any] = {
        "url": url,
        "verbose": options.verbose,
        "connection_timeout": timeout,
        "network_timeout": timeout,
    }
    tls = options.tls
    if tls is not None:
        ssl_options: dict[str, Any] = {}
        if tls.root_certificates is not None:
            ssl_options["ca_certs"] = str(tls.root_certificates)
        if tls.certificate_chain is not None:
            ssl_options["certfile"] = str(tls.certificate_chain)
            ssl_options["keyfile"] = str(tls.private_key)
        if tls.server_name:
            ssl_options["server_hostname"] = tls.server_name
        kwargs.update(ssl=True, ssl_options=ssl_options or None, insecure=tls.insecure)
    return kwargs


def http_aio_client_kwargs(url: str, options: ClientOptions) -> dict[str, Any]:
    """Keyword arguments for ``tritonclient.http.aio.InferenceServerClient`` (aiohttp underneath).

    The session has no timeout of its own: deadlines are per call (``asyncio.wait_for``).
    """
    kwargs: dict[str, Any] = {"url": url, "verbose": options.verbose, "conn_timeout": None}
    tls = options.tls
    if tls is not None:
        if tls.server_name:
            raise ClientError("TLSOptions.server_name is not supported by the async HTTP client: use gRPC or Client")
        import ssl

        context = ssl.create_default_context(
            cafile=None if tls.root_certificates is None else str(tls.root_certificates)
        )
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if tls.certificate_chain is not None:
            context.load_cert_chain(str(tls.certificate_chain), str(tls.private_key))
        kwargs.update(ssl=True, ssl_context=context)
    return kwargs


# ---------------------------------------------------------------------------------------------------- tensors


def triton_dtype(array: np.ndarray) -> str:
    """The Triton datatype of a numpy array (object/bytes/str arrays are BYTES)."""
    dtype = array.dtype
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _NUMPY_TO_TRITON[dtype.newbyteorder("=")]
    except KeyError:
        allowed = ", ".join(sorted({str(d) for d in _NUMPY_TO_TRITON})) + ", object/bytes/str"
        raise ClientError(f"numpy dtype {dtype} has no Triton datatype (allowed: {allowed})") from None


def _as_tensor(name: str, value: Any) -> tuple[np.ndarray, str]:
    if not isinstance(name, str) or not name:
        raise ClientError(f"input names must be non-empty strings, got {name!r}")
    if value is None:
        raise ClientError(f"input '{name}' is None")
    array = np.asarray(value)
    try:
        datatype = triton_dtype(array)
    except ClientError as err:
        raise ClientError(f"input '{name}': {err}") from None
    if datatype == "BYTES":
        if array.dtype.kind == "U":
            encoded = np.empty(array.shape, dtype=object)
            for index, item in np.ndenumerate(array):
                encoded[index] = str(item).encode("utf-8")
            array = encoded
        elif array.dtype.kind == "S":
            array = array.astype(object)
        else:
            for i, item in enumerate(array.reshape(-1)):
                if not isinstance(item, (bytes, str, np.bytes_, np.str_)):
                    raise ClientError(
                        f"input '{name}' element {i} is {type(item).__name__}: a BYTES tensor holds bytes or str"
                    )
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array, datatype


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise ClientError(f"texts must be a list of strings, not a single {type(texts).__name__}: embed([text])")
    if not isinstance(texts, Iterable):
        raise ClientError(f"texts must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise ClientError("texts is empty: give at least one string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ClientError(f"texts[{i}] is {type(item).__name__}, not str")
    return items


def _text_tensor(texts: list[str]) -> np.ndarray:
    encoded = []
    for i, text in enumerate(texts):
        try:
            encoded.append([text.encode("utf-8")])
        except UnicodeEncodeError as err:
            raise ClientError(f"texts[{i}] cannot be encoded as UTF-8: {err.reason}") from None
    return np.array(encoded, dtype=object).reshape(len(texts), 1)


def _check_embedding(out: np.ndarray | None, n: int, model: str) -> np.ndarray:
    if out is None:
        raise ClientError(f"model '{model}' returned no EMBEDDING output")
    if out.ndim == 3 and out.shape[1] == 1:
        out = out[:, 0, :]
    if out.ndim != 2 or out.shape[0] != n:
        raise ClientError(f"model '{model}' returned EMBEDDING of shape {list(out.shape)}, expected [{n}, dim]")
    return np.ascontiguousarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------------------ errors


_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}
_TRANSIENT_AIOHTTP = {"ClientConnectorError", "ServerDisconnectedError", "ClientOSError"}


def _status(err: BaseException) -> str:
    status = getattr(err, "status", None)
    value = status() if callable(status) else status
    return "" if value is None else str(value)


def _message(err: BaseException) -> str:
    message = getattr(err, "message", None)
    value = message() if callable(message) else None
    return str(value or err).strip()


def classify_error(
    err: BaseException, *, model: str | None, url: str, timeout: float | None, protocol: str = "grpc"
) -> ClientError:
    """The ClientError for a failed call; a :class:`TransientError` when retrying may succeed.

    The result carries ``model``, ``status`` (gRPC code or HTTP status as tritonclient gives it) and ``url``.
    """
    where = f"model '{model}'" if model else f"{protocol} server {url}"
    status = _status(err)
    code = status.removeprefix("StatusCode.")
    text = _message(err)
    result: ClientError
    if type(err).__name__ == "InferenceServerException":
        if "maximum queue size" in text:  # Triton sheds load (UNAVAILABLE / 503): retrying at once adds to it
            result = OverloadedError(f"{where}: server overloaded, request rejected: {text}")
        elif code == "UNAVAILABLE":
            result = TransientError(f"{where}: {protocol} server {url} is unavailable: {text}")
        elif code == "DEADLINE_EXCEEDED":
            result = ClientError(f"{where}: deadline of {_seconds(timeout)} exceeded ({protocol} {url})")
        elif "unknown model" in text.lower() or code == "NOT_FOUND" or status == "404":
            result = ClientError(f"unknown model '{model}' at {protocol} server {url}: {text}")
        else:
            result = ClientError(f"{where}: {text}")
    elif isinstance(err, (asyncio.TimeoutError, TimeoutError)) or type(err).__name__ == "Timeout":
        result = ClientError(f"{where}: deadline of {_seconds(timeout)} exceeded ({protocol} {url})")
    elif _unreachable(err):
        result = TransientError(f"{where}: {protocol} server {url} is unreachable: {err}")
    else:
        result = ClientError(f"{where}: {type(err).__name__}: {text}")
    result.model = model  # type: ignore[attr-defined]
    result.status = status  # type: ignore[attr-defined]
    result.url = url  # type: ignore[attr-defined]
    return result


def _unreachable(err: BaseException) -> bool:
    """A connection that was refused, reset or dropped: the request did not run (or may be re-sent)."""
    if isinstance(err, (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return True
    if isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS:
        return True
    return type(err).__module__.startswith("aiohttp") and type(err).__name__ in _TRANSIENT_AIOHTTP


def _seconds(timeout: float | None) -> str:
    return "none" if timeout is None else f"{timeout:g}s"


def _exhausted(last: TransientError, policy: RetryPolicy) -> TransientError:
    tries = f"{policy.attempts} attempt{'s' * (policy.attempts != 1)}"
    err = TransientError(f"{last} (gave up after {tries})")
    err.__dict__.update(last.__dict__)
    return err


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], ClientError],
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``fn``; retry only what ``classify`` calls transient, then raise TransientError."""
    for retry in range(policy.attempts):
        try:
            return fn()
        except ClientError:
            raise
        except Exception as raw:
            err = classify(raw)
            if not isinstance(err, TransientError):
                raise err from raw
            if retry == policy.retries:
                raise _exhausted(err, policy) from raw
            wait = policy.delay(retry, rng)
            LOG.debug("retry %d/%d in %.3fs: %s", retry + 1, policy.retries, wait, err)
            sleep(wait)
    raise AssertionError("unreachable")


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], ClientError],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """The awaitable :func:`call_with_retry`."""
    for retry in range(policy.attempts):
        try:
            return await fn()
        except ClientError:
            raise
        except Exception as raw:
            err = classify(raw)
            if not isinstance(err, TransientError):
                raise err from raw
            if retry == policy.retries:
                raise _exhausted(err, policy) from raw
            wait = policy.delay(retry, rng)
            LOG.debug("retry %d/%d in %.3fs: %s", retry + 1, policy.retries, wait, err)
            await sleep(wait)
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------------ clients


class _Base:
    def __init__(
        self,
        url: str,
        protocol: Protocol = "grpc",
        *,
        timeout: float | None = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
        tls: TLSOptions | None = None,
        keepalive: KeepAliveOptions | None = None,
        compression: Compression | None = None,
        headers: Mapping[str, str] | None = None,
        verbose: bool = False,
    ) -> None:
        if protocol not in ("grpc", "http"):
            raise ClientError(f"protocol={protocol!r} is not one of 'grpc', 'http'")
        self.protocol: Protocol = protocol
        self.url, secure = _split_url(url, protocol)
        if secure and tls is None:
            tls = TLSOptions()
        if tls is not None:
            tls.check_files()
        self.options = ClientOptions(
            timeout=timeout,
            retry=RetryPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff),
            tls=tls,
            keepalive=keepalive,
            compression=compression,
            headers=dict(headers or {}),
            verbose=verbose,
        )
        self._closed = False
        self._http_outputs: dict[str, list[str]] = {}

    @classmethod
    def from_options(cls, url: str, protocol: Protocol = "grpc", options: ClientOptions | None = None) -> Any:
        o = options or ClientOptions()
        return cls(
            url,
            protocol,
            timeout=o.timeout,
            retries=o.retry.retries,
            backoff=o.retry.backoff,
            max_backoff=o.retry.max_backoff,
            tls=o.tls,
            keepalive=o.keepalive,
            compression=o.compression,
            headers=o.headers,
            verbose=o.verbose,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, protocol={self.protocol!r})"

    def _timeout(self, timeout: float | None) -> float | None:
        if timeout is None:
            return self.options.timeout
        if not timeout > 0:
            raise ClientError(f"timeout={timeout} must be > 0 seconds")
        return float(timeout)

    def _classifier(self, model: str | None, timeout: float | None) -> Callable[[BaseException], ClientError]:
        return lambda err: classify_error(err, model=model, url=self.url, timeout=timeout, protocol=self.protocol)

    def _http_base(self) -> str:
        scheme = "https" if self.options.tls is not None else "http"
        return self.url if "://" in self.url else f"{scheme}://{self.url}"

    def _ssl_context(self) -> Any:
        tls = self.options.tls
        if tls is None:
            return None
        import ssl

        context = ssl.create_default_context(
            cafile=None if tls.root_certificates is None else str(tls.root_certificates)
        )
        if tls.certificate_chain is not None:
            context.load_cert_chain(
                str(tls.certificate_chain), None if tls.private_key is None else str(tls.private_key)
            )
        if tls.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError(f"{self!r} is closed")

    def _headers(self) -> dict[str, str] | None:
        return dict(self.options.headers) or None

    def _request(
        self, mod: Any, inputs: Mapping[str, Any], outputs: Sequence[str] | None
    ) -> tuple[list[Any], list[Any] | None]:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ClientError("inputs must be a non-empty mapping of input name -> numpy array")
        built = []
        for name, value in inputs.items():
            array, datatype = _as_tensor(name, value)
            tensor = mod.InferInput(name, list(array.shape), datatype)
            if self.protocol == "http":
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            built.append(tensor)
        requested = None
        if outputs is not None:
            if isinstance(outputs, str):
                raise ClientError(f"outputs must be a list of output names, not the string {outputs!r}")
            if self.protocol == "http":
                requested = [mod.InferRequestedOutput(o, binary_data=True) for o in outputs]
            else:
                requested = [mod.InferRequestedOutput(o) for o in outputs]
        return built, requested

    def _infer_kwargs(
        self, timeout: float | None, parameters: Mapping[str, Any] | None, version: str
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model_version": version, "headers": self._headers()}
        if parameters:
            kwargs["parameters"] = dict(parameters)
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout
            if self.options.compression:
                kwargs["compression_algorithm"] = self.options.compression
        elif self.options.compression:
            kwargs["request_compression_algorithm"] = self.options.compression
            kwargs["response_compression_algorithm"] = self.options.compression
        return kwargs

    def _results(self, result: Any, outputs: Sequence[str] | None, model: str) -> dict[str, np.ndarray]:
        response = result.get_response()
        if self.protocol == "grpc":
            names = [o.name for o in response.outputs]
        else:
            names = [o["name"] for o in (response or {}).get("outputs", [])]
        wanted = list(outputs) if outputs is not None else names
        out = {}
        for name in wanted:
            array = result.as_numpy(name)
            if array is None:
                raise ClientError(f"model '{model}' returned no output '{name}' (it returned: {', '.join(names)})")
            out[name] = array
        return out


class Client(_Base):
    """A synchronous Triton client over ``tritonclient.grpc`` or ``tritonclient.http``.

    ``url`` is ``host:port`` (a ``grpc://``/``http://`` scheme is accepted, ``https://``/``grpcs://`` turn TLS on).
    ``timeout`` is the default per-call deadline in seconds (None: no deadline). Thread-safe: gRPC calls run
    concurrently; HTTP calls on one client are serialized (tritonclient's HTTP client is not thread-safe).
    Health checks (``is_live``...) are not retried and answer False when the server cannot be reached.
    """

    def __init__(self, url: str, protocol: Protocol = "grpc", **kwargs: Any) -> None:
        super().__init__(url, protocol, **kwargs)
        self._lock = threading.Lock()
        self._grpc: Any = None
        self._http: dict[float | None, tuple[Any, threading.Lock]] = {}

    # transports ------------------------------------------------------------------------------------------------
    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod
        return mod

    def _run(self, timeout: float | None, call: Callable[[Any], T]) -> T:
        """Call ``call(transport)`` on the transport for this deadline."""
        self._check_open()
        mod = self._module()
        if self.protocol == "grpc":
            with self._lock:
                if self._grpc is None:
                    self._grpc = mod.InferenceServerClient(**grpc_client_kwargs(self.url, self.options))
                transport = self._grpc
            return call(transport)
        with self._lock:  # geventhttpclient fixes the deadline per client: one client per deadline
            if timeout not in self._http:
                if len(self._http) >= _MAX_HTTP_TRANSPORTS:  # many distinct per-call deadlines: drop the oldest
                    oldest = next(k for k in self._http if k != self.options.timeout)
                    old, old_lock = self._http.pop(oldest)
                    with old_lock, contextlib.suppress(Exception):
                        old.close()
                self._http[timeout] = (
                    mod.InferenceServerClient(**http_client_kwargs(self.url, self.options, timeout)),
                    threading.Lock(),
                )
            transport, lock = self._http[timeout]
        with lock:
            return call(transport)

    def close(self) -> None:
        """Close the connections; idempotent."""
        with self._lock:
            self._closed = True
            transports = [self._grpc] if self._grpc is not None else []
            transports += [t for t, _ in self._http.values()]
            self._grpc, self._http = None, {}
        for transport in transports:
            try:
                transport.close()
            except Exception as err:  # closing must not mask the caller's own error
                LOG.debug("closing %r: %s", transport, err)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    # health -------------------------------------------------------------------------------------------------------
    def _health(self, what: str, call: Callable[[Any, float | None], bool], model: str | None = None) -> bool:
        timeout = self.options.timeout
        try:
            return bool(self._run(timeout, lambda t: call(t, timeout)))
        except ClientError:
            raise
        except Exception as raw:
            err = classify_error(raw, model=model, url=self.url, timeout=timeout, protocol=self.protocol)
            if isinstance(err, TransientError):
                return False
            raise err from raw

    def _health_kwargs(self, timeout: float | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout
        return kwargs

    def is_live(self) -> bool:
        return self._health("live", lambda t, to: t.is_server_live(**self._health_kwargs(to)))

    def is_ready(self) -> bool:
        return self._health("ready", lambda t, to: t.is_server_ready(**self._health_kwargs(to)))

    def is_model_ready(self, name: str, version: str = "") -> bool:
        return self._health(
            "model", lambda t, to: t.is_model_ready(name, version, **self._health_kwargs(to)), model=name
        )

    # inference -------------------------------------------------------------------------------------------------
    def _http_output_names(self, model: str, version: str, timeout: float | None) -> list[str]:
        # over HTTP, unnamed outputs come back as JSON: ask for all of them by name, in binary
        key = f"{model}:{version}"
        if key not in self._http_outputs:
            meta = self._call(model, timeout, lambda t: t.get_model_metadata(model, version, headers=self._headers()))
            self._http_outputs[key] = [o["name"] for o in meta.get("outputs", [])]
        return self._http_outputs[key]

    def _call(self, model: str | None, timeout: float | None, call: Callable[[Any], T]) -> T:
        return call_with_retry(
            lambda: self._run(timeout, call),
            policy=self.options.retry,
            classify=self._classifier(model, timeout),
        )

    def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        version: str = "",
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on numpy ``inputs``; returns ``{output name: array}`` (all outputs unless named)."""
        if not isinstance(model, str) or not model:
            raise ClientError(f"model must be a non-empty string, got {model!r}")
        deadline = self._timeout(timeout)
        mod = self._module()
        if outputs is None and self.protocol == "http":
            outputs = self._http_output_names(model, version, deadline)
        built, requested = self._request(mod, inputs, outputs)
        kwargs = self._infer_kwargs(deadline, parameters, version)
        result = self._call(model, deadline, lambda t: t.infer(model, built, outputs=requested, **kwargs))
        return self._results(result, outputs, model)

    def embed(
        self, texts: Sequence[str], *, model: str = "embed", timeout: float | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """Embed ``texts`` with ``model`` (``TEXT`` BYTES [n, 1] -> ``EMBEDDING`` FP32 [n, dim]); float32 [n, dim].

        ``batch_size`` splits a long list into several requests (e.g. the model's max_batch_size).
        """
        items = _check_texts(texts)
        if batch_size is not None and batch_size < 1:
            raise ClientError(f"batch_size={batch_size} must be >= 1")
        step = batch_size or len(items)
        parts = []
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            out = self.infer(model, {"TEXT": _text_tensor(chunk)}, ["EMBEDDING"], timeout=timeout)
            parts.append(_check_embedding(out.get("EMBEDDING"), len(chunk), model))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def search(
        self,
        queries: Sequence[str],
        top_k: int | None = None,
        *,
        rerank: bool = False,
        top_n: int | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> list[list[Hit]]:
        """Nearest passages per query, best first (``search``); with ``rerank=True`` the ``search_rerank``
        pipeline retrieves ``top_k`` candidates, scores them with the cross-encoder and keeps ``top_n``."""
        name = model or ("search_rerank" if rerank else "search")
        inputs, outputs = search_request(queries, top_k, top_n if rerank else None)
        out = self.infer(name, inputs, outputs, timeout=timeout)
        return search_results(out, len(inputs["QUERY"]), name)

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        model: str = "rerank",
        timeout: float | None = None,
        version: str = "",
    ) -> np.ndarray:
        """Cross-encoder scores of (query, passage) pairs, in the order of ``passages`` (higher = more relevant).
        ``version``: a Triton model version ("" = the model's version policy decides)."""
        inputs, outputs = rerank_request(query, passages)
        out = self.infer(model, inputs, outputs, timeout=timeout, version=version)
        return rerank_scores(out, len(passages), model)

    def generate(self, prompt: str, *, model: str = "llm", timeout: float | None = None, **sampling: Any) -> str:
        """The whole completion of ``prompt`` (``max_tokens``, ``temperature``, ``top_k``, ``top_p``, ``seed``,
        ``stop_words``, ``bad_words``, ``end_id``, ``pad_id``, ``chat``, ``adapter``: see :class:`Sampling`)."""
        inputs = generation_inputs(prompt, Sampling(**sampling), stream=False)
        if self.protocol == "http":
            body = generate_payload(inputs)
            deadline = self._timeout(timeout)
            return call_with_retry(
                lambda: http_generate(self._http_base(), model, body, timeout=deadline, context=self._ssl_context()),
                policy=self.options.retry,
                classify=self._classifier(model, deadline),
            )
        return "".join(self.stream(prompt, model=model, timeout=timeout, _stream=False, **sampling))

    def stream(
        self,
        prompt: str,
        *,
        model: str = "llm",
        timeout: float | None = None,
        engine_model: str | None = "tensorrt_llm",
        _stream: bool = True,
        **sampling: Any,
    ) -> Iterator[str]:
        """Text pieces as they are generated (gRPC). Leaving the loop early stops generation on the server:
        the stream is cancelled and upstream's ``stop`` signal goes to ``engine_model``."""
        if self.protocol != "grpc":
            raise ClientError("streaming needs gRPC: create the client with protocol='grpc'")
        inputs = generation_inputs(prompt, Sampling(**sampling), stream=_stream)
        deadline = self._timeout(timeout)
        return grpc_stream(
            grpc_client_kwargs(self.url, self.options),
            model,
            inputs,
            timeout=deadline,
            engine_model=engine_model if _stream else None,
            classify=self._classifier(model, deadline),
        )

    def rag(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        min_score: float | None = None,
        **sampling: Any,
    ) -> RagAnswer:
        """Retrieve, rerank and answer ``query`` in one call of the ``rag`` ensemble (gRPC): the answer, the
        passages it was given (ids and reranker scores, best first), the prompt, and how many were left out
        (scored below ``min_score``, or dropped to fit). ``top_k``/``top_n``/``max_tokens``/``min_score`` None:
        the server's defaults; ``sampling``: see :class:`Sampling`."""
        return self.rag_stream(
            query,
            top_k=top_k,
            top_n=top_n,
            max_tokens=max_tokens,
            min_score=min_score,
            model=model,
            timeout=timeout,
            _stream=False,
            **sampling,
        ).answer()

    def rag_stream(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        engine_model: str | None = "tensorrt_llm",
        min_score: float | None = None,
        _stream: bool = True,
        **sampling: Any,
    ) -> RagStream:
        """The answer's text pieces as generated (iterate); ``.sources`` (and ``.prompt``, ``.dropped``) are there
        as soon as the first response arrives, before generation. Leaving early stops generation as ``stream``."""
        if self.protocol != "grpc":
            raise ClientError("rag needs gRPC (the rag ensemble answers several responses): use protocol='grpc'")
        limits = {"top_k": top_k, "top_n": top_n, "max_tokens": max_tokens, "min_score": min_score}
        inputs = rag_inputs(query, **limits, sampling=sampling, stream=_stream)
        deadline = self._timeout(timeout)
        kwargs = grpc_client_kwargs(self.url, self.options)
        classify = self._classifier(model, deadline)
        return RagStream(
            lambda on_result: grpc_stream(
                kwargs,
                model,
                inputs,
                timeout=deadline,
                engine_model=engine_model if _stream else None,
                classify=classify,
                on_result=on_result,
            )
        )


class AsyncClient(_Base):
    """The asynchronous :class:`Client`, over ``tritonclient.grpc.aio`` or ``tritonclient.http.aio``.

    Create and use it inside one running event loop; ``async with AsyncClient(...) as client``.
    """

    def __init__(self, url: str, protocol: Protocol = "grpc", **kwargs: Any) -> None:
        super().__init__(url, protocol, **kwargs)
        if self.protocol == "http" and self.options.tls is not None and self.options.tls.server_name:
            raise ClientError("TLSOptions.server_name is not supported by the async HTTP client: use gRPC or Client")
        self._transport: Any = None

    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as mod
        else:
            import tritonclient.http.aio as mod
        return mod

    def _get(self) -> Any:
        self._check_open()
        if self._transport is None:
            mod = self._module()
            if self.protocol == "grpc":
                self._transport = mod.InferenceServerClient(**grpc_client_kwargs(self.url, self.options))
            else:
                self._transport = mod.InferenceServerClient(**http_aio_client_kwargs(self.url, self.options))
        return self._transport

    async def _deadline(self, awaitable: Awaitable[T], timeout: float | None) -> T:
        if self.protocol == "http" and timeout is not None:
            return await asyncio.wait_for(awaitable, timeout)  # aiohttp's session timeout is not per call
        return await awaitable

    async def close(self) -> None:
        """Close the connections; idempotent."""
        self._closed = True
        transport, self._transport = self._transport, None
        if transport is not None:
            try:
                await transport.close()
            except Exception as err:
                LOG.debug("closing %r: %s", transport, err)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, model: str | None, timeout: float | None, call: Callable[[Any], Awaitable[T]]) -> T:
        return await acall_with_retry(
            lambda: self._deadline(call(self._get()), timeout),
            policy=self.options.retry,
            classify=self._classifier(model, timeout),
        )

    async def _health(self, call: Callable[[Any, float | None], Awaitable[bool]], model: str | None = None) -> bool:
        timeout = self.options.timeout
        try:
            return bool(await self._deadline(call(self._get(), timeout), timeout))
        except ClientError:
            raise
        except Exception as raw:
            err = classify_error(raw, model=model, url=self.url, timeout=timeout, protocol=self.protocol)
            if isinstance(err, TransientError):
                return False
            raise err from raw

    def _health_kwargs(self, timeout: float | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self._headers()}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = timeout
        return kwargs

    async def is_live(self) -> bool:
        return await self._health(lambda t, to: t.is_server_live(**self._health_kwargs(to)))

    async def is_ready(self) -> bool:
        return await self._health(lambda t, to: t.is_server_ready(**self._health_kwargs(to)))

    async def is_model_ready(self, name: str, version: str = "") -> bool:
        return await self._health(lambda t, to: t.is_model_ready(name, version, **self._health_kwargs(to)), name)

    async def _http_output_names(self, model: str, version: str, timeout: float | None) -> list[str]:
        key = f"{model}:{version}"
        if key not in self._http_outputs:
            meta = await self._call(
                model, timeout, lambda t: t.get_model_metadata(model, version, headers=self._headers())
            )
            self._http_outputs[key] = [o["name"] for o in meta.get("outputs", [])]
        return self._http_outputs[key]

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
        parameters: Mapping[str, Any] | None = None,
        version: str = "",
    ) -> dict[str, np.ndarray]:
        """Run ``model`` on numpy ``inputs``; returns ``{output name: array}`` (all outputs unless named)."""
        if not isinstance(model, str) or not model:
            raise ClientError(f"model must be a non-empty string, got {model!r}")
        deadline = self._timeout(timeout)
        mod = self._module()
        if outputs is None and self.protocol == "http":
            outputs = await self._http_output_names(model, version, deadline)
        built, requested = self._request(mod, inputs, outputs)
        kwargs = self._infer_kwargs(deadline, parameters, version)
        result = await self._call(model, deadline, lambda t: t.infer(model, built, outputs=requested, **kwargs))
        return self._results(result, outputs, model)

    async def embed(
        self, texts: Sequence[str], *, model: str = "embed", timeout: float | None = None, batch_size: int | None = None
    ) -> np.ndarray:
        """Embed ``texts`` (see :meth:`Client.embed`)."""
        items = _check_texts(texts)
        if batch_size is not None and batch_size < 1:
            raise ClientError(f"batch_size={batch_size} must be >= 1")
        step = batch_size or len(items)
        parts = []
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            out = await self.infer(model, {"TEXT": _text_tensor(chunk)}, ["EMBEDDING"], timeout=timeout)
            parts.append(_check_embedding(out.get("EMBEDDING"), len(chunk), model))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def search(
        self,
        queries: Sequence[str],
        top_k: int | None = None,
        *,
        rerank: bool = False,
        top_n: int | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> list[list[Hit]]:
        """Nearest passages per query (see :meth:`Client.search`)."""
        name = model or ("search_rerank" if rerank else "search")
        inputs, outputs = search_request(queries, top_k, top_n if rerank else None)
        out = await self.infer(name, inputs, outputs, timeout=timeout)
        return search_results(out, len(inputs["QUERY"]), name)

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        model: str = "rerank",
        timeout: float | None = None,
        version: str = "",
    ) -> np.ndarray:
        """Cross-encoder scores (see :meth:`Client.rerank`)."""
        inputs, outputs = rerank_request(query, passages)
        out = await self.infer(model, inputs, outputs, timeout=timeout, version=version)
        return rerank_scores(out, len(passages), model)

    async def generate(self, prompt: str, *, model: str = "llm", timeout: float | None = None, **sampling: Any) -> str:
        """The whole completion of ``prompt`` (see :meth:`Client.generate`)."""
        inputs = generation_inputs(prompt, Sampling(**sampling), stream=False)
        if self.protocol == "http":
            body, deadline = generate_payload(inputs), self._timeout(timeout)
            return await asyncio.to_thread(
                http_generate, self._http_base(), model, body, timeout=deadline, context=self._ssl_context()
            )
        return "".join([p async for p in self._stream(model, inputs, timeout)])

    def stream(
        self,
        prompt: str,
        *,
        model: str = "llm",
        timeout: float | None = None,
        engine_model: str | None = "tensorrt_llm",
        **sampling: Any,
    ) -> Any:
        """Text pieces as they are generated (gRPC): ``async for piece in client.stream(...)``. Leaving the loop
        early (``aclose()``, or the task is cancelled) stops generation: upstream's ``stop`` goes to ``engine_model``
        as in :meth:`Client.stream`."""
        if self.protocol != "grpc":
            raise ClientError("streaming needs gRPC: create the client with protocol='grpc'")
        inputs = generation_inputs(prompt, Sampling(**sampling), stream=True)
        return self._stream(model, inputs, timeout, engine_model=engine_model)

    def _stream(
        self, model: str, inputs: Mapping[str, np.ndarray], timeout: float | None, engine_model: str | None = None
    ) -> Any:
        deadline = self._timeout(timeout)
        return grpc_stream_async(
            self._get(), model, inputs, timeout=deadline, classify=self._classifier(model, deadline),
            engine_model=engine_model,
        )

    async def rag(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        min_score: float | None = None,
        **sampling: Any,
    ) -> RagAnswer:
        """The answer and its sources (see :meth:`Client.rag`)."""
        stream = self._rag(query, top_k, top_n, max_tokens, model, timeout, sampling, stream=False, min_score=min_score)
        return await stream.answer()

    def rag_stream(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        min_score: float | None = None,
        **sampling: Any,
    ) -> AsyncRagStream:
        """``async for piece in stream``; ``await stream.wait_sources()`` (see :meth:`Client.rag_stream`)."""
        return self._rag(query, top_k, top_n, max_tokens, model, timeout, sampling, stream=True, min_score=min_score)

    def _rag(
        self,
        query: str,
        top_k: int | None,
        top_n: int | None,
        max_tokens: int | None,
        model: str,
        timeout: float | None,
        sampling: Mapping[str, Any],
        *,
        stream: bool,
        min_score: float | None = None,
    ) -> AsyncRagStream:
        if self.protocol != "grpc":
            raise ClientError("rag needs gRPC (the rag ensemble answers several responses): use protocol='grpc'")
        limits = {"top_k": top_k, "top_n": top_n, "max_tokens": max_tokens, "min_score": min_score}
        inputs = rag_inputs(query, **limits, sampling=sampling, stream=stream)
        deadline = self._timeout(timeout)
        transport, classify = self._get(), self._classifier(model, deadline)
        return AsyncRagStream(
            lambda on_result: grpc_stream_async(
                transport, model, inputs, timeout=deadline, classify=classify, on_result=on_result
            )
        )
