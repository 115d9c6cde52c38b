"""The gpu target's encoders where the serving image has no onnxruntime backend (every -trtllm-python-py3 image):
the python runner on PyTorch from the checkpoint, served by a real tritonserver here.

No GPU: the built repository is served with the encoders' instance groups switched to KIND_CPU (the only change,
made in this test), so the runner's torch engine runs on the CPU in float32. What only a GPU shows (CUDA placement,
fp16) is left to the `gpu` suite."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonforge.clients import Client

pytestmark = pytest.mark.integration

SENTENCES = [
    "Hi.",
    "Triton Inference Server batches requests dynamically.",
    "A considerably longer sentence, with several clauses and punctuation, makes the padded batch much wider "
    "than the shortest item in it.",
]
PASSAGES = ["GPUs run many kernels in parallel.", "Bread needs flour, water, salt and yeast.", "Thunder."]


@pytest.fixture(scope="module")
def torch_encoder_server(tmp_path_factory: pytest.TempPathFactory, minilm_checkpoint: Path) -> Iterator[object]:
    from tritonforge.build import build
    from tritonforge.config_io import read_config, render_config
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec
    from tritonforge.trtllm.images import default_image

    spec = parse_spec(
        {
            "name": "gpu-encoders",
            "target": "gpu",
            "image": default_image(),
            "models": {
                "minilm": {
                    "kind": "embedding",
                    "checkpoint": str(minilm_checkpoint),
                    "gpu_precision": "fp16",
                    "max_batch_size": 16,
                    "dynamic_batching": {"max_queue_delay_microseconds": 2000},
                },
                "ranker": {
                    "kind": "reranker",
                    "checkpoint": "random:cross-encoder",
                    "gpu_precision": "fp16",
                    "max_batch_size": 8,
                    "dynamic_batching": {"max_queue_delay_microseconds": 2000},
                },
            },
        }
    )
    repo = tmp_path_factory.mktemp("gpu_torch") / "model_repository"
    build(spec, repo)
    for name in ("minilm_encoder", "ranker_cross_encoder"):
        path = repo / name / "config.pbtxt"
        config = read_config(path)
        assert config.backend == "python" and config.parameters["engine"].string_value == "torch"
        for group in config.instance_group:
            assert group.kind == group.KIND_GPU
            group.kind = group.KIND_CPU
            del group.gpus[:]
        path.write_text(render_config(config))
    with TritonServer(repo) as server:  # started, and always stopped
        yield server


def test_embeddings_equal_the_onnx_path(torch_encoder_server, embed_server) -> None:  # type: ignore[no-untyped-def]
    """The torch engine embeds as the cpu target's model.onnx does, alone and batched with other lengths."""
    with Client(embed_server.endpoints.grpc) as onnx_client:
        want = onnx_client.embed(SENTENCES)
    with Client(torch_encoder_server.endpoints.grpc) as client, cf.ThreadPoolExecutor(3) as pool:
        alone = client.embed(SENTENCES)
        batched = list(pool.map(lambda s: client.embed([s])[0], SENTENCES * 4))
    assert alone.shape == want.shape and alone.dtype == np.float32
    assert float(np.abs(alone - want).max()) <= 1e-4
    assert float(np.abs(np.stack(batched) - np.concatenate([want] * 4)).max()) <= 1e-4


def test_reranker_scores_equal_pytorch(torch_encoder_server) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tritonforge.builders.checkpoints import resolve_checkpoint

    checkpoint = resolve_checkpoint("random:cross-encoder")
    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, local_files_only=True).eval()
    with torch.no_grad():
        want = [
            model(**tok("why are GPUs fast", p, return_tensors="pt", truncation=True)).logits[0, 0].item()
            for p in PASSAGES
        ]
    with Client(torch_encoder_server.endpoints.grpc) as client, cf.ThreadPoolExecutor(2) as pool:
        got = client.rerank("why are GPUs fast", PASSAGES)
        # requests with different candidate counts batched together: each gets its own scores back
        many = list(pool.map(lambda n: client.rerank("why are GPUs fast", PASSAGES[:n]), [1, 2, 3] * 3))
    assert got.shape == (3,)
    assert float(np.abs(got - np.array(want)).max()) <= 1e-4
    for scores in many:
        assert float(np.abs(scores - np.array(want[: len(scores)])).max()) <= 1e-4
