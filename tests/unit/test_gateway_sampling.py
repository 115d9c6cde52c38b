"""How the gateway turns a request's sampling fields into the engine's (no Triton needed): what is sent decides
whether the answer is greedy or sampled, and how each of ``n`` choices is seeded."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")

from tritonforge.gateway import GatewayLimits
from tritonforge.gateway.generation import _choice_seeds, sampling
from tritonforge.gateway.schemas import ChatBody

MESSAGES = [{"role": "user", "content": "hi"}]


def _params(**fields: Any) -> Any:
    body = ChatBody.model_validate({"model": "chat", "messages": MESSAGES, **fields})
    return sampling(GatewayLimits(), body, body.max_tokens, 64, chat=True)


@pytest.mark.parametrize("fields", [{"n": 3}, {"seed": 5}, {"n": 2, "seed": 5}])
def test_several_choices_or_a_seed_without_a_sampling_parameter_sample_at_openais_temperature(
    fields: dict[str, Any]
) -> None:
    """Audit: n=3 gave ['A cat.', 'A cat.', 'A cat.'] (greedy, paid three times) and a seed alone changed nothing,
    where OpenAI and vLLM sample at temperature 1.0 by default."""
    params = _params(**fields)
    assert (params.temperature, params.top_p) == (1.0, 1.0)  # top_p: the engine contract needs one to sample
    assert params.seed is not None
    if "seed" in fields:
        assert params.seed == fields["seed"]
    seeds = _choice_seeds(params, fields.get("n", 1))
    assert len(set(seeds)) == len(seeds) and None not in seeds


@pytest.mark.parametrize("fields", [
    {"n": 3, "temperature": 0}, {"n": 3, "top_k": 1}, {"n": 3, "top_p": 0}, {"seed": 5, "temperature": 0},
])
def test_a_client_that_asks_for_greedy_gets_greedy_choices(fields: dict[str, Any]) -> None:
    params = _params(**fields)
    assert params.temperature in (None, 0) and params.seed in (None, fields.get("seed"))
    if "seed" not in fields:
        assert _choice_seeds(params, 3) == [None, None, None]


@pytest.mark.parametrize(("fields", "temperature"), [
    ({"n": 3, "temperature": 0.7}, 0.7), ({"n": 3, "top_p": 0.9}, None), ({"n": 3, "top_k": 20}, None),
])
def test_a_clients_own_sampling_parameter_is_kept(fields: dict[str, Any], temperature: float | None) -> None:
    params = _params(**fields)
    assert params.temperature == temperature and params.seed is not None


def test_one_choice_without_a_seed_or_sampling_parameter_stays_greedy() -> None:
    params = _params()
    assert (params.temperature, params.top_p, params.top_k, params.seed) == (None, None, None, None)


@pytest.mark.parametrize("top_k", [-1, 0])
def test_top_k_minus_one_is_vllms_no_limit_the_same_as_0(top_k: int) -> None:
    """vLLM's clients send top_k -1 for its default, no top-k limit: it was a 400."""
    params = _params(top_k=top_k, temperature=0.5)
    assert params.top_k == 0 and params.temperature == 0.5
    assert _params(top_k=top_k, temperature=0).seed is None  # greedy as asked
    assert _params(top_k=top_k).seed is not None  # top_k given: sampled at temperature 1, as with 0


@pytest.mark.parametrize("top_k", [-2, -100])
def test_other_negative_top_ks_are_a_400_saying_what_is_allowed(top_k: int) -> None:
    from starlette.testclient import TestClient

    from tritonforge.gateway import create_app
    from tritonforge.server import free_port

    app = create_app(f"127.0.0.1:{free_port()}", api_keys=None, retries=0, timeout=5)
    with TestClient(app) as client:
        reply = client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, "top_k": top_k})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert (error["param"], error["code"]) == ("top_k", "invalid_value"), error
        assert "top_k must be -1 or 0 (no top-k limit), or a positive integer" in error["message"], error
        reply = client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, "top_k": -1})
        assert reply.status_code == 503, reply.text  # accepted: on to Triton (not there)
