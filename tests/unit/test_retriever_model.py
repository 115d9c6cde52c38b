"""python_backends/retriever/model.py run OUTSIDE Triton, over the fake `triton_python_backend_utils` in
tests/fake_pb_utils.py. Real-Triton integration tests live in tests/integration."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from fake_pb_utils import InferenceResponse, Request, TritonError, load_model

from tritonforge.builders.corpus import Passage
from tritonforge.builders.index import IndexSettings, build_index

MODEL_PY = Path(__file__).resolve().parents[2] / "python_backends" / "retriever" / "model.py"
EMBEDDER = "sha256:test-embedder"
DIM = 8
N_DOCS = 12


# ------------------------------------------------------------------------------------------------ fixtures


def unit_vectors(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


VECTORS = unit_vectors(N_DOCS, seed=0)
DOCS = [Passage(id=f"doc-{i:02d}", text=f"text of passage {i}", metadata={}) for i in range(N_DOCS)]


@pytest.fixture()
def module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return load_model(MODEL_PY, monkeypatch, "retriever_model_under_test")


@pytest.fixture(autouse=True)
def _restore_faiss_threads() -> Any:
    before = faiss.omp_get_max_threads()
    yield
    faiss.omp_set_num_threads(before)


def make_repo(tmp_path: Path, settings: IndexSettings | None = None) -> Path:
    artifact = build_index(DOCS, VECTORS, settings or IndexSettings(), embedder_hash=EMBEDDER, cache_dir=tmp_path / "cache")
    version = tmp_path / "repo" / "retriever" / "1"
    version.mkdir(parents=True)
    for name, path in artifact.files.items():
        shutil.copy(path, version / name)
    return version.parent


def model_config(dims: list[int] | None = None, **params: str) -> dict[str, Any]:
    params = {"embedder_hash": EMBEDDER, "default_top_k": "3", "max_top_k": "5", **params}
    return {
        "name": "retriever",
        "backend": "python",
        "max_batch_size": 16,
        "input": [
            {"name": "QUERY_EMBEDDING", "data_type": "TYPE_FP32", "dims": dims or [DIM]},
            {"name": "TOP_K", "data_type": "TYPE_INT32", "dims": [1], "optional": True},
        ],
        "output": [
            {"name": "DOC_IDS", "data_type": "TYPE_STRING", "dims": [-1]},
            {"name": "SCORES", "data_type": "TYPE_FP32", "dims": [-1]},
            {"name": "DOCUMENTS", "data_type": "TYPE_STRING", "dims": [-1]},
        ],
        "dynamic_batching": {},
        "instance_group": [{"count": 1, "kind": "KIND_CPU"}],
        "parameters": {k: {"string_value": v} for k, v in params.items()},
    }


def load(module: types.ModuleType, repo: Path, config: dict[str, Any] | None = None) -> Any:
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(config or model_config()),
            "model_instance_kind": "CPU",
            "model_instance_name": "retriever_0_0",
            "model_instance_device_id": "0",
            "model_repository": str(repo),
            "model_version": "1",
            "model_name": "retriever",
        }
    )
    return model


@pytest.fixture()
def model(module: types.ModuleType, tmp_path: Path) -> Any:
    return load(module, make_repo(tmp_path))


def request(queries: np.ndarray, top_k: list[int] | None = None) -> Request:
    inputs = {"QUERY_EMBEDDING": np.asarray(queries, dtype=np.float32)}
    if top_k is not None:
        inputs["TOP_K"] = np.array(top_k, dtype=np.int32).reshape(-1, 1)
    return Request(**inputs)


def outputs(response: InferenceResponse) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def error_of(response: InferenceResponse) -> str:
    assert response.has_error() and not response.output_tensors()
    assert response.error().code() == TritonError.INVALID_ARG
    return response.error().message()


def exact_top(queries: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(queries @ VECTORS.T), axis=1)[:, :k]


class CountingIndex:
    """Wraps the model's faiss index to count search calls."""

    def __init__(self, index: Any) -> None:
        self.index, self.calls = index, []

    def search(self, x: np.ndarray, k: int) -> Any:
        self.calls.append((x.shape, k))
        return self.index.search(x, k)


# ----------------------------------------------------------------------------------------------------- tests


def test_batched_requests_are_searched_in_one_call_and_cut_per_request(model: Any) -> None:
    model.index = counting = CountingIndex(model.index)
    queries = [unit_vectors(2, 1), unit_vectors(1, 2), unit_vectors(3, 3)]
    responses = model.execute([request(queries[0]), request(queries[1], top_k=[5]), request(queries[2], top_k=[2, 2, 2])])
    assert counting.calls == [((6, DIM), 5)]
    for q, k, response in zip(queries, (3, 5, 2), responses, strict=True):
        out = outputs(response)
        assert set(out) == {"DOC_IDS", "SCORES", "DOCUMENTS"}
        assert out["DOC_IDS"].shape == out["SCORES"].shape == out["DOCUMENTS"].shape == (len(q), k)
        assert out["DOC_IDS"].dtype == np.object_ and out["SCORES"].dtype == np.float32
        assert all(a.flags.c_contiguous for a in out.values())
        expected = exact_top(q, k)
        assert out["DOC_IDS"].tolist() == [[DOCS[i].id.encode() for i in row] for row in expected]
        assert out["DOCUMENTS"].tolist() == [[DOCS[i].text.encode() for i in row] for row in expected]
        np.testing.assert_allclose(out["SCORES"], np.take_along_axis(q @ VECTORS.T, expected, axis=1), atol=1e-5)


def test_top_k_is_clamped_to_max_top_k_and_to_the_corpus(module: types.ModuleType, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    q = unit_vectors(1, 4)
    small_max = load(module, repo)  # max_top_k 5
    assert outputs(small_max.execute([request(q, top_k=[100])])[0])["DOC_IDS"].shape == (1, 5)
    big_max = load(module, repo, model_config(max_top_k="1000", default_top_k="50"))
    out = outputs(big_max.execute([request(q, top_k=[100])])[0])
    assert out["DOC_IDS"].shape == (1, N_DOCS)  # the whole corpus, best first
    assert out["DOC_IDS"][0].tolist() == [DOCS[i].id.encode() for i in exact_top(q, N_DOCS)[0]]
    assert outputs(big_max.execute([request(q)])[0])["DOC_IDS"].shape == (1, N_DOCS)  # default_top_k too


def test_mixed_top_k_in_one_request_pads_the_shorter_rows(model: Any) -> None:
    q = unit_vectors(3, 5)
    out = outputs(model.execute([request(q, top_k=[1, 4, 2])])[0])
    assert out["DOC_IDS"].shape == (3, 4)
    expected = exact_top(q, 4)
    for row, k in enumerate((1, 4, 2)):
        assert out["DOC_IDS"][row, :k].tolist() == [DOCS[i].id.encode() for i in expected[row, :k]]
        assert out["DOC_IDS"][row, k:].tolist() == [b""] * (4 - k)
        assert out["DOCUMENTS"][row, k:].tolist() == [b""] * (4 - k)
        assert np.isfinite(out["SCORES"][row, :k]).all() and np.isnan(out["SCORES"][row, k:]).all()


def test_one_top_k_applies_to_every_item_of_the_request(model: Any) -> None:
    out = outputs(model.execute([request(unit_vectors(3, 6), top_k=[2])])[0])
    assert out["DOC_IDS"].shape == (3, 2) and b"" not in out["DOC_IDS"].ravel().tolist()


@pytest.mark.parametrize("bad_k", [0, -3])
def test_top_k_below_one_fails_only_that_request(model: Any, bad_k: int) -> None:
    q = unit_vectors(2, 7)
    responses = model.execute([request(q), request(q, top_k=[2, bad_k]), request(q, top_k=[1, 1])])
    assert error_of(responses[1]) == f"TOP_K must be >= 1, got {bad_k}"
    assert outputs(responses[0])["DOC_IDS"].shape == (2, 3)
    assert outputs(responses[2])["DOC_IDS"].shape == (2, 1)


def test_bad_query_inputs_fail_only_their_request(model: Any) -> None:
    good = unit_vectors(1, 8)
    nan = good.copy()
    nan[0, 0] = np.nan
    responses = model.execute(
        [
            request(unit_vectors(2, 9)[:, :5]),  # wrong dim
            request(good),
            Request(TOP_K=np.array([[2]], dtype=np.int32)),  # no QUERY_EMBEDDING
            request(nan),
            request(np.vstack([good, good]), top_k=[1, 2, 3]),  # TOP_K count != batch
        ]
    )
    assert error_of(responses[0]) == f"QUERY_EMBEDDING must have shape [batch, {DIM}] (the index's dim), got [2, 5]"
    assert outputs(responses[1])["DOC_IDS"][0].tolist() == [DOCS[i].id.encode() for i in exact_top(good, 3)[0]]
    assert "missing input 'QUERY_EMBEDDING'" in error_of(responses[2])
    assert "NaN or infinite" in error_of(responses[3])
    assert "TOP_K must hold one value per query (2)" in error_of(responses[4])


def test_all_requests_bad_makes_no_search(model: Any) -> None:
    model.index = counting = CountingIndex(model.index)
    responses = model.execute([request(unit_vectors(1, 1), top_k=[0])])
    assert "TOP_K must be >= 1" in error_of(responses[0]) and counting.calls == []


def test_embedder_hash_mismatch_is_refused_at_initialize(module: types.ModuleType, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    with pytest.raises(ValueError, match="refusing to serve") as err:
        load(module, repo, model_config(embedder_hash="sha256:another-embedder"))
    assert EMBEDDER in str(err.value) and "sha256:another-embedder" in str(err.value)
    with pytest.raises(ValueError, match="embedder_hash is required"):
        load(module, repo, model_config(embedder_hash=""))


def test_config_problems_are_refused_at_initialize(module: types.ModuleType, tmp_path: Path) -> None:
    repo = make_repo(tmp_path)
    with pytest.raises(ValueError, match=r"declares QUERY_EMBEDDING dims \[16\] but the index .* has dim 8"):
        load(module, repo, model_config(dims=[16]))
    with pytest.raises(ValueError, match=r"default_top_k \(10\) is larger than max_top_k \(5\)"):
        load(module, repo, model_config(default_top_k="10"))
    with pytest.raises(ValueError, match="max_top_k must be an integer >= 1, got 'many'"):
        load(module, repo, model_config(max_top_k="many"))
    (repo / "1" / "docstore.jsonl").write_text('{"id": "x", "text": "y", "metadata": {}}\n')
    with pytest.raises(ValueError, match="do not belong together"):
        load(module, repo)


def test_search_parameters_and_threads(module: types.ModuleType, tmp_path: Path) -> None:
    ivf_repo = make_repo(tmp_path / "ivf", IndexSettings(type="ivf", nlist=4, nprobe=2))
    assert faiss.extract_index_ivf(load(module, ivf_repo).index).nprobe == 2  # from the manifest
    assert faiss.extract_index_ivf(load(module, ivf_repo, model_config(nprobe="4")).index).nprobe == 4
    hnsw_repo = make_repo(tmp_path / "hnsw", IndexSettings(type="hnsw", ef_search=20))
    assert load(module, hnsw_repo).index.hnsw.efSearch == 20
    model = load(module, hnsw_repo, model_config(ef_search="33", faiss_threads="1"))
    assert model.index.hnsw.efSearch == 33 and faiss.omp_get_max_threads() == 1
    q = unit_vectors(2, 10)
    assert outputs(model.execute([request(q)])[0])["DOC_IDS"][:, 0].tolist() == [
        DOCS[i].id.encode() for i in exact_top(q, 1)[:, 0]
    ]


def test_slots_an_ivf_index_cannot_fill_are_padding(module: types.ModuleType, tmp_path: Path) -> None:
    # 12 lists for 12 vectors and nprobe 1: a query sees one small list, so most of its 5 slots stay empty (-1)
    repo = make_repo(tmp_path, IndexSettings(type="ivf", nlist=N_DOCS, nprobe=1))
    model = load(module, repo)
    out = outputs(model.execute([request(unit_vectors(4, 11), top_k=[5])])[0])
    ids, scores = out["DOC_IDS"], out["SCORES"]
    assert (ids == b"").any()
    assert np.array_equal(ids == b"", np.isnan(scores)) and np.array_equal(ids == b"", out["DOCUMENTS"] == b"")
    assert {i for i in ids.ravel().tolist() if i} <= {d.id.encode() for d in DOCS}
