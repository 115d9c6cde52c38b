"""What a failed start quotes from tritonserver's log (tritonforge/server_process.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tritonforge.errors import ServerError
from tritonforge.server import TritonServer
from tritonforge.server_process import NO_REASON, log_excerpt, reason_from_log, startup_causes

LOG = """\
W1205 20:35:12.719029 24974 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory, pinned memory pool will not be available: CUDA driver version is insufficient for CUDA runtime version"
I1205 20:35:12.719090 24974 cuda_memory_manager.cc:117] "CUDA memory pool disabled"
E1205 20:35:12.719169 24974 server.cc:241] "CudaDriverHelper has not been initialized."
I1205 20:35:12.726939 24974 model_lifecycle.cc:472] "loading: m:1"
I1205 20:35:12.864542 24984 pb_stub.cc:366]  Failed to initialize Python stub: ModuleNotFoundError: No module named 'x'
I1205 20:35:13.212151 24974 model_lifecycle.cc:777] "failed to load 'm'"
I1205 20:35:13.212231 24974 server.cc:604]{space}
+------------------+------+
| Backend          | Path |
+------------------+------+
I1205 20:35:13.212437 24974 metrics.cc:770] "Collecting CPU metrics"
E1205 20:35:13.212561 24974 tritonserver.cc:2607] "Internal: failed to load all models"
""".format(space=" ")  # the table's first line ends in a space


def test_a_cpu_host_excerpt_leaves_out_what_every_start_prints_there() -> None:
    lines = log_excerpt(LOG, gpu_host=False).splitlines()
    assert [ln.split("] ", 1)[1] for ln in lines] == [
        '"loading: m:1"',
        " Failed to initialize Python stub: ModuleNotFoundError: No module named 'x'",
        "\"failed to load 'm'\"",
        '"Internal: failed to load all models"',
    ]
    on_gpu_host = log_excerpt(LOG, gpu_host=True)  # there the CUDA lines may be the cause: kept
    assert "CUDA driver version is insufficient" in on_gpu_host and "CudaDriverHelper" in on_gpu_host
    assert "server.cc:604]" not in on_gpu_host and "| Backend" not in on_gpu_host
    # Triton's line says only "failed to load 'm'": the stub's own error, printed just before, is the reason
    assert reason_from_log("m", LOG) == "failed to load 'm': ModuleNotFoundError: No module named 'x'"


# two python models fail while a third keeps the start waiting; each stub's traceback names its model's folder
TIMED_OUT = """\
I1205 23:30:03.748533 11181 model_lifecycle.cc:472] "loading: a:1"
I1205 23:30:03.748578 11181 model_lifecycle.cc:472] "loading: slow:1"
I1205 23:30:03.748580 11181 model_lifecycle.cc:472] "loading: b:1"
I1205 23:30:03.946425 11196 pb_stub.cc:366]  Failed to initialize Python stub: ModuleNotFoundError: No module named 'x'
At:
  /srv/repo/a/1/model.py(1): <module>
I1205 23:30:03.956425 11197 pb_stub.cc:366]  Failed to initialize Python stub: ValueError: bad weights file
At:
  /srv/repo/b/1/model.py(9): initialize
I1205 23:30:04.256127 11181 model_lifecycle.cc:777] "failed to load 'a'"
I1205 23:30:04.256128 11181 model_lifecycle.cc:777] "failed to load 'b'"
"""


def test_each_stub_failure_is_the_reason_of_the_model_its_traceback_names() -> None:
    assert reason_from_log("a", TIMED_OUT) == "failed to load 'a': ModuleNotFoundError: No module named 'x'"
    assert reason_from_log("b", TIMED_OUT) == "failed to load 'b': ValueError: bad weights file"
    assert reason_from_log("slow", TIMED_OUT) == NO_REASON


def test_startup_causes_list_the_failed_models_not_the_one_still_loading() -> None:
    assert startup_causes(TIMED_OUT) == [
        "model 'a' did not load: failed to load 'a': ModuleNotFoundError: No module named 'x'",
        "model 'b' did not load: failed to load 'b': ValueError: bad weights file",
    ]
    # what the repository index said comes first and wins over the log's words
    assert startup_causes(TIMED_OUT, {"b": "index reason"})[0] == "model 'b' did not load: index reason"
    assert startup_causes('I1205 23:30:03.748533 11181 model_lifecycle.cc:472] "loading: slow:1"\n') == []


def test_a_timeout_error_leads_with_the_cause_then_the_timeout_then_the_log(tmp_path: Path) -> None:
    log = tmp_path / "tritonserver.log"
    log.write_text(TIMED_OUT)
    server = TritonServer(tmp_path, log_file=log)
    server._log_path = log
    error = server._fail("tritonserver was not ready after 5s (still loading: slow)", startup_causes(TIMED_OUT))
    lines = str(error).splitlines()
    assert lines[0] == "model 'a' did not load: failed to load 'a': ModuleNotFoundError: No module named 'x'"
    assert lines[1].startswith("model 'b' did not load: ")
    assert lines[2] == "tritonserver was not ready after 5s (still loading: slow)"
    assert lines[3] == f"--- tritonserver log ({log}) ---"
    # without a cause the timeout is the headline, as before
    assert str(server._fail("tritonserver was not ready after 5s")).startswith("tritonserver was not ready after 5s\n")


def _fake_tritonserver(folder: Path, log: str) -> Path:
    """An executable that prints ``log`` as tritonserver would and exits 1 before it is live (appends a line to
    ``starts`` beside it at each start)."""
    script = folder / "tritonserver"
    script.write_text(f"#!/bin/sh\necho start >> '{folder}/starts'\ncat <<'END_OF_LOG'\n{log}END_OF_LOG\nexit 1\n")
    script.chmod(0o755)
    return script


def test_an_early_exit_leads_with_the_cause_the_log_names(tmp_path: Path) -> None:
    """tritonserver that exits before it is live (here: a model failed with --exit-on-error) said only "exited with
    code 1" first; the model and its reason were somewhere in the excerpt below, as on a timeout before."""
    repo = tmp_path / "repo"
    repo.mkdir()
    server = TritonServer(repo, tritonserver=_fake_tritonserver(tmp_path, LOG), heal_stubs=False)
    with pytest.raises(ServerError) as info:
        server.start()
    lines = str(info.value).splitlines()
    assert lines[0] == "model 'm' did not load: failed to load 'm': ModuleNotFoundError: No module named 'x'"
    assert lines[1] == f"tritonserver exited with code 1 before it was ready ({repo})"
    assert lines[2] == "--- tritonserver log ---"
    assert not server.is_running()


def test_an_early_exit_on_a_port_taken_is_still_retried_with_new_ports(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    taken = 'E1205 20:35:12.719169 24974 grpc_server.cc:2466] "Failed to listen on 127.0.0.1:8001: address already in use"\n'
    server = TritonServer(repo, tritonserver=_fake_tritonserver(tmp_path, taken), heal_stubs=False)
    with pytest.raises(ServerError, match=r"^tritonserver exited with code 1 before it was ready \(") as info:
        server.start()
    assert "already in use" in str(info.value)
    assert (tmp_path / "starts").read_text().count("start") == 3  # picked ports were taken: picked again, twice
    ports = {"http_port": 18000, "grpc_port": 18001, "metrics_port": 18002}  # not bound: the fake binds nothing
    given = TritonServer(repo, tritonserver=tmp_path / "tritonserver", heal_stubs=False, **ports)
    with pytest.raises(ServerError, match="already in use"):
        given.start()
    assert (tmp_path / "starts").read_text().count("start") == 4  # ports the caller gave: not picked again


def test_a_short_model_name_is_matched_as_a_name_not_inside_other_words() -> None:
    """The reason given for an ensemble called "e" was another model's warmup error: "instance:" contains "e:"."""
    log = (
        "[libprotobuf ERROR /tmp/x.cc:1] Error parsing text-format inference.ModelConfig: 3:1: Expected identifier.\n"
        "E1206 11:00:00.000001 1 model_repository_manager.cc:1] \"Poll failed for model directory 'e': failed to read "
        "text proto\"\n"
        "E1206 11:00:00.000002 1 model_lifecycle.cc:641] \"failed to load 'wu2' version 1: Invalid argument: ERROR: "
        "Failed to create instance: inference input 'IN' data-type is 'INT32', but model 'wu2' expects 'FP32'\"\n"
    )
    assert reason_from_log("e", log).startswith("Poll failed for model directory 'e': failed to read text proto")


def test_signals_during_the_launch_are_held_then_delivered_to_their_handler() -> None:
    """A SIGINT landing inside Popen (the CLI's handler raises KeyboardInterrupt) was swallowed in a fork hook, and
    the server started anyway: it is held until the child is known, then delivered."""
    import os
    import signal

    from tritonforge.server_process import deferred_signals

    done = []
    with pytest.raises(KeyboardInterrupt), deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_a_given_port_that_is_taken_is_refused_before_triton_starts(tmp_path: Path) -> None:
    """Triton said so only after loading every model, and a taken metrics port only after serve printed "ready"."""
    import socket

    repo = tmp_path / "repo"
    repo.mkdir()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        server = TritonServer(repo, metrics_port=port, heal_stubs=False)
        with pytest.raises(ServerError, match=rf"^cannot serve on 127\.0\.0\.1: metrics_port {port}: .*in use"):
            server.start()
    assert not server.is_running()
