"""cpu_quantization bf16 for a reranker on a real tritonserver: examples/rag.yaml's cross-encoder (its random stand-in)
built twice into one repository, fp32 (`rerank`) and bf16 on the runner's PyTorch engine (`rerank_bf16`), served by
one Triton, and their scores and orderings compared over gRPC."""

from __future__ import annotations

import concurrent.futures as cf
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tritonforge.clients import Client

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "rag.yaml"
GATE = 0.05  # export_cross_encoder's default max_quantized_diff: what a bf16 reranker's scores may differ by
ASKS = [
    ("how do I speed up inference on a GPU", [
        "GPUs run many kernels in parallel.", "Bread needs flour, water, salt and yeast.", "Thunder.",
        "Batching requests keeps the GPU busy, and TensorRT fuses layers so each kernel does more work.",
        "The Berlin wall came down in 1989.", "Quantized weights move less memory per token.",
    ]),
    ("what makes thunder", [
        "Lightning heats the air so quickly that it expands with a bang.", "Sourdough rises slowly.",
        "Thunder follows lightning because sound travels slower than light.", "Yes.",
    ]),
    ("a simple recipe for bread", ["Mix flour, water, salt and yeast; knead, rise, bake.", "no", "Ovens heat."]),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonforge.build import build
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    reranker = yaml.safe_load(EXAMPLE.read_text())["models"]["reranker"]
    models = {"reranker": reranker, "reranker_bf16": {**reranker, "cpu_quantization": "bf16", "ensemble": "rerank_bf16"}}
    repo = tmp_path_factory.mktemp("rerank-bf16") / "model_repository"
    report = build(parse_spec({"name": "rerank-bf16", "models": models}, EXAMPLE.parent), repo, target="cpu")
    fp32, bf16 = report.artifacts
    assert (fp32.kind, fp32.precision, fp32.quantization_gate) == ("onnx-cross-encoder", "fp32", None)
    assert (bf16.kind, bf16.precision) == ("torch-cross-encoder", "bf16")
    assert bf16.quantization_gate is not None and bf16.quantization_gate["max_abs_score_diff"] <= GATE
    with TritonServer(repo) as server:
        yield server


def test_bf16_rerank_scores_and_order_match_the_fp32_build(served: Any) -> None:
    server = served
    with Client(server.endpoints.grpc) as client:
        want = [client.rerank(q, ps) for q, ps in ASKS]
        alone = [client.rerank(q, ps, model="rerank_bf16") for q, ps in ASKS]

        def ask(item: tuple[str, list[str]]) -> np.ndarray:
            with Client(server.endpoints.grpc) as own:
                return own.rerank(*item, model="rerank_bf16")

        # in flight together: the dynamic batcher groups the queries and the runner scores their pairs sorted by length
        with cf.ThreadPoolExecutor(len(ASKS)) as pool:
            batched = list(pool.map(ask, ASKS))
    worst = 0.0
    for fp32, bf16, together in zip(want, alone, batched, strict=True):
        assert bf16.shape == fp32.shape and bf16.dtype == np.float32
        worst = max(worst, float(np.abs(bf16 - fp32).max()))
        assert float(np.abs(together - bf16).max()) <= 1e-2  # other call widths: bf16 rounding differs a little
        # the same order wherever fp32's scores are clearly apart (more than the differences bf16 may add on both)
        for i in range(len(fp32)):
            for j in range(len(fp32)):
                if fp32[i] - fp32[j] > 2 * GATE:
                    assert bf16[i] > bf16[j], (i, j, fp32, bf16)
    assert 0 < worst <= GATE, worst  # bf16 is not fp32, and stays within the build's gate
    log = server.log_text()
    loaded = r"reranker_bf16_cross_encoder.* loaded engine torch on cpu, precision bf16 \(weights torch\.bfloat16\)"
    assert re.search(loaded, log), log[-3000:]
