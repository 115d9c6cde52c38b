"""Failures around the server: a python stub killed mid-request, a model that fails to load, a server restart.

What Triton 2.51 does when a python-backend stub dies (found here, asserted below so an upgrade that changes it
shows up):

* the request in flight fails after ~1.5 s with INTERNAL "Stub process '<instance>' is not healthy.";
* the stub is NOT restarted: every later request fails the same way (after a ~1 s health check), while the model
  still reports READY (readiness does not notice);
* unloading it and loading it again (``TritonServer.unload`` + ``load``) starts a new stub and the model serves again;
* a repository ``load`` alone is a no-op when the model's files did not change since it was loaded (Triton keeps the
  loaded model, dead stub included). Beware: the first load after a fresh repository does reload, because the stub
  wrote ``__pycache__`` into the version folder, which Triton counts as a change.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.errors import ClientError, ServerError, TransientError
from tritonforge.server import TritonServer, free_port
from tritonforge.triton.options import ADMIN_HEADER

pytestmark = pytest.mark.integration

NOT_HEALTHY = "Stub process 'fragile_0_0' is not healthy."
ZERO = np.zeros((1, 1), np.float32)  # SECONDS for an immediate answer


def _healed(server: TritonServer, within: float = 5.0) -> dict[str, int]:
    """The watchdog's heal counts, once it has counted: it counts after its reload returns, which is when the model
    serves (and its ensemble is READY) again, so under load a test can see the model back first (failed once in a
    fresh-clone CI run)."""
    assert server.watchdog is not None
    deadline = time.perf_counter() + within
    while not server.watchdog.healed and time.perf_counter() < deadline:
        time.sleep(0.05)
    return dict(server.watchdog.healed)


def _grpc_infer(server, model: str, seconds: float, robust) -> tuple[str, str, float]:  # type: ignore[no-untyped-def]
    import tritonclient.grpc as grpcclient

    began = time.perf_counter()
    with grpcclient.InferenceServerClient(server.endpoints.grpc) as c:
        try:
            result = c.infer(model, robust.slow_request(seconds), client_timeout=20)
        except Exception as err:
            return str(err.status()), err.message(), time.perf_counter() - began  # type: ignore[attr-defined]
    return "ok", str(int(result.as_numpy("SLEPT")[0, 0])), time.perf_counter() - began


def test_killed_stub_fails_its_request_and_recovers_on_reload(misbehaving_server, robust) -> None:
    server = misbehaving_server
    (stub,) = robust.stub_pids(server, "fragile")
    status, pid, _ = _grpc_infer(server, "fragile", 0.0, robust)
    assert (status, pid) == ("ok", str(stub))  # the model answers from the process we are about to kill

    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(_grpc_infer, server, "fragile", 3.0, robust)
        time.sleep(0.5)  # the request is now sleeping inside the stub
        assert not in_flight.done()
        os.kill(stub, signal.SIGKILL)
        killed = time.perf_counter()
        status, message, _ = in_flight.result(timeout=15)
    assert (status, message) == ("StatusCode.INTERNAL", NOT_HEALTHY)
    assert time.perf_counter() - killed < 5  # noticed by the backend's health check, not by the 3 s sleep ending

    # Triton 2.51 does not restart the stub: the model stays READY but every request fails
    assert robust.wait_for(lambda: not robust.stub_pids(server, "fragile"), timeout=5)
    assert _grpc_infer(server, "fragile", 0.0, robust)[:2] == ("StatusCode.INTERNAL", NOT_HEALTHY)
    with Client(server.endpoints.grpc, timeout=10, retries=0) as client:
        assert client.is_model_ready("fragile")  # readiness does not see the dead stub
        assert client.infer("steady", {"SECONDS": ZERO})["SLEPT"].shape == (1, 1)  # the others are fine

    # unload + load through TritonServer starts a new stub, and the model serves again
    server.load("fragile", timeout=60, restart=True)
    (new_stub,) = robust.stub_pids(server, "fragile")
    assert new_stub != stub
    assert _grpc_infer(server, "fragile", 0.0, robust)[:2] == ("ok", str(new_stub))

    # a plain repository load does not help when the model's files did not change since it was loaded: Triton
    # keeps the loaded model (with its dead stub). (The first load after a fresh repository may reload, because the
    # stub's own __pycache__ appeared in the version folder: unload first, do not count on that.)
    import tritonclient.http as httpclient

    # let the stub finish the response above and go idle first: killed while it still holds the shared-memory mutex,
    # Triton 2.51's next execute on that model aborts the whole server (boost::interprocess::lock_exception, seen once
    # in a fresh-clone CI run, taking the shared server and the tests after it down)
    time.sleep(1.0)
    os.kill(new_stub, signal.SIGKILL)
    assert robust.wait_for(lambda: not robust.stub_pids(server, "fragile"), timeout=5)
    with httpclient.InferenceServerClient(server.endpoints.http, network_timeout=30) as http:
        http.load_model("fragile", headers={ADMIN_HEADER: server.admin_key})
    assert not robust.stub_pids(server, "fragile")
    assert _grpc_infer(server, "fragile", 0.0, robust)[:2] == ("StatusCode.INTERNAL", NOT_HEALTHY)
    server.load("fragile", timeout=60, restart=True)
    assert _grpc_infer(server, "fragile", 0.0, robust)[0] == "ok"


def test_a_killed_stub_heals_without_an_operator_and_the_others_keep_serving(misbehaving_repo, robust,
                                                                             caplog) -> None:
    """tritonforge's launcher (heal_stubs, the default) notices the dead stub and reloads its model."""
    import logging

    caplog.set_level(logging.WARNING, logger="tritonforge.server")
    server = TritonServer(misbehaving_repo, allow_partial=True, startup_timeout=60, exit_timeout=1)
    with server:
        (stub,) = robust.stub_pids(server, "fragile")
        os.kill(stub, signal.SIGKILL)
        killed = time.perf_counter()
        steady = []
        while time.perf_counter() - killed < 30:
            steady.append(_grpc_infer(server, "steady", 0.0, robust)[0])  # never stops serving
            status = _grpc_infer(server, "fragile", 0.0, robust)
            if status[0] == "ok":
                break
            time.sleep(0.2)
        healed_after = time.perf_counter() - killed
        assert status[0] == "ok" and status[1] != str(stub), status
        assert healed_after < 15, healed_after
        assert set(steady) == {"ok"}
        assert _healed(server) == {"fragile": 1}
        assert "died; reloading 'fragile'" in caplog.text and "'fragile' serves again" in caplog.text
        # unloading on purpose is not a death: the watchdog leaves an unloaded model alone
        server.unload("fragile")
        time.sleep(3)
        assert not server._model_ready("fragile") and server.watchdog.healed == {"fragile": 1}


def test_model_failing_to_load_is_reported_and_the_others_serve(misbehaving_server, robust) -> None:
    server = misbehaving_server
    assert set(server.failed_models) == {"broken"}
    assert robust.broken_reason in server.failed_models["broken"]
    assert "model.py" in server.failed_models["broken"]  # where it was raised

    states = {m["name"]: m for m in server.model_states()}
    assert states["broken"]["state"] == "UNAVAILABLE"
    assert robust.broken_reason in states["broken"]["reason"]
    assert {states[m]["state"] for m in ("slow", "fragile", "steady")} == {"READY"}

    with Client(server.endpoints.grpc, timeout=10, retries=0) as client:
        assert client.is_ready()  # the server is ready without the broken model (allow_partial)
        assert not client.is_model_ready("broken")
        assert client.infer("steady", {"SECONDS": ZERO})["SLEPT"].shape == (1, 1)
        with pytest.raises(ClientError, match=r"unknown model 'broken'.*has no available versions"):
            client.infer("broken", {"SECONDS": ZERO})

    with pytest.raises(ServerError, match=r"could not load model 'broken'.*RuntimeError: weights file is corrupt"):
        server.load("broken", timeout=30)


def test_model_failing_to_load_fails_a_strict_start(tmp_path: Path, robust) -> None:
    robust.write_model(tmp_path, "steady", robust.slow_config, robust.slow_model)
    robust.write_model(tmp_path, "broken", robust.slow_config, robust.broken_model)
    server = TritonServer(tmp_path, startup_timeout=60, exit_timeout=1)
    with pytest.raises(ServerError, match=r"could not load 1 model\(s\)[\s\S]*broken: .*RuntimeError: weights file"):
        server.start()
    assert not server.is_running()


def test_client_retries_through_a_server_restart(tmp_path: Path, robust) -> None:
    """Calls made while the server is down succeed once it is back on the same ports (gRPC and HTTP)."""
    robust.write_model(tmp_path, "steady", robust.slow_config, robust.slow_model)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(tmp_path, startup_timeout=60, exit_timeout=1, **ports)
    server.start()
    grpc_url, http_url = server.endpoints.grpc, server.endpoints.http
    clients = {
        "grpc": Client(grpc_url, retries=60, backoff=0.05, max_backoff=0.25, timeout=10),
        "http": Client(http_url, "http", retries=60, backoff=0.05, max_backoff=0.25, timeout=10),
    }
    try:
        for client in clients.values():  # connected and working before the restart
            assert client.infer("steady", {"SECONDS": ZERO})["SLEPT"].shape == (1, 1)
        server.stop()
        assert not clients["grpc"].is_live()

        down_for = 1.0
        restarted = threading.Event()

        def restart() -> None:
            time.sleep(down_for)
            server.start()
            restarted.set()

        restarter = threading.Thread(target=restart, daemon=True)
        began = time.perf_counter()
        restarter.start()
        with ThreadPoolExecutor(2) as pool:
            calls = {name: pool.submit(client.infer, "steady", {"SECONDS": ZERO}) for name, client in clients.items()}
            results = {name: call.result(timeout=60) for name, call in calls.items()}
        elapsed = time.perf_counter() - began
        restarter.join(timeout=60)
        assert restarted.is_set()
        assert server.endpoints.grpc == grpc_url and server.endpoints.http == http_url  # the same ports
        assert all(r["SLEPT"].shape == (1, 1) for r in results.values())
        assert down_for <= elapsed < down_for + (server.startup_seconds or 0) + 5, elapsed
    finally:
        for client in clients.values():
            client.close()
        server.stop()


def test_while_a_member_heals_its_ensemble_is_not_ready(embed_repo, robust) -> None:
    """Triton keeps an ensemble READY while a member cannot serve; healing unloads the ensemble first, so its
    readiness tells the truth until the member serves again, and then it serves too."""
    import urllib.request

    with TritonServer(embed_repo) as server:
        stub = robust.stub_pids(server, "minilm_encoder")[0]  # one of the example's two encoder instances
        tokenizer = robust.stub_pids(server, "minilm_tokenizer")

        def embed_ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://{server.endpoints.http}/v2/models/embed/ready", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        assert embed_ready()
        os.kill(stub, signal.SIGKILL)
        seen_not_ready, began = False, time.perf_counter()
        while time.perf_counter() - began < 30:
            ready = embed_ready()
            seen_not_ready = seen_not_ready or not ready
            if seen_not_ready and ready:
                break
            time.sleep(0.05)
        assert seen_not_ready and ready
        assert _healed(server) == {"minilm_encoder": 1}
        with Client(server.endpoints.grpc) as client:
            assert client.embed(["back again"]).shape == (1, 384)
        # the healthy member kept its stub: the launcher wrote the stubs' bytecode before Triton started, so no
        # stub wrote __pycache__ into its version folder, which Triton would count as a change and reload for
        assert robust.stub_pids(server, "minilm_tokenizer") == tokenizer


def test_a_stream_whose_engine_stub_dies_ends_with_model_not_ready_not_a_hang(demo_repo, robust) -> None:
    """Triton 2.51 never answers the requests a dead python stub held: a stream waited out its whole deadline (300 s
    through the gateway) though the watchdog had the engine serving again in ~7 s. The access layer now sees the
    engine's reload while it waits and ends the stream with ModelNotReadyError (the gateway's 503)."""
    for _attempt in range(3):
        with TritonServer(demo_repo, startup_timeout=120) as server:
            try:
                _engine_death_scenario(server, robust)
                return
            except TransientError as err:
                # Triton 2.51 itself aborts at times when a stub is SIGKILLed holding its shared-memory lock
                # ("terminate called after throwing an instance of 'boost::interprocess::lock_exception'", CI twice):
                # no server is left to test the client against, so the scenario runs again on a new one
                aborted = not server.is_running() and "lock_exception" in server.log_text()
                if not aborted:
                    pytest.fail(f"the stream ended as {err!r}; tritonserver running: {server.is_running()}, healed: "
                                f"{server.watchdog.healed}; Triton's log ends: {server.log_text()[-1500:]}")
    pytest.fail("tritonserver itself aborted (boost::interprocess::lock_exception) in each of 3 attempts")


def _engine_death_scenario(server: TritonServer, robust: Any) -> None:
    import asyncio

    from tritonforge.clients import AsyncClient
    from tritonforge.errors import ModelNotReadyError

    prompt = "Tell me a long story about the sea"

    killed_regions: list[Path] = []

    def kill_engine() -> None:
        (stub,) = robust.stub_pids(server, "tensorrt_llm")
        argv = Path(f"/proc/{stub}/cmdline").read_bytes().split(b"\0")
        killed_regions.extend(Path("/dev/shm") / a.decode() for a in argv if a.startswith(b"triton_python_backend"))
        os.kill(stub, signal.SIGKILL)

    with Client(server.endpoints.grpc, timeout=120) as client:
        began = time.perf_counter()
        with pytest.raises(ModelNotReadyError, match="was reloaded while this request waited"):
            for i, _piece in enumerate(client.stream(prompt, max_tokens=450)):
                if i == 0:
                    kill_engine()
        assert time.perf_counter() - began < 30
        deadline = time.perf_counter() + 30
        while not server.watchdog.healed.get("tensorrt_llm") and time.perf_counter() < deadline:
            time.sleep(0.1)
        assert client.generate("again", max_tokens=4)  # serving again
        # Triton leaves a SIGKILLed stub's shared-memory region behind; the watchdog's heal removes it
        assert killed_regions and not any(r.exists() for r in killed_regions), killed_regions
    # kill the next stub once the heal has settled (one engine stub again)
    deadline = time.perf_counter() + 60
    while len(robust.stub_pids(server, "tensorrt_llm")) != 1 and time.perf_counter() < deadline:
        time.sleep(0.2)
    time.sleep(5)

    async def run() -> float:
        async with AsyncClient(server.endpoints.grpc, timeout=120) as client:
            began = time.perf_counter()
            with pytest.raises(ModelNotReadyError, match="was reloaded while this request waited"):
                first = True
                async for _piece in client.stream(prompt, max_tokens=450):
                    if first:
                        kill_engine()
                        first = False
            return time.perf_counter() - began

    assert asyncio.run(run()) < 30


def test_an_engine_whose_callers_stub_died_mid_stream_is_restarted_not_hung(
    demo_repo, robust, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rag answer step's stub killed mid-stream left the engine's scheduler in a send that never returned: every
    later llm/rag request hung while every model stayed READY (robustness audit). The engine ends its stub after a
    send blocked TRITONFORGE_SEND_STALL_S (30 s; 3 here), the watchdog reloads it, and the engine serves again."""
    from tritonforge.errors import ClientError

    monkeypatch.setenv("TRITONFORGE_SEND_STALL_S", "3")  # the stubs inherit the server's environment
    server = TritonServer(demo_repo, startup_timeout=120)
    with server, Client(server.endpoints.grpc, timeout=60, retries=0) as client:
        assert client.generate("warm up", max_tokens=4)
        for _attempt in range(3):
            (answer_stub,) = robust.stub_pids(server, "answer_generate")
            healed_before = server.watchdog.healed.get("answer_generate", 0)
            # a raw caller: no stop of its own (the clients' stop would end the generation, and with it the sends)
            stream = client.rag_stream("Tell me a long story about the sea", max_tokens=300, engine_model=None,
                                       timeout=15)
            killed = ended_in_error = False
            try:
                for _piece in stream:
                    if not killed:
                        os.kill(answer_stub, signal.SIGKILL)
                        killed = True
            except ClientError:  # the answer step's stub is gone
                ended_in_error = True
            assert killed
            assert robust.wait_for(lambda before=healed_before: server.watchdog.healed.get("answer_generate", 0) > before,
                                   timeout=60), (  # what the watchdog and Triton saw (CI once: no heal, no log)
                f"no heal of answer_generate in 60 s; healed {server.watchdog.healed}, stubs now "
                f"{robust.stub_pids(server, 'answer_generate')}, Triton's log ends: {server.log_text()[-1500:]}")
            # the engine's own stub ended (a send to the dead caller blocked) and was restarted
            if robust.wait_for(lambda: server.watchdog.healed.get("tensorrt_llm"), timeout=30):
                assert ended_in_error  # the stream that lost its answer step failed, it did not end as if whole
                break
            # The stand-in decoder writes the 300 tokens in ~0.6 s: on a busy machine the kill can land after the
            # engine's last send (CI, once), and then nothing blocked. Not hung either: it answers at once; again.
            assert client.generate("not hung", max_tokens=4, timeout=10)
        else:
            pytest.fail("in 3 attempts the answer step's stub was never killed before the engine's last send")
        began = time.perf_counter()
        assert client.generate("again", max_tokens=4, timeout=30)  # the engine serves again, not hung
        assert client.rag("what is triton?", max_tokens=4, timeout=30).text is not None
        assert time.perf_counter() - began < 30
