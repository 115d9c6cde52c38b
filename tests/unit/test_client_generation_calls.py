"""Generation calls get what every other call gets: retries while the server cannot take the request, the
client's headers, its retry policy as given, and the argument checks (found by an audit of the client library)."""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tritonforge.clients import AsyncClient, Client, ClientOptions, RetryPolicy
from tritonforge.errors import InvalidInputError, TransientError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Piece:
    """A streamed response as tritonclient's gRPC callback gets it: text "x", final or not."""

    def __init__(self, final: bool) -> None:
        self.final = final

    def as_numpy(self, name: str) -> Any:
        import numpy as np

        return np.array([b"x"], dtype=object) if name == "text_output" else None

    def get_response(self) -> Any:
        response = type("Response", (), {})()
        response.parameters = {"triton_final_response": type("P", (), {"bool_param": self.final})()}
        return response


CALLS = {
    "grpc generate": ("grpc", lambda c: c.generate("hi", max_tokens=2)),
    "grpc stream": ("grpc", lambda c: list(c.stream("hi", max_tokens=2))),
    "grpc rag": ("grpc", lambda c: c.rag("hi", max_tokens=2)),
    "http generate": ("http", lambda c: c.generate("hi", max_tokens=2)),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_generation_is_retried_while_the_server_is_unreachable(call: str) -> None:
    """It raised TransientError at once, without the retries its docs (and every other call) promise."""
    protocol, run = CALLS[call]
    with (Client(f"127.0.0.1:{_closed_port()}", protocol, retries=2, backoff=0.01, timeout=5) as client,
          pytest.raises(TransientError, match="gave up after 3 attempts")):
        run(client)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_generation_is_retried_while_the_server_is_unreachable(protocol: str) -> None:
    async def run() -> None:
        async with AsyncClient(f"127.0.0.1:{_closed_port()}", protocol, retries=1, backoff=0.01) as client:
            with pytest.raises(TransientError, match="gave up after 2 attempts"):
                await client.generate("hi", max_tokens=2)
            if protocol == "grpc":
                with pytest.raises(TransientError, match="gave up after 2 attempts"):
                    [p async for p in client.stream("hi", max_tokens=2)]

    asyncio.run(run())


@pytest.fixture()
def generate_endpoint() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A stand-in for Triton's HTTP generate endpoint that records each request's headers."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen.append(dict(self.headers))
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"text_output": "ok"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_http_generation_sends_the_clients_headers(generate_endpoint: tuple[str, list[dict[str, str]]]) -> None:
    """A proxy that needs an auth header saw none on generate, though infer sent it."""
    url, seen = generate_endpoint
    with Client(url, "http", headers={"X-Custom": "secret"}) as client:
        assert client.generate("hi", max_tokens=2) == "ok"

    async def run() -> str:
        async with AsyncClient(url, "http", headers={"X-Custom": "secret"}) as client:
            return await client.generate("hi", max_tokens=2)

    assert asyncio.run(run()) == "ok"
    assert [h.get("X-Custom") for h in seen] == ["secret", "secret"], seen


def test_grpc_streams_are_started_with_the_clients_headers_and_compression(monkeypatch: pytest.MonkeyPatch) -> None:
    import tritonclient.grpc as grpcclient

    started: list[dict[str, Any]] = []

    def start_stream(self: Any, callback: Any, stream_timeout: Any = None, headers: Any = None,
                     compression_algorithm: Any = None) -> None:
        started.append({"headers": headers, "compression": compression_algorithm, "timeout": stream_timeout})
        raise ConnectionRefusedError("recorded, not started")

    monkeypatch.setattr(grpcclient.InferenceServerClient, "start_stream", start_stream)
    with (Client(f"127.0.0.1:{_closed_port()}", headers={"X-Custom": "secret"}, compression="gzip", retries=0,
                 timeout=7) as client, pytest.raises(TransientError)):
        client.generate("hi", max_tokens=2)
    # the call's deadline covers the engine lookup before the stream, so the stream gets what is left of the 7 s
    assert {k: v for k, v in started[0].items() if k != "timeout"} == {"headers": {"X-Custom": "secret"},
                                                                       "compression": "gzip"}, started
    assert 6.0 < started[0]["timeout"] <= 7.0, started


def test_from_options_keeps_the_whole_retry_policy() -> None:
    policy = RetryPolicy(retries=1, backoff=0.2, max_backoff=1.0, jitter=0.0)
    client = Client.from_options("127.0.0.1:1", options=ClientOptions(retry=policy, timeout=3.0))
    try:
        assert client.options.retry == policy and client.options.timeout == 3.0
    finally:
        client.close()


def test_rag_refuses_max_tokens_zero_as_generate_does() -> None:
    """It was turned into 1 and answered with one token."""
    with Client(f"127.0.0.1:{_closed_port()}", retries=0) as client:
        for call in (lambda: client.rag("hi", max_tokens=0), lambda: client.generate("hi", max_tokens=0)):
            with pytest.raises(InvalidInputError, match="max_tokens"):
                call()


def test_a_streams_timeout_is_its_whole_deadline_as_on_the_async_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sync stream applied ``timeout`` to each gap between pieces: a 2 s stream of pieces 0.05 s apart ran to
    its end under timeout=0.5, where the async client's deadline (gRPC's stream_timeout) stopped it at 0.5 s."""
    import time

    import tritonclient.grpc as grpcclient

    from tritonforge.errors import DeadlineExceededError

    def start_stream(self: Any, callback: Any, **_: Any) -> None:
        self._feed = callback

    def async_stream_infer(self: Any, *args: Any, **kwargs: Any) -> None:
        def feed() -> None:
            for i in range(40):
                time.sleep(0.05)
                self._feed(_Piece(final=i == 39), None)

        threading.Thread(target=feed, daemon=True).start()

    monkeypatch.setattr(grpcclient.InferenceServerClient, "start_stream", start_stream)
    monkeypatch.setattr(grpcclient.InferenceServerClient, "async_stream_infer", async_stream_infer)
    monkeypatch.setattr(grpcclient.InferenceServerClient, "stop_stream", lambda self, **_: None)
    with Client(f"127.0.0.1:{_closed_port()}", retries=0) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.5s exceeded"):
            list(client.stream("hi", max_tokens=40, timeout=0.5, engine_model=None))
        assert time.monotonic() - started < 1.5


def test_search_refuses_top_n_without_rerank_instead_of_ignoring_it() -> None:
    with (Client(f"127.0.0.1:{_closed_port()}", retries=0) as client,
          pytest.raises(InvalidInputError, match=r"top_n=3 applies with rerank=True")):
        client.search(["q"], top_k=5, top_n=3)


@pytest.mark.parametrize("engine_ends", [True, False])
def test_a_stream_left_early_is_stopped_then_read_to_its_end_and_cancelled_only_if_it_does_not_end(
    monkeypatch: pytest.MonkeyPatch, engine_ends: bool
) -> None:
    """Leaving early: the engine's stop goes first (on another connection), then the stream is read to its final
    response; cancelled only when none came within DRAIN_S (an engine that ignores the stop). The real server's
    side: tests/integration/test_rag_service.py."""
    import time

    import tritonclient.grpc as grpcclient

    from tritonforge.triton import streams

    events: list[str] = []
    stopped, closed = threading.Event(), threading.Event()

    def start_stream(self: Any, callback: Any, **_: Any) -> None:
        self._feed = callback

    def async_stream_infer(self: Any, *args: Any, **kwargs: Any) -> None:
        put = self._feed

        def feed() -> None:  # a piece every 20 ms; the final one once the engine was stopped (if it heeds stops)
            while not (engine_ends and stopped.is_set()) and not closed.is_set():
                time.sleep(0.02)
                put(_Piece(final=False), None)
            put(_Piece(final=True), None)

        threading.Thread(target=feed, daemon=True).start()

    def send_stop(client: Any, engine_model: str, request_id: str, headers: Any = None) -> None:
        events.append(f"stop {engine_model}")
        stopped.set()

    monkeypatch.setattr(grpcclient.InferenceServerClient, "start_stream", start_stream)
    monkeypatch.setattr(grpcclient.InferenceServerClient, "async_stream_infer", async_stream_infer)
    def stop_stream(self: Any, cancel_requests: bool = False) -> None:
        if getattr(self, "_feed", None) is not None:  # the stream's client (close() calls it again, and the stopper's)
            events.append(f"close cancel={cancel_requests}")
            self._feed = None
            closed.set()

    monkeypatch.setattr(grpcclient.InferenceServerClient, "stop_stream", stop_stream)
    monkeypatch.setattr(streams, "_send_stop", send_stop)
    monkeypatch.setattr(streams, "DRAIN_S", 0.3)
    with Client(f"127.0.0.1:{_closed_port()}", retries=0) as client:
        pieces = client.stream("hi", max_tokens=400, engine_model="tensorrt_llm")
        assert next(pieces) == "x"
        began = time.monotonic()
        pieces.close()
        took = time.monotonic() - began
    assert events == ["stop tensorrt_llm", f"close cancel={not engine_ends}"]
    assert took < 0.2 if engine_ends else 0.3 <= took < 0.8
