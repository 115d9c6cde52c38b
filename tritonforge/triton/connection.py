"""Connections to one Triton server, sync and asyncio, over gRPC or HTTP: health, metadata, config, statistics,
the repository API (load/unload with the admin key), inference, and generation streams.

This is the core of the one Triton access layer: :class:`~tritonforge.clients.Client`, the gateway, the bench, the
server launcher and releases all reach Triton through a :class:`Connection` or :class:`AsyncConnection`, so every
failure goes through one mapping (:func:`~tritonforge.triton.errors.classify_error`). tritonclient (and grpc
under it) is imported when the first transport is created, not on import. Over HTTP the calls go on keep-alive
connections of our own (blocking_http.py, keepalive_http.py; the calls themselves in http_api.py).

Errors: every failure is a :class:`~tritonforge.errors.ClientError` naming the model and carrying the server's
message, of the subclass that says what happened (docs/serving.md, "Errors"). Only transport failures that cannot
have reached the server (gRPC ``UNAVAILABLE``; for HTTP a refused or reset connection) are retried, ``retries``
times with capped exponential backoff and jitter; when they run out a :class:`~tritonforge.errors.TransientError`
is raised. A deadline (``timeout``, seconds, per call) that expires is a
:class:`~tritonforge.errors.DeadlineExceededError`, and is not retried: the request may be running on the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import Message

from tritonforge.errors import ClientError, DeadlineExceededError, InvalidInputError, TransientError
from tritonforge.triton.blocking_http import BlockingHttpTransport
from tritonforge.triton.engines import ENGINE_AUTO, Deadline, EngineLookup
from tritonforge.triton.errors import acall_with_retry, call_with_retry, classify_error
from tritonforge.triton.keepalive_http import AsyncHttpTransport
from tritonforge.triton.options import (
    ClientOptions,
    Compression,
    KeepAliveOptions,
    Protocol,
    RetryPolicy,
    TLSOptions,
    admin_headers,
    grpc_client_kwargs,
    split_url,
    ssl_context,
)
from tritonforge.triton.proto_json import as_http_json
from tritonforge.triton.streams import generate_payload, grpc_stream, grpc_stream_async, http_generate, new_request_id
from tritonforge.triton.tensors import build_inputs, output_arrays, requested_outputs
from tritonforge.values import is_real

LOG = logging.getLogger(__name__)
T = TypeVar("T")
C = TypeVar("C", bound="Connection")
A = TypeVar("A", bound="AsyncConnection")
B = TypeVar("B", bound="_Base")


class _Base:
    """What both connections share: the URL, the options, how tensors and calls are prepared."""

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
        admin_key: str | None = None,
    ) -> None:
        # arguments that cannot be used are InvalidInputError (a ClientError and a ValueError): nothing was sent
        if protocol not in ("grpc", "http"):
            raise InvalidInputError(
                f"protocol={protocol!r} is not one of 'grpc', 'http' (the endpoint's transport; Triton's defaults: "
                "gRPC on port 8001, HTTP on 8000)"
            )
        self.protocol: Protocol = protocol
        self.url, secure = split_url(url, protocol)
        if secure and tls is None:
            tls = TLSOptions()
        if tls is not None and not isinstance(tls, TLSOptions):
            raise InvalidInputError(f"tls must be a TLSOptions (or None), got {type(tls).__name__}")
        if headers is not None and not isinstance(headers, Mapping):
            raise InvalidInputError(
                f"headers must be a mapping of header name -> value, got {type(headers).__name__}"
            )
        if admin_key is not None and not isinstance(admin_key, str):
            raise InvalidInputError(f"admin_key must be a str (or None), got {type(admin_key).__name__}")
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
        self.admin_key = admin_key
        self._closed = False
        self._engines: dict[str, str | None] = {}  # generation model -> its engine (engine_model="auto"), found once

    @classmethod
    def from_options(cls: type[B], url: str, protocol: Protocol = "grpc", options: ClientOptions | None = None) -> B:
        """A client configured by one :class:`ClientOptions` (timeout, retry policy, TLS, keep-alive, compression,
        headers) instead of keyword arguments; ``client.options`` gives it back as it was given."""
        if options is not None and not isinstance(options, ClientOptions):
            raise InvalidInputError(f"options must be a ClientOptions (or None), got {type(options).__name__}")
        o = options or ClientOptions()
        client = cls(
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
        client.options = dataclasses.replace(client.options, retry=o.retry)  # its jitter too (no keyword for it)
        return client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, protocol={self.protocol!r})"

    def _timeout(self, timeout: float | None) -> float | None:
        if timeout is None:
            return self.options.timeout
        if not is_real(timeout) or not timeout > 0:
            raise InvalidInputError(f"timeout={timeout!r} must be > 0 seconds (a number; None: the client's default)")
        return float(timeout)

    def _classifier(self, model: str | None, timeout: float | None) -> Callable[[BaseException], ClientError]:
        return lambda err: classify_error(err, model=model, url=self.url, timeout=timeout, protocol=self.protocol)

    def _http_base(self) -> str:
        scheme = "https" if self.options.tls is not None else "http"
        return self.url if "://" in self.url else f"{scheme}://{self.url}"

    def _ssl_context(self) -> Any:
        return ssl_context(self.options.tls)

    def _blocking_http(self) -> BlockingHttpTransport:
        """Keep-alive HTTP connections to this server (the sync client's transport; the generate extension's)."""
        tls = self.options.tls
        return BlockingHttpTransport.for_url(self._http_base(), context=self._ssl_context(),
                                             server_name=tls.server_name if tls else None, verbose=self.options.verbose)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError(f"{self!r} is closed")

    def _deadline_kwargs(self, timeout: float | None) -> dict[str, Any]:
        """The per-call deadline as a transport takes it: ``client_timeout`` (gRPC's and the blocking HTTP
        transport's); the asyncio HTTP client takes none (:meth:`AsyncConnection._deadline` bounds its calls)."""
        return {"client_timeout": timeout} if self.protocol == "grpc" else {}

    def _headers(self) -> dict[str, str] | None:
        return dict(self.options.headers) or None

    def _health_kwargs(self, timeout: float | None) -> dict[str, Any]:
        return {"headers": self._headers(), **self._deadline_kwargs(timeout)}

    def _admin_headers(self) -> dict[str, str] | None:
        return {**self.options.headers, **admin_headers(self.admin_key, self.protocol)} or None

    def _request(
        self, mod: Any, inputs: Mapping[str, Any], outputs: Sequence[str] | None
    ) -> tuple[list[Any], list[Any] | None]:
        binary = self.protocol == "http"
        return build_inputs(mod, inputs, binary=binary), requested_outputs(mod, outputs, binary=binary)

    def _infer_kwargs(
        self, timeout: float | None, parameters: Mapping[str, Any] | None, version: str
    ) -> dict[str, Any]:
        # a request id, as streams carry (the gateway's request id its prefix): Triton's log and traces tie the
        # request to its client (plain infer calls carried none)
        kwargs: dict[str, Any] = {"model_version": version, "headers": self._headers(), "request_id": new_request_id()}
        if parameters is not None and not isinstance(parameters, Mapping):
            raise InvalidInputError(f"parameters must be a mapping of name -> value, got {type(parameters).__name__}")
        if parameters:
            kwargs["parameters"] = dict(parameters)
        kwargs.update(self._deadline_kwargs(timeout))
        if self.protocol == "grpc":
            if self.options.compression:
                kwargs["compression_algorithm"] = self.options.compression
        elif self.options.compression:
            kwargs["request_compression_algorithm"] = self.options.compression
            kwargs["response_compression_algorithm"] = self.options.compression
        return kwargs

    def _stream_kwargs(self) -> dict[str, Any]:
        """What a generation stream is sent with besides its tensors: the headers, the compression, the retries."""
        return {"headers": self.options.headers, "compression": self.options.compression, "retry": self.options.retry}

    def _results(self, result: Any, outputs: Sequence[str] | None, model: str) -> dict[str, np.ndarray]:
        return output_arrays(result, outputs, model, grpc=self.protocol == "grpc")

    def _control_kwargs(self, timeout: float | None) -> dict[str, Any]:
        return {"headers": self._admin_headers(), **self._deadline_kwargs(timeout)}

    def _json_kwargs(self, timeout: float | None, admin: bool = False) -> dict[str, Any]:
        """Keyword arguments of tritonclient's metadata/config/statistics/repository calls: the deadline, the
        headers (their gRPC answers, messages, are read by :func:`json_of`)."""
        kwargs: dict[str, Any] = {"headers": self._admin_headers() if admin else self._headers()}
        kwargs.update(self._deadline_kwargs(timeout))
        return kwargs



class Connection(_Base):
    """A synchronous Triton client over ``tritonclient.grpc`` or HTTP (:mod:`tritonforge.triton.blocking_http`).

    ``url`` is ``host:port`` (a ``grpc://``/``http://`` scheme is accepted, ``https://``/``grpcs://`` turn TLS on).
    ``timeout`` is the default per-call deadline in seconds (None: no deadline). Thread-safe: gRPC calls run
    concurrently on one channel, HTTP calls on one pool of keep-alive connections shared by every thread.
    Health checks (``is_live``...) are not retried and answer False when the server cannot be reached.
    """

    def __init__(self, url: str, protocol: Protocol = "grpc", **kwargs: Any) -> None:
        super().__init__(url, protocol, **kwargs)
        self._lock = threading.Lock()
        self._grpc: Any = None
        self._http: BlockingHttpTransport | None = None

    # transports ------------------------------------------------------------------------------------------------
    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc as mod
        else:
            import tritonclient.http as mod  # type: ignore[no-redef]  # grpc is typed (typings/), http is not
        return mod

    def _deadline_kwargs(self, timeout: float | None) -> dict[str, Any]:
        return {"client_timeout": timeout}  # both transports take it

    def _run(self, call: Callable[[Any], T]) -> T:
        """Call ``call(transport)`` on this connection's transport."""
        with self._lock:
            self._check_open()
            if self.protocol == "grpc":
                if self._grpc is None:
                    mod = self._module()
                    self._grpc = mod.InferenceServerClient(**grpc_client_kwargs(self.url, self.options))
                transport = self._grpc
            else:
                if self._http is None:
                    self._http = self._blocking_http()
                transport = self._http
        return call(transport)

    def close(self) -> None:
        """Close the connections; idempotent."""
        with self._lock:
            self._closed = True
            transports = [t for t in (self._grpc, self._http) if t is not None]
            self._grpc = self._http = None
        for transport in transports:
            try:
                transport.close()
            except Exception as err:  # closing must not mask the caller's own error
                LOG.debug("closing %r: %s", transport, err)

    def __enter__(self: C) -> C:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()

    # health -------------------------------------------------------------------------------------------------------
    def _health(self, what: str, call: Callable[[Any, float | None], bool], model: str | None = None) -> bool:
        timeout = health_timeout(self.options.timeout)
        try:
            return bool(self._run(lambda t: call(t, timeout)))
        except ClientError:
            raise
        except Exception as raw:
            err = classify_error(raw, model=model, url=self.url, timeout=timeout, protocol=self.protocol)
            if isinstance(err, (TransientError, DeadlineExceededError)):  # no answer (in time): not live, not ready
                return False
            raise err from raw

    def is_live(self) -> bool:
        """Whether the server answers (False, not an error, when it cannot be reached or does not answer within
        the client's timeout, HEALTH_TIMEOUT_S without one)."""
        return self._health("live", lambda t, to: t.is_server_live(**self._health_kwargs(to)))

    def is_ready(self) -> bool:
        """Whether the server is ready: Triton says so only when every model it should serve is loaded."""
        return self._health("ready", lambda t, to: t.is_server_ready(**self._health_kwargs(to)))

    def is_model_ready(self, name: str, version: str = "") -> bool:
        """Whether ``name`` (``version``; "" = its version policy's) is loaded and can serve."""
        return self._health(
            "model", lambda t, to: t.is_model_ready(name, version, **self._health_kwargs(to)), model=name
        )

    # inference -------------------------------------------------------------------------------------------------
    def _call(self, model: str | None, timeout: float | None, call: Callable[[Any], T]) -> T:
        return call_with_retry(
            lambda: self._run(call),
            policy=self.options.retry,
            classify=self._classifier(model, timeout),
            budget=timeout,
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
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
        deadline = self._timeout(timeout)
        mod = self._module()
        built, requested = self._request(mod, inputs, outputs)  # none named: every output, in binary, over HTTP too
        kwargs = self._infer_kwargs(deadline, parameters, version)
        result = self._call(model, deadline, lambda t: t.infer(model, built, outputs=requested, **kwargs))
        return self._results(result, outputs, model)

    # metadata, config, statistics -------------------------------------------------------------------------------
    def model_metadata(self, model: str, version: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """The model's metadata as Triton's JSON (``name``, ``inputs``, ``outputs``...)."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline)
        return json_of(self._call(model, deadline, lambda t: t.get_model_metadata(model, version, **kwargs)))

    def model_config(self, model: str, version: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """The model's config as the server holds it (after auto-complete), Triton's JSON form."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline)
        raw = self._call(model, deadline, lambda t: t.get_model_config(model, version, **kwargs))
        return unwrap_config(raw)

    def statistics(self, model: str = "", version: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """Triton's inference statistics (``{"model_stats": [...]}``) of ``model`` ("" = every model)."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline)
        return json_of(
            self._call(model or None, deadline, lambda t: t.get_inference_statistics(model, version, **kwargs))
        )

    # the repository API (behind the admin key when the server restricts it) ---------------------------------------
    def repository_index(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """``[{"name", "version", "state", "reason"}...]`` as Triton gives them."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline, admin=True)
        return index_entries(self._call(None, deadline, lambda t: t.get_model_repository_index(**kwargs)))

    def load_model(self, model: str, *, config: str | None = None, timeout: float | None = None) -> None:
        """Load (or reload, when its files changed) ``model``; ``config``: a JSON config overriding the file's."""
        deadline = self._timeout(timeout)
        kwargs = self._control_kwargs(deadline)
        self._call(model, deadline, lambda t: t.load_model(model, config=config, **kwargs))

    def unload_model(self, model: str, *, unload_dependents: bool = False, timeout: float | None = None) -> None:
        """Unload ``model`` (with ``unload_dependents``, the models only it uses too); the admin key's API."""
        deadline = self._timeout(timeout)
        kwargs = self._control_kwargs(deadline)
        self._call(
            model, deadline, lambda t: t.unload_model(model, unload_dependents=unload_dependents, **kwargs)
        )

    # generation ---------------------------------------------------------------------------------------------------
    def stream_text(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
        engine_model: str | None = None,
        on_result: Callable[[Any], None] | None = None,
    ) -> Iterator[str]:
        """Text pieces of one request over its own gRPC stream until the final response; leaving early cancels it
        and sends upstream's stop to ``engine_model`` (see :mod:`tritonforge.triton.streams`; "auto": the model
        :meth:`engine_of` finds)."""
        if self.protocol != "grpc":
            raise InvalidInputError("streaming needs gRPC: create the client with protocol='grpc'")
        deadline = self._timeout(timeout)
        self._check_open()
        if engine_model == ENGINE_AUTO:
            lookup = Deadline(deadline)
            engine_model = self.engine_of(model, timeout=deadline)
            deadline = lookup.left()  # the call's deadline covers the lookup too
        return grpc_stream(
            grpc_client_kwargs(self.url, self.options),
            model,
            inputs,
            timeout=deadline,
            engine_model=engine_model,
            classify=self._classifier(model, deadline),
            on_result=on_result,
            **self._stream_kwargs(),
        )

    def engine_of(self, model: str, *, timeout: float | None = None) -> str | None:
        """The engine model of ``model``'s pipeline, where a generation's stop signal goes (None: none found), from
        the configs the server holds (:mod:`tritonforge.triton.engines`); found once per model and connection."""
        if model in self._engines:
            return self._engines[model]
        lookup = EngineLookup(model, self._timeout(timeout))
        while (name := lookup.pending()) is not None:
            config: dict[str, Any] | None = None
            with contextlib.suppress(ClientError):  # not readable: the request itself will say why
                config = self.model_config(name, timeout=lookup.deadline.left())
            lookup.answer(config)
        engine, keep = lookup.outcome()
        if keep:
            self._engines[model] = engine
        return engine

    def generate_http(self, model: str, inputs: Mapping[str, np.ndarray], *, timeout: float | None = None) -> str:
        """The whole text of one request through Triton's HTTP generate extension."""
        body, deadline = generate_payload(inputs), self._timeout(timeout)
        return call_with_retry(
            lambda: self._run(lambda t: http_generate(t, model, body, timeout=deadline, headers=self.options.headers)),
            policy=self.options.retry,
            classify=self._classifier(model, deadline),
            budget=deadline,
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # called outside a coroutine (building a stream before iterating it)
        return None


class AsyncConnection(_Base):
    """The asynchronous :class:`Client`, over ``tritonclient.grpc.aio`` or HTTP (keep-alive connections of its own).

    Use it in one event loop at a time (a new one after the first ended, e.g. a second ``asyncio.run``, is fine);
    ``async with AsyncClient(...) as client``.
    """

    def __init__(self, url: str, protocol: Protocol = "grpc", **kwargs: Any) -> None:
        super().__init__(url, protocol, **kwargs)
        self._transport: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the event loop its transport belongs to
        self._generate: BlockingHttpTransport | None = None  # the generate extension's, used from worker threads

    def _module(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as mod
        else:  # its tensors; the calls go over AsyncHttpTransport
            import tritonclient.http as mod  # type: ignore[no-redef]
        return mod

    def _get(self) -> Any:
        self._check_open()
        loop = _running_loop()
        if self._transport is not None and loop is not None and self._loop is not loop:
            if self._loop is not None and self._loop.is_running():
                raise InvalidInputError(
                    "this AsyncClient is in use in another event loop: its connections belong to that loop; create "
                    "one client per event loop (or per thread running one)"
                )
            # the loop it was made in has ended (asyncio.run returned, a test's loop closed): its channel went with
            # it, and using it gave errors that named no cause; a new one, in this loop
            self._transport = None
        if self._transport is None:
            self._loop = loop
            mod = self._module()
            if self.protocol == "grpc":
                self._transport = mod.InferenceServerClient(**grpc_client_kwargs(self.url, self.options))
            else:
                tls = self.options.tls
                self._transport = AsyncHttpTransport.for_url(
                    self._http_base(), context=self._ssl_context(), server_name=tls.server_name if tls else None,
                    verbose=self.options.verbose,
                )
        return self._transport

    async def _deadline(self, awaitable: Awaitable[T], timeout: float | None) -> T:
        if self.protocol == "http" and timeout is not None:  # the asyncio HTTP transport's deadline is its caller's
            if sys.version_info >= (3, 11):  # no task per call, as wait_for makes (~8% of the gateway's CPU)
                async with asyncio.timeout(timeout):
                    return await awaitable
            return await asyncio.wait_for(awaitable, timeout)
        return await awaitable

    async def close(self) -> None:
        """Close the connections; idempotent."""
        self._closed = True
        transport, self._transport = self._transport, None
        generate, self._generate = self._generate, None
        if generate is not None:
            generate.close()
        if transport is not None:
            try:
                await transport.close()
            except Exception as err:
                LOG.debug("closing %r: %s", transport, err)

    def _generate_transport(self) -> BlockingHttpTransport:
        self._check_open()
        if self._generate is None:
            self._generate = self._blocking_http()
        return self._generate

    async def __aenter__(self: A) -> A:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, model: str | None, timeout: float | None, call: Callable[[Any], Awaitable[T]]) -> T:
        return await acall_with_retry(
            lambda: self._deadline(call(self._get()), timeout),
            policy=self.options.retry,
            classify=self._classifier(model, timeout),
            budget=timeout,
        )

    async def _health(self, call: Callable[[Any, float | None], Awaitable[bool]], model: str | None = None) -> bool:
        timeout = health_timeout(self.options.timeout)
        try:
            return bool(await self._deadline(call(self._get(), timeout), timeout))
        except ClientError:
            raise
        except Exception as raw:
            err = classify_error(raw, model=model, url=self.url, timeout=timeout, protocol=self.protocol)
            if isinstance(err, (TransientError, DeadlineExceededError)):  # no answer (in time): not live, not ready
                return False
            raise err from raw

    async def is_live(self) -> bool:
        """See :meth:`Connection.is_live`."""
        return await self._health(lambda t, to: t.is_server_live(**self._health_kwargs(to)))

    async def is_ready(self) -> bool:
        """See :meth:`Connection.is_ready`."""
        return await self._health(lambda t, to: t.is_server_ready(**self._health_kwargs(to)))

    async def is_model_ready(self, name: str, version: str = "") -> bool:
        """See :meth:`Connection.is_model_ready`."""
        return await self._health(lambda t, to: t.is_model_ready(name, version, **self._health_kwargs(to)), name)

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
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
        deadline = self._timeout(timeout)
        mod = self._module()
        built, requested = self._request(mod, inputs, outputs)
        kwargs = self._infer_kwargs(deadline, parameters, version)

        result = await self._call(model, deadline, lambda t: t.infer(model, built, outputs=requested, **kwargs))
        return self._results(result, outputs, model)

    async def model_metadata(self, model: str, version: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """See :meth:`Connection.model_metadata`."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline)
        return json_of(await self._call(model, deadline, lambda t: t.get_model_metadata(model, version, **kwargs)))

    async def model_config(self, model: str, version: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """See :meth:`Connection.model_config`."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline)
        return unwrap_config(await self._call(model, deadline, lambda t: t.get_model_config(model, version, **kwargs)))

    async def statistics(self, model: str = "", version: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """Triton's inference statistics (see :meth:`Connection.statistics`)."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline)
        return json_of(
            await self._call(model or None, deadline, lambda t: t.get_inference_statistics(model, version, **kwargs))
        )

    async def repository_index(self, *, timeout: float | None = None) -> list[dict[str, Any]]:
        """See :meth:`Connection.repository_index`."""
        deadline = self._timeout(timeout)
        kwargs = self._json_kwargs(deadline, admin=True)
        return index_entries(await self._call(None, deadline, lambda t: t.get_model_repository_index(**kwargs)))

    async def load_model(self, model: str, *, config: str | None = None, timeout: float | None = None) -> None:
        """Load (or reload) ``model`` (see :meth:`Connection.load_model`); behind the admin key."""
        deadline = self._timeout(timeout)
        kwargs = self._control_kwargs(deadline)
        await self._call(model, deadline, lambda t: t.load_model(model, config=config, **kwargs))

    async def unload_model(
        self, model: str, *, unload_dependents: bool = False, timeout: float | None = None
    ) -> None:
        """See :meth:`Connection.unload_model`."""
        deadline = self._timeout(timeout)
        kwargs = self._control_kwargs(deadline)
        await self._call(
            model, deadline, lambda t: t.unload_model(model, unload_dependents=unload_dependents, **kwargs)
        )

    def stream_text(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
        engine_model: str | None = None,
        on_result: Callable[[Any], None] | None = None,
        version: str = "",
    ) -> AsyncGenerator[str, None]:
        """``async for piece in connection.stream_text(...)``: as :meth:`Connection.stream_text`, on this
        connection's pooled gRPC channel; leaving early (``aclose()``, or the task is cancelled) stops generation
        the same way."""
        if self.protocol != "grpc":
            raise InvalidInputError("streaming needs gRPC: create the client with protocol='grpc'")
        deadline = self._timeout(timeout)
        if engine_model == ENGINE_AUTO and model not in self._engines:
            return self._stream_found(model, inputs, deadline, on_result, version)
        return grpc_stream_async(
            self._get(),
            model,
            inputs,
            timeout=deadline,
            classify=self._classifier(model, deadline),
            on_result=on_result,
            engine_model=self._engines[model] if engine_model == ENGINE_AUTO else engine_model,
            version=version,
            **self._stream_kwargs(),
        )

    async def _stream_found(
        self, model: str, inputs: Mapping[str, np.ndarray], deadline: float | None,
        on_result: Callable[[Any], None] | None, version: str,
    ) -> AsyncGenerator[str, None]:
        """:meth:`stream_text` once the engine is found (the first stream of ``model`` on this connection)."""
        lookup = Deadline(deadline)
        engine = await self.engine_of(model, timeout=deadline)
        deadline = lookup.left()  # the call's deadline covers the lookup too
        stream = self.stream_text(model, inputs, timeout=deadline, engine_model=engine, on_result=on_result,
                                  version=version)
        async with contextlib.aclosing(stream) as pieces:
            async for piece in pieces:
                yield piece

    async def engine_of(self, model: str, *, timeout: float | None = None) -> str | None:
        """See :meth:`Connection.engine_of`."""
        if model in self._engines:
            return self._engines[model]
        lookup = EngineLookup(model, self._timeout(timeout))
        while (name := lookup.pending()) is not None:
            config: dict[str, Any] | None = None
            with contextlib.suppress(ClientError):  # not readable: the request itself will say why
                config = await self.model_config(name, timeout=lookup.deadline.left())
            lookup.answer(config)
        engine, keep = lookup.outcome()
        if keep:
            self._engines[model] = engine
        return engine

    async def generate_http(
        self, model: str, inputs: Mapping[str, np.ndarray], *, timeout: float | None = None
    ) -> str:
        """The whole text of one request through Triton's HTTP generate extension (in a worker thread, on blocking
        keep-alive connections of this client's own)."""
        body, deadline = generate_payload(inputs), self._timeout(timeout)
        transport = self._generate_transport()
        return await acall_with_retry(
            lambda: asyncio.to_thread(http_generate, transport, model, body, timeout=deadline,
                                      headers=self.options.headers),
            policy=self.options.retry,
            classify=self._classifier(model, deadline),
            budget=deadline,
        )


HEALTH_TIMEOUT_S = 10.0  # a health call's bound when the client has none: a probe that never returns tells nothing


def health_timeout(timeout: float | None) -> float:
    """A health call's deadline: the client's timeout, or HEALTH_TIMEOUT_S without one (a server that accepts
    connections and never answers held ``is_live()`` over HTTP for good; client audit)."""
    return HEALTH_TIMEOUT_S if timeout is None else timeout


def json_of(raw: Any) -> dict[str, Any]:
    """A metadata/config/statistics/index answer as Triton's HTTP JSON: gRPC's, a protobuf message, by
    proto_json.as_http_json (the same field names, defaults and numbers over both protocols)."""
    if isinstance(raw, Message):
        return as_http_json(raw)
    return dict(raw or {})


def unwrap_config(raw: Any) -> dict[str, Any]:
    """A model config as JSON: gRPC's answer wraps it in ``{"config": ...}``, HTTP's does not."""
    raw = json_of(raw)
    return dict(raw["config"]) if isinstance(raw.get("config"), Mapping) else raw


def index_entries(raw: Any) -> list[dict[str, Any]]:
    """The repository index as a list: gRPC's answer is ``{"models": [...]}``, HTTP's a list."""
    if isinstance(raw, Message):
        raw = json_of(raw)
    if isinstance(raw, Mapping):
        raw = raw.get("models", [])
    return [dict(entry) for entry in raw or []]
