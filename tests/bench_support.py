"""Shared by the benchmarks in tests/bench: the embedding bench module, whose helpers the others reuse, and the
probes' rotated rounds and records.

pytest's importlib mode gives tests/bench no package, so a bench cannot import another; tests/ is on sys.path
(tests/conftest.py), so this module can, once, for all of them.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
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


def rounds_across_servers(
    servers: Mapping[str, Any],
    loads: Mapping[str, Callable[[str], Mapping[str, Any]]],
    rounds: int,
    figures: Mapping[str, str],
) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Start every server (a TritonServer), run each load on each, the servers rotated round by round, and stop them
    all. A load is a callable of the server's gRPC URL returning a bench row without errors; of each row the result
    keeps ``figures`` ({name in the record: key in the row}): ``{server: {load: [figures per round]}}``."""
    rows: dict[str, dict[str, list[dict[str, float]]]] = {s: {load: [] for load in loads} for s in servers}
    try:
        for server in servers.values():
            server.start()
        for r in range(rounds):
            for name in rotated(list(servers), r):
                for load, run in loads.items():
                    row = run(servers[name].endpoints.grpc)
                    assert not row["errors"], row
                    rows[name][load].append({kept: row[key] for kept, key in figures.items()})
                    print(f"[round {r}] {name}, {load}: {rows[name][load][-1]}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows


@contextlib.contextmanager
def shipped_gateway(server: Any) -> Iterator[int]:
    """The shipped gateway (`tritonforge gateway --model embeddings:minilm=embed --insecure-no-auth`, as
    probe_gateway_variants.py serves it) in front of a started TritonServer, on a free port it yields; stopped after."""
    from tritonforge.server import free_port

    port = free_port()
    script = Path(__file__).parent / "bench" / "probe_gateway_variants.py"
    gateway = subprocess.Popen([sys.executable, str(script), "--serve", "shipped", server.endpoints.grpc,
                                server.endpoints.http, str(port)], stdout=subprocess.DEVNULL)
    try:
        if embed_bench()._wait_healthy(port, gateway, 60, poll_s=0.5) is not None:
            raise RuntimeError("the gateway did not start")
        yield port
    finally:
        gateway.terminate()
        gateway.wait(30)
