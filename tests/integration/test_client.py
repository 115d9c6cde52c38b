"""tritonforge.clients against a real tritonserver serving the toy python-backend models (see conftest.py)."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tls_support import make_pki

from tritonforge.clients import AsyncClient, Client, TLSOptions
from tritonforge.errors import ClientError, InternalServerError, TransientError
from tritonforge.server import TritonServer, free_port

pytestmark = pytest.mark.integration

TEXTS = ["Hi.", "Ünïcödé — 🚀", "a somewhat longer sentence with spaces", "x"]
PROTOCOLS = ["grpc", "http"]


def expected(toy_models: SimpleNamespace, texts: list[str]) -> np.ndarray:
    return np.array([toy_models.embedding(t) for t in texts], dtype=np.float32)


def url(server: TritonServer, protocol: str) -> str:
    return getattr(server.endpoints, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_embed_is_exact(toy_server, toy_models, protocol: str) -> None:
    with Client(url(toy_server, protocol), protocol) as client:
        assert client.is_live() and client.is_ready() and client.is_model_ready("embed")
        assert client.is_model_ready("nope") is False
        got = client.embed(TEXTS)
        assert got.dtype == np.float32 and got.shape == (len(TEXTS), 4)
        np.testing.assert_array_equal(got, expected(toy_models, TEXTS))
        # split into requests no larger than the model's max_batch_size
        many = [f"text number {i}" for i in range(40)]
        np.testing.assert_array_equal(client.embed(many, batch_size=16), expected(toy_models, many))
        # no batch_size: the model's max_batch_size (read from its config), not one request Triton would refuse
        assert 1 <= client.model_config("embed")["max_batch_size"] < len(many)
        np.testing.assert_array_equal(client.embed(many), expected(toy_models, many))
        # requests of 3, four in flight (threads), rows in order
        chunked = client.embed(many, batch_size=3, requests_in_flight=4)
        np.testing.assert_array_equal(chunked, expected(toy_models, many))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_client_shared_by_many_threads(toy_server, toy_models, protocol: str) -> None:
    """The docstring said thread-safe, but over HTTP about half the calls of 16 threads on one client failed with
    gevent's "Cannot switch to a different thread" (API audit): each thread now gets its own HTTP connections."""
    from concurrent.futures import ThreadPoolExecutor

    def call(i: int) -> np.ndarray:
        return client.embed([f"thread text {i}", "x"])

    with Client(url(toy_server, protocol), protocol, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(160)))
    for i, got in enumerate(results):
        np.testing.assert_array_equal(got, expected(toy_models, [f"thread text {i}", "x"]))


def test_a_forked_child_can_use_a_new_http_client(toy_server, toy_models) -> None:
    """gevent's hub, inherited in the parent's state, hung a forked child's new HTTP client for good (API audit)."""
    import os
    import signal

    address = url(toy_server, "http")  # read in the parent: the child is not tritonserver's parent
    with Client(address, "http") as parent:
        parent.embed(["before the fork"])
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only when its own client answers right
            code = 1
            try:
                with Client(address, "http", timeout=10) as child:
                    got = child.embed(TEXTS)
                code = 0 if np.array_equal(got, expected(toy_models, TEXTS)) else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's HTTP client hung")
        assert os.waitstatus_to_exitcode(done[1]) == 0
        parent.embed(["after the fork"])  # the parent's own client still works


def test_http_from_a_thread_per_request_holds_no_file_descriptors(toy_server, toy_models) -> None:
    """A service running each request on a new thread (a threaded web server): tritonclient's gevent client left each
    thread a hub (2 fds) and connections for good, "Too many open files" after ~500 requests; now one pool serves
    them all, its idle connections bounded."""
    import os

    with Client(url(toy_server, "http"), "http", timeout=30) as client:
        client.embed(["warm"])
        before = len(os.listdir("/proc/self/fd"))
        got: list[np.ndarray] = []
        for i in range(300):
            worker = threading.Thread(target=lambda i=i: got.append(client.embed([f"request {i}"])))
            worker.start()
            worker.join()
        assert len(got) == 300
        np.testing.assert_array_equal(got[-1], expected(toy_models, ["request 299"]))
        assert len(os.listdir("/proc/self/fd")) - before <= 2  # was +600 and more


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_embed_is_exact(toy_server, toy_models, protocol: str) -> None:
    async def run() -> list[np.ndarray]:
        async with AsyncClient(url(toy_server, protocol), protocol) as client:
            assert await client.is_live() and await client.is_model_ready("embed")
            singles = await asyncio.gather(*(client.embed([t]) for t in TEXTS))
            # a long list: requests of the model's max_batch_size, or of batch_size, several in flight, in order
            many = [f"text number {i}" for i in range(40)]
            np.testing.assert_array_equal(await client.embed(many), expected(toy_models, many))
            chunked = await client.embed(many, batch_size=3, requests_in_flight=4)
            np.testing.assert_array_equal(chunked, expected(toy_models, many))
            return singles

    got = np.concatenate(asyncio.run(run()))
    np.testing.assert_array_equal(got, expected(toy_models, TEXTS))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_async_client_outlives_its_event_loop_and_refuses_two_at_once(toy_server, toy_models, protocol: str) -> None:
    """One AsyncClient used by two asyncio.run calls (a script, tests with a loop each) failed on the second with
    errors that named no cause: its channel belonged to the closed loop. It now makes a new one; used from a loop
    while another still runs it, it says so."""
    import threading

    from tritonforge.errors import InvalidInputError

    client = AsyncClient(url(toy_server, protocol), protocol)
    for _ in range(2):
        np.testing.assert_array_equal(asyncio.run(client.embed(TEXTS)), expected(toy_models, TEXTS))

    busy, release = threading.Event(), threading.Event()

    async def hold() -> None:
        await client.embed(TEXTS[:1])
        busy.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    other = threading.Thread(target=lambda: asyncio.run(hold()))
    other.start()
    try:
        assert busy.wait(30)
        with pytest.raises(InvalidInputError, match="in use in another event loop"):
            asyncio.run(client.embed(TEXTS[:1]))
    finally:
        release.set()
        other.join(30)
    asyncio.run(client.close())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_generic_infer(toy_server, protocol: str) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    with Client(url(toy_server, protocol), protocol, compression="gzip") as client:
        out = client.infer("add_one", {"INPUT": x})  # every output, by default
        assert set(out) == {"OUTPUT"}
        np.testing.assert_array_equal(out["OUTPUT"], x + 1)
        text = client.infer("embed", {"TEXT": np.array([["abc"]], dtype=object)}, ["EMBEDDING"])
        assert text["EMBEDDING"].shape == (1, 4)
        with pytest.raises(ClientError, match=r"model 'add_one'.*(FP64|data-type|datatype)"):
            client.infer("add_one", {"INPUT": x.astype(np.float64)})


def test_metadata_config_and_statistics_read_the_same_over_grpc_and_http(toy_server) -> None:
    """gRPC's answers wrote 64-bit integers as strings and left out fields at their defaults (zero counters such as
    execution_count: a KeyError on switching protocol; client audit): now Triton's HTTP JSON over both."""

    def within(grpc: object, http: object) -> None:  # every HTTP field, the same in gRPC's (which may hold more
        if isinstance(http, dict):  # fields of a newer model_config.proto than the server's)
            assert isinstance(grpc, dict)
            for key, value in http.items():
                within(grpc[key], value)
        elif isinstance(http, list):
            assert isinstance(grpc, list) and len(grpc) == len(http)
            for a, b in zip(grpc, http, strict=True):
                within(a, b)
        else:
            assert grpc == http and type(grpc) is type(http), (grpc, http)

    with Client(toy_server.endpoints.grpc) as g, Client(toy_server.endpoints.http, "http") as h:
        for model in ("add_one", "embed"):
            assert g.model_metadata(model) == h.model_metadata(model)
            within(g.model_config(model), h.model_config(model))
        assert g.model_config("add_one")["input"][0]["dims"] == [4]  # numbers, not ["4"]
        g.infer("add_one", {"INPUT": np.zeros((1, 4), np.float32)})
        grpc_stats, http_stats = g.statistics("add_one"), h.statistics("add_one")
        for stats in (grpc_stats, http_stats):
            for entry in stats["model_stats"]:
                entry.pop("last_inference", None)  # a timestamp; the counters follow
        within(grpc_stats, http_stats)
        assert "cache_hit" in grpc_stats["model_stats"][0]["inference_stats"]  # a zero counter is there


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_error_then_next_request_succeeds(toy_server, toy_models, protocol: str) -> None:
    with Client(url(toy_server, protocol), protocol) as client:
        with pytest.raises(ClientError, match="model 'embed': TEXT must not be empty") as info:
            client.embed(["fine", ""])
        assert not isinstance(info.value, TransientError)
        np.testing.assert_array_equal(client.embed(["again"]), expected(toy_models, ["again"]))
        # one bad chunk among several in flight fails the call with its error; the client keeps working
        bad = [f"fine {i}" for i in range(10)] + [""] + [f"fine {i}" for i in range(10, 20)]
        with pytest.raises(ClientError, match="TEXT must not be empty"):
            client.embed(bad, batch_size=2, requests_in_flight=3)
        np.testing.assert_array_equal(client.embed(bad[:10], batch_size=2), expected(toy_models, bad[:10]))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_models_own_failure_is_an_internal_server_error_not_the_requests(toy_server, protocol: str) -> None:
    """A model's fault (INTERNAL, HTTP 500) was a plain ClientError, which the gateway answered 400 (audit)."""
    with Client(url(toy_server, protocol), protocol, retries=3) as client:
        with pytest.raises(InternalServerError, match="RuntimeError: the toy model failed") as info:
            client.embed(["fail:now"])
        assert info.value.status in ("StatusCode.INTERNAL", "500")
        with pytest.raises(ClientError) as refused:
            client.embed([""])
        assert not isinstance(refused.value, InternalServerError)  # bad input stays the request's (INVALID_ARG)
        assert client.embed(["after"]).shape == (1, 4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_named(toy_server, protocol: str) -> None:
    with Client(url(toy_server, protocol), protocol) as client:
        with pytest.raises(ClientError, match="unknown model 'no_such_model'"):
            client.embed(["x"], model="no_such_model")
        with pytest.raises(ClientError, match="unknown model 'no_such_model'"):
            client.infer("no_such_model", {"X": np.zeros((1, 1), np.float32)})


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_deadline_is_a_client_error_with_the_deadline(toy_server, protocol: str) -> None:
    with Client(url(toy_server, protocol), protocol, retries=3) as client:
        began = time.monotonic()
        with pytest.raises(ClientError, match=r"deadline of 0\.3s exceeded") as info:
            client.embed(["sleep:1.0"], timeout=0.3)
        assert not isinstance(info.value, TransientError)
        assert time.monotonic() - began < 0.9  # not retried
        time.sleep(0.8)  # let the slow request finish before the next test
        assert client.embed(["after"]).shape == (1, 4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_async_deadline(toy_server, protocol: str) -> None:
    async def run() -> None:
        async with AsyncClient(url(toy_server, protocol), protocol) as client:
            with pytest.raises(ClientError, match=r"deadline of 0\.3s exceeded"):
                await client.embed(["sleep:1.0"], timeout=0.3)
            await asyncio.sleep(0.8)
            with pytest.raises(ClientError, match="TEXT must not be empty"):
                await client.embed([""])
            assert (await client.embed(["ok"])).shape == (1, 4)

    asyncio.run(run())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_reaches_a_server_that_starts_late(toy_repo: Path, toy_models, protocol: str) -> None:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(toy_repo, models=["embed"], startup_timeout=60, **ports)
    starter = threading.Timer(1.0, server.start)
    try:
        with Client(f"127.0.0.1:{ports[protocol + '_port']}", protocol, retries=20, backoff=0.1) as client:
            assert client.is_live() is False
            starter.start()
            began = time.monotonic()
            got = client.embed(["late"])  # refused/unavailable at first, retried until the server answers
            waited = time.monotonic() - began
        np.testing.assert_array_equal(got, expected(toy_models, ["late"]))
        assert 0.9 < waited < 30
    finally:
        starter.cancel()
        starter.join()
        server.stop()


# --------------------------------------------------------------------------------------------- mutual TLS (gRPC)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_grpc_mutual_tls(toy_repo: Path, toy_models, tmp_path: Path) -> None:
    make_pki(tmp_path)
    tls_args = [
        "--grpc-use-ssl=true",
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={tmp_path / 'server.pem'}",
        f"--grpc-server-key={tmp_path / 'server.key'}",
        f"--grpc-root-cert={tmp_path / 'ca.pem'}",
    ]
    with TritonServer(toy_repo, models=["embed"], extra_args=tls_args, startup_timeout=60) as server:
        tls = TLSOptions(
            root_certificates=tmp_path / "ca.pem",
            certificate_chain=tmp_path / "client.pem",
            private_key=tmp_path / "client.key",
            server_name="triton.test",  # the certificate's name, not 127.0.0.1
        )
        with Client(server.endpoints.grpc, tls=tls) as client:
            np.testing.assert_array_equal(client.embed(["secure"]), expected(toy_models, ["secure"]))
        # without a client certificate the server refuses the handshake
        no_cert = TLSOptions(root_certificates=tmp_path / "ca.pem", server_name="triton.test")
        with Client(server.endpoints.grpc, tls=no_cert, retries=0, timeout=5) as client, pytest.raises(
            ClientError, match="unavailable"
        ):
            client.embed(["refused"])


def test_a_dns_url_reaches_triton_through_grpcs_resolver(toy_server, toy_models) -> None:
    """dns:///name:port (what a cluster gateway uses for a headless Service's pods) serves requests, sync and
    async, with every address of the name in turn."""
    port = toy_server.endpoints.grpc.rsplit(":", 1)[1]
    with Client(f"dns:///127.0.0.1:{port}") as client:
        np.testing.assert_array_equal(client.embed(TEXTS), expected(toy_models, TEXTS))

    async def run() -> np.ndarray:
        async with AsyncClient(f"dns:///127.0.0.1:{port}") as client:
            return await client.embed(TEXTS)

    np.testing.assert_array_equal(asyncio.run(run()), expected(toy_models, TEXTS))
