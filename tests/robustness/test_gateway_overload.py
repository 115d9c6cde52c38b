"""Load shedding through the gateway: when a model's queue is full (the spec's `max_queue_size`), Triton rejects the
request at once and the gateway answers 429 with `Retry-After`, instead of queueing without bound; every other
request succeeds, and the server serves normally right after."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def gateway(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tritonforge.build import build
    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.gateway.listen import GatewayServer, bind
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    queue = {"max_batch_size": 1, "instance_groups": [{"count": 1, "kind": "cpu"}],
             "dynamic_batching": {"default_queue_policy": {"max_queue_size": 1}}}
    spec = parse_spec({"name": "shed", "target": "cpu", "models": {"tiny": {
        "kind": "embedding", "checkpoint": str(tiny_bert), "ensemble": "embed", **queue, "tokenizer": queue}}})
    repo = build(spec, tmp_path_factory.mktemp("shed") / "repo").repo
    with TritonServer(repo) as triton:
        app = create_app(triton.endpoints.grpc, api_keys=None, retries=0,
                         models=GatewayModels(chat={}, rerank={}, embeddings={"tiny": "embed"}))
        sock = bind("127.0.0.1", 0)  # served as `tritonforge gateway` serves it (GatewayServer)
        server = GatewayServer(app, sock)
        server.start()
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.stop()


def test_a_full_queue_is_shed_with_429_and_retry_after(gateway: str) -> None:
    text = " ".join(["overload"] * 200)

    def call(_: int) -> httpx.Response:
        with httpx.Client(base_url=gateway, timeout=60) as client:
            # long texts for their cost, cut to the model's length as asked (else a 400 names them)
            return client.post("/v1/embeddings", json={"model": "tiny", "input": text, "truncate_prompt_tokens": -1})

    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(call, range(96)))
    statuses = [r.status_code for r in replies]
    shed = [r for r in replies if r.status_code == 429]
    assert set(statuses) <= {200, 429}, statuses
    assert shed and statuses.count(200) > 0, statuses
    assert all(r.headers.get("retry-after") == "1" for r in shed)
    assert all(r.json()["error"]["code"] == "overloaded" for r in shed)
    with httpx.Client(base_url=gateway, timeout=60) as client:  # and it serves normally right after
        assert client.post("/v1/embeddings", json={"model": "tiny", "input": "fine"}).status_code == 200
