"""A/B and canary splits in the gateway (gateway/splits.py) on a real Triton serving the demo repository.

Triton also serves ``embed_canary`` (a second ensemble over the same MiniLM steps, from a second model repository)
so a treatment arm can be unloaded while traffic flows. The gateway runs in uvicorn in a thread, with its splits in
a file that the tests rewrite (the gateway re-reads it without a restart).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")
httpx = pytest.importorskip("httpx")
yaml = pytest.importorskip("yaml")

pytestmark = pytest.mark.integration
KEY, ADMIN = "sk-split-user", "sk-split-admin"
PROMPT = "Tell me about inference servers."
GUARD = {"max_error_rate": 0.2, "window": 20, "min_requests": 10}

SPLITS: dict[str, Any] = {
    "splits": {
        # two LoRA adapters of the same base: the 90/10 distribution and attribution
        "chat-ab": {
            "control": {"name": "support", "model": "chat", "adapter": "support", "weight": 90},
            "treatment": {"name": "legal", "model": "chat", "adapter": "legal", "weight": 10},
        },
        # a canary on a second Triton model that the test unloads while traffic flows
        "minilm-canary": {
            "control": {"model": "minilm", "weight": 50},
            "treatment": {"model": "minilm-v2", "weight": 50},
            "guard": GUARD,
        },
    }
}


@pytest.fixture(scope="module")
def split_triton(demo_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Triton serving the demo repository plus ``embed_canary`` (the ``embed`` ensemble under another name)."""
    from tritonforge.server import TritonServer

    extra = tmp_path_factory.mktemp("canary-repo")
    (extra / "embed_canary" / "1").mkdir(parents=True)
    config = (demo_repo / "embed" / "config.pbtxt").read_text()
    (extra / "embed_canary" / "config.pbtxt").write_text(config.replace('name: "embed"', 'name: "embed_canary"', 1))
    with TritonServer(demo_repo, extra_args=[f"--model-repository={extra}"], admin_key="split-admin") as server:
        yield server


@pytest.fixture(scope="module")
def splits_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("splits") / "splits.yaml"
    path.write_text(yaml.safe_dump(SPLITS))
    return path


@pytest.fixture(scope="module")
def gateway(split_triton: Any, splits_file: Path) -> Iterator[str]:
    import uvicorn

    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.server import free_port

    models = GatewayModels(embeddings={"minilm": "embed", "minilm-v2": "embed_canary"})
    app = create_app(
        split_triton.endpoints.grpc, api_keys=[KEY], admin_keys=[ADMIN], models=models, splits=splits_file, retries=0
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="gateway-split", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive(), "the gateway did not stop"


@pytest.fixture()
def http(gateway: str) -> Iterator[Any]:
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        yield client


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[len(name) : line.index("}") + 1]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def _fire(gateway: str, path: str, bodies: list[dict[str, Any]], concurrency: int) -> list[tuple[int, str]]:
    """POST every body with ``concurrency`` requests in flight; (status, arm header) per request, in order."""
    results: list[tuple[int, str]] = [(0, "")] * len(bodies)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=gateway, headers={"Authorization": f"Bearer {KEY}"}, timeout=120, limits=limits
    ) as client:

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                reply = await client.post(path, json=bodies[i])
                results[i] = (reply.status_code, reply.headers.get("x-tritonforge-arm", ""))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def test_splits_are_listed_as_models(http) -> None:
    cards = {m["id"]: m for m in http.get("/v1/models").json()["data"]}
    assert cards["chat-ab"]["split"] is True and cards["chat-ab"]["kind"] == "chat"
    assert cards["chat-ab"]["arms"] == ["support", "legal"]
    assert http.get("/v1/models/minilm-canary").json()["kind"] == "embeddings"


def test_each_arm_answers_with_its_own_adapter(http, split_triton) -> None:
    from tritonforge.clients import Client

    with Client(split_triton.endpoints.grpc) as client:
        want = {
            arm: client.generate(PROMPT, max_tokens=6, temperature=0.0, chat=True, adapter=arm)
            for arm in ("support", "legal")
        }
    assert want["support"] != want["legal"]
    seen: dict[str, str] = {}
    body = {"model": "chat-ab", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 6, "temperature": 0}
    for _ in range(60):
        reply = http.post("/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text
        arm = reply.headers["x-tritonforge-arm"]
        assert reply.headers["x-tritonforge-split"] == "chat-ab" and reply.json()["model"] == "chat-ab"
        seen[arm] = reply.json()["choices"][0]["message"]["content"]
        if len(seen) == 2:
            break
    assert seen == want  # each arm's text is exactly what its adapter generates


def test_a_90_10_split_over_1000_requests(gateway: str, http) -> None:
    before = http.get("/metrics").text
    counted0 = {
        arm: _metric(before, "tritonforge_gateway_split_requests_total", split="chat-ab", arm=arm) or 0.0
        for arm in ("support", "legal")
    }
    body = {"model": "chat-ab", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    t0 = time.perf_counter()
    results = asyncio.run(_fire(gateway, "/v1/chat/completions", [body] * 1000, concurrency=8))
    seconds = time.perf_counter() - t0
    statuses = Counter(status for status, _ in results)
    arms = Counter(arm for _, arm in results)
    assert statuses == {200: 1000}, statuses
    share = arms["legal"] / 1000
    print(f"\n1000 chat requests in {seconds:.1f}s: treatment share {share:.1%} ({dict(arms)})")
    assert abs(share - 0.10) <= 0.04, f"treatment share {share:.1%} is not within 10% ± 4 points"
    after = http.get("/metrics").text
    for arm in ("support", "legal"):
        got = _metric(after, "tritonforge_gateway_split_requests_total", split="chat-ab", arm=arm)
        assert got == counted0[arm] + arms[arm]
        assert (_metric(after, "tritonforge_gateway_split_errors_total", split="chat-ab", arm=arm) or 0.0) == 0.0
    assert _metric(after, "tritonforge_gateway_split_request_seconds_count", split="chat-ab", arm="legal")
    assert _metric(after, "tritonforge_gateway_split_share", split="chat-ab", arm="legal") == pytest.approx(0.1)
    assert _metric(after, "tritonforge_gateway_split_tripped", split="chat-ab") == 0.0


def test_sticky_users_keep_their_arm(http, splits_file: Path) -> None:
    data = json.loads(json.dumps(SPLITS))
    data["splits"]["chat-ab"]["sticky"] = True
    _rewrite(splits_file, data)
    _wait_until(lambda: http.get("/admin/splits", headers=_admin()).json()["splits"]["chat-ab"]["sticky"])
    body = {"model": "chat-ab", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    for user in ("alice", "bob", "carol"):
        arms = {
            http.post("/v1/chat/completions", json={**body, "user": user}).headers["x-tritonforge-arm"]
            for _ in range(5)
        }
        assert len(arms) == 1, (user, arms)
    _rewrite(splits_file, SPLITS)
    _wait_until(lambda: not http.get("/admin/splits", headers=_admin()).json()["splits"]["chat-ab"]["sticky"])


def test_a_failing_treatment_is_switched_off_and_the_failures_stop(gateway: str, http, split_triton) -> None:
    body = {"model": "minilm-canary", "input": "canary traffic", "encoding_format": "float"}
    warm = asyncio.run(_fire(gateway, "/v1/embeddings", [body] * 100, concurrency=8))
    assert Counter(s for s, _ in warm) == {200: 100} and {a for _, a in warm} == {"control", "treatment"}

    # the treatment's model goes away while traffic flows
    done = threading.Event()
    results: list[tuple[int, str]] = []

    def traffic() -> None:
        results.extend(asyncio.run(_fire(gateway, "/v1/embeddings", [body] * 600, concurrency=8)))
        done.set()

    runner = threading.Thread(target=traffic)
    runner.start()
    time.sleep(0.3)
    split_triton.unload("embed_canary")
    runner.join(120)
    assert done.is_set()

    failures = [(i, arm) for i, (status, arm) in enumerate(results) if status != 200]
    assert failures, "the treatment never failed: the unload did not happen during the traffic"
    print(f"\ntreatment unloaded: {len(failures)} failed requests of {len(results)} before the guard tripped")
    assert {arm for _, arm in failures} == {"treatment"}  # only the treatment failed
    # bounded by the guard: at most a window's worth of failures, plus what was in flight when it tripped
    assert len(failures) <= GUARD["window"] + 8, len(failures)
    last_failure = failures[-1][0]
    tail = results[last_failure + 1 :]
    assert len(tail) >= 150 and all(s == 200 and a == "control" for s, a in tail)

    status = http.get("/admin/splits", headers=_admin()).json()["splits"]["minilm-canary"]
    assert status["tripped"] and "treatment" in status["tripped_reason"]
    assert status["arms"]["treatment"]["share"] == 0.0 and status["arms"]["control"]["share"] == 1.0
    later = http.post("/v1/embeddings", json=body)
    assert later.status_code == 200 and later.headers["x-tritonforge-arm"] == "control"

    text = http.get("/metrics").text
    assert _metric(text, "tritonforge_gateway_split_tripped", split="minilm-canary") == 1.0
    assert _metric(text, "tritonforge_gateway_split_trips_total", split="minilm-canary") == 1.0
    assert _metric(text, "tritonforge_gateway_split_tripped_timestamp_seconds", split="minilm-canary")
    assert _metric(text, "tritonforge_gateway_split_errors_total", split="minilm-canary", arm="treatment") == len(
        failures
    )
    assert (_metric(text, "tritonforge_gateway_split_errors_total", split="minilm-canary", arm="control") or 0) == 0
    observed = Counter(a for _, a in warm + results) + Counter({"control": 1})
    for arm in ("control", "treatment"):
        got = _metric(text, "tritonforge_gateway_split_requests_total", split="minilm-canary", arm=arm)
        assert got == observed[arm]

    # the treatment is back and the split is changed through the admin API: a fresh split, the guard reset
    split_triton.load("embed_canary")
    fixed = json.loads(json.dumps(SPLITS))
    fixed["splits"]["minilm-canary"]["treatment"]["weight"] = 60
    reply = http.put("/admin/splits", json=fixed, headers=_admin())
    assert reply.status_code == 200, reply.text
    assert reply.json()["started"] == ["minilm-canary"] and not reply.json()["splits"]["minilm-canary"]["tripped"]
    arms = Counter(a for s, a in asyncio.run(_fire(gateway, "/v1/embeddings", [body] * 40, concurrency=4)) if s == 200)
    assert sum(arms.values()) == 40 and arms["treatment"] > 0


def test_version_arms_and_bad_configurations(http, splits_file: Path) -> None:
    # a version arm: version 1 of the embed ensemble serves, version 7 does not exist
    data = json.loads(json.dumps(SPLITS))
    data["splits"]["pinned"] = {
        "control": {"model": "minilm", "version": 1, "weight": 1},
        "treatment": {"model": "minilm", "version": 7, "weight": 1},
        "guard": None,
    }
    reply = http.put("/admin/splits", json=data, headers=_admin())
    assert reply.status_code == 200, reply.text
    seen: dict[str, int] = {}
    for _ in range(40):
        r = http.post("/v1/embeddings", json={"model": "pinned", "input": "v"})
        seen[r.headers["x-tritonforge-arm"]] = r.status_code
        if r.status_code != 200:
            assert r.json()["error"]["code"] == "model_not_ready", r.text
        if len(seen) == 2:
            break
    assert seen == {"control": 200, "treatment": 503}

    # a bad configuration is refused with every problem; the current one keeps serving
    bad = {
        "splits": {"x": {"control": {"model": "ghost", "weight": 1}, "treatment": {"model": "minilm", "weight": -2}}}
    }
    reply = http.put("/admin/splits", json=bad, headers=_admin())
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert "splits.x.treatments[0].weight" in message and reply.json()["error"]["code"] == "invalid_splits"
    bad2 = {
        "splits": {"x": {"control": {"model": "ghost", "weight": 1}, "treatment": {"model": "minilm", "weight": 1}}}
    }
    message = http.put("/admin/splits", json=bad2, headers=_admin()).json()["error"]["message"]
    assert "splits.x.control.model: 'ghost' is not a model id of this gateway" in message
    assert http.post("/v1/embeddings", json={"model": "pinned", "input": "still"}).status_code in (200, 503)
    assert "pinned" in {m["id"] for m in http.get("/v1/models").json()["data"]}

    # a bad file is refused too, and a good one replaces what the API set
    splits_file.write_text("splits: {oops: {control: {model: chat}}}")
    time.sleep(1.1)
    assert "pinned" in {m["id"] for m in http.get("/v1/models").json()["data"]}
    assert "weight" in (http.get("/admin/splits", headers=_admin()).json()["last_error"] or "")
    _rewrite(splits_file, SPLITS)
    _wait_until(lambda: "pinned" not in {m["id"] for m in http.get("/v1/models").json()["data"]})

    # bad requests to a split: OpenAI-style 4xx, never counted against an arm
    for payload, code in [
        (b'{"model": "chat-ab", "messages": [', 400),
        (json.dumps({"model": "chat-ab", "messages": "hi"}).encode(), 400),
        (
            json.dumps(
                {"model": "chat-ab", "messages": [{"role": "user", "content": "x"}], "max_tokens": "1"}
            ).encode(),
            400,
        ),
        (json.dumps({"model": "chat-abc", "messages": [{"role": "user", "content": "x"}]}).encode(), 404),
    ]:
        r = http.post("/v1/chat/completions", content=payload, headers={"Content-Type": "application/json"})
        assert r.status_code == code and r.json()["error"]["message"], r.text
        assert "x-tritonforge-arm" not in r.headers
    r = http.post("/v1/embeddings", json={"model": "chat-ab", "input": "x"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_supported"

    # the admin endpoints need the admin key
    assert http.get("/admin/splits").status_code == 401
    assert http.put("/admin/splits", content=b"{", headers=_admin()).status_code == 400
    assert http.post("/admin/splits/nope/reset", headers=_admin()).status_code == 404


def _admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def _rewrite(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))
    time.sleep(1.05)  # the gateway checks the file at most once a second


def _wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the gateway did not pick up the new splits"
        time.sleep(0.2)


def test_the_gateway_command_warns_of_what_triton_does_not_serve(split_triton, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/serving.md's example pins a treatment to a version no example build has: the gateway started without a
    word and answered that arm's share 503 with Retry-After (new-user audit). It still starts, and says what is not
    served, on the real Triton."""
    from typer.testing import CliRunner

    from tritonforge.cli import app
    from tritonforge.gateway import listen as gateway_listen
    from tritonforge.server import free_port

    monkeypatch.setattr(gateway_listen.GatewayServer, "run", lambda self: None)
    path = tmp_path / "splits.yaml"
    path.write_text(yaml.safe_dump({"splits": {"minilm-v2": {
        "control": {"model": "minilm", "version": 1, "weight": 95},
        "treatment": {"model": "minilm", "version": 2, "weight": 5},
    }}}))
    args = ["gateway", "--triton", split_triton.endpoints.grpc, "--port", str(free_port()), "--insecure-no-auth",
            "--model", "embeddings:minilm=embed", "--model", "embeddings:gone=no_such_ensemble", "--splits", str(path)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning:"))
    assert (f"Triton at {split_triton.endpoints.grpc} does not serve no_such_ensemble (embeddings model gone), "
            "embed version 2 (split minilm-v2, arm treatment) (not ready)") in warning
    assert "version 1" not in warning
