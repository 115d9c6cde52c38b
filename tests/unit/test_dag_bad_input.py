"""The ensemble DAG API refuses bad arguments where they are given: a ValidationError naming the argument, what was
given and what is allowed (never a raw TypeError/AttributeError, never a config Triton would refuse at load)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tritonforge.builders.model_configs import TensorSpec
from tritonforge.config_io import model_config_pb2
from tritonforge.ensembles.dag import Ensemble, ModelIO
from tritonforge.errors import ValidationError
from tritonforge.validation import ensemble_rules as rules
from tritonforge.validation.config_rules import max_batch_size_problem, name_problem
from tritonforge.validator import check_config

TOK = ModelIO(
    "tok", 8, {"TEXT": TensorSpec("TEXT", "TYPE_STRING", (1,))}, {"IDS": TensorSpec("IDS", "TYPE_INT64", (-1,))}
)
ENC = ModelIO("enc", 8, {"IDS": TensorSpec("IDS", "TYPE_INT64", (-1,))}, {"E": TensorSpec("E", "TYPE_FP32", (4,))})
# a member with nothing to map: Triton still wants an input_map and an output_map in its step
CONST = ModelIO("const", 0, {"OPT": TensorSpec("OPT", "TYPE_FP32", (1,), optional=True)}, {})


def _started() -> Ensemble:
    return Ensemble("e", max_batch_size=8).input("TEXT", "TYPE_STRING", [1])


def _finished() -> Ensemble:
    dag = _started().step(TOK, inputs={"TEXT": "TEXT"}, outputs={"IDS": "ids"})
    return dag.step(ENC, inputs={"IDS": "ids"}, outputs={"E": "E"}).output("E")


def _message(fn: Callable[[], Any]) -> str:
    with pytest.raises(ValidationError) as caught:
        fn()
    (problem,) = caught.value.problems
    return str(problem)


def test_good_input_renders_as_before() -> None:
    config = _finished().config(parameters={"k": "v"})
    assert config.name == "e" and config.max_batch_size == 8
    assert [o.name for o in config.output] == ["E"]
    assert [dict(s.output_map) for s in config.ensemble_scheduling.step] == [{"IDS": "ids"}, {"E": "E"}]
    assert config.parameters["k"].string_value == "v"
    assert Ensemble("e", max_batch_size=0).max_batch_size == 0


def test_an_output_declared_twice_is_refused_at_the_second_declaration() -> None:
    dag = _finished()
    assert _message(lambda: dag.output("E")) == "ensemble e: ensemble output 'E' is declared twice in ensemble 'e'"
    assert [o.name for o in dag.config().output] == ["E"]  # the refused call left the ensemble as it was


def test_a_step_without_outputs_is_refused_with_tritons_r48_message() -> None:
    message = _message(lambda: _started().step(TOK, inputs={"TEXT": "TEXT"}, outputs={}))
    assert message == "ensemble e: " + rules.step_missing("e", "output_map", 0)
    assert message.endswith("must specify 'output_map' in step 0 of ensemble 'e'")  # Triton's words


def test_a_step_without_inputs_or_model_name_is_refused_with_tritons_r48_message() -> None:
    no_inputs = _message(lambda: _started().step(CONST, inputs={}, outputs={}))
    assert no_inputs.endswith("must specify 'input_map' in step 0 of ensemble 'e'")
    unnamed = ModelIO("", 8, TOK.inputs, TOK.outputs)
    assert _message(lambda: _started().step(unnamed, inputs={"TEXT": "TEXT"}, outputs={"IDS": "ids"})).endswith(
        "must specify 'model_name' in step 0 of ensemble 'e'"
    )


def test_the_dag_and_the_validator_share_r48() -> None:
    """The validator's copy of R48 on a config written without the DAG: the same rule function's text."""
    pb = model_config_pb2()
    config = pb.ModelConfig(name="e", platform="ensemble", max_batch_size=8)
    config.input.add(name="TEXT", data_type=pb.TYPE_STRING, dims=[1])
    step = config.ensemble_scheduling.step.add(model_name="tok", model_version=-1)
    step.input_map["TEXT"] = "TEXT"
    assert rules.step_missing("e", "output_map", 0) in check_config(config)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"name": None, "max_batch_size": 8}, "Ensemble(name=...): None (NoneType) is not a model name"),
        ({"name": 5, "max_batch_size": 8}, "Ensemble(name=...): 5 (int) is not a model name"),
        ({"name": "", "max_batch_size": 8}, f"Ensemble(name=...): {name_problem('')}"),
        ({"name": "e", "max_batch_size": "8"}, "Ensemble(max_batch_size=...): got '8' (str); give a whole number"),
        ({"name": "e", "max_batch_size": 8.0}, "Ensemble(max_batch_size=...): got 8.0 (float)"),
        ({"name": "e", "max_batch_size": True}, "Ensemble(max_batch_size=...): got True (bool)"),
        ({"name": "e", "max_batch_size": -1}, f"ensemble e: {max_batch_size_problem('e', -1)}"),
    ],
)
def test_the_constructor_refuses_a_bad_name_or_max_batch_size(kwargs: dict[str, Any], expected: str) -> None:
    assert expected in _message(lambda: Ensemble(**kwargs))


def test_a_negative_max_batch_size_uses_tritons_r12_words() -> None:
    assert _message(lambda: Ensemble("e", max_batch_size=-1)).endswith(
        "'max_batch_size' must be non-negative value for e"
    )


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda d: d.step(TOK, inputs=["TEXT"], outputs={"IDS": "ids"}), "step(inputs=...): got ['TEXT'] (list)"),
        (lambda d: d.step(TOK, inputs={"TEXT": "TEXT"}, outputs=None), "step(outputs=...): got None (NoneType)"),
        (lambda d: d.step(TOK, inputs={"TEXT": 5}, outputs={"IDS": "i"}), "'TEXT': 5 is not a pair of names"),
        (lambda d: d.step(TOK, inputs={"TEXT": "TEXT"}, outputs={"IDS": ""}), "'IDS': '' is not a pair of names"),
        (lambda d: d.step("tok", inputs={"TEXT": "TEXT"}, outputs={"IDS": "i"}), "step(model=...): got 'tok' (str)"),
        (lambda d: d.input("X", "TYPE_FP32", 1), "input(dims=...): got 1 (int); give a sequence of whole numbers"),
        (lambda d: d.input("X", "TYPE_FP32", None), "input(dims=...): got None (NoneType)"),
        (lambda d: d.input("X", "TYPE_FP32", "1"), "input(dims=...): got '1' (str)"),
        (lambda d: d.input("X", "TYPE_FP32", [1.5]), "input(dims=...): got [1.5] (list); every dimension is a whole"),
        (lambda d: d.input("X", "TYPE_FP32", [1], reshape=2), "input(reshape=...): got 2 (int)"),
        (lambda d: d.input(None, "TYPE_FP32", [1]), "input(name=...): got None (NoneType)"),
        (lambda d: d.input("X", 11, [1]), "input(data_type=...): got 11 (int)"),
    ],
)
def test_step_and_input_arguments_are_named(call: Callable[[Ensemble], Any], expected: str) -> None:
    message = _message(lambda: call(_started()))
    assert message.startswith("ensemble e: ") and expected in message


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda d: d.output(None), "output(name=...): got None (NoneType)"),
        (lambda d: d.output("E", dims=4), "output(dims=...): got 4 (int)"),
        (lambda d: d.output("E", data_type=5), "output(data_type=...): got 5 (int)"),
        (lambda d: d.config(parameters=["a"]), "config(parameters=...): got ['a'] (list); give a mapping"),
        (lambda d: d.config(parameters={"a": 1}), "config(parameters=...): got {'a': 1} (dict); 'a': 1: names and"),
    ],
)
def test_output_and_config_arguments_are_named(call: Callable[[Ensemble], Any], expected: str) -> None:
    dag = _started().step(TOK, inputs={"TEXT": "TEXT"}, outputs={"IDS": "ids"})
    dag = dag.step(ENC, inputs={"IDS": "ids"}, outputs={"E": "E"})
    if "config" in expected:
        dag.output("E")
    assert expected in _message(lambda: call(dag))


def test_model_io_from_a_dict_is_named() -> None:
    assert "ModelIO.from_config(config=...): {'name': 'x'} (dict) is not a ModelConfig message" in _message(
        lambda: ModelIO.from_config({"name": "x"})  # type: ignore[arg-type]
    )
