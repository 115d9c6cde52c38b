"""python_backends/rerank_select: the reranked candidates, best first, TOP_N of them (fake pb_utils, no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fake_pb_utils import Request, initialize_args, load_model

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "rerank_select" / "model.py"


@pytest.fixture()
def model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    module = load_model(MODEL_PY, monkeypatch)
    m = module.TritonPythonModel()
    m.initialize(initialize_args({"name": "select", "max_batch_size": 8,
                                  "parameters": {"default_top_n": {"string_value": "2"}}}, tmp_path))
    return m


def candidates(scores: list[float]) -> Request:
    n = len(scores)
    return Request(CANDIDATE_IDS=np.array([[f"d{i}".encode() for i in range(n)]], dtype=object),
                   CANDIDATE_DOCUMENTS=np.array([[f"text {i}".encode() for i in range(n)]], dtype=object),
                   RERANK_SCORES=np.array([scores], np.float32))


def test_the_best_come_first_and_a_nan_score_is_refused(model: Any) -> None:
    """Scores [0.5, NaN, 0.9] came back in the order given, 0.9 not first: NaN compares false (robustness audit)."""
    good, bad = model.execute([candidates([0.5, 0.2, 0.9]), candidates([0.5, float("nan"), 0.9])])
    assert not good.has_error()
    out = {t.name(): t.as_numpy() for t in good.output_tensors()}
    assert out["DOC_IDS"].tolist() == [[b"d2", b"d0"]]
    assert bad.has_error() and "RERANK_SCORES[0] holds NaN" in bad.error().message()
    np.testing.assert_allclose(out["SCORES"], [[0.9, 0.5]])
