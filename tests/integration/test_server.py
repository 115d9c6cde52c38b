"""The embedded tritonserver launcher against a real server: start, serve, fail loudly, stop cleanly."""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tritonforge.errors import ServerError
from tritonforge.server import Endpoints, TritonServer, find_tritonserver, free_port, serve

pytestmark = pytest.mark.integration


def group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of a process group, as 'pid command'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{entry.name} {cmd}")
    return found


def port_of(address: str) -> int:
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1"
    return int(port)


@pytest.fixture(scope="module")
def add_one_repo(tmp_path_factory: pytest.TempPathFactory, toy_models: SimpleNamespace) -> Path:
    repo = tmp_path_factory.mktemp("add_one_repo")
    toy_models.add_one(repo)
    return repo


@pytest.fixture(scope="module")
def add_one_server(add_one_repo: Path) -> Iterator[TritonServer]:
    server = TritonServer(add_one_repo, startup_timeout=60)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_binary_and_ports() -> None:
    binary = find_tritonserver()
    assert binary.name == "tritonserver" and binary.is_file()
    port = free_port()
    with socket.socket() as s:  # free right now: it can be bound
        s.bind(("127.0.0.1", port))


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    with pytest.raises(ServerError, match=r'pip install "tritonforge\[cpu\]"'):
        find_tritonserver()


def test_serves_on_loopback_ports(add_one_server: TritonServer) -> None:
    ep = add_one_server.endpoints
    assert isinstance(ep, Endpoints)
    ports = {port_of(ep.http), port_of(ep.grpc), port_of(ep.metrics)}
    assert len(ports) == 3
    assert add_one_server.is_running() and add_one_server.startup_seconds is not None
    with urllib.request.urlopen(f"{ep.http_url}/v2/health/ready", timeout=5) as r:
        assert r.status == 200
    states = add_one_server.model_states()
    assert [(m["name"], m.get("state")) for m in states] == [("add_one", "READY")]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_infer_with_tritonclient(add_one_server: TritonServer, protocol: str) -> None:
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    url = getattr(add_one_server.endpoints, protocol)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    client = mod.InferenceServerClient(url)
    try:
        inp = mod.InferInput("INPUT", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = client.infer("add_one", [inp]).as_numpy("OUTPUT")
    finally:
        client.close()  # an open HTTP keep-alive connection delays Triton's shutdown
    np.testing.assert_array_equal(out, x + 1)


def test_metrics_endpoint_answers(add_one_server: TritonServer) -> None:
    with urllib.request.urlopen(add_one_server.endpoints.metrics_url, timeout=5) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="add_one",version="1"}' in text


def test_unload_and_load_through_repository_api(add_one_server: TritonServer) -> None:
    add_one_server.unload("add_one")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"{add_one_server.endpoints.http_url}/v2/models/add_one/ready", timeout=5)
    add_one_server.load("add_one")
    with urllib.request.urlopen(f"{add_one_server.endpoints.http_url}/v2/models/add_one/ready", timeout=5) as r:
        assert r.status == 200
    with pytest.raises(ServerError, match="no_such_model"):
        add_one_server.load("no_such_model")


def test_stop_leaves_no_process_behind(add_one_repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with serve(add_one_repo, log_file=log) as server:
        pid = server.pid
        assert pid is not None
        members = group_members(pid)
        assert any("triton_python_backend_stub" in m for m in members), members  # the model's stub runs
    assert not server.is_running()
    assert group_members(pid) == []
    server.stop()  # idempotent
    assert "successfully loaded 'add_one'" in server.log_text() == log.read_text()
    with pytest.raises(ServerError, match="not running"):
        _ = server.endpoints


def test_a_server_that_dies_says_how_instead_of_not_running(add_one_repo: Path) -> None:
    import os
    import signal

    with serve(add_one_repo) as server:
        os.kill(server.pid, signal.SIGKILL)  # as the OOM killer would
        deadline = time.monotonic() + 10
        while server.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(ServerError, match=r"exited unexpectedly: signal SIGKILL .*\n--- tritonserver log ---"):
            _ = server.endpoints
    with pytest.raises(ServerError, match="not running"):  # stopped on purpose: the plain message again
        _ = server.endpoints


def test_broken_model_fails_start_with_its_reason(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    toy_models.add_one(tmp_path)
    toy_models.broken(tmp_path)
    server = TritonServer(tmp_path, startup_timeout=60)
    with pytest.raises(ServerError) as info:
        server.start()
    message = str(info.value)
    assert "could not load 1 model(s)" in message
    assert "broken: " in message and "No module named 'this_module_does_not_exist_anywhere'" in message
    assert "--- tritonserver log" in message
    assert not server.is_running()
    assert server.pid is None


def test_an_exit_before_ready_leads_with_the_model_that_failed(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    """With --exit-on-error=true tritonserver exits at start when a model fails: the error's first line said only
    "exited with code 1", the model and its reason were somewhere in the log excerpt."""
    toy_models.add_one(tmp_path)
    toy_models.broken(tmp_path)
    server = TritonServer(tmp_path, startup_timeout=60, extra_args=["--exit-on-error=true"])
    with pytest.raises(ServerError) as info:
        server.start()
    message = str(info.value)
    first, second, *_ = message.splitlines()
    assert first.startswith("model 'broken' did not load: ") and "this_module_does_not_exist_anywhere" in first, message
    assert second.startswith("tritonserver exited with code 1 before it was ready ("), message
    assert message.index("before it was ready") < message.index("--- tritonserver log")
    assert not server.is_running() and server.pid is None


def test_allow_partial_serves_the_models_that_loaded(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    toy_models.add_one(tmp_path)
    toy_models.broken(tmp_path)
    (tmp_path / "bad_config").mkdir()
    (tmp_path / "bad_config" / "config.pbtxt").write_text('name: "bad_config" max_batch_size: oops\n')
    with serve(tmp_path, allow_partial=True) as server:
        assert set(server.failed_models) == {"broken", "bad_config"}
        assert "this_module_does_not_exist_anywhere" in server.failed_models["broken"]
        assert "failed to read text proto" in server.failed_models["bad_config"]
        assert "Expected integer" in server.failed_models["bad_config"]
        with urllib.request.urlopen(f"{server.endpoints.http_url}/v2/models/add_one/ready", timeout=5) as r:
            assert r.status == 200


def test_unknown_model_in_models_list(add_one_repo: Path) -> None:
    with pytest.raises(ServerError, match=r"nope: no such model in .* \(models: add_one\)"):
        serve(add_one_repo, models=["add_one", "nope"], startup_timeout=60)


def test_missing_repository_and_bad_binary(tmp_path: Path) -> None:
    with pytest.raises(ServerError, match="is not a directory"):
        TritonServer(tmp_path / "missing").start()
    with pytest.raises(ServerError, match="not an executable file"):
        TritonServer(tmp_path, tritonserver=tmp_path / "tritonserver").start()


def test_port_taken_by_someone_else_is_reported(add_one_repo: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        server = TritonServer(add_one_repo, http_port=free_port(), grpc_port=taken, metrics_port=free_port())
        with pytest.raises(ServerError, match="already in use"):
            server.start()
    assert not server.is_running()


def _slow_model(tmp_path: Path, toy_models: SimpleNamespace) -> Path:
    """A python model named `slow` whose initialize takes a minute: it keeps a start waiting."""
    model = toy_models.add_one(tmp_path, name="slow")
    (model / "1" / "model.py").write_text(
        "import time\n\n\nclass TritonPythonModel:\n"
        "    def initialize(self, args):\n        time.sleep(60)\n\n"
        "    def execute(self, requests):\n        return []\n"
    )
    return model


def test_startup_timeout_names_the_model_still_loading(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    _slow_model(tmp_path, toy_models)
    server = TritonServer(tmp_path, startup_timeout=2)
    with pytest.raises(ServerError, match=r"not ready after 2s \(still loading: slow\)"):
        server.start()
    assert not server.is_running()


def test_a_timed_out_start_leads_with_the_model_that_failed(tmp_path: Path, toy_models: SimpleNamespace) -> None:
    _slow_model(tmp_path, toy_models)
    broken = toy_models.add_one(tmp_path, name="broken")
    (broken / "1" / "model.py").write_text("import no_such_module_here  # noqa\n")
    server = TritonServer(tmp_path, startup_timeout=8)
    with pytest.raises(ServerError) as info:
        server.start()
    message = str(info.value)
    first, *rest = message.splitlines()
    assert first.startswith("model 'broken' did not load: ") and "no_such_module_here" in first, message
    assert any(ln.startswith("tritonserver was not ready after 8s (still loading: slow)") for ln in rest[:3]), message
    assert message.index("not ready after") < message.index("--- tritonserver log")
    assert not server.is_running()


def test_stop_kills_a_server_stuck_on_a_request(
    tmp_path: Path, toy_models: SimpleNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    import tritonclient.grpc as grpcclient

    toy_models.embed(tmp_path)
    server = TritonServer(tmp_path, exit_timeout=30, startup_timeout=60)
    server.start()
    pid = server.pid
    assert pid is not None
    regions = [Path("/dev/shm") / arg for m in group_members(pid) for arg in m.split() if "shm_region" in arg]
    assert regions and all(r.exists() for r in regions)
    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        inp = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"sleep:20"]], dtype=object))
        client.async_infer("embed", [inp], callback=lambda result, error: None)
        time.sleep(0.5)  # the request is running in the model
        began = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="tritonforge.server"):
            server.stop(timeout=1.0)  # Triton would wait 30 s for the request: killed after 1 s
        assert time.monotonic() - began < 8
        assert "did not exit 1s after SIGTERM: killing it" in caplog.text
    finally:
        client.close()
    assert group_members(pid) == []
    assert not any(r.exists() for r in regions)  # the killed stubs' shared memory is cleaned up


def test_a_picked_port_taken_before_triton_binds_it_is_picked_again(
    add_one_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tritonforge.server as server_module

    real = server_module._free_ports
    picks: list[list[int]] = []
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]

        def racy(count: int, host: str = "127.0.0.1") -> list[int]:
            ports = real(count, host)
            if not picks:  # the first pick loses the race for its gRPC port
                ports[1] = taken
            picks.append(ports)
            return ports

        monkeypatch.setattr(server_module, "_free_ports", racy)
        with TritonServer(add_one_repo, startup_timeout=60) as server:
            assert len(picks) == 2
            assert port_of(server.endpoints.grpc) == picks[1][1] != taken
