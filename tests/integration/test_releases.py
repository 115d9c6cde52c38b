"""Releases on a real Triton: promote and roll back under continuous load, refused promotes, pins.

Two builds of the same spec from two different tiny BERT checkpoints give an encoder whose versions embed
differently, so every response says which version answered it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonforge.errors import ReleaseError

pytestmark = pytest.mark.integration

SPEC = """
name: release-test
target: cpu
models:
  tiny:
    kind: embedding
    checkpoint: {checkpoint}
    ensemble: embed
    max_batch_size: 16
    dynamic_batching: {{max_queue_delay_microseconds: 500}}
"""
ENCODER = "tiny_encoder"
TEXT = "a request that every version answers differently"


def _build(tmp: Path, name: str, seed: int) -> Path:
    from tritonforge.build import build
    from tritonforge.builders.tiny_models import make_tiny_bert

    checkpoint = make_tiny_bert(tmp / f"ckpt-{name}", seed=seed)
    spec = tmp / f"{name}.yaml"
    spec.write_text(SPEC.format(checkpoint=checkpoint))
    return build(spec, tmp / f"repo-{name}", target="cpu").repo


@pytest.fixture(scope="module")
def release_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(serving repository with version 1, a second build, a third build) of the same spec."""
    tmp = tmp_path_factory.mktemp("releases")
    return _build(tmp, "v1", 1), _build(tmp, "v2", 2), _build(tmp, "v3", 3)


@pytest.fixture(scope="module")
def release_server(release_repo: tuple[Path, Path, Path]) -> Iterator[object]:
    from tritonforge.releases import add_versions
    from tritonforge.server import TritonServer

    repo, v2, _ = release_repo
    assert add_versions(repo, v2) == {ENCODER: 2}  # the tokenizer did not change, the ensemble is skipped
    server = TritonServer(repo, admin_key="release-test-key")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _embed(server: object) -> np.ndarray:
    from tritonforge.clients import Client

    with Client(server.endpoints.grpc) as client:  # type: ignore[attr-defined]
        return client.embed([TEXT])[0]


def _under_load(server: object, action, workers: int = 4) -> tuple[list[str], list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Run `action` while `workers` clients call `embed` back to back; returns (errors, every vector in order)."""
    from tritonforge.clients import Client

    stop = threading.Event()
    errors: list[str] = []
    seen: list[tuple[float, np.ndarray]] = []
    lock = threading.Lock()

    def worker() -> None:
        with Client(server.endpoints.grpc, retries=0) as client:  # type: ignore[attr-defined]
            while not stop.is_set():
                try:
                    vector = client.embed([TEXT])[0]
                except Exception as err:  # every failure counts: the point is that there are none
                    with lock:
                        errors.append(repr(err))
                    continue
                with lock:
                    seen.append((time.monotonic(), vector))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        action()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    return errors, [v for _, v in sorted(seen, key=lambda s: s[0])]


def _which(vector: np.ndarray, references: dict[int, np.ndarray]) -> int:
    return min(references, key=lambda v: float(np.abs(references[v] - vector).max()))


def test_promote_and_rollback_under_load_drop_nothing(release_repo, release_server) -> None:
    from tritonforge.releases import model_releases, promote, rollback

    repo = release_repo[0]
    v1 = _embed(release_server)
    assert model_releases(repo, ENCODER).active == (1,)

    errors, seen = _under_load(release_server, lambda: promote(repo, ENCODER, 2, control=release_server))
    assert errors == []
    v2 = _embed(release_server)
    assert float(np.abs(v1 - v2).max()) > 1e-3, "the two builds must embed differently"
    order = [_which(v, {1: v1, 2: v2}) for v in seen]
    assert order[0] == 1 and order[-1] == 2
    assert order == sorted(order), "once version 2 answers, version 1 never answers again"
    state = model_releases(repo, ENCODER)
    assert state.active == (2,) and state.previous == 1

    errors, seen = _under_load(release_server, lambda: rollback(repo, ENCODER, control=release_server))
    assert errors == []
    order = [_which(v, {1: v1, 2: v2}) for v in seen]
    assert order[0] == 2 and order[-1] == 1 and order == sorted(order, reverse=True)
    assert np.allclose(_embed(release_server), v1, atol=1e-6)
    assert model_releases(repo, ENCODER).active == (1,)


def test_promote_of_a_missing_or_broken_version_is_refused_and_the_old_one_keeps_serving(
    release_repo, release_server
) -> None:
    from tritonforge.releases import add_versions, model_releases, promote

    repo, _, v3 = release_repo
    before = _embed(release_server)
    serving = model_releases(repo, ENCODER).active
    config_before = (repo / ENCODER / "config.pbtxt").read_bytes()

    with pytest.raises(ReleaseError, match=r"has no version 9 \(versions: 1, 2"):
        promote(repo, ENCODER, 9, control=release_server)

    new = add_versions(repo, v3, [ENCODER])[ENCODER]
    (repo / ENCODER / str(new) / "model.onnx").write_bytes(b"not an onnx model")  # a broken release

    def broken_promote() -> None:
        with pytest.raises(ReleaseError, match=rf"version {new} of {ENCODER} failed to load.*still serves"):
            promote(repo, ENCODER, new, control=release_server)

    errors, seen = _under_load(release_server, broken_promote)
    assert errors == []
    assert all(np.allclose(v, before, atol=1e-6) for v in seen)
    assert model_releases(repo, ENCODER).active == serving
    assert (repo / ENCODER / "config.pbtxt").read_bytes() == config_before


def test_pin_blocks_promote_until_unpinned(release_repo, release_server) -> None:
    from tritonforge.releases import model_releases, pin, promote, unpin

    repo = release_repo[0]
    active = model_releases(repo, ENCODER).active[0]
    other = 2 if active == 1 else 1
    pin(repo, ENCODER)
    with pytest.raises(ReleaseError, match=rf"pinned to version {active}"):
        promote(repo, ENCODER, other, control=release_server)
    unpin(repo, ENCODER)
    assert promote(repo, ENCODER, other, control=release_server).applied
    assert model_releases(repo, ENCODER).active == (other,)


def test_triton_control_needs_the_admin_key(release_repo, release_server) -> None:
    from tritonforge.releases import TritonControl, model_releases

    active = model_releases(release_repo[0], ENCODER).active
    TritonControl(release_server.endpoints.http, admin_key="release-test-key").load(ENCODER)
    with pytest.raises(ReleaseError, match="could not load"):
        TritonControl(release_server.endpoints.http).load(ENCODER)
    assert model_releases(release_repo[0], ENCODER).active == active


def test_triton_control_speaks_grpc_to_a_grpc_url(release_repo, release_server) -> None:
    # grpc://host:port was sent HTTP requests, which Triton's gRPC port never answers
    from tritonforge.releases import TritonControl, model_releases

    active = model_releases(release_repo[0], ENCODER).active
    grpc = f"grpc://{release_server.endpoints.grpc}"
    control = TritonControl(grpc, admin_key="release-test-key", timeout=60)
    assert control.protocol == "grpc"
    control.load(ENCODER)
    with pytest.raises(ReleaseError, match=rf"Triton at {grpc} could not load '{ENCODER}': the admin key is missing"):
        TritonControl(grpc, timeout=60).load(ENCODER)
    assert model_releases(release_repo[0], ENCODER).active == active
    assert _embed(release_server).shape[0] > 0  # still serving
