"""create_app: the gateway as a Starlette app — its state, lifespan, error handling, metrics and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from tritonforge.errors import ClientError
from tritonforge.gateway.admission import Admission
from tritonforge.gateway.auth import KeyChecker
from tritonforge.gateway.errors import CLIENT_CLOSED_REQUEST, APIError, clip, error_response, from_client_error
from tritonforge.gateway.listen import on_port
from tritonforge.gateway.metrics import MetricsMiddleware
from tritonforge.gateway.models import GatewayModels
from tritonforge.gateway.routes import ROUTES
from tritonforge.gateway.schemas import GatewayLimits
from tritonforge.gateway.splits import SplitRouter, SplitsConfig
from tritonforge.gateway.state import Gateway
from tritonforge.triton.streams import drain_stops

LOG = logging.getLogger(__name__)


def create_app(
    triton_url: str,
    *,
    api_keys: Collection[str] | KeyChecker | None,
    models: GatewayModels | None = None,
    timeout: float | None = 300.0,
    retries: int = 2,
    splits: SplitRouter | SplitsConfig | str | Path | None = None,
    admin_keys: Collection[str] | KeyChecker | None = None,
    limits: GatewayLimits | None = None,
    metrics_port: int | None = None,
    triton_http_url: str | None = None,
    cors_origins: Collection[str] = (),
) -> Starlette:
    """The gateway as a Starlette app: one pooled gRPC :class:`~tritonforge.clients.AsyncClient` to ``triton_url``
    for its lifetime.

    ``api_keys``: the accepted bearer keys (None or empty: no access control). ``timeout``: per Triton call,
    seconds (a whole generation counts as one call). ``splits``: A/B and canary splits: a file (YAML/JSON, re-read
    when it changes), a configuration, or a ready :class:`SplitRouter`; checked against ``models`` (a
    :class:`~tritonforge.gateway.splits.SplitConfigError` lists every problem). ``admin_keys``: the keys of
    the ``/admin`` endpoints (none: open only when ``api_keys`` is empty too). ``metrics_port``: the port of a
    second listener (served by the same server) that answers ``/metrics`` without a key and nothing else, for a
    Prometheus scrape that holds no API key. ``triton_http_url``: Triton's HTTP endpoint; when given, embeddings
    and rerank calls go over it (less CPU per request than gRPC's aio client; docs/serving.md), the rest over gRPC.
    ``cors_origins``: the browser origins (``scheme://host[:port]``, or ``*`` for any) whose pages may call the
    gateway (CORS); none: no CORS headers, and a browser on another origin cannot read an answer.
    """
    check_cors_origins(cors_origins)  # before anything is opened
    gw = Gateway(
        triton_url, api_keys=api_keys, models=models, timeout=timeout, retries=retries, splits=splits,
        admin_keys=admin_keys, limits=limits, triton_http_url=triton_http_url,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await gw.open()
        try:
            yield
        finally:
            await gw.close_streams()  # streams uvicorn cut at its graceful-shutdown timeout: their engines' stop
            await drain_stops()  # stop signals of streams cut short still on their way
            await gw.close()

    # no redirect of `/v1/models/` to `/v1/models`: Starlette builds its Location from the request's Host header, so
    # anyone could have the gateway send clients elsewhere (security review); a 404 names the path to use instead
    app = Starlette(routes=ROUTES, lifespan=lifespan, exception_handlers=_error_handlers())
    app.router.redirect_slashes = False
    app.state.gateway = gw
    app.state.models = gw.models
    app.state.metrics = gw.metrics
    app.state.splits = gw.router
    # inside the metrics: its 429s are counted; a gateway's keys never go from some to none (a key file that empties
    # keeps its keys), so whether it has any is known here
    app.add_middleware(Admission, limits=gw.limits, keyed=len(gw.checker) > 0)
    app.add_middleware(MetricsMiddleware, metrics=gw.metrics, router=gw.router, known=gw.knows)
    app.add_middleware(ContainErrors)  # the outermost of the app's own error handling
    app.state.metrics_port = metrics_port
    if cors_origins:  # outside the rest: a preflight is answered before a key, a limit or a metric is looked at
        app.add_middleware(
            OpenAIErrorCORS, allow_origins=list(cors_origins), allow_methods=CORS_METHODS, allow_headers=["*"],
            expose_headers=CORS_EXPOSED, allow_credentials=False,
        )
    if metrics_port is not None:
        app.add_middleware(MetricsListener, port=metrics_port)  # added last: before anything else runs
    return app


# What a browser page may do with CORS on (create_app's cors_origins). Methods: the OpenAI API's (no PUT: the admin
# endpoints are not for browser pages). Request headers: any, as vLLM's default allows them: the openai JS SDK sends
# x-stainless-* headers whose set changes between its releases (a list would fail its preflights), and no
# credentials (cookies) are allowed, so a header gives a page nothing it does not send itself: the API key is
# what authorizes. Exposed: the request id and Retry-After, which the SDK reads.
CORS_METHODS = ["GET", "HEAD", "POST"]
CORS_EXPOSED = ["X-Request-Id", "Retry-After"]


def check_cors_origins(origins: Collection[str]) -> None:
    """A ValueError unless every origin is ``*`` or ``scheme://host[:port]`` as a browser sends its Origin (lower
    case, no path, no trailing slash, no default port): ``https://app.example/`` would never match, and CORS would
    fail silently in the browser only."""
    from urllib.parse import urlsplit

    for origin in origins:
        if origin == "*":
            continue
        try:
            parts = urlsplit(origin)
            port = parts.port  # a port that is not a number raises
        except ValueError:
            parts, port = None, None
        if (
            parts is None or not parts.scheme or not parts.hostname or parts.username is not None
            or origin != f"{parts.scheme}://{parts.netloc}" or origin != origin.lower()
            or (port is not None and not 0 < port < 65536)
            # a browser leaves a scheme's default port out of its Origin: https://app.example:443 never matches
            or (parts.scheme, port) in (("https", 443), ("http", 80))
        ):
            raise ValueError(f"CORS origin {origin!r} is not an origin: give scheme://host[:port] as browsers send "
                             "it (lower case, no path, no trailing slash, no :443/:80 default port), e.g. "
                             "https://app.example.com, or * for any")


class OpenAIErrorCORS(CORSMiddleware):
    """Starlette's CORS, a refused preflight answered in OpenAI's error shape (Starlette's is plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        text = bytes(response.body).decode()  # "Disallowed CORS origin, method, headers"
        refused = error_response(APIError(
            400, f"{text}: this gateway allows CORS from {', '.join(self.allow_origins)} for "
            f"{', '.join(CORS_METHODS)}", code="cors_refused",
        ))
        for name, value in response.headers.items():
            if name.lower().startswith("access-control-"):
                refused.headers[name] = value
        return refused


def _error_handlers() -> dict[Any, Any]:
    """Every failure answers OpenAI's error body; nothing reaches uvicorn (which would drop the connection). Keyed by
    exception class: Starlette picks the handler of the nearest class in the exception's MRO."""

    async def _api_error(request: Request, err: APIError) -> Response:
        return _answer(request, err)

    async def _client_error(request: Request, err: ClientError) -> Response:
        request.state.gw_upstream_error = True  # a Triton call failed: counts against a split arm
        # a generation request's field names, for a context-length error told in its terms (generate sets them)
        return _answer(request, from_client_error(err, getattr(request.state, "gw_asked", None)))

    async def _http_error(request: Request, err: StarletteHTTPException) -> Response:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        detail = str(err.detail)
        path = request.url.path
        if err.status_code == 404 and len(path) > 1 and path.endswith("/"):
            detail += f": {clip(path)} (the gateway's paths end without a slash: {clip(path.rstrip('/') or '/')})"
        response = _answer(request, APIError(err.status_code, detail, type=kind, code=None))
        headers = dict(err.headers or {})  # a 405's Allow: the methods the path takes, in a set's order: sorted
        if "Allow" in headers:
            headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
        response.headers.update(headers)
        return response

    async def _gone(_: Request, __: ClientDisconnect) -> Response:
        # the client hung up while sending its body: nobody reads an answer, and it is not the server's failure
        # (it was logged as an unexpected error and counted as a 500, which 5xx alerting fired on)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    async def _unexpected(request: Request, err: Exception) -> Response:
        LOG.exception("gateway: unexpected error (request %s)", getattr(request.state, "gw_request_id", "-"))
        return _answer(request, APIError(500, f"internal error: {type(err).__name__}", type="server_error"))

    return {
        APIError: _api_error,
        ClientError: _client_error,
        StarletteHTTPException: _http_error,
        ClientDisconnect: _gone,
        Exception: _unexpected,
    }


def _answer(request: Request, err: APIError) -> JSONResponse:
    """The error's response; its code is kept for the request's log line (gateway/request_log.py)."""
    request.state.gw_error_code = err.code or err.type
    return error_response(err)



class ContainErrors:
    """A bug must cost one clean 500, not the connection: Starlette re-raises what reaches its outermost handler, and
    uvicorn then drops the keep-alive connection the client would reuse for its next request.

    Raw ASGI on purpose: Starlette's ``@app.middleware("http")`` (BaseHTTPMiddleware) copies every response through a
    memory stream and a task group; measured on the embeddings path it cost more CPU than the route itself.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracking(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking)
        except asyncio.CancelledError:
            # uvicorn cancels what is still running at its graceful-shutdown timeout (a long stream): one line, not
            # the ~50-line "Exception in ASGI application" traceback it logs for a cancellation that escapes
            LOG.warning("gateway: %s %s cut off by the stop (it outlasted the grace period; request %s)",
                        scope.get("method"), scope.get("path"), _request_id(scope))
            if not started:  # a whole answer still to come: a clean 503 to send again, not uvicorn's plain-text
                # 500 and its second log line ("ASGI callable returned without starting response")
                with contextlib.suppress(Exception):
                    await error_response(APIError(503, "the gateway is stopping: send the request again",
                                                  type="server_error", retry_after=1))(scope, receive, send)
        except Exception as err:
            if started:  # half a response is on the wire: only closing the connection tells the client
                raise
            request_id = _request_id(scope)
            LOG.exception("gateway: unexpected error (request %s)", request_id)
            response = error_response(
                APIError(500, f"internal error: {type(err).__name__} (request {request_id})", type="server_error")
            )
            await response(scope, receive, send)


def _request_id(scope: Any) -> str:
    """The id the metrics middleware gave the request (gateway/request_log.py), or a new one."""
    return str(scope.get("state", {}).get("gw_request_id") or uuid.uuid4().hex)


class MetricsListener:
    """The metrics listener's requests: ``/metrics`` only (a 404 for any other path; the route's own 405 for a
    method other than GET), answered without a key.
    Raw ASGI, as :class:`ContainErrors`. A request's port is the listener it arrived on (ASGI's ``server``)."""

    def __init__(self, app: Any, port: int) -> None:
        self.app, self.port = app, port

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and on_port(scope, self.port) and scope["path"] != "/metrics":
            await error_response(APIError(
                404, f"this listener (port {self.port}) serves GET /metrics only", code="not_found",
            ))(scope, receive, send)
            return
        await self.app(scope, receive, send)
