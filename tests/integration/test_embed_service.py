"""The embedding service end to end on a real tritonserver: MiniLM built by tritonforge, served on CPU."""

from __future__ import annotations

import concurrent.futures as cf
import time

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.errors import ClientError

pytestmark = pytest.mark.integration

SENTENCES = [
    "Hi.",
    "Triton Inference Server batches requests dynamically.",
    "A considerably longer sentence, with several clauses and punctuation, makes the padded batch much wider "
    "than the shortest item in it, which is exactly what a parity test needs.",
    "Ünïcödé text — with accents, dashes and emoji 🚀 — must embed too.",
    "short one",
]


def _reference(checkpoint, texts: list[str]) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Mean pooling + L2 normalisation computed directly with transformers, one sentence at a time."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = AutoModel.from_pretrained(checkpoint, local_files_only=True).eval()
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
            hidden = model(**enc).last_hidden_state[0]
            mask = enc["attention_mask"][0].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(0) / mask.sum(0)
            out.append(torch.nn.functional.normalize(pooled, dim=0).numpy())
    return np.stack(out)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_embeddings_equal_pytorch_reference(embed_server, minilm_checkpoint, protocol: str) -> None:
    url = embed_server.endpoints.grpc if protocol == "grpc" else embed_server.endpoints.http
    with Client(url, protocol=protocol) as client:
        got = client.embed(SENTENCES)
    want = _reference(minilm_checkpoint, SENTENCES)
    assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
    assert float(np.abs(got - want).max()) <= 1e-4


def test_dynamic_batching_happens_under_16_concurrent_requests(embed_server) -> None:
    import tritonclient.grpc as grpcclient

    stats_client = grpcclient.InferenceServerClient(embed_server.endpoints.grpc)

    def counts() -> tuple[int, int]:
        s = stats_client.get_inference_statistics("minilm_encoder", as_json=True)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s.get("execution_count", 0))  # JSON omits zeros

    before = counts()
    texts = [f"request {i}: concurrent sentences share one encoder execution" for i in range(16)]
    with Client(embed_server.endpoints.grpc) as client, cf.ThreadPoolExecutor(16) as pool:
        for _ in range(3):
            results = list(pool.map(lambda t: client.embed([t, t + " again"]), texts))
    assert all(r.shape == (2, 384) for r in results)
    # Triton records a model's statistics just after it hands the response on: poll briefly for the last ones
    deadline = time.monotonic() + 5
    while (after := counts())[0] - before[0] < 16 * 2 * 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == 16 * 2 * 3
    assert executions < inferences / 2, f"{executions} executions for {inferences} inferences: no batching"
    stats_client.close()


def test_requests_batched_together_get_the_embeddings_they_get_alone(embed_server) -> None:
    """The cpu runner regroups a dynamic batch's rows by length (python_backends/onnx_runner): each request's
    embeddings must not depend on its neighbours, their lengths or the order of rows."""
    sentence = "the quick brown fox jumps over a lazy dog near the quiet river bank at dawn"
    texts = [[sentence[: 8 + (13 * i) % 70], sentence[(3 * i) % 40 :]] for i in range(16)]
    with Client(embed_server.endpoints.grpc) as client:
        alone = [client.embed(pair) for pair in texts]
        with cf.ThreadPoolExecutor(16) as pool:
            together = list(pool.map(client.embed, texts))
    for got, want in zip(together, alone, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # where the runner cut those batches comes from a per-call cost each instance fitted on its own session at load
    fitted = [line for line in embed_server.log_text().splitlines() if "call cost fitted at load" in line]
    assert len(fitted) == 2, fitted  # examples/embed.yaml: two encoder instances


def _infer_raw(url: str, inputs) -> dict:  # type: ignore[no-untyped-def]
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as c:
        res = c.infer("embed", inputs)
        return {o: res.as_numpy(o) for o in ("EMBEDDING", "NUM_TOKENS", "TRUNCATED")}


def test_long_text_is_truncated_and_says_so(embed_server) -> None:
    import tritonclient.grpc as grpcclient

    long_text = " ".join(["tokens"] * 2000)
    data = np.array([[long_text.encode()], [b"short"]], dtype=object)
    inp = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
    inp.set_data_from_numpy(data)
    out = _infer_raw(embed_server.endpoints.grpc, [inp])
    assert out["TRUNCATED"].reshape(-1).tolist() == [True, False]
    assert out["NUM_TOKENS"].reshape(-1)[0] == 256


@pytest.mark.parametrize(
    ("texts", "fragment"),
    [
        ([""], "TEXT[0] is an empty string"),
        (["fine", "   "], "TEXT[1] is an empty string"),
    ],
)
def test_bad_text_gets_a_clear_error_and_server_keeps_serving(embed_server, texts, fragment) -> None:
    with Client(embed_server.endpoints.grpc) as client:
        with pytest.raises(ClientError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
            client.embed(texts)
        assert client.embed(["still serving"]).shape == (1, 384)


def test_malformed_requests_each_get_an_error(embed_server) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url = embed_server.endpoints.grpc

    def infer(name: str, shape: list[int], dtype: str, data: np.ndarray, model: str = "embed") -> str:
        inp = grpcclient.InferInput(name, shape, dtype)
        inp.set_data_from_numpy(data)
        with grpcclient.InferenceServerClient(url) as c, pytest.raises(InferenceServerException) as info:
            c.infer(model, [inp])
        return str(info.value)

    assert "not valid UTF-8" in infer("TEXT", [1, 1], "BYTES", np.array([[b"\xff\xfe bad"]], dtype=object))
    msg = infer("TEXT", [1, 1], "FP32", np.zeros((1, 1), np.float32))
    assert "data-type" in msg or "datatype" in msg.lower()
    assert "shape" in infer("TEXT", [1, 2], "BYTES", np.array([[b"a", b"b"]], dtype=object)).lower()
    assert "unknown model" in infer("TEXT", [1, 1], "BYTES", np.array([[b"a"]], dtype=object), model="nope").lower()
    # an empty batch never reaches the model: Triton refuses it with its own wording
    assert "got 0" in infer("TEXT", [0, 1], "BYTES", np.zeros((0, 1), dtype=object))
    # and the next good request succeeds
    with Client(url) as client:
        assert client.embed(["good request"]).shape == (1, 384)


def test_client_refuses_an_empty_batch_before_sending(embed_server) -> None:
    with Client(embed_server.endpoints.grpc) as client:
        with pytest.raises(ClientError, match="empty"):
            client.embed([])
        with pytest.raises(ClientError, match="list"):
            client.embed("a bare string")  # type: ignore[arg-type]


def test_http_errors_too(embed_server) -> None:
    with Client(embed_server.endpoints.http, protocol="http") as client:
        with pytest.raises(ClientError, match="empty string"):
            client.embed([""])
        with pytest.raises(ClientError, match="nope"):
            client.embed(["x"], model="nope")
        assert client.embed(["good"]).shape == (1, 384)
