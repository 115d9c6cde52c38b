"""Triton python-backend models shipped by tritonforge.

Each sub-folder holds one `model.py` (and, where a model is too large for one file, the modules it loads from
next to itself, e.g. `cpu_llm/cpu_llm_engine.py`) copied verbatim into a repository's version folder. They import
only what a Triton container has (numpy, triton_python_backend_utils) plus the runtime they wrap, never
tritonforge itself, so a repository built here also runs in an NGC container.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

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

# The PyPI distributions each model imports beyond numpy and triton_python_backend_utils (which every Triton python
# backend has): what its serving image must have installed. onnx_runner's depend on its `engine` parameter.
PACKAGES: dict[str, tuple[str, ...]] = {
    "tokenizer": ("tokenizers",),
    "onnx_runner": ("onnxruntime",),
    "retriever": ("faiss-cpu",),
    "pair_tokenizer": ("tokenizers",),
    "rerank_select": (),
    "cpu_llm": ("torch", "transformers", "pyyaml", "peft"),
    "trtllm_llmapi": ("tensorrt-llm", "pyyaml"),
    "llm_preprocessing": ("transformers", "jinja2"),  # + torch for bf16 LoRA weights, which only gpu images send
    "llm_postprocessing": ("transformers",),
    "llm_bls": (),
    "rag_prompt": ("transformers", "jinja2"),
    "rag_generate": (),
}
# Modules several shipped models load from next to their model.py. The source keeps one copy in shared/; sources()
# writes it into the version folder of each model listed here (a folder is copied alone into a repository, and a
# Triton container has no tritonforge to import it from).
SHARED_DIR = HERE / "shared"
SHARED: dict[str, tuple[str, ...]] = {
    "onnx_runner": ("cores",), "cpu_llm": ("cores", "request_metrics"), "retriever": ("cores",),
    "rag_prompt": ("control_tokens",), "llm_preprocessing": ("control_tokens",), "trtllm_llmapi": ("request_metrics",),
    "rag_generate": ("rag_answer", "bls_retired"), "rag_bls": ("rag_answer", "bls_retired"),
    "llm_bls": ("bls_retired",),
}
ENGINE_PACKAGES = {"onnxruntime": ("onnxruntime",), "torch": ("torch", "transformers")}  # onnx_runner's engines


def installed_versions() -> dict[str, str]:
    """{distribution: the version installed here} of what the shipped models import: the build records them, and
    `deploy k8s`'s Dockerfile pins to them wherever it runs (a deploy-only CI job has none of them installed)."""
    from importlib import metadata

    found = {}
    for dist in sorted({d for dists in (*PACKAGES.values(), *ENGINE_PACKAGES.values()) for d in dists}):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return found


def shipped_model(version_dir: Path) -> str | None:
    """Which shipped model a repository's version folder holds (its model.py compared byte for byte with this
    tritonforge's); None: not one, or one another tritonforge version shipped (the build records the name:
    ``python_models`` in tritonforge.json)."""
    path = version_dir / "model.py"
    return shipped_name(path.read_bytes()) if path.is_file() else None


def shipped_name(model_py: bytes) -> str | None:
    """The shipped model whose model.py these bytes are; None: not one of this tritonforge's."""
    return next((name for name in MODELS if (HERE / name / "model.py").read_bytes() == model_py), None)


def packages(name: str, parameters: dict[str, str]) -> tuple[str, ...]:
    """The distributions shipped model ``name`` imports when configured with ``parameters``."""
    if name == "onnx_runner":
        return ENGINE_PACKAGES.get(parameters.get("engine", "onnxruntime"), ())
    return PACKAGES[name]


def sources(name: str) -> dict[str, bytes]:
    """Every file a shipped model needs in its version folder: ``{"model.py": ..., "<module>.py": ...}``."""
    source(name)  # the unknown-name error
    files = {path.name: path.read_bytes() for path in (HERE / name).glob("*.py")}
    files.update({f"{module}.py": (SHARED_DIR / f"{module}.py").read_bytes() for module in SHARED.get(name, ())})
    return dict(sorted(files.items()))


def source(name: str) -> bytes:
    """The exact bytes of a shipped model.py (a KeyError-like ValueError names the known ones)."""
    if name not in MODELS:
        raise ValueError(f"unknown python backend model '{name}'; known: {', '.join(MODELS)}")
    return (HERE / name / "model.py").read_bytes()


def load_module(name: str, module: str) -> ModuleType:
    """Import one of shipped model ``name``'s sibling modules (e.g. ``onnx_runner``'s ``torch_engine``) in this
    process, from its file, as the server will: builders run it to check what they ship."""
    path = HERE / name / f"{module}.py"
    if module in SHARED.get(name, ()):
        path = SHARED_DIR / f"{module}.py"
    if name not in MODELS or not path.is_file():
        raise ValueError(f"python backend model '{name}' has no module '{module}'")
    spec = importlib.util.spec_from_file_location(f"_tritonforge_shipped_{name}_{module}", path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded
