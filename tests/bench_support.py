"""Shared by the benchmarks in tests/bench: the embedding bench module, whose helpers the others reuse.

pytest's importlib mode gives tests/bench no package, so a bench cannot import another; tests/ is on sys.path
(tests/conftest.py), so this module can, once, for all of them.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType


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
