"""The CLI's console piped (not a terminal): tables keep every cell whole, rules keep a terminal's width; `release
list` as a table and as JSON; the build table's quantization-gate column for every model kind."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table
from typer.testing import CliRunner

from tritonforge.cli import app
from tritonforge.cli_output import RULE_WIDTH, CliConsole


def _printed(monkeypatch: pytest.MonkeyPatch, columns: str | None = None) -> list[str]:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    out = io.StringIO()  # not a terminal
    console = CliConsole(file=out, markup=False, soft_wrap=True)
    table = Table(title="/srv/" + "deep/" * 40 + "model_repository")
    table.add_column("path")
    table.add_row("/models/" + "x" * 300 + "/1/model.onnx")
    console.print(table)
    console.rule("next step")
    return out.getvalue().splitlines()


def test_a_piped_table_is_as_wide_as_its_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _printed(monkeypatch)
    text = "\n".join(lines)
    assert "…" not in text
    assert "/srv/" + "deep/" * 40 + "model_repository" in text and "x" * 300 + "/1/model.onnx" in text
    assert len(lines[-1]) == RULE_WIDTH and "next step" in lines[-1]  # not a 100 000-character line


def test_columns_still_decides_the_width_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _printed(monkeypatch, "60")
    assert max(len(ln) for ln in lines if ln.startswith(("┏", "└", "─"))) <= 60  # the user's choice: Rich's folding


# ------------------------------------------------------------------------------------- `tritonforge release list`

SCORER = """name: "scorer"
backend: "python"
max_batch_size: 8
input { name: "X" data_type: TYPE_FP32 dims: 4 }
output { name: "Y" data_type: TYPE_FP32 dims: 4 }
"""


def _scorer(root: Path, weights: bytes) -> Path:
    (root / "scorer" / "1").mkdir(parents=True)
    (root / "scorer" / "1" / "weights.bin").write_bytes(weights)
    (root / "scorer" / "1" / "model.py").write_text("# model\n")
    (root / "scorer" / "config.pbtxt").write_text(SCORER)
    return root


def _long_repo(tmp_path: Path) -> Path:
    """A repository at a path far wider than 80 columns: version 2 serving (1 the rollback target), evaluated."""
    deep = tmp_path / ("a-rather-long-folder-name-of-a-team-share" * 3) / "model_repository_for_the_release_tests"
    serving, new = _scorer(deep, b"old"), _scorer(tmp_path / "new", b"new")
    scores = tmp_path / "eval.json"
    scores.write_text('{"accuracy": 0.93, "recall_at_10": 0.8125, "notes": "measured on the held-out set of 2024"}')
    runner = CliRunner()
    added = runner.invoke(app, ["release", "add", "--repo", str(serving), "--from", str(new), "--eval", str(scores)])
    assert added.exit_code == 0, added.output
    assert runner.invoke(app, ["release", "promote", "scorer", "2", "--repo", str(serving)]).exit_code == 0
    return serving


def test_release_list_piped_keeps_every_cell_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rich printed a non-terminal at 80 columns: the path in the title and the cells ended in "…"
    serving = _long_repo(tmp_path)
    monkeypatch.delenv("COLUMNS", raising=False)
    result = CliRunner().invoke(app, ["release", "list", "--repo", str(serving)])
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    assert str(serving) in result.output
    assert '"notes": "measured on the held-out set of 2024", "recall_at_10": 0.8125}' in result.output
    row = next(ln for ln in result.output.splitlines() if "scorer" in ln and " 2 " in ln)
    assert "yes" in row and " 1 " in row  # serving, rollback to 1: one line per version, not wrapped


def test_release_list_json_has_one_object_per_version(tmp_path: Path) -> None:
    serving = _long_repo(tmp_path)
    result = CliRunner().invoke(app, ["release", "list", "--repo", str(serving), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["model"], r["version"], r["serving"], r["pinned"], r["rollback_to"]) for r in rows] == [
        ("scorer", 1, False, False, None),
        ("scorer", 2, True, False, 1),
    ]
    assert set(rows[0]) == {"model", "version", "serving", "pinned", "rollback_to", "built", "content",
                            "artifact_keys", "evaluation"}
    new = rows[1]
    assert new["evaluation"] == {"accuracy": 0.93, "notes": "measured on the held-out set of 2024", "recall_at_10": 0.8125}
    assert new["built"] and len(new["content"]) == 64  # the whole hash


def test_release_list_content_is_each_version_folders_own_hash_not_the_artifact_key(tmp_path: Path) -> None:
    """`content` showed the build cache's artifact key when the lineage had one: v1..v4 with different files
    showed the same value (day-two audit). Now it is the folder's hash; the key is `artifact_keys`."""
    from tritonforge.lineage import LINEAGE_FILE, version_content_hash

    key = "ab" * 32
    serving = _scorer(tmp_path / "serving", b"v1")
    for version, weights in enumerate((b"v2", b"v3"), start=2):
        new = _scorer(tmp_path / f"new{version}", weights)
        (new / "scorer" / "1" / LINEAGE_FILE).write_text(json.dumps({"artifacts": [{"content_hash": key}]}))
        added = CliRunner().invoke(app, ["release", "add", "--repo", str(serving), "--from", str(new)])
        assert f"added scorer version {version}" in added.output, added.output
    (serving / "scorer" / "1" / LINEAGE_FILE).write_text(json.dumps({"artifacts": [{"content_hash": key}]}))
    result = CliRunner().invoke(app, ["release", "list", "--repo", str(serving), "--json"])
    rows = json.loads(result.output)
    assert [r["content"] for r in rows] == [version_content_hash(serving / "scorer" / str(v)) for v in (1, 2, 3)]
    assert len({r["content"] for r in rows}) == 3  # version 1 (no hash recorded) is read from its files
    assert [r["artifact_keys"] for r in rows] == [[key]] * 3
    table = CliRunner().invoke(app, ["release", "list", "--repo", str(serving)], env={"COLUMNS": "300"}).output
    for row in rows:
        line = next(ln for ln in table.splitlines() if f" {row['version']} " in ln and "scorer" in ln)
        assert row["content"][:12] in line and key[:12] in line
    assert "artifact keys" in table


def test_release_list_through_a_real_pipe(tmp_path: Path) -> None:
    serving = _long_repo(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    command = [sys.executable, "-m", "tritonforge.cli", "release", "list", "--repo", str(serving)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    assert str(serving) in out and "…" not in out and "recall_at_10" in out
    listed = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, check=True).stdout
    assert [r["version"] for r in json.loads(listed)] == [1, 2]


@pytest.mark.parametrize("quantization", ["int8", "bf16"])
def test_build_prints_a_reduced_rerankers_gate(tiny_cross_encoder: Path, tmp_path: Path, quantization: str) -> None:
    """The build table's "vs fp32" column took every gate for an embedding model's (mean_cosine, ...): a reduced
    reranker's (max_abs_score_diff) made `tritonforge build` end in a KeyError after the build had succeeded."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"name: rr\nmodels:\n  rr:\n    kind: reranker\n    checkpoint: {tiny_cross_encoder}\n"
        f"    max_batch_size: 4\n    cpu_quantization: {quantization}\n    max_quantized_diff: 10\n"
    )
    result = CliRunner().invoke(app, ["build", str(spec), "-o", str(tmp_path / "out"), "--target", "cpu"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert re.search(r"max \|Δ score\| \d\.\d\de[-+]\d\d over 10 pairs", result.output), result.output


def test_the_log_handler_follows_stderr_after_the_stream_it_began_with_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """configure_logging under one stderr (a CLI test's), then records once that stream is closed: each printed
    "--- Logging error ---" and a stack in CI's output instead of the record."""
    import logging

    from tritonforge.cli_gateway import configure_logging

    first, second = io.StringIO(), io.StringIO()
    ours = logging.getLogger("tritonforge")
    monkeypatch.setattr(ours, "handlers", list(ours.handlers))  # restored after the test
    monkeypatch.setattr(ours, "level", ours.level)
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("info")
    logging.getLogger("tritonforge.server").info("ready in %.1fs", 1.5)
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("tritonforge.server").info("ready in %.1fs", 2.5)
    assert "INFO tritonforge.server: ready in 2.5s" in second.getvalue()
    assert "Logging error" not in second.getvalue()
