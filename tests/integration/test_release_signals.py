"""A release command stopped (SIGTERM, Ctrl-C) while a real Triton loads the promoted version, and one given
Triton's gRPC port as its HTTP address.

The audit's case: a version whose model.py takes seconds to fail, a promote sent SIGTERM meanwhile. The command died
at once with the config naming the failing version, `release list` called it serving, and the next start of the
repository failed. Now the signal is held until the load has finished and the repository agrees with the server,
then the command exits as the signal asked, saying what serves.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from release_support import answer, slow_version

pytestmark = pytest.mark.integration

KEY = "release-signal-key"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    """(repository, server): `m` serves version 1 (+1); version 2 fails to load after 6 s, version 3 (+3) loads
    after 4 s."""
    from tritonforge.releases import add_versions
    from tritonforge.server import TritonServer

    tmp = tmp_path_factory.mktemp("release-signals")
    repo = slow_version(tmp / "repo", add=1)
    assert add_versions(repo, slow_version(tmp / "slow-failing", add=2, sleep=6, fails=True)) == {"m": 2}
    assert add_versions(repo, slow_version(tmp / "slow", add=3, sleep=4)) == {"m": 3}
    server = TritonServer(repo, admin_key=KEY, startup_timeout=120)
    server.start()
    try:
        yield repo, server
    finally:
        server.stop()


def _promote_stopped_mid_load(repo: Path, server: object, version: int, signum: int) -> subprocess.CompletedProcess:
    """`tritonforge release promote m VERSION` as a process, sent `signum` once Triton is loading the version."""
    command = [sys.executable, "-m", "tritonforge", "release", "promote", "m", str(version), "--repo", str(repo),
               "--triton", server.endpoints.http, "--admin-key", KEY]  # type: ignore[attr-defined]
    # SIGINT at its default in the command (a shell's `cmd &` starts it ignored, and an ignored one is not held)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not any(e.get("version") == str(version) and e.get("state") == "LOADING"
                      for e in server.model_states()):  # type: ignore[attr-defined]
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "Triton never started loading the version"
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the load (the version's initialize sleeps 4-6 s)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_sigterm_while_a_failing_version_loads_leaves_the_old_version_named_and_restartable(served) -> None:
    from tritonforge.releases import model_releases
    from tritonforge.server import TritonServer

    repo, server = served
    config_before = (repo / "m" / "config.pbtxt").read_bytes()
    assert answer(server) == 1.0

    done = _promote_stopped_mid_load(repo, server, 2, signal.SIGTERM)
    assert done.returncode == 143, done
    message = " ".join(done.stderr.split())
    assert "SIGTERM came while Triton loaded m" in message, message
    assert "version 2 of m failed to load, so it was not promoted (version 1 still serves" in message, message
    assert (repo / "m" / "config.pbtxt").read_bytes() == config_before
    state = model_releases(repo, "m")
    assert state.active == (1,)
    assert [e["action"] for e in state.history] == ["initial", "add", "add"]  # no promote of 2 left behind
    assert answer(server) == 1.0

    # the audit's consequence: a fresh start of the repository serves again (it failed on version 2)
    with TritonServer(repo, startup_timeout=120) as fresh:
        assert answer(fresh) == 1.0


def test_ctrl_c_while_a_version_loads_lets_the_promote_finish_and_exits_130(served) -> None:
    from tritonforge.releases import model_releases

    repo, server = served
    done = _promote_stopped_mid_load(repo, server, 3, signal.SIGINT)
    assert done.returncode == 130, done
    message = " ".join(done.stderr.split())
    assert "SIGINT came while Triton loaded m; the load was let finish before stopping: the promote is complete, " \
           "version 3 serves (was 1; Triton serves it); `tritonforge release rollback m` returns to 1" in message
    assert model_releases(repo, "m").active == (3,)
    assert answer(server) == 3.0
    listed = json.loads(subprocess.run(
        [sys.executable, "-m", "tritonforge", "release", "list", "--repo", str(repo), "--json"],
        capture_output=True, text=True, check=True, env={**os.environ, "COLUMNS": "300"}).stdout)
    assert [row["version"] for row in listed if row["serving"]] == [3]


def test_a_grpc_port_given_without_a_scheme_is_named_not_blamed_on_the_version(served) -> None:
    """`--triton 127.0.0.1:<gRPC port>` was read as HTTP (rightly: a bare host:port is the HTTP port) and the promote
    said "version 2 of m failed to load ... unreadable HTTP response", although nothing had been loaded."""
    from typer.testing import CliRunner

    from tritonforge.cli import app
    from tritonforge.releases import model_releases

    repo, server = served
    before = (repo / "m" / "config.pbtxt").read_bytes()
    serving = model_releases(repo, "m").active
    grpc = server.endpoints.grpc
    result = CliRunner().invoke(app, ["release", "promote", "m", "2", "--repo", str(repo), "--triton", grpc,
                                      "--admin-key", KEY], env={"COLUMNS": "400"})
    message = " ".join(result.output.split())
    assert result.exit_code == 1, message
    assert f"version 2 of m was not promoted: nothing answered HTTP at {grpc}" in message
    assert f"if it is Triton's gRPC port, give it as grpc://{grpc}" in message
    assert "failed to load" not in message and "not ready" not in message
    assert (repo / "m" / "config.pbtxt").read_bytes() == before
    assert model_releases(repo, "m").active == serving
