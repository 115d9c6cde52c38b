"""Result files (bench --json/--plot, quality --json) are written whole or not at all, into folders made for them,
and a write that fails is an error naming the file, not a traceback (found by the quality/bench audit)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tritonforge.atomic_file import write_atomic, write_text_atomic
from tritonforge.bench.results import BenchReport, LevelResult
from tritonforge.errors import OutputFileError


def _report() -> BenchReport:
    level = LevelResult("concurrency", 1, None, 1.0, 10, 0, 10.0, 10.0, None)
    return BenchReport("127.0.0.1:9", "embed", "grpc", 1, False, {}, "auto", 0.0, [], [level])


def _full_disk(_fh: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(tmp_path: Path) -> None:
    target = tmp_path / "bench.json"
    target.write_text('{"old": true}\n')
    with pytest.raises(OutputFileError, match=r"bench\.json \(the previous file is unchanged\): No space left"):
        write_atomic(target, _full_disk)
    assert target.read_text() == '{"old": true}\n'
    assert os.listdir(tmp_path) == ["bench.json"]
    with pytest.raises(OutputFileError, match=r"new\.json \(no file was written\)"):
        write_atomic(tmp_path / "new.json", _full_disk)
    assert os.listdir(tmp_path) == ["bench.json"]


def test_a_report_is_written_into_folders_that_do_not_exist_yet(tmp_path: Path) -> None:
    out = _report().write_json(tmp_path / "new" / "sub" / "bench.json")
    data = json.loads(out.read_text())
    assert data["levels"][0]["error_rate"] == 0.0 and data["interrupted"] is False
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_write_to_a_full_device_is_an_error_and_the_device_stays(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with pytest.raises(OutputFileError, match=r"cannot write /dev/full: No space left on device"):
        write_text_atomic("/dev/full", "x" * 100_000)
    assert Path("/dev/full").is_char_device()  # written in place, never renamed over


def test_the_bench_cli_reports_a_write_that_failed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tritonforge.atomic_file as output
    import tritonforge.bench as bench
    from tritonforge.cli import app

    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: _report())
    real = output.write_atomic
    monkeypatch.setattr(output, "write_atomic", lambda path, write: real(path, _full_disk))
    result = CliRunner().invoke(
        app, ["bench", "--model", "embed", "--url", "127.0.0.1:9", "--json", str(tmp_path / "b.json")],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write" in result.output and "b.json" in result.output and "No space left" in result.output
    assert os.listdir(tmp_path) == []


def test_the_quality_cli_writes_into_a_new_folder_and_reports_a_failed_write(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tritonforge.atomic_file as output
    import tritonforge.quality as quality
    from tritonforge.cli import app

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "?", "passage": "p", "key_fact": "f"}\n')
    report = quality.QualityReport(questions=1, recall={"search": {"recall@1": 1.0}})
    monkeypatch.setattr(quality, "evaluate", lambda *a, **k: report)
    out = tmp_path / "new" / "sub" / "q.json"  # the run ended in FileNotFoundError after the whole evaluation
    args = ["quality", "--url", "127.0.0.1:9", "--questions", str(questions), "--json", str(out)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["recall"] == {"search": {"recall@1": 1.0}}

    real = output.write_atomic
    monkeypatch.setattr(output, "write_atomic", lambda path, write: real(path, _full_disk))
    out.unlink()
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cannot write" in result.output and "No space left" in result.output and not out.exists()


def test_the_quality_cli_exits_1_when_a_question_failed_and_writes_the_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import tritonforge.quality as quality
    from tritonforge.cli import app

    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "?", "passage": "p", "key_fact": "f"}\n')
    report = quality.QualityReport(questions=2, key_fact=1.0, cites_passage=0.0, passage_given=1.0,
                                   answers=[{"id": "a"}], failures=[{"id": "b", "error": "model 'rag' is gone", "pipeline": "rag"}])
    monkeypatch.setattr(quality, "evaluate", lambda *a, **k: report)
    out = tmp_path / "q.json"
    result = CliRunner().invoke(
        app, ["quality", "--url", "127.0.0.1:9", "--questions", str(questions), "--json", str(out)],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert "b (rag): model 'rag' is gone" in result.output and "1 of 2 question(s) failed" in result.output
    data = json.loads(out.read_text())
    assert data["failed"] == 1 and data["failures"] == [{"id": "b", "error": "model 'rag' is gone", "pipeline": "rag"}]
