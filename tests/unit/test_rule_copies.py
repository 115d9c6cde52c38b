"""One copy of each Triton rule: the validator, the spec and the DAG API answer from the same rule functions."""

from __future__ import annotations

import pytest

from tritonforge.ensembles.dag import Ensemble, ModelIO
from tritonforge.errors import SpecError, ValidationError
from tritonforge.spec import parse_spec
from tritonforge.validation import ensemble_rules as rules
from tritonforge.validation.batching_rules import dynamic_batching_problems


def test_ensemble_rules_hold_or_answer_in_tritons_words() -> None:
    prefix = rules.tensor_prefix("e", "T")
    assert rules.inconsistent_type(prefix, "TYPE_FP32", "a", "TYPE_FP32", "b") is None
    assert rules.inconsistent_type(prefix, "TYPE_FP32", "a", "TYPE_INT64", "b") == (
        "in ensemble e, ensemble tensor T: inconsistent data type: TYPE_FP32 is inferred from model a while "
        "TYPE_INT64 is inferred from model b"
    )
    assert rules.inconsistent_shape(prefix, ((-1, 4), (-1, -1, 4), "a"), ((3, 4), (-1, 3, 4), "b")) is None
    assert "inconsistent shape: [-1,4] is inferred from model a while [-1,5] is inferred from model b" in (
        rules.inconsistent_shape(prefix, ((4,), (-1, 4), "a"), ((5,), (-1, 5), "b")) or ""
    )
    assert rules.batch_size_too_small("e", 8, "m", 0) is None  # a non-batching member takes any batch
    assert rules.batch_size_too_small("e", 8, "m", 4) == (
        "ensemble e allows maximum batch size 8, but it contains model m which only allows maximum batch size to be 4"
    )


def test_batching_rules_name_the_field_they_are_about() -> None:
    found = dynamic_batching_problems(
        "m", max_batch_size=8, preferred_batch_sizes=[4, 16], priority_levels=2, default_priority_level=3,
        policy_levels=[5], preserve_ordering=True, delays_on_timeout=True,
    )
    assert [field for field, _ in found] == [
        "preferred_batch_sizes", "default_priority_level", "priority_queue_policy", "preserve_ordering",
        "preserve_ordering",
    ]
    assert all(message.endswith("for m") for _, message in found)


def test_the_dag_and_the_spec_raise_the_rules_own_messages() -> None:
    from tritonforge.config_io import parse_config_text

    member = ModelIO.from_config(parse_config_text(
        'name: "small" max_batch_size: 4 '
        'input { name: "X" data_type: TYPE_FP32 dims: 2 } output { name: "Y" data_type: TYPE_FP32 dims: 2 }'
    ))
    with pytest.raises(ValidationError) as caught:
        Ensemble("e", max_batch_size=8).input("X", "TYPE_FP32", [2]).step(member, inputs={"X": "X"}, outputs={"Y": "Y"})
    assert rules.batch_size_too_small("e", 8, "small", 4) in str(caught.value)

    with pytest.raises(SpecError) as spec_error:
        parse_spec({"name": "s", "target": "cpu", "models": {"m": {
            "kind": "embedding", "checkpoint": "random:bert",
            "dynamic_batching": {"priority_levels": 2, "default_priority_level": 3}}}})
    (_, message), = dynamic_batching_problems(
        None, max_batch_size=None, preferred_batch_sizes=[], priority_levels=2, default_priority_level=3,
        policy_levels=[], preserve_ordering=False, delays_on_timeout=False,
    )
    assert message in str(spec_error.value)
