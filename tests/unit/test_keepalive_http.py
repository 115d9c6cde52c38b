"""tritonforge/triton/keepalive_http.py (the asyncio client's HTTP transport) against small asyncio HTTP servers that misbehave on purpose (the calls
against a real Triton are in tests/integration: test_client.py's HTTP cases, test_gateway.py's --triton-http)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest
from http_servers import every_second_unanswered, port, read_request, reply, serve
from tls_support import make_pki

from tritonforge.clients import AsyncClient, TLSOptions
from tritonforge.triton.keepalive_http import AsyncHttpTransport
from tritonforge.triton.options import ssl_context


def test_connections_are_kept_and_reused() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            writer.write(reply(b"echo:" + (await read_request(reader))[1]))
            await writer.drain()

    async def main() -> None:
        server, accepted = await serve(echo)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        for i in range(5):
            status, headers, body = await pool.request("POST", "/x", headers={"X-Test": "1"}, body=f"call {i}".encode())
            assert (status, body, headers[b"content-length"]) == (200, f"echo:call {i}".encode(), b"11")
        replies = await asyncio.gather(*(pool.request("POST", "/x", headers={}, body=str(i).encode()) for i in range(8)))
        assert [r[2] for r in replies] == [f"echo:{i}".encode() for i in range(8)]  # each its own connection
        assert len(accepted) == 8  # one for the five calls one after another, eight for eight at once
        await pool.close()
        server.close()

    asyncio.run(main())


def test_a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_once() -> None:
    """Triton closing an idle keep-alive connection (an idle timeout, a restart) must not fail the next call."""
    seen: list[bytes] = []

    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        seen.append((await read_request(reader))[1])
        writer.write(reply(b"ok"))  # keep-alive by HTTP/1.1's default, then closed anyway
        await writer.drain()

    async def main() -> None:
        server, accepted = await serve(one_each)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        assert (await pool.request("POST", "/x", headers={}, body=b"first"))[2] == b"ok"
        await asyncio.sleep(0.1)  # the server's close reaches the idle connection
        assert (await pool.request("POST", "/x", headers={}, body=b"second"))[2] == b"ok"
        # closed while our request was on its way: a GET is sent again on a new one (a POST only when the close
        # was seen before it went out: it may have run; test_blocking_http.py has the rule)
        assert (await pool.request("GET", "/x", headers={}))[2] == b"ok"
        assert seen == [b"first", b"second", b""] and len(accepted) == 3
        server.close()

    asyncio.run(main())


def test_a_connection_closed_with_no_answer_fails_the_call_when_it_was_new() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)  # read, then closed without a reply

    async def main() -> None:
        server, accepted = await serve(hang_up)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        with pytest.raises(ConnectionResetError, match="Triton closed the connection"):
            await pool.request("POST", "/x", headers={}, body=b"lost")
        assert len(accepted) == 1  # a new connection: not sent twice
        server.close()

    asyncio.run(main())


def test_a_call_cut_by_its_deadline_never_leaves_its_connection_for_the_next() -> None:
    """Its reply may still come; read by the next call, it would be the wrong request's answer."""

    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            body = (await read_request(reader))[1]
            if n == 1:
                await asyncio.sleep(0.5)
            writer.write(reply(b"answer to " + body))
            await writer.drain()

    async def main() -> None:
        server, accepted = await serve(slow_first)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.request("POST", "/x", headers={}, body=b"slow"), 0.1)
        await asyncio.sleep(0.6)  # the slow answer is sent now, to a connection the pool no longer holds
        assert (await pool.request("POST", "/x", headers={}, body=b"next"))[2] == b"answer to next"
        assert len(accepted) == 2
        await pool.close()
        server.close()

    asyncio.run(main())


def test_connection_close_is_honoured_and_refusals_read_as_tritonclient_raises_them() -> None:
    from tritonclient.utils import InferenceServerException

    from tritonforge.errors import ModelNotFoundError, TransientError
    from tritonforge.triton.errors import classify_error
    from tritonforge.triton.http_api import refusal

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(reply(b'{"error":"Request for unknown model: \'m\' is not found"}', "400 Bad Request", True))
        await writer.drain()

    async def main() -> None:
        server, accepted = await serve(refuse)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        for _ in range(2):
            status, _, body = await pool.request("POST", "/x", headers={}, body=b"")
            assert status == 400
        assert len(accepted) == 2 and not pool._idle  # "Connection: close": a new connection each time
        err = refusal(status, body)
        assert isinstance(err, InferenceServerException) and err.status() == "400"
        mapped = classify_error(err, model="m", url="u", timeout=1.0, protocol="http")
        assert isinstance(mapped, ModelNotFoundError) and "unknown model" in str(mapped)
        assert "no Triton error in the reply: b'<html>bad gateway</html>'" in str(refusal(502, b"<html>bad gateway</html>"))
        # a proxy's 404 (an empty body, HTML): not Triton saying "unknown model", but Triton not reached (client audit)
        for status, body in ((404, b""), (404, b"<html>Not Found</html>"), (502, b"<html>bad gateway</html>")):
            mapped = classify_error(refusal(status, body), model="m", url="u", timeout=1.0, protocol="http")
            assert isinstance(mapped, TransientError) and "is it Triton's HTTP endpoint" in str(mapped), mapped
        server.close()

    asyncio.run(main())


def test_the_host_header_names_an_ipv6_address_in_brackets() -> None:
    assert AsyncHttpTransport("::1", 8000)._host_header == "[::1]:8000"
    assert AsyncHttpTransport("triton.local", 8000)._host_header == "triton.local:8000"
    assert AsyncHttpTransport("triton.local", 80)._host_header == "triton.local"


def test_a_reply_cut_off_is_not_one_to_send_again() -> None:
    """A reply cut off means the request ran: a plain ConnectionError, which the error mapping does not retry
    (a ConnectionResetError, as it was, is retried as a transient failure)."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this much")
        await writer.drain()

    async def main() -> None:
        server, accepted = await serve(cut)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        with pytest.raises(ConnectionError, match="mid-reply") as raised:
            await pool.request("POST", "/x", b"a")
        assert not isinstance(raised.value, ConnectionResetError) and len(accepted) == 1
        await pool.close()
        server.close()

    asyncio.run(main())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_checks_the_server_against_server_name(tmp_path: Path) -> None:
    """A certificate naming 'triton.test', dialled as 127.0.0.1: checked against TLSOptions.server_name, which the
    aiohttp client used before could not do (AsyncClient refused server_name over HTTP)."""
    make_pki(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.pem"))
    server_tls.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    server_tls.verify_mode = ssl.CERT_REQUIRED
    options = TLSOptions(root_certificates=tmp_path / "ca.pem", certificate_chain=tmp_path / "client.pem",
                         private_key=tmp_path / "client.key", server_name="triton.test")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            writer.write(reply(b"echo:" + (await read_request(reader))[1]))
            await writer.drain()

    async def main() -> None:
        server, accepted = await serve(echo, server_tls)
        pool = AsyncHttpTransport("127.0.0.1", port(server), context=ssl_context(options), server_name="triton.test")
        for i in range(3):
            assert (await pool.request("POST", "/x", str(i).encode()))[2] == f"echo:{i}".encode()
        assert len(accepted) == 1
        wrong = AsyncHttpTransport("127.0.0.1", port(server), context=ssl_context(options))
        with pytest.raises(ssl.SSLCertVerificationError, match=r"127\.0\.0\.1"):
            await wrong.request("GET", "/x")
        async with AsyncClient(f"https://127.0.0.1:{port(server)}", "http", tls=options, timeout=5.0) as client:
            assert (await client._get().request("GET", "/through-the-client"))[0] == 200
        await pool.close()
        server.close()

    asyncio.run(main())


def test_a_post_whose_reused_connection_closes_with_no_reply_is_not_sent_again() -> None:
    """As the blocking transport's (test_blocking_http.py): the request may have run."""
    seen: list[bytes] = []

    second_unanswered = every_second_unanswered(seen)

    async def main() -> None:
        server, accepted = await serve(second_unanswered)
        pool = AsyncHttpTransport("127.0.0.1", port(server))
        assert (await pool.request("POST", "/x", headers={}, body=b"first"))[2] == b"ok"
        with pytest.raises(ConnectionResetError, match="Triton closed the connection"):
            await pool.request("POST", "/x", headers={}, body=b"ran")
        assert seen == [b"POST first", b"POST ran"] and len(accepted) == 1
        assert (await pool.request("GET", "/x", headers={}))[2] == b"ok"
        assert (await pool.request("GET", "/x", headers={}))[2] == b"ok"  # unanswered, then sent again
        assert seen[2:] == [b"GET ", b"GET ", b"GET "] and len(accepted) == 3
        server.close()

    asyncio.run(main())
