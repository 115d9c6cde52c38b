"""Shared by the benchmarks in tests/bench: the embedding bench module, whose helpers the others reuse, and the
probes' rotated rounds and records.

pytest's importlib mode gives tests/bench no package, so a bench cannot import another; tests/ is on sys.path
(tests/conftest.py), so this module can, once, for all of them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any


@functools.cache
def embed_bench() -> ModuleType:
    """tests/bench/test_embed_throughput.py as a module (loaded once, registered as an import would be)."""
    path = Path(__file__).parent / "bench" / "test_embed_throughput.py"
    spec = importlib.util.spec_from_file_location("_tritonforge_bench_embed", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # registered before it runs, as an import would
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------ probes' rounds


def rotated(names: Sequence[str], round_index: int) -> list[str]:
    """``names`` starting at ``round_index``'s place: each variant leads a round in turn, so no fixed order favours
    one while the host's speed drifts during a run."""
    k = round_index % len(names)
    return [*names[k:], *names[:k]]


def medians(rows: Mapping[str, Mapping[str, Sequence[Mapping[str, float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{variant: {load: [one row of figures per round]}}`` -> ``{variant: {load: {figure: median of the rounds}}}``."""
    return {
        variant: {load: {k: statistics.median(row[k] for row in runs) for k in runs[0]} for load, runs in by_load.items()}
        for variant, by_load in rows.items()
    }


def write_result(file_name: str, result: dict[str, Any], shown: Sequence[str]) -> None:
    """``result`` as docs/bench/<file_name> (the probe's record, with its command and machine); prints ``shown``."""
    (Path(__file__).resolve().parents[1] / "docs" / "bench" / file_name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in shown}, indent=2))
