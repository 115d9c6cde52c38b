"""What a build records at the repository's root (tritonforge.json) that later commands read back, kept free of
heavy imports: `deploy k8s` (the `deploy` extra) and `serve --gateway` (the `gateway` extra) both read it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MANIFEST_NAME = "tritonforge.json"  # at the repository's root: Triton ignores files there
GATEWAY_KINDS = ("chat", "embeddings", "rerank")
DEFAULT_ENGINE_MODEL = "tensorrt_llm"  # upstream's name of a chat ensemble's engine step


def read_build_manifest(repo: str | Path) -> dict[str, Any] | None:
    """The build's record of ``repo`` (a local folder), or None when there is none or it cannot be read: callers
    that need it say so in their own error class (deploy), the others go on without it."""
    try:
        data = json.loads((Path(repo) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def gateway_model_entries(info: Mapping[str, Any]) -> list[str]:
    """The `tritonforge gateway --model` values (kind:id=ensemble[@engine]) for the models the build recorded in
    ``gateway_models``; [] for a build that recorded none (an earlier tritonforge's) or has none to serve."""
    recorded = info.get("gateway_models")
    if not isinstance(recorded, Mapping):
        return []
    engines = recorded.get("engine_models") or {}
    entries = []
    for kind in GATEWAY_KINDS:
        for model_id, ensemble in (recorded.get(kind) or {}).items():
            engine = engines.get(model_id) if kind == "chat" else None
            at = f"@{engine}" if engine and engine != DEFAULT_ENGINE_MODEL else ""
            entries.append(f"{kind}:{model_id}={ensemble}{at}")
    return entries
