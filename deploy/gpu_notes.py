"""Notes `deploy k8s` adds for a gpu repository: what the pods' nodes and memory need that nothing here can check
(the host's NVIDIA driver) or that the spec may have left at a default too small for the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# the files a Hugging Face checkpoint keeps its weights in (what LLM() reads into host memory before the GPUs)
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")


def checkpoint_weight_bytes(checkpoint: Path) -> int:
    """The size on disk of a checkpoint folder's weight files (0 when there are none)."""
    return sum(p.stat().st_size for pattern in WEIGHT_PATTERNS for p in checkpoint.rglob(pattern) if p.is_file())


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def memory_notes(repo: Path, info: dict[str, Any], memory: str) -> list[str]:
    """A note per LLM API model whose shipped checkpoint's weights are larger than the pod's memory limit: the LLM
    reads them through host memory while it loads, so such a pod is OOM-killed at its start and restarts without end.
    A note, not a refusal: the weights may be memory-mapped, and the limit is the operator's call."""
    from tritonforge.spec_deploy import quantity

    if info.get("target") != "gpu":
        return []
    limit = quantity(memory)
    notes = []
    for name, record in sorted((info.get("parallel") or {}).items()):
        if not isinstance(record, dict) or record.get("runtime") != "llmapi":
            continue
        # model_in_container: the checkpoint is not shipped, so its size is not known here
        folders = sorted(p for p in repo.glob(f"{name}/*/checkpoint") if p.is_dir())
        weights = max((checkpoint_weight_bytes(p) for p in folders), default=0)
        if weights > limit:
            notes.append(
                f"{name}: its checkpoint's weights are {_size(weights)} on disk, more than the pod's memory limit "
                f"deploy.memory {memory} ({_size(limit)}): the LLM reads them through host memory while it loads, so "
                "the pod may be OOM-killed at start; raise deploy.memory above the weights' size (plus Triton's own "
                "and /dev/shm's share)"
            )
    return notes


def driver_notes(info: dict[str, Any], image: str) -> list[str]:
    """The NVIDIA driver the pods' image needs on the GPU nodes (gpu repositories only)."""
    from tritonforge.trtllm.images import driver_note

    note = driver_note(image) if info.get("target") == "gpu" else None
    return [note] if note else []
