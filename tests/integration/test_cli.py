"""The command line as users run it: exit codes, messages, and a served repository that stops on SIGTERM."""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "tritonforge.cli"]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def _serve(*args: str, columns: int = 250, nohup: bool = False) -> subprocess.Popen[str]:
    """`tritonforge serve ARGS` as a user runs it, its output piped (``nohup``: started ignoring SIGHUP, as nohup
    starts it)."""
    ignore_hup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
    return subprocess.Popen([*CLI, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": str(columns)}, preexec_fn=ignore_hup)


def _read_until(proc: subprocess.Popen[str], marker: str, seconds: float = 120) -> list[str]:
    """Its stdout lines up to the first holding ``marker`` (or the end of its output, or ``seconds``)."""
    deadline = time.monotonic() + seconds
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines.append(proc.stdout.readline())  # type: ignore[union-attr]
        if marker in lines[-1] or not lines[-1]:
            break
    return lines


def _children(proc: subprocess.Popen[str]) -> list[str]:
    """The pids it started (its tritonserver)."""
    return subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()


def _still_running(pids: list[str], wait: float = 5.0) -> list[str]:
    """The processes among ``pids`` still running after at most ``wait`` seconds. A zombie is not running: once the
    CLI exited, reaping its killed child is init's job, and a container's init may be slow at it (or never do it)."""

    def running(pid: str) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z"

    deadline = time.monotonic() + wait
    while (alive := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _server_folders() -> set[str]:
    """The launcher's temporary folders (its log) now present."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tritonforge-server-*")))


def _assert_nothing_left(children: list[str], folders_before: set[str], after: str) -> None:
    """The CLI's tritonserver is gone, and so is every temporary folder that appeared since ``folders_before``."""
    alive = _still_running(children)
    assert alive == [], f"tritonserver {alive} still running after {after}"
    left = _server_folders() - folders_before
    assert not left, f"left behind: {left}"


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_validate_exit_codes_and_problem_lines(embed_repo: Path, tmp_path: Path) -> None:
    ok = run("validate", str(embed_repo))
    assert ok.returncode == 0, ok.stdout + ok.stderr

    broken = tmp_path / "broken"
    shutil.copytree(embed_repo, broken)
    cfg = broken / "embed" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace('model_name: "minilm_encoder"', 'model_name: "missing_encoder"'))
    (broken / "minilm_tokenizer" / "config.pbtxt").write_text(
        (broken / "minilm_tokenizer" / "config.pbtxt").read_text().replace("max_batch_size: 64", "max_batch_size: -3")
    )
    bad = run("validate", str(broken))
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    assert f"{broken}/minilm_tokenizer/config.pbtxt: 'max_batch_size' must be non-negative value for minilm_tokenizer" in lines
    assert any(line.startswith(f"{broken}/embed/config.pbtxt: ensemble embed contains models that are not available") for line in lines)


def test_build_with_a_bad_spec_lists_every_problem(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\nmodels:\n  m:\n    kind: embedding\n    checkpoint: nowhere\n    max_batch_size: 8\n"
        "    dynamic_batching: {preferred_batch_sizes: [4, 16]}\n    instance_groups: [{count: 0}]\n"
    )
    result = run("build", str(spec), "-o", str(tmp_path / "repo"))
    assert result.returncode == 1
    assert "m.dynamic_batching.preferred_batch_sizes[1]: dynamic batching preferred size must be <= max batch size (16 > max_batch_size 8)" in result.stdout
    assert "models.m.instance_groups[0].count: 0" in result.stdout
    assert not (tmp_path / "repo").exists()


def test_serve_prints_endpoints_and_stops_on_sigterm(embed_repo: Path, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "triton.log"
    proc = _serve(str(embed_repo), "--log-file", str(log), columns=200)
    try:
        line = _read_until(proc, "ready")[-1]
        match = re.search(r"gRPC (\S+)", line)
        assert match, f"no endpoints printed: {line!r}"
        # where Triton's log is: said, and where --log-file put it (it was a temporary file no one was told of)
        assert proc.stdout.readline().strip() == f"tritonserver log: {log}"  # type: ignore[union-attr]
        assert "Started GRPCInferenceService" in log.read_text()
        from tritonforge.clients import Client

        with Client(match.group(1)) as client:
            assert client.embed(["served by the CLI"]).shape == (1, 384)
        children = _children(proc)
        assert children, "the CLI started no tritonserver process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143  # as if SIGTERM had ended it, as every command (it exited 0)
    finally:
        _kill(proc)
    # the CLI's own tritonserver (other tests' servers may serve the same repository) is gone
    alive = _still_running(children)
    assert alive == [], f"tritonserver {alive} still running after SIGTERM"


def test_serve_says_how_tritonserver_ended_when_it_is_killed(toy_repo: Path) -> None:
    """A tritonserver killed under it (SIGKILL: the OOM killer) made `serve` print only "tritonserver exited" and a
    log that just stops (day-two audit): the signal, and the likely cause, are now said."""
    proc = _serve(str(toy_repo))
    try:
        assert "ready" in _read_until(proc, "ready")[-1]
        children = _children(proc)
        assert children, "the CLI started no tritonserver process"
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        assert proc.wait(timeout=60) == 1
        err = " ".join(proc.stderr.read().split())  # type: ignore[union-attr]
        assert "tritonserver exited (signal SIGKILL (killed from outside: the kernel's OOM killer is the likely " \
               "cause when memory ran short; `dmesg` or the pod's OOMKilled status says))" in err, err
    finally:
        _kill(proc)


def test_serve_refuses_bad_addresses_and_ports_without_a_traceback(embed_repo: Path) -> None:
    for args, says, code in [
        (["--host", "256.1.1.1"], "cannot bind '256.1.1.1'", 1),
        (["--host", "10.255.255.1"], "cannot bind '10.255.255.1'", 1),
        (["--http-port", "0"], "Invalid value for '--http-port'", 2),
        (["--gateway", "--gateway-port", "70000"], "Invalid value for '--gateway-port'", 2),
    ]:
        result = subprocess.run([*CLI, "serve", str(embed_repo), *args], capture_output=True, text=True, timeout=120,
                                env={**os.environ, "COLUMNS": "200"})
        assert result.returncode == code, (args, result.stderr)
        assert says in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_serve_with_a_gateway_port_in_use_fails_before_triton_starts(embed_repo: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        began = time.monotonic()
        result = subprocess.run([*CLI, "serve", str(embed_repo), "--gateway", "--gateway-port", str(port)],
                                capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 1, result.stderr
    assert f"the gateway cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "ready" not in result.stdout and "Traceback" not in result.stderr
    assert time.monotonic() - began < 30  # no repository load before the refusal


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_stops_on_a_signal_while_still_starting(sig: signal.Signals) -> None:
    # an object store that never answers: tritonserver keeps trying for about a minute before it gives up
    proc = _serve("s3://127.0.0.1:1/bucket/models", columns=200)
    try:
        children: list[str] = []
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:  # wait until tritonserver runs: the start is under way
            time.sleep(0.5)
            children = _children(proc)
        assert children, "the CLI started no tritonserver process"
        time.sleep(2)
        sent = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig  # 130 for Ctrl-C, 143 for SIGTERM
        assert time.monotonic() - sent < 30
        assert "interrupted while starting" in proc.stderr.read()  # type: ignore[union-attr]
    finally:
        _kill(proc)
    alive = _still_running(children)
    assert alive == [], f"tritonserver {alive} still running after the signal"


def test_serve_under_nohup_outlives_the_terminal(embed_repo: Path) -> None:
    """serve took SIGHUP over whatever was there: run under nohup, it stopped when the terminal closed."""
    proc = _serve(str(embed_repo), columns=200, nohup=True)
    try:
        assert any("Ctrl-C to stop" in line for line in _read_until(proc, "Ctrl-C to stop"))
        proc.send_signal(signal.SIGHUP)
        time.sleep(2)
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        _kill(proc)


def test_demo_runs_the_main_job() -> None:
    result = run("demo", timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "gRPC and HTTP agree" in result.stdout
    assert "stopped" in result.stdout


def test_serve_with_the_gateway_serves_splits_and_stops_on_sigterm(embed_repo: Path, tmp_path: Path) -> None:
    import httpx

    from tritonforge.server import free_port

    keys = tmp_path / "keys.txt"
    keys.write_text("sk-cli-user\n")
    splits = tmp_path / "splits.yaml"
    splits.write_text(
        "splits:\n  minilm-ab:\n    control: {model: minilm, weight: 50}\n"
        "    treatment: {model: minilm, version: 1, weight: 50}\n"
    )
    port = free_port()
    proc = _serve(str(embed_repo), "--gateway", "--gateway-port", str(port), "--api-keys-file", str(keys),
                  "--splits", str(splits), "--gateway-keep-alive", "3")
    try:
        lines = _read_until(proc, "gateway on")
        assert any(f"gateway on http://127.0.0.1:{port}/v1" in line for line in lines), lines
        assert "splits minilm-ab" in lines[-1]
        headers = {"Authorization": "Bearer sk-cli-user"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            arms = set()
            for _ in range(30):
                reply = http.post("/v1/embeddings", json={"model": "minilm-ab", "input": "via serve --gateway"})
                assert reply.status_code == 200, reply.text
                arms.add(reply.headers["x-tritonforge-arm"])
            assert arms == {"control", "treatment"}
            assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
            # an embeddings-only repository: the default chat and rerank ids are not listed (they were, and 503'd)
            listed = {m["id"] for m in http.get("/v1/models").json()["data"]}
            assert listed == {"minilm", "minilm-ab"}, listed
            assert http.get("/v1/models/chat").status_code == 404
            # a key revoked in the file stops working without a restart (it took one)
            keys.write_text("sk-rotated\n")
            time.sleep(2.0)
            assert http.get("/v1/models").status_code == 401
            assert http.get("/v1/models", headers={"Authorization": "Bearer sk-rotated"}).status_code == 200
        import socket

        with socket.create_connection(("127.0.0.1", port)) as idle:  # --gateway-keep-alive 3: closed once idle 3 s
            idle.settimeout(20)
            began = time.monotonic()
            assert idle.recv(16) == b""
            assert 2 < time.monotonic() - began < 8
        children = _children(proc)
        assert children, "the CLI started no tritonserver process"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143  # as if SIGTERM had ended it, as every command (it exited 0)
    finally:
        _kill(proc)
    alive = _still_running(children)
    assert alive == [], f"tritonserver {alive} still running after SIGTERM"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_serve_with_the_gateway_serves_the_models_the_build_recorded(embed_repo: Path, tmp_path: Path) -> None:
    """The gateway served examples/rag.yaml's ids whatever the repository: a spec keying its embedder otherwise was
    unreachable through `serve --gateway` (404). The build now records its models and serve hands them over."""
    import json
    import shutil

    import httpx

    from tritonforge.server import free_port

    repo = tmp_path / "repo"
    shutil.copytree(embed_repo, repo)
    info = json.loads((repo / "tritonforge.json").read_text())
    assert info["gateway_models"]["embeddings"] == {"minilm": "embed"}  # what examples/embed.yaml's build records
    info["gateway_models"]["embeddings"] = {"corp-embedder": "embed"}  # as a spec keyed corp-embedder records it
    (repo / "tritonforge.json").write_text(json.dumps(info))
    port = free_port()
    proc = _serve(str(repo), "--gateway", "--gateway-port", str(port))
    try:
        _read_until(proc, "gateway on")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            assert {m["id"] for m in http.get("/v1/models").json()["data"]} == {"corp-embedder"}
            reply = http.post("/v1/embeddings", json={"model": "corp-embedder", "input": "recorded ids"})
            assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) == 384, reply.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143  # as if SIGTERM had ended it, as every command (it exited 0)
    finally:
        _kill(proc)


def test_serve_gateway_options_need_gateway_and_a_bad_split_file_fails_fast(embed_repo: Path, tmp_path: Path) -> None:
    splits = tmp_path / "splits.yaml"
    splits.write_text("splits:\n  x: {control: {model: ghost, weight: 1}, treatment: {model: minilm, weight: -1}}\n")
    result = run("serve", str(embed_repo), "--splits", str(splits), timeout=60)
    assert result.returncode == 2 and "--splits needs --gateway" in result.stdout + result.stderr
    result = run("serve", str(embed_repo), "--gateway", "--splits", str(splits), timeout=60)
    assert result.returncode == 1
    assert "splits.x.treatments[0].weight" in result.stderr and "-1" in result.stderr


def test_serve_drains_on_the_first_ctrl_c_and_stops_at_once_on_the_second(demo_repo: Path) -> None:
    """Found by the first-run audit: Ctrl-C with a generation in flight gave ~30 s of silence, a second Ctrl-C was
    ignored, and a Ctrl-C while stopping left the log's temporary folder. Now the first says what it waits for, the
    second stops everything at once, and nothing is left (processes, /dev/shm regions, the log folder)."""
    from tritonforge.clients import Client

    before = _server_folders()
    proc = _serve(str(demo_repo))
    stream_error: list[BaseException] = []
    try:
        line = _read_until(proc, "ready", seconds=180)[-1]
        match = re.search(r"gRPC (\S+)", line)
        assert match, f"no endpoints printed: {line!r}"
        children = _children(proc)
        assert children, "the CLI started no tritonserver process"
        started = threading.Event()

        def generate() -> None:
            try:  # one long generation after another until the stop cuts one off
                with Client(match.group(1), timeout=300, retries=0) as client:
                    while True:
                        for _ in client.stream("a very long story", max_tokens=400):
                            started.set()
            except BaseException as err:  # cut off by the stop: expected
                stream_error.append(err)
            finally:
                started.set()

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()
        assert started.wait(60)
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        said = ""
        while "stopping:" not in said and time.monotonic() < deadline:
            said += proc.stderr.readline()  # type: ignore[union-attr]
        assert "requests in flight get up to 5 s to finish, Triton 15 s to exit (Ctrl-C again to stop now)" in said
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
        assert time.monotonic() - sent < 10
        assert "stopping now" in proc.stderr.read()  # type: ignore[union-attr]
        thread.join(30)
    finally:
        _kill(proc)
    _assert_nothing_left(children, before, "the second Ctrl-C")


def _listening_addresses(port: int) -> set[str]:
    """The local addresses a TCP port is listening on (IPv4, from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # LISTEN
            found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_serve_with_the_gateway_on_a_public_address_keeps_triton_on_loopback(embed_repo: Path, tmp_path: Path) -> None:
    """Security review: `serve --host 0.0.0.0 --gateway` bound Triton there too, and its inference APIs (no key)
    answered what the gateway refused without a key (401 at the gateway, 200 from Triton's HTTP port)."""
    from tritonforge.server import free_port

    keys = tmp_path / "keys.txt"
    keys.write_text("sk-user\n")
    gateway_port, http_port = free_port(), free_port()
    proc = _serve(str(embed_repo), "--host", "0.0.0.0", "--http-port", str(http_port), "--gateway",
                  "--gateway-port", str(gateway_port), "--api-keys-file", str(keys))
    try:
        lines = _read_until(proc, "gateway on")
        assert any("gateway on" in line for line in lines), lines
        assert _listening_addresses(gateway_port) == {"0.0.0.0"}
        assert _listening_addresses(http_port) == {"127.0.0.1"}  # Triton: only this machine
        assert not any("Triton listens on" in line for line in lines)  # no warning: it is on loopback
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        _kill(proc)


def test_serve_stops_and_cleans_up_on_sighup_with_its_terminal_gone(embed_repo: Path) -> None:
    """SIGHUP (the terminal closed) killed `serve` without its cleanup: the log's temporary folder stayed. It now
    stops as on SIGTERM, and writing to a terminal that is gone (stdout and stderr closed here) cannot stop it."""
    before = _server_folders()
    proc = _serve(str(embed_repo))
    try:
        _read_until(proc, "Ctrl-C to stop")
        children = _children(proc)
        assert children, "the CLI started no tritonserver process"
        proc.stdout.close()  # type: ignore[union-attr]  # the terminal is gone: every later write fails
        proc.stderr.close()  # type: ignore[union-attr]
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=60) == 128 + signal.SIGHUP
    finally:
        _kill(proc)
    _assert_nothing_left(children, before, "SIGHUP")


@pytest.mark.parametrize("nohup", [False, True])
def test_the_gateway_stops_on_sighup_unless_started_under_nohup(nohup: bool) -> None:
    """uvicorn stops on SIGINT and SIGTERM only: a closed terminal killed `tritonforge gateway` at once, without
    its drain, and its streams' engines got no stop (docs audit). It now drains and exits 129, as `serve` does;
    under nohup (SIGHUP ignored) it keeps serving."""
    from tritonforge.server import free_port

    port = free_port()
    ignore_hup = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
    proc = subprocess.Popen([*CLI, "gateway", "--triton", f"127.0.0.1:{free_port()}", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore_hup,
                            env={**os.environ, "COLUMNS": "250"})
    try:
        lines = _read_until(proc, f":{port}")
        assert any(f":{port}" in line for line in lines), lines
        deadline = time.monotonic() + 30
        while not _listening_addresses(port):
            assert time.monotonic() < deadline, "the gateway never listened"
            time.sleep(0.1)
        proc.send_signal(signal.SIGHUP)
        if nohup:
            time.sleep(2)
            assert proc.poll() is None and _listening_addresses(port)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 143
        else:
            assert proc.wait(timeout=30) == 128 + signal.SIGHUP
    finally:
        _kill(proc)


def test_the_gateway_serves_its_metrics_without_a_key_on_a_port_of_their_own(tmp_path: Path) -> None:
    """The gateway's /metrics needs an API key, and a Prometheus scrape holds none: its 429s, stream errors and
    split guards were never collected in a cluster (k8s audit). --metrics-port answers /metrics alone, keyless."""
    import urllib.error
    import urllib.request

    from tritonforge.server import free_port

    keys = tmp_path / "keys"
    keys.write_text("sk-only\n")
    port, metrics = free_port(), free_port()
    proc = subprocess.Popen([*CLI, "gateway", "--triton", f"127.0.0.1:{free_port()}", "--port", str(port),
                             "--api-keys-file", str(keys), "--metrics-port", str(metrics)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "250"})

    def get(at: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{at}{path}", timeout=10) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    try:
        lines = _read_until(proc, "metrics on")
        assert any(f"metrics on http://127.0.0.1:{metrics}/metrics" in line for line in lines), lines
        deadline = time.monotonic() + 30
        while not _listening_addresses(metrics):
            assert time.monotonic() < deadline, "the metrics listener never listened"
            time.sleep(0.1)
        status, body = get(metrics, "/metrics")
        assert status == 200 and "tritonforge_gateway_requests_in_flight" in body
        assert get(port, "/metrics")[0] == 401  # the API's own port still asks for a key
        status, body = get(metrics, "/v1/models")
        assert status == 404 and "serves GET /metrics only" in body
        assert get(metrics, "/ready")[0] == 404
    finally:
        proc.terminate()
        _kill(proc)
    same = run("gateway", "--port", "9100", "--metrics-port", "9100", timeout=60)
    assert same.returncode == 2 and "is the gateway's --port" in same.stdout + same.stderr
