"""python_backends/tokenizer/model.py outside Triton: ids equal transformers', long texts are cut fast and the same."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_pb_utils import Request, initialize_args, load_model, strings

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "tokenizer" / "model.py"
MAX_LEN = 32


@pytest.fixture()
def model(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    repo = tmp_path / "tok"
    (repo / "1" / "tokenizer").mkdir(parents=True)
    shutil.copy(tiny_bert / "tokenizer.json", repo / "1" / "tokenizer" / "tokenizer.json")
    config = {
        "name": "tok",
        "parameters": {
            "max_seq_length": {"string_value": str(MAX_LEN)},
            "model_input_names": {"string_value": "input_ids,attention_mask,token_type_ids"},
            "max_text_bytes": {"string_value": str(1 << 20)},
        },
    }
    instance = load_model(MODEL_PY, monkeypatch, "tokenizer_under_test").TritonPythonModel()
    instance.initialize(initialize_args(config, repo))
    return instance


def _ids(response: Any) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def test_ids_equal_transformers_with_truncation(model: Any, tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    texts = ["the cat sat on the mat", "a much longer sentence " * 40]
    (response,) = model.execute([Request(TEXT=strings([[t] for t in texts]))])
    out = _ids(response)
    for row, text in enumerate(texts):
        want = tok(text, truncation=True, max_length=MAX_LEN)["input_ids"]
        got = out["input_ids"][row][out["attention_mask"][row] == 1].tolist()
        assert got == want
    assert out["TRUNCATED"].reshape(-1).tolist() == [False, True]
    assert out["NUM_TOKENS"].reshape(-1).tolist()[1] == MAX_LEN


def test_a_long_text_is_cut_before_tokenizing_and_keeps_the_same_tokens(model: Any, tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    text = "the quick brown fox jumps over the lazy dog. " * 20000  # ~900 KB
    t0 = time.perf_counter()
    (response,) = model.execute([Request(TEXT=strings([[text]]))])
    took = time.perf_counter() - t0
    out = _ids(response)
    assert out["input_ids"][0].tolist() == tok(text[:5000], truncation=True, max_length=MAX_LEN)["input_ids"]
    assert bool(out["TRUNCATED"][0, 0])
    assert took < 1.0, f"tokenizing a ~900 KB text took {took:.2f} s"


def test_texts_over_the_byte_limit_are_refused_alone(model: Any) -> None:
    huge = "x " * (1 << 20)
    good, bad = model.execute([Request(TEXT=strings([["fine"]])), Request(TEXT=strings([[huge]]))])
    assert not good.has_error()
    assert bad.has_error() and "at most 1048576" in bad.error().message()
    # fewer characters than the limit, more bytes: it was let through (only the character count was compared)
    (wide,) = model.execute([Request(TEXT=strings([["é" * 600_000]]))])
    assert wide.has_error() and "TEXT[0] is 1200000 bytes; at most 1048576" in wide.error().message()
