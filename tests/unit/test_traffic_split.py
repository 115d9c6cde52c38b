"""A/B and canary splits (gateway/splits.py): weights, stickiness, the guard, reloading, bad configurations."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from tritonforge.gateway.splits import (
    BUCKETS,
    OUTAGE_SECONDS,
    SplitConfigError,
    SplitRouter,
    SplitsConfig,
    bucket_of,
    load_splits,
    parse_splits,
)


def config(**split: object) -> SplitsConfig:
    base: dict[str, object] = {
        "control": {"model": "chat", "adapter": "support", "weight": 90},
        "treatment": {"model": "chat", "adapter": "legal", "weight": 10},
    }
    return parse_splits({"splits": {"canary": {**base, **split}}})


def test_shorthands_and_defaults() -> None:
    spec = config().splits["canary"]
    assert spec.control.name == "control" and [t.name for t in spec.treatments] == ["treatment"]
    assert spec.sticky is False and spec.guard is not None and spec.guard.max_error_rate == 0.2
    many = parse_splits(
        {
            "splits": {
                "s": {
                    "control": {"model": "a", "weight": 1},
                    "treatments": [{"model": "b", "weight": 1}, {"model": "c", "version": 2, "weight": 1}],
                }
            }
        }
    ).splits["s"]
    assert [a.name for a in many.arms] == ["control", "treatment1", "treatment2"]
    assert many.treatments[1].triton_version == "2" and many.control.triton_version == ""


def test_weighted_choice_follows_the_weights() -> None:
    router = SplitRouter(config(), rng=random.Random(7))
    counts = Counter(router.choose("canary").arm.name for _ in range(20_000))  # type: ignore[union-attr]
    assert abs(counts["treatment"] / 20_000 - 0.10) < 0.01
    assert router.choose("nope") is None


def test_weights_are_relative_and_zero_takes_an_arm_out() -> None:
    a = config(control={"model": "chat", "weight": 0.9}, treatment={"model": "chat", "adapter": "x", "weight": 0.1})
    state = SplitRouter(a).get("canary")
    assert state is not None and state.effective_weights() == pytest.approx({"control": 0.9, "treatment": 0.1})
    off = SplitRouter(config(treatment={"model": "chat", "weight": 0})).get("canary")
    assert off is not None
    assert {off.choose(None, random.Random(i)).arm.name for i in range(500)} == {"control"}


def test_sticky_is_deterministic_per_identity_and_still_splits_users() -> None:
    router = SplitRouter(config(sticky=True))
    for user in ("alice", "bob", "sk-key-1"):
        arms = {router.choose("canary", user).arm.name for _ in range(50)}  # type: ignore[union-attr]
        assert len(arms) == 1
        expected = "control" if bucket_of("canary", user) < 0.9 * BUCKETS else "treatment"
        assert arms == {expected}
    users = Counter(router.choose("canary", f"user-{i}").arm.name for i in range(10_000))  # type: ignore[union-attr]
    assert abs(users["treatment"] / 10_000 - 0.10) < 0.015
    # no identity: drawn at random
    assert router.choose("canary", None).reason == "weighted"  # type: ignore[union-attr]
    # another split name hashes the same user differently (independent experiments)
    assert bucket_of("canary", "alice") != bucket_of("other", "alice")


def test_the_guard_trips_after_min_requests_and_sends_everything_to_control() -> None:
    router = SplitRouter(config(guard={"max_error_rate": 0.2, "window": 10, "min_requests": 5}))
    state = router.get("canary")
    assert state is not None
    for _ in range(4):
        assert state.record("treatment", True) is False  # fewer than min_requests: not judged yet
    assert state.record("treatment", True) is True
    assert state.tripped and "treatment" in (state.tripped_reason or "") and state.tripped_at
    assert {state.choose(None, random.Random(i)).arm.name for i in range(300)} == {"control"}
    assert state.choose("alice", random.Random(0)).reason == "tripped"
    status = router.status()["splits"]["canary"]
    assert status["tripped"] and status["arms"]["treatment"]["share"] == 0.0
    assert status["arms"]["treatment"]["errors"] == 5 and status["arms"]["control"]["share"] == 1.0
    router.reset("canary")
    assert not state.tripped


def test_the_guard_judges_the_window_not_the_history() -> None:
    state = SplitRouter(config(guard={"max_error_rate": 0.5, "window": 4, "min_requests": 4})).get("canary")
    assert state is not None
    for error in (True, True, False, False, False, False, True, False):  # never more than 2 of the last 4
        assert state.record("treatment", error) is False
    assert not state.tripped
    state.record("treatment", True)  # last 4: F, T, F, T -> 50 %, not above
    assert not state.tripped
    state.record("treatment", True)  # T, F, T, T -> 75 %
    assert state.tripped
    # control errors never trip the guard
    calm = SplitRouter(config(guard={"max_error_rate": 0.1, "window": 2, "min_requests": 1})).get("canary")
    assert calm is not None
    for _ in range(20):
        calm.record("control", True)
    assert not calm.tripped


def test_an_outage_both_arms_share_does_not_trip_the_guard() -> None:
    """Found by the LLM soak audit: a killed engine stub failed both adapters of one engine alike (control 23 of 40,
    treatment 20 of 20), the guard tripped on the treatment's 503s and the A/B test ended for good."""
    guard = {"max_error_rate": 0.2, "window": 10, "min_requests": 5}
    shared = SplitRouter(config(guard=guard)).get("canary")  # two adapters on model chat: one engine
    assert shared is not None
    for _ in range(20):
        assert shared.record("treatment", True, unavailable=True) is False
    assert not shared.tripped and shared.arms["treatment"].errors == 20  # counted, not held against it
    for _ in range(4):
        shared.record("treatment", True)  # an error of its own (a 500, a 400 from Triton): counted in the window
    assert shared.record("treatment", True) is True

    own = {"control": {"model": "chat", "weight": 90}, "treatment": {"model": "chat-v2", "weight": 10}}
    now = [0.0]
    apart = SplitRouter(config(guard=guard, **own), clock=lambda: now[0]).get("canary")
    assert apart is not None  # another model: a canary failing alone trips at once ...
    for _ in range(4):
        assert apart.record("treatment", True, unavailable=True) is False
    assert apart.record("treatment", True, unavailable=True) is True
    apart.record("control", False)
    assert apart.tripped  # ... and stays tripped while the control serves
    now[0] = 3.0
    apart.record("control", True, unavailable=True)  # the control fails too, within seconds: the same outage
    assert not apart.tripped and not apart.arms["treatment"].window  # undone, and the guard starts over
    for _ in range(20):  # while the control's 503 is recent, the treatment's do not count
        assert apart.record("treatment", True, unavailable=True) is False
    now[0] = 3.0 + OUTAGE_SECONDS + 1
    for _ in range(4):
        apart.record("treatment", True, unavailable=True)
    assert apart.record("treatment", True, unavailable=True) is True  # later, alone again: its own
    now[0] += OUTAGE_SECONDS + 1
    apart.record("control", True, unavailable=True)
    assert apart.tripped  # a control 503 long after the trip does not undo it


def test_no_guard_never_trips() -> None:
    state = SplitRouter(config(guard=None)).get("canary")
    assert state is not None
    for _ in range(100):
        state.record("treatment", True)
    assert not state.tripped


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        ({"control": {"model": "chat", "weight": -1}}, "splits.canary.control.weight: Input should be greater than"),
        ({"control": {"model": "chat", "weight": "ten"}}, "splits.canary.control.weight: must be a number >= 0"),
        ({"control": {"model": "chat", "weight": 1, "version": 0}}, "splits.canary.control.version"),
        ({"control": {"model": "chat", "weight": 1, "version": True}}, "must be an integer Triton model version"),
        ({"control": {"model": "chat", "weight": 1, "colour": "red"}}, "splits.canary.control.colour: unknown field"),
        ({"control": {"model": "chat", "weight": 0}, "treatment": {"model": "chat", "weight": 0}}, "add up to 0"),
        ({"treatment": {"name": "control", "model": "chat", "weight": 1}}, "arm names must be unique"),
        ({"guard": {"window": 5, "min_requests": 10}}, "min_requests (10) must be <= window (5)"),
        ({"guard": {"max_error_rate": 1.5}}, "splits.canary.guard.max_error_rate"),
        ({"sticky": "yes"}, "splits.canary.sticky: Input should be a valid boolean"),
        ({"treatments": []}, "give either 'treatment'"),
    ],
)
def test_bad_configurations_name_the_field_and_the_value(split: dict[str, object], expected: str) -> None:
    with pytest.raises(SplitConfigError) as info:
        config(**split)
    assert expected in str(info.value)


def test_bad_top_level_and_names() -> None:
    with pytest.raises(SplitConfigError, match="must be a mapping"):
        parse_splits([1, 2])
    with pytest.raises(SplitConfigError, match="split name 'a b'"):
        parse_splits(
            {"splits": {"a b": {"control": {"model": "x", "weight": 1}, "treatment": {"model": "y", "weight": 1}}}}
        )
    with pytest.raises(SplitConfigError, match=r"splitz: unknown field \(did you mean 'splits'\?\)"):
        parse_splits({"splitz": {}})
    assert parse_splits(None).splits == {}


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(SplitConfigError) as info:
        parse_splits({"splits": {"s": {"control": {"model": "", "weight": -1}, "treatment": {"weight": 1}}}})
    text = str(info.value)
    assert "splits.s.control.model" in text and "splits.s.control.weight" in text
    assert "splits.s.treatments[0].model: Field required" in text
    assert len(info.value.problems) == 3


def _write(path: Path, data: dict[str, object], bump: float = 0.0) -> None:
    path.write_text(json.dumps(data) if path.suffix == ".json" else _yaml(data))
    if bump:
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(bump * 1e9)))


def _yaml(data: dict[str, object]) -> str:
    import yaml

    return yaml.safe_dump(data)


def _file_config(control: float, treatment: float, **extra: object) -> dict[str, object]:
    return {
        "splits": {
            "canary": {
                "control": {"model": "chat", "weight": control},
                "treatment": {"model": "chat", "adapter": "legal", "weight": treatment},
                **extra,
            }
        }
    }


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_changes_are_picked_up_without_a_restart(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"splits{suffix}"
    _write(path, _file_config(90, 10, guard={"window": 2, "min_requests": 1}))
    now = [0.0]
    router = SplitRouter(path=path, check_interval=1.0, clock=lambda: now[0])
    state = router.get("canary")
    assert state is not None and state.spec.control.weight == 90
    state.record("treatment", True)
    assert state.tripped

    _write(path, _file_config(50, 50, guard={"window": 2, "min_requests": 1}), bump=1)
    assert router.get("canary") is state  # checked at most once per check_interval
    now[0] = 1.5
    fresh = router.get("canary")
    assert fresh is not None and fresh is not state and fresh.spec.control.weight == 50
    assert not fresh.tripped  # a changed split starts fresh: this is how a tripped guard is reset

    # a bad file is refused, the previous configuration keeps serving, and the error is visible
    path.write_text('{"splits": {"canary": {"control": {"model": "chat", "weight": -5}}}}')
    _bump(path, 2)
    now[0] = 3.0
    assert router.get("canary") is fresh
    status = router.status()
    assert status["last_error"] and "weight" in status["last_error"] and status["rejected"] == 1

    # rewriting the same content as before: the split keeps its state
    fresh.record("treatment", True)
    _write(path, _file_config(50, 50, guard={"window": 2, "min_requests": 1}), bump=3)
    now[0] = 5.0
    assert router.get("canary") is fresh and fresh.tripped and router.status()["last_error"] is None

    # the file removed: the last good configuration keeps serving
    path.unlink()
    now[0] = 7.0
    assert router.get("canary") is fresh


def test_a_file_rewritten_in_place_keeps_its_splits_and_their_guards(tmp_path: Path) -> None:
    """Found by a gateway audit: `cat > splits.yaml` (or open("w")) truncates before it writes, and a check between
    the two read the empty file as "no splits": 2,867 of 6,535 requests got a permanent 404, and a tripped guard
    came back reset. An empty file is refused, and a file changed within SETTLE_SECONDS is read at a later check."""
    import time

    from tritonforge.gateway import file_watch

    path = tmp_path / "splits.yaml"
    _write(path, _file_config(50, 50, guard={"window": 2, "min_requests": 1}))
    router = SplitRouter(path=path, check_interval=0.0)
    state = router.get("canary")
    assert state is not None
    state.record("treatment", True)
    assert state.tripped
    path.write_text("")  # truncated: the writer has not written yet
    _bump(path, -1.0)  # long enough ago to be read: refused as empty, not taken as no splits
    assert router.get("canary") is state and "the file is empty" in (router.status()["last_error"] or "")
    path.write_text(_yaml(_file_config(50, 50, guard={"window": 2, "min_requests": 1}))[:40])  # half-written
    assert router.get("canary") is state  # just written: not read yet
    time.sleep(file_watch.SETTLE_SECONDS + 0.05)
    _write(path, _file_config(50, 50, guard={"window": 2, "min_requests": 1}))  # the same content, whole
    assert router.get("canary") is state  # still settling
    time.sleep(file_watch.SETTLE_SECONDS + 0.05)
    assert router.get("canary") is state and state.tripped and router.status()["last_error"] is None


def _bump(path: Path, seconds: float) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(seconds * 1e9)))


def test_a_bad_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "splits.yaml"
    path.write_text("splits: [")
    with pytest.raises(SplitConfigError, match="not valid YAML"):
        SplitRouter(path=path)
    # a key given twice was kept silently (the last one): now an error naming the file and both lines
    path.write_text("splits:\n  chat:\n    arms: []\n  chat:\n    arms: []\n")
    with pytest.raises(SplitConfigError, match=rf"(?s)key 'chat' is given twice.*in \"{re.escape(str(path))}\", line 4"):
        load_splits(path)
    with pytest.raises(SplitConfigError, match=r"missing.yaml: invalid split configuration (?s:.*)no such file"):
        load_splits(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"splits: caf\xe9\n")
    with pytest.raises(SplitConfigError, match="not UTF-8 text"):
        load_splits(tmp_path / "latin1.yaml")


def test_replace_with_a_validator_refuses_and_keeps_the_old(tmp_path: Path) -> None:
    def validate(cfg: SplitsConfig) -> list[str]:
        return [
            f"splits.{n}.treatments[0].model: 'ghost' is unknown"
            for n, s in cfg.splits.items()
            if s.treatments[0].model == "ghost"
        ]

    router = SplitRouter(config(), validate=validate)
    bad = config(treatment={"model": "ghost", "weight": 1})
    with pytest.raises(SplitConfigError, match="'ghost' is unknown"):
        router.replace(bad)
    assert router.get("canary") is not None and router.config == config()
    assert router.replace(SplitsConfig()) == [] and router.names() == []


def test_choosing_is_cheap() -> None:
    router = SplitRouter(config(sticky=True))
    t0 = time.perf_counter()
    for i in range(20_000):
        router.choose("canary", f"user-{i}")
    assert time.perf_counter() - t0 < 2.0


# ------------------------------------------------------------------------------------------------------------------
# The gateway's side (no Triton: every arm answers 503, which is what the guard needs to see)
# ------------------------------------------------------------------------------------------------------------------


def _gateway(**kwargs: object) -> object:
    pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")
    from tritonforge.gateway import create_app
    from tritonforge.server import free_port

    return create_app(f"127.0.0.1:{free_port()}", retries=0, timeout=5, **kwargs)  # type: ignore[arg-type]


def _emb_split(**extra: object) -> SplitsConfig:
    return parse_splits(
        {
            "splits": {
                "emb-ab": {
                    "control": {"model": "minilm", "weight": 1},
                    "treatment": {"model": "minilm", "version": 3, "weight": 1},
                    **extra,
                }
            }
        }
    )


def test_the_gateway_refuses_splits_that_do_not_fit_its_models() -> None:
    bad = parse_splits(
        {
            "splits": {
                "chat": {"control": {"model": "chat", "weight": 1}, "treatment": {"model": "chat", "weight": 1}},
                "mixed": {"control": {"model": "minilm", "weight": 1}, "treatment": {"model": "chat", "weight": 1}},
                "ghost": {
                    "control": {"model": "ghost", "weight": 1},
                    "treatment": {"model": "minilm", "adapter": "a", "weight": 1},
                },
            }
        }
    )
    with pytest.raises(SplitConfigError) as info:
        _gateway(api_keys=None, splits=bad)
    text = str(info.value)
    assert "splits.chat: the split name is already a model id (chat)" in text
    assert "splits.mixed: every arm must be the same kind of model, got chat, embeddings" in text
    assert (
        "splits.ghost.control.model: 'ghost' is not a model id of this gateway (known: chat, minilm, reranker)" in text
    )
    assert "splits.ghost.treatments[0].adapter: 'a': adapters apply to chat models only" in text


def test_gateway_routes_records_and_trips_without_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    from starlette.testclient import TestClient

    from tritonforge.gateway import splits as splits_module

    # no Triton here: the control's 503s after the trip would read as an outage both arms share and undo it
    monkeypatch.setattr(splits_module, "OUTAGE_SECONDS", 0.0)

    # no Triton: every call is a 503. The control arm takes no traffic until the split trips (weight 0), so the
    # treatment's 503s are its own (its own version): a 503 the control had too would be an outage they share
    split = _emb_split(guard={"window": 4, "min_requests": 4}, control={"model": "minilm", "weight": 0})
    app = _gateway(api_keys=["k"], admin_keys=["adm"], splits=split)
    user, admin = {"Authorization": "Bearer k"}, {"Authorization": "Bearer adm"}
    with TestClient(app) as client:  # type: ignore[arg-type]
        arms = []
        for _ in range(40):
            reply = client.post("/v1/embeddings", json={"model": "emb-ab", "input": "x"}, headers=user)
            assert reply.status_code == 503 and reply.json()["error"]["message"]
            arms.append(reply.headers["x-tritonforge-arm"])
        assert arms.count("treatment") == 4 and arms[-10:] == ["control"] * 10  # tripped after 4 failures
        status = client.get("/admin/splits", headers=admin).json()["splits"]["emb-ab"]
        assert status["tripped"] and status["arms"]["treatment"]["errors"] == 4
        assert client.get("/admin/splits", headers=user).status_code == 401
        # bad input never reaches an arm
        reply = client.post("/v1/embeddings", content=b"{", headers={**user, "Content-Type": "application/json"})
        assert reply.status_code == 400 and "x-tritonforge-arm" not in reply.headers
        assert client.post("/v1/embeddings", json={"model": "emb-ab", "input": 3}, headers=user).status_code == 400
        assert client.post("/admin/splits/emb-ab/reset", headers=admin).json()["tripped"] is False
        text = client.get("/metrics", headers=user).text
        assert 'tritonforge_gateway_split_requests_total{arm="treatment",split="emb-ab"} 4.0' in text
        assert 'tritonforge_gateway_split_trips_total{split="emb-ab"} 1.0' in text
        assert 'tritonforge_gateway_split_tripped{split="emb-ab"} 0.0' in text
        assert 'tritonforge_gateway_requests_total{model="emb-ab",route="/v1/embeddings",status="503"}' in text
    # both arms on the same model (as two adapters of one engine are) and both 503: an outage they share, which
    # does not trip the split
    same = _emb_split(guard={"window": 4, "min_requests": 4}, treatment={"model": "minilm", "weight": 1})
    with TestClient(_gateway(api_keys=None, splits=same)) as client:
        served = [client.post("/v1/embeddings", json={"model": "emb-ab", "input": "x"}) for _ in range(40)]
        assert {r.status_code for r in served} == {503}
        assert {r.headers["x-tritonforge-arm"] for r in served} == {"control", "treatment"}
        assert client.get("/admin/splits").json()["splits"]["emb-ab"]["tripped"] is False


def test_a_sticky_split_keeps_each_user_on_the_arm_of_the_requests_user_field() -> None:
    """The body's ``user`` (a declared string field of every request body) is the identity, not the API key."""
    from starlette.testclient import TestClient

    split = _emb_split(sticky=True, guard=None)
    expected = SplitRouter(split)
    app = _gateway(api_keys=["k"], splits=split)
    with TestClient(app) as client:  # type: ignore[arg-type]
        seen = set()
        for i in range(16):
            user = f"user-{i}"
            arm = expected.choose("emb-ab", user).arm.name  # type: ignore[union-attr]
            for _ in range(3):
                reply = client.post("/v1/embeddings", json={"model": "emb-ab", "input": "x", "user": user},
                                    headers={"Authorization": "Bearer k"})
                assert reply.status_code == 503 and reply.headers["x-tritonforge-arm"] == arm, (user, reply.headers)
            seen.add(arm)
        assert seen == {"control", "treatment"}  # one API key, yet users on both arms


def test_admin_endpoints_are_closed_without_admin_keys_on_a_keyed_gateway() -> None:
    from starlette.testclient import TestClient

    with TestClient(_gateway(api_keys=["k"], splits=_emb_split())) as client:  # type: ignore[arg-type]
        reply = client.get("/admin/splits", headers={"Authorization": "Bearer k"})
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "admin_disabled"
    with TestClient(_gateway(api_keys=None, splits=_emb_split())) as client:  # type: ignore[arg-type]
        assert client.get("/admin/splits").json()["splits"]["emb-ab"]["tripped"] is False
        reply = client.put("/admin/splits", json={"splits": {"emb-ab": {"control": {"model": "minilm"}}}})
        assert (
            reply.status_code == 400
            and "splits.emb-ab.control.weight: Field required" in reply.json()["error"]["message"]
        )
        assert client.put("/admin/splits", json={"splits": {}}).json()["splits"] == {}
        assert client.post("/v1/embeddings", json={"model": "emb-ab", "input": "x"}).status_code == 404


def test_an_arm_cannot_pin_a_version_triton_cannot_name() -> None:
    """Found by a gateway audit: version 99999999999999999999999 was accepted, and its requests got 400s that
    blamed the client ("failed to get model version ... stol"). Triton's versions are int64."""
    with pytest.raises(SplitConfigError, match="less than or equal to 9223372036854775807"):
        parse_splits({"splits": {"x": {"control": {"model": "chat", "weight": 1, "version": 10**23},
                                       "treatment": {"model": "chat", "weight": 1}}}})
    assert parse_splits({"splits": {"x": {"control": {"model": "chat", "weight": 1, "version": 2**63 - 1},
                                          "treatment": {"model": "chat", "weight": 1}}}})


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    """Security review: `re.match` with `$` took "canary\\n", and every request to it dropped its connection
    ("Invalid HTTP header value" for x-tritonforge-split) without counting an error."""
    with pytest.raises(SplitConfigError, match="split name 'canary\\\\n' must match"):
        parse_splits({"splits": {"canary\n": {"control": {"model": "chat", "weight": 1},
                                               "treatment": {"model": "chat", "weight": 1}}}})


def test_a_misspelt_arm_key_names_its_near_miss() -> None:
    """'treatmnt:' read as 'treatments: Field required' beside 'treatmnt: Extra inputs are not permitted' (new-user
    audit); the paths are written as split_problems writes its own (treatments[0], not treatments.0)."""
    with pytest.raises(SplitConfigError) as info:
        parse_splits({"splits": {"s": {"control": {"model": "x", "weight": 1, "wieght": 2},
                                        "treatments": [{"model": "y", "weight": 1, "adaptr": "a"}]}}})
    assert sorted(info.value.problems) == [
        "splits.s.control.wieght: unknown field (did you mean 'weight'?) (got 2)",
        "splits.s.treatments[0].adaptr: unknown field (did you mean 'adapter'?) (got 'a')",
    ]
