"""Retrieval and reranking inside Triton: search equals brute force, reranker equals PyTorch, bad input is clear."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonforge.clients import AsyncClient, Client
from tritonforge.errors import ClientError

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUERIES = [
    "how do I speed up inference on a GPU",
    "when did the Berlin wall come down",
    "what makes thunder",
    "a simple recipe for bread",
]


@pytest.fixture(scope="module")
def rag_repo(demo_repo: Path) -> Path:
    """examples/rag.yaml as the demo builds it (a tiny random cross-encoder stands in: none can be downloaded)."""
    return demo_repo


@pytest.fixture(scope="module")
def rag_server(rag_repo: Path) -> Iterator[object]:
    from tritonforge.server import TritonServer

    with TritonServer(rag_repo) as server:
        yield server


def _brute_force(rag_repo: Path, queries: list[str], k: int) -> list[list[str]]:
    """Exact inner-product search in numpy over the index's own vectors, queries embedded in-process."""
    import json

    import faiss

    from tritonforge.builders.onnx_encoder import load_artifact
    from tritonforge.builders.retrieval import onnx_encode_fn

    folder = rag_repo / "passages_retriever" / "1"
    index = faiss.read_index(str(folder / "index.faiss"))
    vectors = index.reconstruct_n(0, index.ntotal)
    ids = [json.loads(line)["id"] for line in (folder / "docstore.jsonl").read_text().splitlines()]
    manifest = json.loads((folder / "manifest.json").read_text())
    from tritonforge.builders.checkpoints import default_cache_dir

    encoder = load_artifact(default_cache_dir() / "onnx-encoder" / manifest["embedder_hash"])
    q = onnx_encode_fn(encoder)(queries)
    scores = q @ vectors.T
    return [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in scores]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_search_equals_brute_force(rag_server, rag_repo: Path, protocol: str) -> None:
    url = rag_server.endpoints.grpc if protocol == "grpc" else rag_server.endpoints.http
    with Client(url, protocol=protocol) as client:
        hits = client.search(QUERIES, top_k=5)
    want = _brute_force(rag_repo, QUERIES, 5)
    assert [[h.id for h in row] for row in hits] == want
    for row in hits:
        scores = [h.score for h in row]
        assert scores == sorted(scores, reverse=True)
        assert all(h.text for h in row)
    assert hits[0][0].id.startswith("serving-")


def test_top_k_default_clamp_and_errors(rag_server) -> None:
    with Client(rag_server.endpoints.grpc) as client:
        assert [len(r) for r in client.search(["bread"])] == [10]  # default_top_k from the spec
        assert [len(r) for r in client.search(["bread"], top_k=1000)] == [100]  # max_top_k
        with pytest.raises(ClientError, match=r"top_k must be an integer in \[1, 2147483647\], got 0"):
            client.search(["bread"], top_k=0)
        import tritonclient.grpc as grpcclient

        q = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
        q.set_data_from_numpy(np.array([[b"bread"]], dtype=object))
        k = grpcclient.InferInput("TOP_K", [1, 1], "INT32")
        k.set_data_from_numpy(np.array([[0]], dtype=np.int32))
        with pytest.raises(ClientError, match="TOP_K must be >= 1, got 0"):
            client._call("search", 10, lambda t: t.infer("search", [q, k]))
        assert len(client.search(["still serving"], top_k=2)[0]) == 2


def test_reranker_scores_equal_pytorch(rag_server) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    passages = ["GPUs run many kernels in parallel.", "Bread needs flour, water, salt and yeast.", "Thunder."]
    with Client(rag_server.endpoints.grpc) as client:
        got = client.rerank("why are GPUs fast", passages)
    from tritonforge.builders.checkpoints import resolve_checkpoint

    tiny_cross_encoder = resolve_checkpoint("random:cross-encoder")  # examples/rag.yaml's explicit stand-in
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder, local_files_only=True).eval()
    with torch.no_grad():
        want = [model(**tok("why are GPUs fast", p, return_tensors="pt", truncation=True)).logits[0, 0].item()
                for p in passages]
    assert got.shape == (3,)
    assert float(np.abs(got - np.array(want)).max()) <= 1e-4


def test_concurrent_reranks_batched_together_score_as_each_alone(rag_server) -> None:
    """The runner scores the pairs of every request in a batch sorted by length, in calls of their own width: each
    request must still get its own candidates' scores, in its order, as when it is served alone."""
    from concurrent.futures import ThreadPoolExecutor

    words = ["GPUs", "run", "many", "kernels", "in", "parallel", "while", "bread", "needs", "flour", "water", "salt",
             "and", "yeast"]
    rng = np.random.default_rng(7)
    asks = [(QUERIES[i % 4], [" ".join(rng.choice(words, size=n)) for n in rng.integers(1, 40, size=c)])
            for i, c in enumerate((1, 3, 7, 12, 2, 9, 5, 16))]
    with Client(rag_server.endpoints.grpc) as client:
        alone = [client.rerank(q, ps) for q, ps in asks]

    def ask(item: tuple[str, list[str]]) -> np.ndarray:
        with Client(rag_server.endpoints.grpc) as own:
            return own.rerank(*item)

    with ThreadPoolExecutor(len(asks)) as pool:
        for _ in range(3):
            together = list(pool.map(ask, asks))
            for got, want in zip(together, alone, strict=True):
                assert got.shape == want.shape
                assert float(np.abs(got - want).max()) <= 1e-4


def test_a_rerank_of_512_passages_scores_each_pair_as_in_small_requests(rag_server) -> None:
    """The gateway's largest rerank (512 documents) runs in calls of at most 16 pairs (max_rows_per_call), not one
    [1, 512, width] call; every pair's score is the one it gets in a request of 64."""
    rng = np.random.default_rng(11)
    words = ["thunder", "follows", "lightning", "because", "heated", "air", "expands", "suddenly", "bread", "rises"]
    passages = [" ".join(rng.choice(words, size=n)) for n in rng.integers(1, 120, size=512)]
    with Client(rag_server.endpoints.grpc) as client:
        whole = client.rerank("what makes thunder", passages)
        parts = np.concatenate([client.rerank("what makes thunder", passages[i : i + 64]) for i in range(0, 512, 64)])
    assert whole.shape == (512,)
    assert float(np.abs(whole - parts).max()) <= 1e-4


def test_search_with_reranking_keeps_the_best_top_n(rag_server) -> None:
    with Client(rag_server.endpoints.grpc) as client:
        candidates = client.search(QUERIES[:2], top_k=8)
        reranked = client.search(QUERIES[:2], top_k=8, rerank=True, top_n=3)
        for query, cands, best in zip(QUERIES[:2], candidates, reranked, strict=True):
            scores = client.rerank(query, [h.text for h in cands])
            order = np.argsort(-scores, kind="stable")[:3]
            assert [h.id for h in best] == [cands[i].id for i in order]
            assert np.allclose([h.score for h in best], scores[order], atol=1e-4)
        assert [len(r) for r in client.search(["bread"], rerank=True)] == [3]  # default_top_n


def test_async_client_search(rag_server) -> None:
    import asyncio

    from tritonforge.clients import AsyncClient

    async def go() -> list:
        async with AsyncClient(rag_server.endpoints.grpc) as client:
            return await client.search(QUERIES[:1], top_k=3)

    assert len(asyncio.run(go())[0]) == 3


def test_more_queries_than_the_pipeline_batches_go_as_several_requests(rag_server) -> None:
    """Found by a RAG audit: Client.search sent every query as one request, and 65 were refused (max_batch_size 64)
    where Client.embed splits."""
    queries = [f"question number {i} about rivers and GPUs" for i in range(70)]
    with Client(rag_server.endpoints.grpc) as client:
        limit = client.max_batch_size("search")
        assert 0 < limit < len(queries)
        many = client.search(queries, top_k=3)
        assert len(many) == len(queries)
        assert [[h.id for h in hits] for hits in many[-3:]] == [[h.id for h in hits] for hits in
                                                              client.search(queries[-3:], top_k=3)]

    async def run() -> list[list[object]]:
        async with AsyncClient(rag_server.endpoints.grpc) as client:
            return await client.search(queries, top_k=3)

    assert [[h.id for h in hits] for hits in asyncio.run(run())] == [[h.id for h in hits] for hits in many]
