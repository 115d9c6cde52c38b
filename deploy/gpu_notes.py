"""Notes `deploy k8s` adds for a gpu repository: what the pods' nodes need that nothing here can check (the host's
NVIDIA driver)."""

from __future__ import annotations

from typing import Any


def driver_notes(info: dict[str, Any], image: str) -> list[str]:
    """The NVIDIA driver the pods' image needs on the GPU nodes (gpu repositories only)."""
    from tritonforge.trtllm.images import driver_note

    note = driver_note(image) if info.get("target") == "gpu" else None
    return [note] if note else []
