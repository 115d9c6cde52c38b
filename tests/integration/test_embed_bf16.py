"""cpu_quantization bf16 on a real tritonserver: examples/embed.yaml's model built with bfloat16 weights on the
runner's PyTorch engine, served, and compared over gRPC with the fp32 build (the shared `embed_server`)."""

from __future__ import annotations

import concurrent.futures as cf
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tritonforge.clients import Client

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "embed.yaml"
TEXTS = [
    "Hi.",
    "Triton Inference Server batches requests dynamically.",
    "A considerably longer sentence, with several clauses and punctuation, makes the padded batch much wider "
    "than the shortest item in it.",
    "Where is the nearest train station?",
    "Quantum computers use qubits, which can represent both zero and one at the same time.",
    "short one",
    "The committee postponed its decision until the auditors had reviewed every invoice from last year.",
    "Ünïcödé text — with accents, dashes and emoji 🚀 — must embed too.",
]


@pytest.fixture(scope="module")
def bf16_server(tmp_path_factory: pytest.TempPathFactory, minilm_checkpoint: Path) -> Iterator[object]:
    from tritonforge.build import build
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"]["minilm"]["cpu_quantization"] = "bf16"
    repo = tmp_path_factory.mktemp("embed-bf16") / "model_repository"
    report = build(parse_spec(data, EXAMPLE.parent), repo, target="cpu")
    (artifact,) = report.artifacts
    assert (artifact.kind, artifact.precision) == ("torch-encoder", "bf16")
    assert artifact.quantization_gate is not None and artifact.quantization_gate["mean_cosine"] >= 0.99
    server = TritonServer(repo)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_bf16_embeddings_match_the_fp32_build(bf16_server, embed_server) -> None:  # type: ignore[no-untyped-def]
    with Client(embed_server.endpoints.grpc) as client:
        want = client.embed(TEXTS)
    with Client(bf16_server.endpoints.grpc) as client:
        alone = client.embed(TEXTS)
        # one text per request, 8 in flight: the dynamic batcher groups them and the runner sorts their rows
        with cf.ThreadPoolExecutor(8) as pool:
            batched = np.concatenate(list(pool.map(lambda t: client.embed([t]), TEXTS)))
    for got in (alone, batched):
        assert got.shape == want.shape and got.dtype == np.float32
        cosines = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
        assert float(cosines.min()) >= 0.999, cosines
    log = bf16_server.log_text()
    loaded = r"loaded engine torch on cpu, precision bf16 \(weights torch\.bfloat16\), \d+ intra-op threads"
    assert re.search(loaded, log), log[-3000:]
    assert "call cost fitted at load" in log and "pinned to cores" in log
