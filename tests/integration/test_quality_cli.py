"""`tritonforge quality` against a real Triton serving the demo build (examples/rag.yaml with the tiny random
decoder): what the quality/bench audit found when a question fails and when the JSON goes to a new folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rag_server(demo_repo: Path) -> Iterator[object]:
    from tritonforge.server import TritonServer

    with TritonServer(demo_repo) as server:
        yield server


def test_a_failed_question_is_recorded_and_the_json_goes_to_a_new_folder(rag_server, tmp_path: Path) -> None:
    """A question too long for the context discarded the whole run; --json into a folder that did not exist yet
    crashed with FileNotFoundError after the whole evaluation."""
    rows = [json.loads(line) for line in (ROOT / "examples" / "data" / "questions.jsonl").read_text().splitlines()[:3]]
    rows.insert(1, {**rows[0], "id": "too-long", "question": " ".join([rows[0]["question"]] * 60)})
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "new" / "sub" / "quality.json"
    url = rag_server.endpoints.grpc  # type: ignore[attr-defined]
    result = subprocess.run(
        [sys.executable, "-m", "tritonforge.cli", "quality", "--url", url,
         "--questions", str(questions), "--max-tokens", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert "failed too-long (rag): model 'rag': the prompt does not fit" in text
    assert "1 of 4 question(s) failed" in text
    data = json.loads(out.read_text())
    assert data["failed"] == 1 and [f["id"] for f in data["failures"]] == ["too-long"]
    assert [a["id"] for a in data["answers"]] == [rows[0]["id"], rows[2]["id"], rows[3]["id"]]
    assert data["passage_given"] == 1.0 and data["key_fact"] is not None
    # the reranker ranked more candidates than it keeps (it only reordered search's 5 before)
    assert data["rerank_candidates"] == 10 and set(data["recall"]) == {"search", "search_rerank"}
