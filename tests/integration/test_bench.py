"""`tritonforge bench` against real Triton servers: the MiniLM `embed` ensemble, and a toy streaming model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonforge.bench import (
    SENTENCES,
    BenchError,
    BenchOptionsError,
    check_target,
    generate_inputs,
    load_data,
    parse_concurrency,
    report_tables,
    run_bench,
)

pytestmark = pytest.mark.integration

EMBED_CONFIG = {
    "name": "embed",
    "platform": "ensemble",
    "max_batch_size": 64,
    "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": ["1"]}],
}
LLM_CONFIG = {
    "name": "llm",
    "max_batch_size": 0,
    "input": [
        {"name": "text_input", "data_type": "TYPE_STRING", "dims": ["1"]},
        {"name": "max_tokens", "data_type": "TYPE_INT32", "dims": ["1"]},
        {"name": "temperature", "data_type": "TYPE_FP32", "dims": ["1"], "optional": True},
        {"name": "input_ids", "data_type": "TYPE_INT64", "dims": ["-1"]},
        {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": ["-1"]},
        {"name": "scores", "data_type": "TYPE_FP16", "dims": ["2", "-1"]},
    ],
}

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------- no server needed


@pytest.mark.parametrize(
    "url", ["127.0.0.1:8001", "localhost:8001", "[::1]:8001", "grpc://127.0.0.2:9000", "http://localhost", "::1"]
)
def test_loopback_targets_are_accepted(url: str) -> None:
    protocol = "http" if url.startswith("http://") else "grpc"  # a scheme of the other transport is refused
    assert check_target(url, protocol=protocol).rsplit(":", 1)[1].isdigit()


@pytest.mark.parametrize("url", ["192.0.2.10:8001", "grpc://198.51.100.7:8001", "[2001:db8::1]:8001", "0.0.0.0:8001"])
def test_remote_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(BenchError, match=r"not a loopback address.*--allow-remote"):
        check_target(url)
    with pytest.raises(BenchError, match="--allow-remote"):
        run_bench(url, "embed", duration_s=1)  # refused before any connection is tried
    assert check_target(url, allow_remote=True).endswith(":8001")


def test_options_are_checked() -> None:
    assert parse_concurrency("1, 4,16") == [1, 4, 16]
    for bad in ("", "0", "1,x", "5000"):
        with pytest.raises(BenchError):
            parse_concurrency(bad)
    with pytest.raises(BenchError, match=r"TLS is not supported.*http://"):
        check_target("https://localhost:8000", protocol="http")  # TLS: not supported


def test_auto_inputs_follow_the_config() -> None:
    payloads = generate_inputs(EMBED_CONFIG, batch_size=3)
    assert len(payloads) > 1
    texts = payloads[0]["TEXT"]
    assert texts.shape == (3, 1) and texts.dtype == object
    assert all(t.decode() in SENTENCES for t in texts.reshape(-1))
    assert len({p["TEXT"].tobytes() for p in payloads}) > 1  # the requests differ

    llm = generate_inputs(LLM_CONFIG, seq_length=12)[0]
    assert set(llm) == {"text_input", "max_tokens", "input_ids", "attention_mask", "scores"}  # optional left out
    assert llm["text_input"].shape == (1,) and llm["text_input"][0].decode() in SENTENCES
    assert llm["max_tokens"].dtype == np.int32 and llm["max_tokens"].tolist() == [16]
    assert llm["input_ids"].shape == (12,) and llm["input_ids"].dtype == np.int64
    assert llm["input_ids"].min() >= 1000 and llm["input_ids"].max() < 2000
    assert llm["attention_mask"].tolist() == [1] * 12
    assert llm["scores"].shape == (2, 12) and llm["scores"].dtype == np.float16

    with pytest.raises(BenchError, match="max_batch_size 64"):
        generate_inputs(EMBED_CONFIG, batch_size=65)
    with pytest.raises(BenchError, match="does not batch"):
        generate_inputs(LLM_CONFIG, batch_size=2)


def test_data_file(tmp_path: Path) -> None:
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {"data": [{"TEXT": ["first sentence"]}, {"TEXT": {"content": ["second"], "shape": [1]}}, {"TEXT": "third"}]}
        )
    )
    payloads = load_data(data, EMBED_CONFIG, batch_size=2)
    assert [p["TEXT"].shape for p in payloads] == [(2, 1), (2, 1)]
    assert payloads[0]["TEXT"].reshape(-1).tolist() == [b"first sentence", b"second"]
    assert payloads[1]["TEXT"].reshape(-1).tolist() == [b"third", b"first sentence"]  # cycles

    data.write_text(json.dumps({"data": [{"TEXTS": ["typo"]}]}))
    with pytest.raises(BenchError, match=r"data\[0\]: unknown inputs \['TEXTS'\].*missing required inputs \['TEXT'\]"):
        load_data(data, EMBED_CONFIG)
    data.write_text("{not json")
    with pytest.raises(BenchError, match="not JSON"):
        load_data(data, EMBED_CONFIG)


# ------------------------------------------------------------------------------------------ the embed ensemble


def _sane(level, batch: int) -> None:  # type: ignore[no-untyped-def]
    lat = level.latency_ms
    assert level.requests > 0 and level.errors == 0, level.error_messages
    assert 0 < lat.min <= lat.p50 <= lat.p90 <= lat.p95 <= lat.p99 <= lat.max < 10_000
    assert lat.count == level.requests
    assert level.throughput_rps == pytest.approx(level.requests / level.duration_s)
    assert level.throughput_items_s == pytest.approx(level.throughput_rps * batch)


def _check_split(level, model: str, composing: list[str]) -> None:  # type: ignore[no-untyped-def]
    rows = {s.model: s for s in level.server}
    assert list(rows) == [model, *composing]
    assert not rows[model].composing and all(rows[m].composing for m in composing)
    for name, row in rows.items():
        # the statistics window matches the measured requests exactly (warm-up excluded)
        assert row.requests == level.requests, name
        assert row.failures == 0
        assert row.compute_infer_us > 0 and row.total_us > 0
        assert row.queue_us >= 0 and row.compute_input_us >= 0 and row.compute_output_us >= 0
        assert row.total_us >= row.compute_infer_us
    assert level.server_requests == level.requests and level.server_mismatch == ""  # nobody else sent requests
    encoder = rows["minilm_encoder"]
    assert encoder.executions <= encoder.inferences  # the dynamic batcher may only merge requests


def test_bench_embed_concurrency_sweep_grpc(embed_server, tmp_path: Path) -> None:
    began = time.monotonic()
    report = run_bench(embed_server.endpoints.grpc, "embed", concurrency=[1, 4], duration_s=1.5, warmup_s=0.5)
    elapsed = time.monotonic() - began
    assert elapsed < 15, f"two 2 s levels took {elapsed:.1f}s"

    assert report.composing_models == ["minilm_tokenizer", "minilm_encoder"]
    assert report.inputs == {"TEXT": {"datatype": "BYTES", "shape": [1, 1]}}
    assert [lv.concurrency for lv in report.levels] == [1, 4] and not report.streaming
    for level in report.levels:
        assert 1.5 <= level.duration_s < 5
        _sane(level, batch=1)
        _check_split(level, "embed", ["minilm_tokenizer", "minilm_encoder"])
    one, four = report.levels
    assert four.throughput_rps > 0.8 * one.throughput_rps  # more workers do not make it slower

    tables = report_tables(report)
    assert [t.row_count for t in tables] == [2, 6]
    assert "failures" in [c.header for c in tables[1].columns]  # computed per model, and now shown

    out = report.write_json(tmp_path / "bench.json")
    data = json.loads(out.read_text())
    assert data["model"] == "embed" and data["protocol"] == "grpc" and len(data["levels"]) == 2
    level = data["levels"][1]
    assert level["label"] == "c=4" and level["requests"] == four.requests
    assert level["latency_ms"]["p99"] == pytest.approx(four.latency_ms.p99)
    assert {s["model"] for s in level["server"]} == {"embed", "minilm_tokenizer", "minilm_encoder"}
    assert all("avg_batch" in s and "compute_infer_us" in s for s in level["server"])

    png = report.plot(tmp_path / "bench.png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000


def test_bench_embed_open_loop_http_batched(embed_server) -> None:
    report = run_bench(
        embed_server.endpoints.http,
        "embed",
        protocol="http",
        rate=20,
        duration_s=1.5,
        warmup_s=0,
        batch_size=2,
        max_requests=15,
    )
    (level,) = report.levels
    assert level.mode == "rate" and level.rate == 20 and level.concurrency is None
    assert report.inputs["TEXT"]["shape"] == [2, 1]
    assert level.requests + level.dropped <= 15  # bounded by max_requests
    assert level.requests >= 5
    assert level.duration_s < 1.5  # cut short by max_requests: the window ends with the last response
    _sane(level, batch=2)
    _check_split(level, "embed", ["minilm_tokenizer", "minilm_encoder"])
    assert level.server[0].inferences == 2 * level.requests  # two items per request reached Triton


def test_bench_refuses_unknown_models_and_bad_data(embed_server, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="model 'nope'") as unknown:
        run_bench(embed_server.endpoints.grpc, "nope", duration_s=1)
    assert not isinstance(unknown.value, BenchOptionsError)  # the server's answer, not a bad option
    with pytest.raises(BenchOptionsError, match=r"larger than the model's max_batch_size 64"):
        run_bench(embed_server.endpoints.grpc, "embed", batch_size=100, duration_s=1)
    with pytest.raises(BenchError, match="cannot reach"):
        run_bench("127.0.0.1:9", "embed", duration_s=1, timeout=2)


def test_cli_bench_with_a_data_file(embed_server, tmp_path: Path) -> None:
    data = tmp_path / "queries.json"
    data.write_text(json.dumps({"data": [{"TEXT": [s]} for s in SENTENCES[:5]]}))
    cmd = [sys.executable, "-m", "tritonforge.cli", "bench", "--model", "embed", "--url", embed_server.endpoints.grpc]
    cmd += ["--concurrency", "1,2", "--duration", "1", "--warmup", "0.3", "--data", str(data)]
    cmd += ["--json", str(tmp_path / "out.json"), "--plot", str(tmp_path / "out.png")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "embed over grpc" in result.stdout and "server-side split" in result.stdout
    assert "minilm_encoder" in result.stdout and "p99 ms" in result.stdout
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["data"] == str(data) and [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    assert all(lv["errors"] == 0 and lv["requests"] > 0 for lv in report["levels"])
    assert (tmp_path / "out.png").read_bytes()[:8] == PNG_MAGIC

    refused = subprocess.run(
        [sys.executable, "-m", "tritonforge.cli", "bench", "--model", "embed", "--url", "192.0.2.10:8001"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert refused.returncode == 1
    assert "not a loopback address" in refused.stderr and "--allow-remote" in refused.stderr


# ------------------------------------------------------------------------------------- a streaming (decoupled) model

STREAM_CONFIG = """\
name: "streamer"
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] },
  { name: "max_tokens" data_type: TYPE_INT32 dims: [ 1 ] }
]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

STREAM_MODEL = '''\
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Streams max_tokens responses, one word every 10 ms, then the final flag."""

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            n = int(pb_utils.get_input_tensor_by_name(request, "max_tokens").as_numpy().reshape(-1)[0])
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy().reshape(-1)[0]
            words = text.decode("utf-8").split() or ["?"]
            for i in range(n):
                time.sleep(0.01)
                word = words[i % len(words)].encode("utf-8")
                sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("text_output", np.array([word], dtype=object))]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
'''


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tritonforge.server import TritonServer

    repo = tmp_path_factory.mktemp("stream_repo")
    (repo / "streamer" / "1").mkdir(parents=True)
    (repo / "streamer" / "config.pbtxt").write_text(STREAM_CONFIG)
    (repo / "streamer" / "1" / "model.py").write_text(textwrap.dedent(STREAM_MODEL))
    server = TritonServer(repo, startup_timeout=60, exit_timeout=2)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_bench_streaming_model(stream_server) -> None:
    report = run_bench(stream_server.endpoints.grpc, "streamer", concurrency=[1, 2], duration_s=1.2, warmup_s=0.3)
    assert report.streaming  # from the model's decoupled flag
    assert report.inputs["max_tokens"] == {"datatype": "INT32", "shape": [1]}
    for level in report.levels:
        _sane(level, batch=1)
        s = level.stream
        assert s is not None and s.responses == 16 * level.requests  # auto max_tokens = 16
        assert s.responses_per_request == 16
        assert 8 <= s.ttft_ms.p50 < 200  # the first word comes after ~10 ms
        assert 8 <= s.inter_token_ms.p50 < 50  # then one every ~10 ms
        assert s.ttft_ms.p50 < level.latency_ms.p50  # the first token well before the last one
        assert s.tokens_per_s == pytest.approx(s.responses / level.duration_s)
        assert [r.model for r in level.server] == ["streamer"] and level.server[0].requests == level.requests
    assert "TTFT p50 ms" in [c.header for c in report_tables(report)[0].columns]

    with pytest.raises(BenchError, match="gRPC"):
        run_bench(stream_server.endpoints.http, "streamer", protocol="http", duration_s=1)


# ------------------------------------------------------------------------------- found by the quality/bench audit


def _bench_cmd(url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tritonforge.cli", "bench", "--model", "embed", "--url", url, *args]


def _served(server, model: str = "embed") -> int:  # type: ignore[no-untyped-def]
    """Successful requests of ``model`` so far, by the server's statistics."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.endpoints.grpc)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"]
    finally:
        client.close()
    return sum(int(m.get("inference_stats", {}).get("success", {}).get("count", 0)) for m in stats)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_an_interrupted_bench_cli_stops_sending_at_once(embed_server, tmp_path: Path, signum: int, code: int) -> None:
    """Ctrl-C went on loading the server until the level's --duration ended, and wrote nothing."""
    out = tmp_path / "new" / "bench.json"
    cmd = _bench_cmd(embed_server.endpoints.grpc, "--concurrency", "2", "--duration", "30", "--warmup", "0",
                     "--json", str(out))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    start = _served(embed_server)
    deadline = time.monotonic() + 60
    while _served(embed_server) < start + 20 and time.monotonic() < deadline:  # measuring, not starting up
        time.sleep(0.2)
    proc.send_signal(signum)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    after = _served(embed_server)
    time.sleep(1.0)
    assert _served(embed_server) == after  # nothing more sent once it exited
    assert proc.returncode == code, stdout + stderr
    assert took < 5, f"it ran {took:.1f}s after the signal"
    assert "Traceback" not in stderr
    assert "interrupted: 0 level(s) completed, c=2 cut short and not reported" in " ".join(stderr.split())
    data = json.loads(out.read_text())
    assert data["interrupted"] is True and data["interrupted_during"] == "c=2" and data["levels"] == []


def test_a_stopped_bench_keeps_the_levels_it_completed(embed_server) -> None:
    stop = threading.Event()

    def progress(message: str) -> None:  # 0.5 s into the second level's measurement
        if "measuring concurrency 2" in message:
            threading.Timer(0.5, stop.set).start()

    began = time.monotonic()
    report = run_bench(embed_server.endpoints.grpc, "embed", concurrency=[1, 2, 4], duration_s=2, warmup_s=0,
                       progress=progress, stop=stop)
    assert time.monotonic() - began < 5  # 2 s of c=1, 0.5 s of c=2, then the requests in flight
    assert report.interrupted and report.interrupted_during == "c=2"
    assert [lv.label for lv in report.levels] == ["c=1"] and report.levels[0].requests > 0
    tables = report_tables(report)
    assert "interrupted during c=2" in str(tables[0].caption)


def test_a_server_that_dies_mid_bench_is_not_hammered_and_fails_the_run(toy_repo: Path, tmp_path: Path) -> None:
    """A killed server got ~49,000 'connection refused' requests per level; and the run exited 0 with 6,636 of
    7,080 requests failed when the bound was only 'no success at all'."""
    from tritonforge.server import TritonServer

    server = TritonServer(toy_repo, startup_timeout=60, exit_timeout=2)
    server.start()
    try:
        out = tmp_path / "dies.json"
        cmd = _bench_cmd(server.endpoints.grpc, "--concurrency", "1,2", "--duration", "3", "--warmup", "0",
                         "--json", str(out))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "200"})
        deadline = time.monotonic() + 60
        while _served(server) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        server.stop()
    assert proc.returncode == 1, stdout + stderr
    data = json.loads(out.read_text())
    second = data["levels"][1]
    assert second["requests"] == 0 and 0 < second["errors"] <= 2 * 3 * 20  # backed off: not thousands
    assert all("UNAVAILABLE" in message for message in second["error_messages"])
    text = " ".join(stderr.split())
    assert "c=2: no successful request" in text and "Traceback" not in text
    first = data["levels"][0]
    if first["errors"]:  # killed during c=1 (its usual case): named with its error rate
        assert f"c=1: {first['errors']} of {first['requests'] + first['errors']} requests failed" in text


def test_other_clients_traffic_in_the_split_is_flagged(embed_server) -> None:
    """Triton's statistics are per model: another client's requests were averaged into the split silently."""
    from tritonforge.clients import Client

    done = threading.Event()

    def other_client() -> None:
        with Client(embed_server.endpoints.grpc) as client:
            while not done.is_set():
                client.embed(["some other client's traffic"])

    thread = threading.Thread(target=other_client)
    thread.start()
    try:
        time.sleep(0.5)
        report = run_bench(embed_server.endpoints.grpc, "embed", concurrency=[1], duration_s=1.5, warmup_s=0.2)
    finally:
        done.set()
        thread.join()
    (level,) = report.levels
    assert level.server_requests is not None and level.server_requests > level.requests
    assert level.server_mismatch.startswith(f"Triton counted {level.server_requests} successful requests of 'embed'")
    assert f"{level.server_requests - level.requests} requests of other clients" in level.server_mismatch
    models = [str(cell) for cell in report_tables(report)[1].columns[1].cells]
    assert f"! Triton counted {level.server_requests}, this run {level.requests}" in models
    data = report.to_dict()["levels"][0]
    assert data["server_requests"] == level.server_requests and data["server_mismatch"] == level.server_mismatch
