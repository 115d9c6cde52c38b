"""python_backends.PACKAGES (what each shipped model needs its serving image to have) matches what its files
import, and `deploy k8s` writes the recipe of an image that has it when the given image is known to lack some."""

from __future__ import annotations

import ast
import sys

from tritonforge import python_backends

# import name -> PyPI distribution, where they differ
DISTRIBUTION = {"faiss": "faiss-cpu", "yaml": "pyyaml", "tensorrt_llm": "tensorrt-llm"}
# imports a model makes only on a path its target image always satisfies (llm_preprocessing: bf16 LoRA weights on gpu)
OPTIONAL = {"llm_preprocessing": {"torch"}}


def _imports(name: str) -> set[str]:
    """What the files shipped for model ``name`` (its folder's and the shared modules it gets) import."""
    found: set[str] = set()
    for data in python_backends.sources(name).values():
        for node in ast.walk(ast.parse(data)):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {
        DISTRIBUTION.get(m, m) for m in found - set(sys.stdlib_module_names) - {"numpy", "triton_python_backend_utils"}
    }


def test_every_shipped_model_declares_exactly_what_it_imports() -> None:
    assert set(python_backends.PACKAGES) == set(python_backends.MODELS)
    for name in python_backends.MODELS:
        declared = set(python_backends.PACKAGES[name]) | OPTIONAL.get(name, set())
        if name == "onnx_runner":
            declared = {d for engine in python_backends.ENGINE_PACKAGES.values() for d in engine}
        assert _imports(name) == declared, name


def test_the_cores_module_has_one_source_shipped_to_each_model_that_sizes_threads() -> None:
    """Each model folder is copied alone into a repository: sources() writes the one shared cores.py into each."""
    shared = (python_backends.SHARED_DIR / "cores.py").read_bytes()
    for name in ("onnx_runner", "cpu_llm", "retriever"):
        assert python_backends.sources(name)["cores.py"] == shared, name
        assert not (python_backends.HERE / name / "cores.py").exists(), f"{name} keeps a copy of shared/cores.py"
        assert python_backends.load_module(name, "cores").available_cores() >= 1
    assert "cores.py" not in python_backends.sources("tokenizer")
    for name in python_backends.MODELS:
        text = (python_backends.HERE / name / "model.py").read_text()
        assert "os.cpu_count()" not in text, f"{name}/model.py sizes threads by the host's cores, not cores.py's"
