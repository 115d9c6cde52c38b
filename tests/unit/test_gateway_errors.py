"""The gateway's error containment: a bug costs one clean 500 in OpenAI's error body, never the connection."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tritonforge.gateway.app import ContainErrors


def _app() -> Starlette:
    from tritonforge.gateway import create_app
    from tritonforge.server import free_port

    app = create_app(f"127.0.0.1:{free_port()}", api_keys=None, retries=0, timeout=5)

    async def boom(_: Request) -> None:
        raise RuntimeError("a bug")

    async def fine(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.router.routes += [Route("/boom", boom), Route("/fine", fine)]
    return app


def test_an_unexpected_exception_is_a_clean_500_and_the_next_request_is_served() -> None:
    from starlette.testclient import TestClient

    with TestClient(_app(), raise_server_exceptions=True) as client:  # raises if anything escaped the app
        reply = client.get("/boom")
        assert reply.status_code == 500
        error = reply.json()["error"]
        assert error["type"] == "server_error" and error["message"].startswith("internal error: RuntimeError (request ")
        assert client.get("/fine").text == "ok"


def test_the_containment_is_raw_asgi_so_responses_are_not_copied_through_a_stream() -> None:
    app = _app()
    kinds = [m.cls for m in app.user_middleware]
    assert kinds[0] is ContainErrors, kinds  # the outermost of the app's own middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    assert BaseHTTPMiddleware not in kinds


def test_a_failure_after_the_response_started_closes_the_connection() -> None:
    """Half a response on the wire cannot become a 500: the error propagates so the server drops the connection."""
    sent: list[dict[str, object]] = []

    async def app(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        raise RuntimeError("mid-stream")

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    with pytest.raises(RuntimeError, match="mid-stream"):
        asyncio.run(ContainErrors(app)({"type": "http"}, receive, send))
    assert [m["type"] for m in sent] == ["http.response.start"]


def test_a_stream_cut_off_by_the_stop_is_one_log_line_not_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """uvicorn cancels the requests still running at its graceful-shutdown timeout; the cancellation escaped the app
    and uvicorn logged ~50 lines of "Exception in ASGI application" for a stop the user asked for (first-run audit)."""

    async def app(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        raise asyncio.CancelledError

    async def send(message: dict[str, object]) -> None:
        pass

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    with caplog.at_level("WARNING", logger="tritonforge.gateway.app"):
        asyncio.run(ContainErrors(app)({"type": "http", "method": "POST", "path": "/v1/chat/completions"}, receive,
                                        send))
    assert "gateway: POST /v1/chat/completions cut off by the stop" in caplog.text


def test_the_gateway_runs_on_uvloop_and_httptools() -> None:
    """The extras install the event loop and HTTP parser uvicorn picks by default; docs/performance.md's gateway
    figures were measured with them (asyncio's loop and h11 cost ~15% more CPU per request)."""
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = uvicorn.Config(_app())
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    if hasattr(config, "get_loop_factory"):  # uvicorn >= 0.36 hands the loop to asyncio.Runner
        loop_factory = config.get_loop_factory()
        assert loop_factory is not None and loop_factory.__module__ == "uvloop"
        return
    # uvicorn 0.29-0.35 (pyproject allows them) install uvloop's event loop policy instead
    import uvloop

    config.setup_event_loop()
    try:
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(None)


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        ("OverloadedError", 429, "overloaded"),
        ("TransientError", 503, "service_unavailable"),
        ("DeadlineExceededError", 504, "timeout"),
        ("ModelNotFoundError", 503, "model_not_ready"),
        ("ModelNotReadyError", 503, "model_unavailable"),
        ("InvalidInputError", 400, "invalid_value"),
        ("BatchTooLargeError", 400, "invalid_request"),
        ("ClientError", 400, "invalid_request"),
    ],
)
def test_client_errors_map_to_http_by_class_not_by_their_words(error: str, status: int, code: str) -> None:
    import tritonforge.errors
    from tritonforge.gateway.errors import from_client_error

    # the same words for every class: a message that reads like a deadline or an unknown model changes nothing
    words = "deadline of 1s exceeded; unknown model 'x'; Stub process 'x' is not healthy; must be >= 1"
    answer = from_client_error(getattr(tritonforge.errors, error)(words))
    assert (answer.status, answer.code) == (status, code)
    assert words in answer.message


def test_gateway_model_entries_name_a_chat_models_engine_step_and_round_trip() -> None:
    """A prefixed LLM's engine step is <key>_tensorrt_llm: `--model chat:ID=ENSEMBLE@ENGINE` says so, where the stop
    signal of a stop string went to `tensorrt_llm`; a build's record of its models gives the same entries back."""
    from tritonforge.gateway import GatewayModels

    models = GatewayModels.parse(["chat:bot=bot_llm@bot_tensorrt_llm", "chat:chat=llm", "embeddings:e=embed"])
    assert models.engine_model("bot") == "bot_tensorrt_llm" and models.engine_model("chat") == "tensorrt_llm"
    assert GatewayModels.parse(models.entries()) == models
    for bad in ("embeddings:e=embed@x", "chat:bot=llm@", "chat:=llm"):
        with pytest.raises(ValueError, match="kind:id=ensemble"):
            GatewayModels.parse([bad])
    recorded = {"gateway_models": {"chat": {"bot": "bot_llm"}, "embeddings": {}, "rerank": {},
                                   "engine_models": {"bot": "bot_tensorrt_llm"}}}
    assert GatewayModels.from_build_info(recorded) == GatewayModels(
        chat={"bot": "bot_llm"}, embeddings={}, rerank={}, engine_models={"bot": "bot_tensorrt_llm"})
    assert GatewayModels.from_build_info({"target": "cpu"}) is None  # built before tritonforge recorded them
