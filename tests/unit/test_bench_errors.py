"""A benchmark's refusals by class: bad options and data are BenchOptionsError (also InvalidInputError and
ValueError, like every argument the clients refuse), raised before any request; BenchError alone is a server or
model that is not there."""

from __future__ import annotations

import json
import re
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
        (lambda: run_bench("127.0.0.1:9", "embed", timeout=0), r"timeout=0 \(--timeout\) must be a finite number > 0"),
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
    assert result.exit_code == 1 and "c=4: no successful request (31338 failed)" in result.output
    # whatever the bound: a level that measured nothing is never a result
    result = CliRunner().invoke(
        app, ["bench", "--model", "embed", "--url", "127.0.0.1:9", "--max-error-rate", "1"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1 and "c=4: no successful request" in result.output


def _report_with(requests: int, errors: int):  # type: ignore[no-untyped-def]
    from tritonforge.bench.results import BenchReport, LevelResult

    level = LevelResult("concurrency", 16, None, 5.0, requests, errors, requests / 5, requests / 5, None,
                        {"UNAVAILABLE: connection refused": errors} if errors else {})
    return BenchReport("127.0.0.1:9", "embed", "grpc", 1, False, {}, "auto", 0.0, [], [level])


@pytest.mark.parametrize(
    "requests, errors, options, code, message",
    [
        # the audit's run: 6,636 of 7,080 requests failed and it exited 0
        (444, 6636, [], 1, r"c=16: 6636 of 7080 requests failed \(93\.7%, above --max-error-rate 0\.01\)"),
        (990, 10, [], 0, None),  # 1.0%: within the default bound
        (980, 20, [], 1, r"c=16: 20 of 1000 requests failed \(2\.0%"),
        (980, 20, ["--max-error-rate", "0.05"], 0, None),
        (444, 6636, ["--max-error-rate", "1"], 0, None),
        (1000, 0, ["--max-error-rate", "0"], 0, None),
    ],
)
def test_the_cli_fails_when_a_level_has_too_many_failed_requests(
    monkeypatch: pytest.MonkeyPatch, requests: int, errors: int, options: list[str], code: int, message: str | None
) -> None:
    from typer.testing import CliRunner

    import tritonforge.bench as bench
    from tritonforge.cli import app

    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: _report_with(requests, errors))
    result = CliRunner().invoke(
        app, ["bench", "--model", "embed", "--url", "127.0.0.1:9", *options], env={"COLUMNS": "200"}
    )
    assert result.exit_code == code, result.output
    if message is not None:
        assert re.search(message, " ".join(result.output.split())), result.output


@pytest.mark.parametrize("bad", ["-0.1", "1.5", "nan"])
def test_a_max_error_rate_outside_0_to_1_is_refused(bad: str) -> None:
    from typer.testing import CliRunner

    from tritonforge.cli import app

    result = CliRunner().invoke(
        app, ["bench", "--model", "embed", "--url", "127.0.0.1:9", "--max-error-rate", bad], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2 and "--max-error-rate" in result.output and "from 0 to 1" in result.output
    assert "Traceback" not in result.output


EMBED = {"name": "embed", "max_batch_size": 8, "input": [{"name": "TEXT", "data_type": "TYPE_STRING", "dims": [1]}]}


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"data": [{"TEXT": {"b64": "!!!notbase64"}}]}', r"data\[0\]\.TEXT: 'b64' is not valid base64"),
        (b'{"data": [{"TEXT": {"b64": "YWJ"}}]}', r"data\[0\]\.TEXT: 'b64' is not valid base64"),
        (b'{"data": [{"TEXT": {"b64": 5}}]}', r"data\[0\]\.TEXT: 'b64' must be a base64 string, got int"),
        (b'{"data": [{"TEXT": [{"b64": null}]}]}', r"data\[0\]\.TEXT: 'b64' must be a base64 string, got NoneType"),
        (b'{"data": [{"TEXT": ["caf\xe9"]}]}', r"data\.json: not UTF-8 text \(byte 24\)"),
    ],
)
def test_a_data_file_that_cannot_be_decoded_is_an_options_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(content)
    with pytest.raises(BenchOptionsError, match=message):
        load_data(path, EMBED)


def test_b64_values_are_still_read(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"TEXT": {"b64": "YWJj"}}, {"TEXT": [{"b64": "ZGVm"}]}]}))
    (payload,) = load_data(path, EMBED, batch_size=2)
    assert payload["TEXT"].reshape(-1).tolist() == [b"abc", b"def"]


@pytest.mark.parametrize(
    "call, message",
    [
        # the schedule stopped at 1,000,000 arrivals and the level offered nothing for its last 100 s
        (lambda: run_bench("127.0.0.1:9", "embed", rate=5000, duration_s=300),
         r"--rate 5000 with --duration 300: .*1,500,000 arrivals, above the open loop's 1,000,000 per level"),
        (lambda: run_bench("127.0.0.1:9", "embed", rate=5000, duration_s=1, warmup_s=300),
         r"--rate 5000 with --warmup"),
        (lambda: run_bench("127.0.0.1:9", "embed", timeout=float("inf")),
         r"timeout=inf \(--timeout\) must be a finite number > 0"),
        (lambda: run_bench("http://127.0.0.1:9", "embed"),
         r"protocol='http'.*\(on the command line: --protocol http\)"),
    ],
)
def test_more_bad_options_are_refused_before_any_request(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BenchOptionsError, match=message):
        call()


def test_an_open_loop_level_bounded_by_max_requests_may_offer_a_high_rate() -> None:
    from tritonforge.bench.loadgen import open_loop_cap

    assert open_loop_cap(5000, 300, 1000) == ""
    assert open_loop_cap(1000, 1000, None) == ""  # exactly the cap
    assert "above the open loop's" in open_loop_cap(1000, 1000.5, None)
