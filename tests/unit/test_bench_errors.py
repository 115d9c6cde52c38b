"""A benchmark's refusals by class: bad options and data are BenchOptionsError (also InvalidInputError and
ValueError, like every argument the clients refuse), raised before any request; BenchError alone is a server or
model that is not there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tritonforge.bench import BenchError, BenchOptionsError, check_target, load_data, parse_concurrency, run_bench
from tritonforge.errors import ClientError, InvalidInputError


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_target("10.1.2.3:8001"), "not a loopback address"),
        (lambda: check_target("https://localhost:8000", protocol="http"), "TLS is not supported"),
        (lambda: parse_concurrency("1,x"), "not an integer"),
        (lambda: parse_concurrency("0"), "must be within 1..1024"),
        (lambda: parse_concurrency(""), "concurrency is empty"),
        # refused before connecting: port 9 on loopback answers nothing, so a connection would fail differently
        (
            lambda: run_bench("127.0.0.1:9", "embed", protocol="udp"),  # type: ignore[arg-type]
            "not one of 'grpc', 'http'",
        ),
        (lambda: run_bench("127.0.0.1:9", "embed", duration_s=0),
         r"duration_s=0 \(--duration\) must be a finite number > 0"),
        (lambda: run_bench("127.0.0.1:9", "embed", duration_s=float("inf")),  # it never ended, Ctrl-C or not
         r"duration_s=inf \(--duration\) must be a finite number > 0"),
        (lambda: run_bench("127.0.0.1:9", "embed", timeout=0), r"timeout=0 \(--timeout\) must be > 0"),
    ],
)
def test_bad_options_are_options_errors(call, message: str) -> None:
    with pytest.raises(BenchOptionsError, match=message) as caught:
        call()
    err = caught.value
    assert isinstance(err, BenchError) and isinstance(err, InvalidInputError) and isinstance(err, ValueError)
    assert isinstance(err, ClientError)  # callers that caught the benchmark's errors as ClientError still do


def test_a_bad_data_file_is_an_options_error(tmp_path: Path) -> None:
    config = {"name": "embed", "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}]}
    path = tmp_path / "data.json"
    path.write_text("{not json")
    with pytest.raises(BenchOptionsError, match="not JSON"):
        load_data(path, config)
    path.write_text(json.dumps({"data": []}))
    with pytest.raises(BenchOptionsError, match="with at least one entry"):
        load_data(path, config)


def test_an_unreachable_server_is_a_bench_error_not_an_options_error() -> None:
    with pytest.raises(BenchError, match=r"cannot reach the grpc endpoint 127\.0\.0\.1:9") as caught:
        run_bench("127.0.0.1:9", "embed", duration_s=1, timeout=2)
    assert not isinstance(caught.value, BenchOptionsError)
    assert not isinstance(caught.value, ValueError)


def test_the_cli_fails_when_a_level_measured_no_successful_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the server gone mid-run, a level of 0 requests and 31338 errors exited 0 (found by a CLI audit)."""
    from typer.testing import CliRunner

    import tritonforge.bench as bench
    from tritonforge.bench.results import BenchReport, LevelResult
    from tritonforge.cli import app

    level = LevelResult("concurrency", 4, None, 4.0, 0, 31338, 0.0, 0.0, None, {"connection refused": 31338})
    report = BenchReport("127.0.0.1:9", "embed", "grpc", 1, False, {}, "auto", 0.0, [], [level])
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: report)
    result = CliRunner().invoke(app, ["bench", "--model", "embed", "--url", "127.0.0.1:9"], env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "1 level(s) had no successful request" in result.output
