"""Finding a pipeline's LLM engine (where a stop goes) from model configs, as Triton's JSON gives them."""

from __future__ import annotations

from typing import Any

from tritonforge.triton.engines import MAX_MODELS_READ, Deadline, EngineLookup, settled, takes_stop

ENGINE = {"input": [{"name": "text_input"}, {"name": "stop"}]}


def ensemble(*steps: str) -> dict[str, Any]:
    return {"platform": "ensemble", "ensemble_scheduling": {"step": [{"model_name": s} for s in steps]}}


def python_step(**parameters: str) -> dict[str, Any]:
    return {"backend": "python", "input": [{"name": "PROMPT"}],
            "parameters": {k: {"string_value": v} for k, v in parameters.items()}}


def search(configs: dict[str, Any], model: str) -> tuple[str | None, list[str]]:
    """Drives EngineLookup as the connections do: (what it found, the models it asked for)."""
    asked: list[str] = []
    lookup = EngineLookup(model, timeout=None)
    while (name := lookup.pending()) is not None:
        asked.append(name)
        lookup.answer(configs.get(name))
    return lookup.found, asked


def test_the_rag_pipeline_leads_through_its_answer_step_to_the_llm_engine() -> None:
    configs = {
        "rag": ensemble("tok", "enc", "retriever", "answer_prompt", "answer_generate"),
        "answer_generate": python_step(llm_model="bot_llm"),
        "bot_llm": ensemble("bot_preprocessing", "bot_tensorrt_llm"),
        "bot_tensorrt_llm": ENGINE,
        "tok": {"input": [{"name": "TEXT"}]},
    }
    engine, asked = search(configs, "rag")
    assert engine == "bot_tensorrt_llm"
    assert asked[0] == "rag" and asked.count("bot_llm") == 1


def test_a_bls_model_names_its_engine_and_an_engine_is_its_own() -> None:
    configs = {"bls": python_step(tensorrt_llm_model_name="e2"), "e2": ENGINE}
    assert search(configs, "bls")[0] == "e2"
    assert search(configs, "e2") == ("e2", ["e2"])


def test_unreadable_or_engineless_pipelines_find_none_and_cycles_end() -> None:
    assert search({}, "missing") == (None, ["missing"])
    assert search({"embed": ensemble("tok", "enc")}, "embed")[0] is None
    looped = {"a": ensemble("b"), "b": python_step(llm_model="a")}
    assert search(looped, "a") == (None, ["a", "b"])
    wide = {"top": ensemble(*[f"m{i}" for i in range(100)]), "m9": ENGINE}
    engine, asked = search(wide, "top")
    assert engine == "m9" and len(asked) == 11
    assert len(search({"top": ensemble(*[f"m{i}" for i in range(100)])}, "top")[1]) == MAX_MODELS_READ


def test_an_answer_is_kept_only_when_it_is_complete() -> None:
    """A found engine is kept; none found with every config read means no engine; none found while a config could
    not be read falls back to upstream's name and is asked again (a hiccup kept for good sent no stop ever after)."""
    assert settled("bot_tensorrt_llm", complete=False) == ("bot_tensorrt_llm", True)
    assert settled(None, complete=True) == (None, True)
    assert settled(None, complete=False) == ("tensorrt_llm", False)


def test_one_deadline_covers_every_read() -> None:
    import time

    deadline = Deadline(0.2)
    left = deadline.left()
    assert left is not None and 0 < left <= 0.2 and not deadline.passed()
    time.sleep(0.25)
    assert deadline.passed() and deadline.left() == 0.001
    assert Deadline(None).left() is None and not Deadline(None).passed()


def test_past_the_deadline_nothing_more_is_read_and_the_answer_is_not_kept() -> None:
    """A lookup whose deadline passed mid-search reads nothing more: the rest counts as unreadable, so the stop goes
    to upstream's name and the lookup is asked again next time (a slow server must not fix "no engine" for good)."""
    import time

    configs = {"rag": ensemble("tok", "answer"), "tok": {"input": [{"name": "TEXT"}]}, "answer": ENGINE}
    lookup = EngineLookup("rag", timeout=0.05)
    assert lookup.pending() == "rag"
    lookup.answer(configs["rag"])
    time.sleep(0.08)
    assert lookup.pending() is None
    assert lookup.outcome() == ("tensorrt_llm", False)


def test_an_engine_is_what_declares_upstreams_stop_in_either_config_form() -> None:
    """One predicate for Triton's JSON config (the clients) and the ModelConfig message (deploy's autoscaling)."""
    from tritonclient.grpc import model_config_pb2

    assert takes_stop(ENGINE) and not takes_stop({"input": [{"name": "TEXT"}]}) and not takes_stop({})
    message = model_config_pb2.ModelConfig(name="e")
    message.input.add(name="text_input")
    assert not takes_stop(message)
    message.input.add(name="stop")
    assert takes_stop(message)
