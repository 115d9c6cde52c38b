"""Which backend library Triton loads for a model, and whether the target image has it.

Triton core (``src/backend_model.cc`` at a3599d1e: ``GetBackendLibraryProperties``, ``GetBackendRuntimeLibraryName``)
searches, in order, the model's version folder, the model folder and ``<backend dir>/<backend>/`` for
``libtriton_<backend>.so``; failing that it looks for a python-based backend, ``<backend dir>/<backend>/model.py``. A
``runtime`` field names the library instead: ``model.py`` makes the model use a python-based backend (then
``libtriton_python.so`` and ``<backend dir>/<backend>/model.py`` must exist), any other name is looked up in the same
three folders and may not leave the folder it is found in.

What an image ships in ``/opt/tritonserver/backends`` is data kept with the images (``tritonforge.trtllm.images``:
``IMAGE_BACKENDS``, ``image_backends``), where the builders read it too.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from tritonforge.trtllm.images import IMAGE_BACKENDS, image_backends

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

__all__ = ["KNOWN_BACKENDS", "backend_library_rules", "image_backends"]

BACKEND_DIR = "/opt/tritonserver/backends"  # Triton's default --backend-directory (the NGC images use it)
PYTHON_FILENAME = "model.py"  # a python-based backend's entry point (core's kPythonFilename)

# python-based backends (a model.py in <backend dir>/<name>/, run by the python backend)
PYTHON_BASED = frozenset({"vllm"})
# every backend some NGC image ships: without a target image, a backend outside it cannot be found either
KNOWN_BACKENDS = frozenset().union(*IMAGE_BACKENDS.values())


def _shipped(backend: str, image: str | None) -> bool | None:
    """Whether the image's backend folder has ``backend``; None when that cannot be known."""
    known = image_backends(image)
    if known is not None:
        return backend in known
    if image:  # an image whose flavour is not in the table: anything may be installed
        return None
    return backend in KNOWN_BACKENDS


def _in_model_dir(model_dir: Path, versions: list[int], libname: str) -> bool:
    folders = [model_dir / str(v) for v in versions[:1]] + [model_dir]
    return any((folder / libname).is_file() for folder in folders)


def backend_library_rules(config: ModelConfig, model_dir: Path, versions: list[int], image: str | None) -> list[str]:
    """Core's backend library resolution: the escape rule, unknown backends, libraries that cannot exist."""
    backend = config.backend
    if not backend or config.platform == "ensemble":
        return []
    runtime = config.runtime
    if runtime:
        return _runtime_rules(config, model_dir, versions, image)
    libname = f"libtriton_{backend}.so"
    if _in_model_dir(model_dir, versions, libname):
        return []
    if _shipped(backend, image) is False:
        hint = (
            f" (image {image} ships: {', '.join(sorted(image_backends(image) or []))})"
            if image
            else (" (no NGC tritonserver image ships it; pass --image for a custom image)")
        )
        return [
            f"unable to find backend library for backend '{backend}', try specifying runtime on the model "
            f"configuration.{hint}"
        ]
    return []


def _runtime_rules(config: ModelConfig, model_dir: Path, versions: list[int], image: str | None) -> list[str]:
    backend, runtime, name = config.backend, config.runtime, config.name
    base = posixpath.join(BACKEND_DIR, backend)
    if runtime == PYTHON_FILENAME:  # a python-based backend: model.py under <backend dir>/<backend>/
        if backend in PYTHON_BASED:
            return []
        if _shipped(backend, image) is None:
            return []
        path = posixpath.join(base, PYTHON_FILENAME)
        return [
            f"unable to find Python backend based backend library '{runtime}' for model '{name}', searched: '{path}'"
        ]
    resolved = posixpath.normpath(posixpath.join(base, runtime))
    if resolved != base and not resolved.startswith(base + "/"):
        return [
            f"backend library name '{runtime}' escapes backend directory '{base}', for model '{name}', check "
            "model config runtime field"
        ]
    if _in_model_dir(model_dir, versions, runtime):
        return []
    # the image's backend folder holds libtriton_<backend>.so; other names cannot be known offline
    if runtime == f"libtriton_{backend}.so" and _shipped(backend, image) is False:
        version = str(versions[0]) if versions else "1"
        searched = "".join(f"'{p}' " for p in (model_dir / version, model_dir, base))
        return [f"unable to find backend library '{runtime}' for model '{name}', searched: {searched}"]
    return []
