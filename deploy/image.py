"""A serving image with the Python packages the repository's python models import (a Dockerfile), when the image
given to `deploy k8s` is known to lack some.

NGC images carry only what their flavour needs (tritonforge/trtllm/images.py ``IMAGE_PACKAGES``): the
-trtllm-python-py3 images have torch and transformers but not faiss (the retriever) or onnxruntime; the full -py3
image has numpy only. A pod on such an image would fail to load those models, so `deploy k8s` writes the recipe of one
that has them, pinned to the versions the build recorded (installed where it ran: the versions its checks ran with),
else to those installed where deploy runs.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from tritonforge import python_backends
from tritonforge.build_manifest import read_build_manifest
from tritonforge.config_io import read_config
from tritonforge.trtllm.images import REPOSITORY, image_packages

DOCKERFILE = "Dockerfile"


def _normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def missing_packages(repo: Path, image: str) -> dict[str, list[str]]:
    """{distribution: [models that import it]} for what ``image`` lacks; empty when it has all, or is not known.
    Only NVIDIA's own images are known: an image built FROM one (in another repository) may have added anything."""
    ngc = "/" not in image or image.startswith(f"{REPOSITORY}:")
    shipped = image_packages(image) if ngc else None
    if shipped is None:
        return {}
    missing: dict[str, list[str]] = {}
    for config, name in _python_models(repo):
        if name is None:
            continue
        params = {k: v.string_value for k, v in config.parameters.items()}
        for dist in python_backends.packages(name, params):
            if _normalise(dist) not in shipped and config.name not in missing.setdefault(dist, []):
                missing[dist].append(config.name)
    return missing


def unknown_python_models(repo: Path) -> list[str]:
    """Python models whose packages cannot be told: not recorded by the build and not this tritonforge's model.py
    (hand-written, or built by a tritonforge too old to record them)."""
    return sorted({config.name for config, name in _python_models(repo) if name is None})


def _python_models(repo: Path) -> list[tuple[Any, str | None]]:
    """(config, shipped model name or None) of every python-backend version folder: the name the build recorded
    in tritonforge.json (``python_models``), else the model.py matched byte for byte with this tritonforge's."""
    recorded = (read_build_manifest(repo) or {}).get("python_models") or {}
    found = []
    for config_path in sorted(repo.glob("*/config.pbtxt")):
        config = read_config(config_path)
        if config.backend != "python":
            continue
        for version_dir in sorted(p for p in config_path.parent.iterdir() if p.is_dir() and p.name.isdigit()):
            name = recorded.get(config.name) if isinstance(recorded, dict) else None
            if name not in python_backends.MODELS:
                name = python_backends.shipped_model(version_dir)
            found.append((config, name))
    return found


# PyTorch publishes its CPU and per-CUDA builds (versions with a local label: 2.13.0+cpu) on its own index only
PYTORCH_INDEX = "https://download.pytorch.org/whl/{label}"
PYTORCH_DISTS = {"torch", "torchvision", "torchaudio"}


def _pinned(dist: str, recorded: dict[str, str]) -> tuple[str, str | None]:
    """The pin of ``dist`` at the version the build recorded (else the one installed here), and the package index it
    needs besides PyPI (None: PyPI has it). PyPI hosts no local versions ("+cpu"): PyTorch's builds come from
    PyTorch's index, and any other local build is pinned to its public version."""
    version = recorded.get(dist) if isinstance(recorded.get(dist), str) else None
    if version is None:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            return dist, None
    public, _, label = version.partition("+")
    if not label:
        return f"{dist}=={version}", None
    if _normalise(dist) in PYTORCH_DISTS:
        return f"{dist}=={version}", PYTORCH_INDEX.format(label=label)
    return f"{dist}=={public}", None


def image_recipe(repo: Path, image: str) -> tuple[str, str] | None:
    """(Dockerfile text, a one-line note) when ``image`` lacks packages the repository imports; None otherwise."""
    missing = missing_packages(repo, image)
    if not missing:
        return None
    recorded = (read_build_manifest(repo) or {}).get("package_versions")
    pinned = [_pinned(dist, recorded if isinstance(recorded, dict) else {}) for dist in sorted(missing)]
    indexes = sorted({index for _pin, index in pinned if index})
    pins = " ".join([*(f"--extra-index-url {index}" for index in indexes), *(pin for pin, _index in pinned)])
    why = "".join(f"#   {dist}: {', '.join(models)}\n" for dist, models in sorted(missing.items()))
    text = (
        f"# {image} lacks Python packages this repository's python models import:\n{why}"
        "# Build and push this image, then deploy with it: tritonforge deploy k8s ... --image <its tag>\n"
        f"FROM {image}\n"
        f"RUN python3 -m pip install --no-cache-dir {pins}\n"
    )
    note = f"{image} lacks {', '.join(sorted(missing))}: build {DOCKERFILE} and deploy that image instead"
    return text, note
