"""Which NGC Triton image serves a gpu repository, and what it can run.

The image decides the LLM path: TensorRT-LLM removed its TensorRT engine backend (``trtllm-build``, the C++
``tensorrtllm`` Triton backend, ``inflight_batcher_llm``) in July 2026, so only images up to 26.07 (TensorRT-LLM
1.2.x) can serve the engine path, and only images from 25.09 (TensorRT-LLM 1.0, the first release with the LLM API
tritonforge's llmapi model uses) serve the LLM API path. The table is data
(``tritonforge/trtllm/data/trtllm_templates.json`` ``containers``: TensorRT-LLM and TensorRT per tag, whether the
image ships the ``tensorrtllm`` backend, where its TensorRT-LLM examples live, and how each row was verified).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from tritonforge.trtllm.params import templates

REPOSITORY = "nvcr.io/nvidia/tritonserver"
FLAVOUR = "-trtllm-python-py3"
KNOWN_FLAVOURS = ("-py3", FLAVOUR, "-vllm-python-py3", "-pyt-python-py3")  # NVIDIA's (IMAGE_BACKENDS below)
# NVIDIA's other tritonserver flavours (the SDK, the build base, Jetson/IGX, the retired TensorFlow one): real tags
# whose contents this table does not follow, so not mistaken for a misspelt known flavour
OTHER_NVIDIA_FLAVOURS = ("-py3-sdk", "-py3-min", "-py3-igpu", "-py3-igpu-sdk", "-py3-igpu-min", "-tf2-python-py3")
_TAG = re.compile(r"(?:^|:)(\d{2}\.\d{2})(-[A-Za-z0-9.-]+)?$")


def image_name_problem(image: str, *, pullable: bool = False) -> str | None:
    """A serving image must name its tag (``…/tritonserver:<yy.mm>-<flavour>``, or a custom build's own tag):
    without one the release, and so every check made against it, is a guess. Checks accept an NGC tag alone
    (``24.12-trtllm-python-py3``); what a pod pulls (``pullable``) must be a whole name."""
    if not isinstance(image, str):
        return f"{image!r} is not an image name (a str): give a tagged image, e.g. {default_image()}"
    name = image.rsplit("/", 1)[-1]
    if not pullable and image_release(image) is not None:
        return _misspelt_flavour(image)
    if not image or any(c.isspace() for c in image) or ":" not in name or name.endswith(":"):
        return f"{image!r}: give a tagged image, e.g. {default_image()}"
    return _misspelt_flavour(image)


def _misspelt_flavour(image: str) -> str | None:
    """NVIDIA's tag with a flavour one typo from a known one ('26.07-trtlm-python-py3'). Such an image does not
    exist, and taken as an unknown flavour it changed what was built (an encoder on ONNX Runtime, which the intended
    -trtllm-python-py3 image cannot load) without a word. Other repositories' tags are their own."""
    parts = tag_parts(image)
    if parts is None or not parts[1] or parts[2] not in ("", REPOSITORY):
        return None
    release, flavour, _ = parts
    if flavour in KNOWN_FLAVOURS or flavour in OTHER_NVIDIA_FLAVOURS:
        return None
    near = difflib.get_close_matches(flavour, KNOWN_FLAVOURS, n=1, cutoff=0.85)
    if not near:
        return None
    return (f"{without_digest(image)!r}: NVIDIA publishes no tritonserver flavour {flavour!r}; did you mean "
            f"{release}{near[0]}? (flavours tritonforge checks against: {', '.join(KNOWN_FLAVOURS)})")


def tag_parts(image: str) -> tuple[str, str, str] | None:
    """(yy.mm, the flavour as written ('' for none), the repository ('' for a bare tag)) of an NGC-style tag, its
    digest aside; None for another tag."""
    image = without_digest(image)
    found = _TAG.search(image)
    if not found:
        return None
    name = image.rsplit("/", 1)[-1]
    return found.group(1), found.group(2) or "", image.rsplit(":", 1)[0] if ":" in name else ""


def image_release(image: str) -> tuple[str, str] | None:
    """(yy.mm, flavour) of an NGC-style tag (flavour '' when absent or not known), or None for another tag.

    An image in another repository is taken as built FROM an NGC one (deploy's Dockerfile, pushed to the user's
    registry): '26.07-trtllm-python-py3-faiss' is the -trtllm-python-py3 flavour plus what was added, and a flavour
    that extends none ('26.07-1') is not known (''), as a bare release is."""
    parts = tag_parts(image)
    if parts is None:
        return None
    release, flavour, repository = parts
    if repository and repository != REPOSITORY and flavour not in KNOWN_FLAVOURS:
        flavour = max((f for f in KNOWN_FLAVOURS if flavour.startswith(f"{f}-")), key=len, default="")
    return release, flavour


def without_digest(image: str) -> str:
    """``image`` without its ``@sha256:...`` digest: ``repo:tag@digest`` is pulled by the digest, its tag names the
    release (a digest after the tag hid it, and every check against the release was skipped)."""
    return image.strip().split("@", 1)[0]


def container_rows() -> dict[str, dict[str, Any]]:
    """yy.mm -> {tensorrt_llm, tensorrt, engine_backend, examples_dir, verified, ...}."""
    return templates()["containers"]["tags"]


def image_of(release: str) -> str:
    return f"{REPOSITORY}:{release}{FLAVOUR}"


def default_image() -> str:
    """The newest image the table knows (it serves the LLM API path, the default runtime)."""
    return image_of(max(container_rows()))


def newest_engine_image() -> str:
    """The newest image that still ships TensorRT-LLM's engine backend."""
    return image_of(max(tag for tag, row in container_rows().items() if row.get("engine_backend", True)))


@dataclass(frozen=True)
class ImageInfo:
    image: str
    release: str  # yy.mm
    flavour: str  # '-trtllm-python-py3', or '' when the reference has none
    row: dict[str, Any] | None  # None: a release the table does not know

    @property
    def tensorrt_llm(self) -> str | None:
        return None if self.row is None else str(self.row["tensorrt_llm"])

    @property
    def engine_backend(self) -> bool | None:
        """True when the image ships the tensorrtllm (C++ engine) backend; None when unknown."""
        return None if self.row is None else bool(self.row.get("engine_backend", True))

    @property
    def examples_dir(self) -> str:
        """Where the image keeps TensorRT-LLM's examples (conversion scripts)."""
        return str((self.row or {}).get("examples_dir", "/app/examples"))


def image_info(image: str) -> ImageInfo | None:
    """Parse '26.07', '26.07-trtllm-python-py3' or a full reference; None when no yy.mm release can be read."""
    parsed = image_release(image)
    if parsed is None:
        return None
    release, flavour = parsed
    return ImageInfo(image, release, flavour, container_rows().get(release))


# What each NGC flavour ships in /opt/tritonserver/backends. Sources: the NGC release notes and Triton maintainers'
# answers (triton-inference-server/server issues #7346, #6708, #8342: the -trtllm-python-py3 images have only the
# TensorRT-LLM and python backends; #7445: -pyt-python-py3 has pytorch and python; #6991: 24.02-py3 shipped without
# onnxruntime). They were not listed inside a container here.
_FULL = frozenset(  # the full image (-py3): every backend NVIDIA builds into it
    {
        "dali",
        "fil",
        "identity",
        "onnxruntime",
        "openvino",
        "python",
        "pytorch",
        "repeat",
        "square",
        "tensorflow",
        "tensorrt",
    }
)
IMAGE_BACKENDS: dict[str, frozenset[str]] = {
    "-py3": _FULL,
    FLAVOUR: frozenset({"python", "tensorrtllm"}),
    "-vllm-python-py3": frozenset({"python", "vllm"}),
    "-pyt-python-py3": frozenset({"python", "pytorch"}),
}
_MISSING = {("24.02", "onnxruntime")}  # releases whose full image lacks a backend (issue #6991)


# Python distributions an image's python backend can import beyond numpy. The trtllm images install TensorRT-LLM with
# its requirements (NVIDIA/TensorRT-LLM requirements.txt @ 000867d9b1ad62f3de1e54e111c094da492a5626: torch,
# transformers (-> tokenizers, pyyaml), peft; jinja2 comes with torch); the full -py3 image has numpy only.
IMAGE_PACKAGES: dict[str, frozenset[str]] = {
    "-py3": frozenset(),
    FLAVOUR: frozenset({"tensorrt-llm", "torch", "transformers", "tokenizers", "pyyaml", "peft", "jinja2"}),
    "-vllm-python-py3": frozenset({"vllm", "torch", "transformers", "tokenizers", "pyyaml", "jinja2"}),
    "-pyt-python-py3": frozenset({"torch", "jinja2"}),
}


def image_packages(image: str | None) -> frozenset[str] | None:
    """The Python distributions (normalised names) ``image`` ships; None when the image is not known."""
    info = image_info(image) if image else None
    if info is None or info.flavour not in IMAGE_PACKAGES:
        return None
    return IMAGE_PACKAGES[info.flavour]


def image_backends(image: str | None) -> frozenset[str] | None:
    """The backends ``image`` ships; None when the image (or its flavour) is not known."""
    info = image_info(image) if image else None
    if info is None or info.flavour not in IMAGE_BACKENDS:
        return None
    backends = set(IMAGE_BACKENDS[info.flavour])
    if info.flavour == FLAVOUR and info.engine_backend is False:
        backends.discard("tensorrtllm")  # TensorRT-LLM removed its engine backend (module docstring)
    backends -= {name for release, name in _MISSING if release == info.release}
    return frozenset(backends)


def runtime_problems(image: str, runtime: str) -> list[str]:
    """Why ``image`` cannot serve an LLM of ``runtime`` ('llmapi' | 'engine'); empty when it can (or is unknown
    in a way the user must check: those cases are notes, see ``image_notes``)."""
    info = image_info(image)
    if info is None:
        return [f"cannot read a release from image {image!r}: expected {REPOSITORY}:<yy.mm>{FLAVOUR}"]
    if info.flavour and info.flavour != FLAVOUR:
        return [f"{image} has no TensorRT-LLM: serve LLMs with {image_of(info.release)} (the {FLAVOUR[1:]} flavour)"]
    if runtime == "engine" and info.engine_backend is False:
        return [
            f"runtime 'engine' needs an image that still ships TensorRT-LLM's tensorrtllm backend (TensorRT engines); "
            f"{image} ships TensorRT-LLM {info.tensorrt_llm}, which removed it: use runtime 'llmapi' (the default), "
            f"or image {newest_engine_image()} for the engine path"
        ]
    if runtime == "llmapi" and (problem := _llmapi_release_problem(info)):
        return [problem]
    if runtime == "engine" and info.row is None:
        return [
            f"runtime 'engine': {image} is not in tritonforge's image table (known: {min(container_rows())} to "
            f"{max(container_rows())}), so whether it ships TensorRT-LLM's tensorrtllm backend is not known: "
            f"TensorRT-LLM removed that backend in July 2026, and no image after {max(container_rows())} is "
            f"listed with its TensorRT-LLM release; use runtime 'llmapi' (the default), or image "
            f"{newest_engine_image()} for the engine path"
        ]
    return []


def release_tuple(version: str) -> tuple[int, ...]:
    """'1.0.3.2510' -> (1, 0, 3), '0.17.0.post1' -> (0, 17, 0): the release a TensorRT-LLM version string names."""
    return tuple(int(n) for n in re.findall(r"\d+", version.split("post")[0])[:3])


def first_llmapi_image() -> str:
    """The oldest image in the table whose TensorRT-LLM the LLM API path runs on."""
    from tritonforge.trtllm.llmapi import llmapi_minimum

    floor = release_tuple(llmapi_minimum())
    return image_of(min(t for t, row in container_rows().items() if release_tuple(str(row["tensorrt_llm"])) >= floor))


def _llmapi_release_problem(info: ImageInfo) -> str | None:
    """runtime 'llmapi' on an image whose TensorRT-LLM predates the 1.x LLM API tritonforge's model.py and
    model.yaml use (``minimum_release`` in trtllm_llmapi.json): such builds used to pass, and the model failed at
    Triton's load or at its first adapter request. An image the table does not know is not judged here."""
    from tritonforge.trtllm.llmapi import llmapi_minimum

    if info.tensorrt_llm is None or release_tuple(info.tensorrt_llm) >= release_tuple(llmapi_minimum()):
        return None
    return (
        f"runtime 'llmapi' needs TensorRT-LLM {llmapi_minimum()} or later (its LLM API with the PyTorch backend, "
        f"which tritonforge's model.py and model.yaml use); {info.image} ships TensorRT-LLM {info.tensorrt_llm}: "
        f"use image {first_llmapi_image()} or later (the default is {default_image()}), or runtime 'engine' on "
        f"this image"
    )


def driver_note(image: str) -> str | None:
    """The host driver an image needs (the table's ``cuda``/``cuda_driver``, from compatibility.md); None when the
    image's release is not in the table. Nothing here can see the GPU nodes' driver, so it is said, not checked:
    with an older driver the image's CUDA fails at the first GPU call, after the pull and Triton's start."""
    info = image_info(image)
    row = info.row if info is not None else None
    if info is None or row is None or "cuda_driver" not in row:
        return None
    return (
        f"{without_digest(image)} is built on CUDA {row['cuda']}: its GPU nodes need NVIDIA driver "
        f"{row['cuda_driver']} or later (Triton's compatibility matrix for {info.release}; NVIDIA's release notes "
        "for that release name the older driver branches data center GPUs may use through CUDA forward "
        "compatibility)"
    )
