"""Whether an engine can run in an image: the container table (TensorRT-LLM and TensorRT per NGC tag), the engine
manifest's name, and the checks of a manifest against an image and of settings against the GPUs given.

Spec-level facts the validator and deploy read (an engine's manifest travels inside the engine folder); the
builder writes the manifest (:mod:`tritonforge.builders.trtllm_engine`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from tritonforge.trtllm.engine_settings import EngineSettings
from tritonforge.trtllm.images import image_release
from tritonforge.trtllm.params import templates

MANIFEST_NAME = "engine_manifest.json"
MANIFEST_FORMAT = 1

_RELEASE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")


def container_table() -> dict[str, dict[str, str]]:
    """NGC tritonserver:<yy.mm>-trtllm-python-py3 -> its TensorRT-LLM and TensorRT versions (from the data file)."""
    return templates()["containers"]["tags"]


def _release(version: str) -> tuple[int, ...] | None:
    """'0.17.0.post1' -> (0, 17, 0): post, rc and build suffixes are ignored (the engine format is the release's)."""
    match = _RELEASE.match(str(version).strip().lstrip("v"))
    return tuple(int(g) for g in match.groups()) if match else None




def containers_shipping(tensorrt_llm_version: str) -> list[str]:
    """The known container tags whose TensorRT-LLM has the same release as ``tensorrt_llm_version``."""
    wanted = _release(tensorrt_llm_version)
    return [tag for tag, row in container_table().items() if wanted and _release(row["tensorrt_llm"]) == wanted]


def check_engine_manifest(
    manifest: dict[str, Any], container_tag: str, *, compute_capability: str | None = None
) -> list[str]:
    """Problems serving this engine with ``tritonserver:<container_tag>`` (empty when none are known).

    ``container_tag`` may be '24.12', '24.12-trtllm-python-py3' or a full image reference. ``compute_capability``
    (e.g. '8.0') is the serving GPU's, when known: TensorRT engines only run on the GPU architecture they were
    built for.
    """
    parsed = image_release(container_tag)
    if parsed is None:
        return [f"cannot read a release from container tag {container_tag!r}: expected <yy.mm>-trtllm-python-py3"]
    release, flavour = parsed
    image = f"tritonserver:{release}-trtllm-python-py3"
    if flavour and flavour != "-trtllm-python-py3":
        return [f"tritonserver:{release}{flavour} has no TensorRT-LLM backend: serve TensorRT-LLM engines with {image}"]
    problems: list[str] = []
    table = container_table()
    row = table.get(release)
    built = str(manifest.get("tensorrt_llm_version") or "")
    if not built:
        problems.append("the engine manifest records no tensorrt_llm_version (was the engine built by tritonforge?)")
    if row is None:
        known = sorted(table)
        problems.append(
            f"no TensorRT-LLM version is known for {image} (known: {known[0]} to {known[-1]}): check that "
            "release's notes before serving this engine with it"
        )
        return problems
    if built and _release(built) != _release(row["tensorrt_llm"]):
        same = containers_shipping(built)
        hint = f" (images with TensorRT-LLM {built}: {', '.join(same)})" if same else ""
        problems.append(
            f"engine built with TensorRT-LLM {built} but {image} ships {row['tensorrt_llm']}: rebuild the engine or "
            f"change the image{hint}"
        )
    trt = str(manifest.get("tensorrt_version") or "")
    if trt and trt != "unknown" and _release(trt) and _release(trt) != _release(row["tensorrt"]):
        problems.append(
            f"engine built with TensorRT {trt} but {image} ships TensorRT {row['tensorrt']}: TensorRT refuses "
            "engines serialized by another version; rebuild the engine or change the image"
        )
    cc = str(manifest.get("gpu_compute_capability") or "")
    if cc and compute_capability and cc != compute_capability:
        problems.append(
            f"engine built on a GPU of compute capability {cc} but the serving GPU has {compute_capability}: "
            "TensorRT engines are specific to the GPU architecture; rebuild on the serving GPU type"
        )
    minimum = (7, 5) if release >= "25.01" else (6, 0)  # release notes: 25.01+ support 7.5 and later, 24.xx 6.0
    capability = _cc(cc) if cc else None
    if capability is not None and capability < minimum:
        problems.append(
            f"{image} supports compute capability {minimum[0]}.{minimum[1]} and later; the engine's is {cc}"
        )
    return problems


def _cc(value: str) -> tuple[int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)$", value.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def gpus_needed(settings: EngineSettings, gpu_device_ids: Sequence[Sequence[int]] | None) -> list[str]:
    """tp × pp against the GPU ids each model instance is given (when given)."""
    problems = []
    for i, ids in enumerate(gpu_device_ids or []):
        if len(ids) != settings.world_size:
            problems.append(
                f"gpu_device_ids instance {i} lists {len(ids)} GPU(s) but the engine needs tp_size {settings.tp_size} "
                f"× pp_size {settings.pp_size} = {settings.world_size}"
            )
    return problems
