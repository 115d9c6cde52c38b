"""Triton python-backend models shipped by tritonforge.

Each sub-folder holds one `model.py` (and, where a model is too large for one file, the modules it loads from
next to itself, e.g. `cpu_llm/cpu_llm_engine.py`) copied verbatim into a repository's version folder. They import
only what a Triton container has (numpy, triton_python_backend_utils) plus the runtime they wrap, never
tritonforge itself, so a repository built here also runs in an NGC container.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = (
    "tokenizer",
    "onnx_runner",
    "retriever",
    "pair_tokenizer",
    "rerank_select",
    "cpu_llm",
    "trtllm_llmapi",
    "llm_preprocessing",
    "llm_postprocessing",
    "llm_bls",
    "rag_prompt",
    "rag_generate",
)


def sources(name: str) -> dict[str, bytes]:
    """Every file a shipped model needs in its version folder: ``{"model.py": ..., "<module>.py": ...}``."""
    source(name)  # the unknown-name error
    return {path.name: path.read_bytes() for path in sorted((HERE / name).glob("*.py"))}


def source(name: str) -> bytes:
    """The exact bytes of a shipped model.py (a KeyError-like ValueError names the known ones)."""
    if name not in MODELS:
        raise ValueError(f"unknown python backend model '{name}'; known: {', '.join(MODELS)}")
    return (HERE / name / "model.py").read_bytes()
