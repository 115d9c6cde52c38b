"""Values the spec refuses because a build or a load would fail on them later (found by an audit of the build):
whole numbers that are not (true, 2.0, "64"), numbers beyond the config field they become, runner parameters the
encoder cannot use, a retriever default above its maximum; all reported at once with their field paths."""

from __future__ import annotations

from typing import Any

import pytest

from tritonforge.errors import SpecError
from tritonforge.spec import parse_spec


def _problems(model: dict[str, Any], *others: tuple[str, dict[str, Any]]) -> list[str]:
    data = {"name": "values", "models": {"m": {"kind": "embedding", "checkpoint": "random:bert", **model},
                                          **dict(others)}}
    with pytest.raises(SpecError) as info:
        parse_spec(data)
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize(("field", "value"), [
    ("max_batch_size", True), ("max_batch_size", False), ("max_batch_size", 2.0), ("max_batch_size", "64"),
    ("max_seq_length", True),
])
def test_a_whole_number_is_not_a_bool_a_float_or_a_string(field: str, value: Any) -> None:
    """true built as max_batch_size 1 and false as 0 (batching off), silently."""
    (problem,) = _problems({field: value})
    assert problem.startswith(f"models.m.{field}: ") and "valid integer" in problem, problem


@pytest.mark.parametrize("field", ["response_cache", "normalize", "force_quantization"])
def test_a_flag_is_true_or_false_not_one(field: str) -> None:
    (problem,) = _problems({field: 1})
    assert problem.startswith(f"models.m.{field}: 1: ") and "valid boolean" in problem, problem


def test_numbers_beyond_the_config_field_they_become_are_spec_errors_not_a_traceback() -> None:
    """protobuf's "Value out of range" stopped the build with a traceback."""
    problems = _problems({
        "max_batch_size": 100_000_000_000,
        "instance_groups": [{"count": 3_000_000_000}],
        "dynamic_batching": {"max_queue_delay_microseconds": 99_999_999_999_999_999_999},
    })
    assert sorted(problems) == sorted([
        "models.m.max_batch_size: 100000000000: input should be less than or equal to 2147483647",
        "models.m.instance_groups[0].count: 3000000000: input should be less than or equal to 2147483647",
        "models.m.dynamic_batching.max_queue_delay_microseconds: 99999999999999999999: input should be less than "
        "or equal to 9223372036854775807",
    ]), problems


def test_an_hour_of_queue_delay_is_not_an_int32() -> None:
    spec = parse_spec({"name": "v", "models": {"m": {"kind": "embedding", "checkpoint": "random:bert",
                                                     "dynamic_batching": {"max_queue_delay_microseconds": 3_600_000_000}}}})
    assert spec.models["m"].dynamic_batching.max_queue_delay_microseconds == 3_600_000_000  # type: ignore[union-attr]


def test_runner_parameters_the_encoder_cannot_use_fail_the_spec_not_the_servers_load() -> None:
    problems = _problems({"parameters": {"max_rows_per_call": "abc", "cpu_affinity": "bogus", "call_cost": "1,2",
                                         "engine": "tensorflow"}})
    assert sorted(problems) == [
        "models.m.parameters.call_cost: parameter call_cost must be three numbers >= 0, "
        "'fixed_ms,per_token_ms,per_token_width_ms', got '1,2' (or 'auto': fitted at load)",
        "models.m.parameters.cpu_affinity: parameter cpu_affinity must be 'none' or 'instance', got 'bogus'",
        "models.m.parameters.engine: parameter engine must be 'onnxruntime' or 'torch', got 'tensorflow'",
        "models.m.parameters.max_rows_per_call: parameter max_rows_per_call must be a whole number >= 0 (0: the "
        "default), got 'abc'",
    ], problems
    assert parse_spec({"name": "v", "models": {"m": {
        "kind": "embedding", "checkpoint": "random:bert",
        "parameters": {"cpu_affinity": "instance", "max_rows_per_call": "32", "call_cost": "3.5,0.01,0"},
    }}})


def test_a_retrievers_default_top_k_above_its_max_fails_the_spec() -> None:
    """It built and validated, then the retriever refused to load."""
    problems = _problems({}, ("p", {"kind": "retriever", "embedder": "m", "corpus": "c.jsonl", "default_top_k": 500,
                                    "max_top_k": 100}))
    assert problems == ["models.p.default_top_k: 500 is larger than max_top_k 100"], problems


def test_an_unknown_kind_is_one_problem_not_also_a_name_collision() -> None:
    problems = _problems({}, ("q", {"kind": "nope"}))
    assert not any("is also used by" in p for p in problems), problems
    assert any(p.startswith("models.q") for p in problems), problems
