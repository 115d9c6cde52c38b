"""tritonforge/triton/blocking_http.py (the synchronous client's HTTP transport) against small servers that misbehave
on purpose, run in a thread of their own (the calls against a real Triton are in tests/integration/test_client.py)."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from http_servers import Handler, every_second_unanswered, port, read_request, reply, serve
from tls_support import make_pki
from tritonclient.utils import InferenceServerException

from tritonforge.clients import Client, TLSOptions
from tritonforge.errors import ClientError, InvalidInputError, ModelNotFoundError, TransientError
from tritonforge.triton.blocking_http import BlockingHttpTransport
from tritonforge.triton.options import ssl_context


@contextmanager
def _served(handler: Handler, tls: ssl.SSLContext | None = None,
            client_tls: ssl.SSLContext | None = None, server_name: str | None = None,
            ) -> Iterator[tuple[BlockingHttpTransport, list[int]]]:
    """A transport to a server (http_servers.serve) run by an event loop in its own thread; the list counts the
    connections the server accepted."""
    loop = asyncio.new_event_loop()

    async def stop() -> None:
        server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    server, accepted = asyncio.run_coroutine_threadsafe(serve(handler, tls), loop).result(5)
    transport = BlockingHttpTransport("127.0.0.1", port(server), context=client_tls, server_name=server_name)
    try:
        yield transport, accepted
    finally:
        transport.close()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    while True:
        head, body = await read_request(reader)
        writer.write(reply(head.split(b"\r\n")[0] + b"|" + body))
        await writer.drain()


def test_one_connection_is_kept_for_calls_one_after_another_and_shared_by_threads() -> None:
    with _served(_echo) as (transport, accepted):
        for i in range(5):
            status, headers, body = transport.request("POST", "/x", f"call {i}".encode(), {"X-Test": "1"}, 5.0)
            assert (status, body) == (200, f"POST /x HTTP/1.1|call {i}".encode())
            assert headers[b"content-length"] == str(len(body)).encode()
        assert transport.request("GET", "/v2/health/live", timeout=5.0)[2] == b"GET /v2/health/live HTTP/1.1|"
        assert len(accepted) == 1  # keep-alive: the same connection for all six
        replies: list[bytes] = []
        workers = [threading.Thread(target=lambda i=i: replies.append(
            transport.request("POST", "/x", str(i).encode(), timeout=5.0)[2])) for i in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert sorted(replies) == sorted(f"POST /x HTTP/1.1|{i}".encode() for i in range(8))
        assert len(accepted) <= 8 and len(transport._idle) == len(accepted)  # kept for the next calls


def test_the_request_head_names_the_host_and_the_body_length() -> None:
    heads: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        head, _body = await read_request(reader)
        heads.append(head)
        writer.write(reply(b"{}"))
        await writer.drain()

    with _served(record) as (transport, _):
        transport.request("POST", "/v2/repository/index", b"", {"Authorization": "Bearer k"}, 5.0)
        lines = heads[0].split(b"\r\n")
        assert lines[0] == b"POST /v2/repository/index HTTP/1.1"
        assert f"Host: 127.0.0.1:{transport.port}".encode() in lines
        assert b"Content-Length: 0" in lines and b"Authorization: Bearer k" in lines
    assert BlockingHttpTransport("::1", 8000)._host_header == "[::1]:8000"


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_once() -> None:
    """Triton closing an idle keep-alive connection (a restart) must not fail the next call, nor run it twice."""
    seen: list[bytes] = []

    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append((await read_request(reader))[1])
        writer.write(reply(b"ok"))  # keep-alive by HTTP/1.1's default, then closed anyway
        await writer.drain()

    with _served(one_each) as (transport, accepted):
        assert transport.request("POST", "/x", b"first", timeout=5.0)[2] == b"ok"
        time.sleep(0.1)  # the server's close reaches the idle connection
        assert transport.request("POST", "/x", b"second", timeout=5.0)[2] == b"ok"
        assert transport.request("GET", "/x", timeout=5.0)[2] == b"ok"  # closed as it went out, or found closed
        assert seen == [b"first", b"second", b""] and len(accepted) == 3


def test_a_post_whose_reused_connection_closes_with_no_reply_is_not_sent_again() -> None:
    """The request may have run: Triton stopped while an infer computed got it a second time, even with retries=0
    (client audit). Only GET and HEAD are sent again; a POST is the retry policy's to send again."""
    seen: list[bytes] = []

    second_unanswered = every_second_unanswered(seen)

    with _served(second_unanswered) as (transport, accepted):
        assert transport.request("POST", "/x", b"first", timeout=5.0)[2] == b"ok"
        with pytest.raises(ConnectionResetError, match="Triton closed the connection"):
            transport.request("POST", "/x", b"ran", timeout=5.0)
        assert seen == [b"POST first", b"POST ran"] and len(accepted) == 1
        assert transport.request("GET", "/x", timeout=5.0)[2] == b"ok"  # a new connection's first: answered
        assert transport.request("GET", "/x", timeout=5.0)[2] == b"ok"  # unanswered, then sent again
        assert seen[2:] == [b"GET ", b"GET ", b"GET "] and len(accepted) == 3


def test_a_new_connection_closed_with_no_answer_fails_the_call_and_is_not_sent_twice() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)  # read, then closed without a reply

    with _served(hang_up) as (transport, accepted), pytest.raises(ConnectionResetError, match="closed the conn"):
        transport.request("POST", "/x", b"lost", timeout=5.0)
    assert len(accepted) == 1


def test_a_reply_cut_short_is_an_error_not_a_short_body_and_not_sent_again() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much")
        await writer.drain()

    with _served(cut) as (transport, accepted):
        with pytest.raises(ConnectionError, match="mid-reply") as raised:
            transport.request("POST", "/x", b"a", timeout=5.0)
        assert not isinstance(raised.value, ConnectionResetError)  # the request ran: not one to send again
        client = Client(f"127.0.0.1:{transport.port}", "http", timeout=5.0, retries=3, backoff=0.01)
        with client, pytest.raises(ClientError, match="mid-reply") as mapped:
            client.model_config("m")
        assert not isinstance(mapped.value, TransientError) and len(accepted) == 2  # one each: neither resent


def test_the_deadline_bounds_the_whole_call_and_a_cut_call_never_leaves_its_connection() -> None:
    """Each wait gets only what is left: a reply trickling a byte every 50 ms cannot hold the call past it; and the
    slow reply, still coming, must not be read as the next call's answer."""

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            _head, body = await read_request(reader)
            data = reply(b"answer to " + body)
            if n == 1:  # the first connection: trickled
                for byte in data:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.05)
            writer.write(data)
            await writer.drain()

    with _served(slow_first) as (transport, accepted):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            transport.request("POST", "/x", b"slow", timeout=0.3)
        assert time.monotonic() - started < 0.6
        assert transport.request("POST", "/x", b"next", timeout=5.0)[2] == b"answer to next"
        assert len(accepted) == 2


def test_an_unreadable_reply_is_a_connection_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    with _served(garbage) as (transport, _), pytest.raises(ConnectionError, match="unreadable HTTP response"):
        transport.request("GET", "/x", timeout=5.0)


def test_headers_that_would_break_the_request_are_refused_before_sending() -> None:
    transport = BlockingHttpTransport("127.0.0.1", 1)  # nothing listens: a refusal must come before connecting
    for headers, words in [
        ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding cannot be set"),
        ({"content-length": "5"}, "content-length cannot be set"),
        ({"X-A": "v\r\nX-Injected: 1"}, "holds a line break"),
        ({"X-A": "naïve ☃"}, "latin-1"),
    ]:
        with pytest.raises(InvalidInputError, match=words):
            transport.request("POST", "/x", b"", headers, 1.0)


def test_triton_refusals_read_as_tritonclient_raises_them_and_map_as_before() -> None:
    async def not_found(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            writer.write(reply(b'{"error":"Request for unknown model: \'nope\' is not found"}', "400 Bad Request"))
            await writer.drain()

    with _served(not_found) as (transport, _):
        with pytest.raises(InferenceServerException) as raised:
            transport.get_model_config("nope", client_timeout=5.0)
        assert raised.value.status() == "400" and "unknown model" in raised.value.message()
        assert transport.is_model_ready("nope", client_timeout=5.0) is False
        client = Client(f"127.0.0.1:{transport.port}", "http", timeout=5.0)
        with client, pytest.raises(ModelNotFoundError, match="unknown model 'nope'"):
            client.model_config("nope")


def test_a_forked_child_opens_connections_of_its_own() -> None:
    """Sharing the parent's keep-alive socket, parent and child would read each other's replies."""
    with _served(_echo) as (transport, accepted):
        transport.request("POST", "/x", b"parent", timeout=5.0)
        assert len(transport._idle) == 1
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if transport.request("POST", "/x", b"child", timeout=5.0)[2].endswith(b"|child") else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert transport.request("POST", "/x", b"again", timeout=5.0)[2].endswith(b"|again")
        assert len(accepted) == 2  # the child's own; the parent's kept


def test_threads_that_come_and_go_leave_no_file_descriptors_behind() -> None:
    """tritonclient's gevent client left every thread that used it a hub (2 fds) for good: a server running each
    request on a new thread failed with "Too many open files" after ~500 requests."""
    with _served(_echo) as (transport, _):
        transport.request("GET", "/warm", timeout=5.0)
        before = len(os.listdir("/proc/self/fd"))
        for i in range(200):
            worker = threading.Thread(target=lambda i=i: transport.request("POST", "/x", str(i).encode(), timeout=5.0))
            worker.start()
            worker.join()
        assert len(os.listdir("/proc/self/fd")) - before <= 2


def test_a_closed_transport_refuses_calls() -> None:
    with _served(_echo) as (transport, _):
        transport.request("GET", "/x", timeout=5.0)
        transport.close()
        assert transport._idle == []
        with pytest.raises(ClientError, match="are closed"):
            transport.request("GET", "/x", timeout=5.0)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_client_certificate_checks_the_server_against_server_name(tmp_path: Path) -> None:
    """Triton behind a TLS proxy whose certificate names 'triton.test', dialled as 127.0.0.1: TLSOptions.server_name
    is what the certificate is checked against (urllib, which the generate extension used, ignored it)."""
    make_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.pem"))
    server_tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_tls.verify_mode = ssl.CERT_REQUIRED  # mutual: the client's certificate too
    options = TLSOptions(root_certificates=tmp_path / "ca.pem", certificate_chain=tmp_path / "client.pem",
                         private_key=tmp_path / "client.key", server_name="triton.test")
    with _served(_echo, server_tls, ssl_context(options), "triton.test") as (transport, accepted):
        for i in range(3):
            assert transport.request("POST", "/x", str(i).encode(), timeout=5.0)[2] == f"POST /x HTTP/1.1|{i}".encode()
        assert len(accepted) == 1  # kept alive over TLS too
        wrong = BlockingHttpTransport("127.0.0.1", transport.port, context=ssl_context(options))  # no server_name
        with pytest.raises(ssl.SSLCertVerificationError, match=r"127\.0\.0\.1"):
            wrong.request("GET", "/x", timeout=5.0)
        with Client(f"https://127.0.0.1:{transport.port}", "http", tls=options, timeout=5.0) as client:
            assert client._run(lambda t: t.request("GET", "/through-the-client", timeout=5.0))[0] == 200


def test_infer_with_no_outputs_named_is_one_request_asking_for_every_output_in_binary() -> None:
    """The client read the model's metadata first to name every output (a round trip per model); the request body
    asks Triton for all of them in binary itself (binary_data_output)."""
    import json

    import numpy as np

    seen: list[tuple[bytes, bytes]] = []

    async def infer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head, body = await read_request(reader)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"inference-header-content-length"))
            seen.append((head.split(b"\r\n")[0], body[:length]))
            answer = {"model_name": "m", "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [1, 2],
                                                      "data": [1.5, 2.5]}]}
            writer.write(reply(json.dumps(answer).encode()))
            await writer.drain()

    with _served(infer) as (transport, _):
        client = Client(f"127.0.0.1:{transport.port}", "http", timeout=5.0)
        with client:
            got = client.infer("m", {"IN": np.ones((1, 2), dtype=np.float32)})
        np.testing.assert_array_equal(got["OUT"], np.array([[1.5, 2.5]], dtype=np.float32))
        assert [line for line, _ in seen] == [b"POST /v2/models/m/infer HTTP/1.1"]
        request = json.loads(seen[0][1])
        assert request["parameters"]["binary_data_output"] is True and "outputs" not in request


def test_a_generate_reply_of_200_with_only_an_error_is_a_refusal_not_empty_text() -> None:
    """Triton answers /generate with 200 and {"error": ...} when the model sends more than one response ("stream":
    true to a decoupled model; tests/integration/test_rag_service.py): that read as a reply with no text_output."""
    said = b'{"error":"generate expects model to produce exactly 1 response, use generate stream for model"}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head, _body = await read_request(reader)
            ok = b'{"model_name":"llm","text_output":"hi"}'
            writer.write(reply(said if b"/models/rag/" in head else ok))
            await writer.drain()

    with _served(answer) as (transport, _):
        assert transport.generate("llm", {"text_input": "x"}) == {"model_name": "llm", "text_output": "hi"}
        with pytest.raises(InferenceServerException, match="exactly 1 response"):
            transport.generate("rag", {"QUERY": "x", "stream": True})
