"""The ensemble DAG API rejects bad wiring where it is written, in Triton's own words."""

from __future__ import annotations

import pytest

from tritonforge.builders.model_configs import TensorSpec
from tritonforge.ensembles import Ensemble, ModelIO
from tritonforge.errors import ValidationError


def _model(name: str, inputs: dict, outputs: dict, mbs: int = 8, decoupled: bool = False) -> ModelIO:
    def specs(d: dict) -> dict:
        return {k: TensorSpec(k, *v) if isinstance(v, tuple) else v for k, v in d.items()}

    return ModelIO(name, mbs, specs(inputs), specs(outputs), decoupled)


A = _model("a", {"IN": ("TYPE_FP32", (4,))}, {"OUT": ("TYPE_FP32", (4,))})
B_INT = _model("b", {"X": ("TYPE_INT32", (4,))}, {"Y": ("TYPE_FP32", (-1,))})
B = _model("b", {"X": ("TYPE_FP32", (-1,))}, {"Y": ("TYPE_FP32", (2,))})


def _start() -> Ensemble:
    return (
        Ensemble("pipe", max_batch_size=8)
        .input("DATA", "TYPE_FP32", [4])
        .step(A, inputs={"IN": "DATA"}, outputs={"OUT": "mid"})
    )


def _message(fn) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as info:
        fn()
    return info.value.problems[0].message


def test_valid_pipeline_renders_an_ensemble_config() -> None:
    cfg = _start().step(B, inputs={"X": "mid"}, outputs={"Y": "RESULT"}).output("RESULT").config()
    assert cfg.platform == "ensemble" and cfg.max_batch_size == 8
    assert [s.model_name for s in cfg.ensemble_scheduling.step] == ["a", "b"]
    assert [s.model_version for s in cfg.ensemble_scheduling.step] == [-1, -1]
    assert list(cfg.output[0].dims) == [2]


def test_wrong_dtype_between_steps_uses_tritons_message() -> None:
    msg = _message(lambda: _start().step(B_INT, inputs={"X": "mid"}, outputs={"Y": "R"}))
    assert msg == (
        "in ensemble pipe, ensemble tensor mid: inconsistent data type: TYPE_FP32 is inferred "
        "from model a while TYPE_INT32 is inferred from model b"
    )


def test_shape_mismatch() -> None:
    bad = _model("b", {"X": ("TYPE_FP32", (5,))}, {"Y": ("TYPE_FP32", (2,))})
    msg = _message(lambda: _start().step(bad, inputs={"X": "mid"}, outputs={"Y": "R"}))
    assert (
        msg
        == "in ensemble pipe, ensemble tensor mid: inconsistent shape: [-1,4] is inferred from model a while [-1,5] is inferred from model b"
    )


def test_unknown_names_unmapped_inputs_and_double_production() -> None:
    assert _message(lambda: _start().step(B, inputs={"Z": "mid"}, outputs={})) == (
        "in ensemble pipe, ensemble tensor mid is mapping to non-existing input Z in model b"
    )
    assert _message(lambda: _start().step(B, inputs={}, outputs={"Y": "R"})) == (
        "in ensemble pipe, input X in model b is not mapped to any ensemble tensors"
    )
    assert _message(lambda: _start().step(B, inputs={"X": "mid"}, outputs={"Q": "R"})) == (
        "in ensemble pipe, ensemble tensor R is mapped from non-existing output Q in model b"
    )
    assert _message(lambda: _start().step(B, inputs={"X": "mid"}, outputs={"Y": "mid"})) == (
        "ensemble tensor 'mid' can appear in an output map only once for ensemble 'pipe' step 1"
    )
    assert "reads ensemble tensor 'nope'" in _message(lambda: _start().step(B, inputs={"X": "nope"}, outputs={}))


def test_batch_size_limit_and_completeness() -> None:
    small = _model("small", {"IN": ("TYPE_FP32", (4,))}, {"OUT": ("TYPE_FP32", (4,))}, mbs=4)
    assert _message(lambda: Ensemble("pipe", max_batch_size=8).step(small, inputs={}, outputs={})) == (
        "ensemble pipe allows maximum batch size 8, but it contains model small which only allows maximum batch size to be 4"
    )
    dangling = _start()
    assert _message(dangling.config) == "ensemble tensor 'mid' is unused in ensemble 'pipe'"
    unused = Ensemble("pipe", max_batch_size=8).input("DATA", "TYPE_FP32", [4]).input("EXTRA", "TYPE_FP32", [1])
    unused.step(A, inputs={"IN": "DATA"}, outputs={"OUT": "R"}).output("R")
    assert _message(unused.config) == "ensemble input 'EXTRA' for ensemble pipe' is not used"


def test_decoupled_member_makes_the_ensemble_decoupled() -> None:
    stream = _model("gen", {"X": ("TYPE_FP32", (4,))}, {"Y": ("TYPE_FP32", (4,))}, decoupled=True)
    dag = _start().step(stream, inputs={"X": "mid"}, outputs={"Y": "R"}).output("R")
    assert dag.decoupled


def test_dag_api_and_validator_print_the_same_dtype_message(tmp_path) -> None:
    """A wrong dtype between two steps: the DAG API refuses it while wiring, `validate` refuses the same
    wiring on disk, and both use Triton's words."""
    from google.protobuf import text_format

    from tritonforge.config_io import model_config_pb2
    from tritonforge.validator import check_repository

    with pytest.raises(ValidationError) as info:
        _start().step(B_INT, inputs={"X": "mid"}, outputs={"Y": "R"})
    dag_message = info.value.problems[0].message

    pb = model_config_pb2()
    for model in (A, B_INT):
        cfg = pb.ModelConfig(name=model.name, backend="python", max_batch_size=model.max_batch_size)
        for spec, target in [(s, cfg.input.add()) for s in model.inputs.values()] + [
            (s, cfg.output.add()) for s in model.outputs.values()
        ]:
            target.name, target.data_type = spec.name, pb.DataType.Value(spec.data_type)
            target.dims.extend(spec.dims)
        (tmp_path / model.name / "1").mkdir(parents=True)
        (tmp_path / model.name / "1" / "model.py").write_text("")
        (tmp_path / model.name / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    ens = pb.ModelConfig(name="pipe", platform="ensemble", max_batch_size=8)
    ens.input.add(name="DATA", data_type=pb.TYPE_FP32, dims=[4])
    ens.output.add(name="R", data_type=pb.TYPE_FP32, dims=[-1])
    s1 = ens.ensemble_scheduling.step.add(model_name="a", model_version=-1)
    s1.input_map["IN"], s1.output_map["OUT"] = "DATA", "mid"
    s2 = ens.ensemble_scheduling.step.add(model_name="b", model_version=-1)
    s2.input_map["X"], s2.output_map["Y"] = "mid", "R"
    (tmp_path / "pipe" / "1").mkdir(parents=True)
    (tmp_path / "pipe" / "config.pbtxt").write_text(text_format.MessageToString(ens))

    assert [p.message for p in check_repository(tmp_path)] == [dag_message]


def test_joining_a_decoupled_branch_with_another_is_refused() -> None:
    """R62: Triton refuses a step (or the ensemble's outputs) fed by different decoupled producers."""
    stream = _model("gen", {"X": ("TYPE_FP32", (4,))}, {"Y": ("TYPE_FP32", (4,))}, decoupled=True)
    join = _model("join", {"P": ("TYPE_FP32", (4,)), "Q": ("TYPE_FP32", (4,))}, {"R": ("TYPE_FP32", (4,))})
    dag = _start().step(stream, inputs={"X": "mid"}, outputs={"Y": "streamed"})
    assert _message(lambda: dag.step(join, inputs={"P": "streamed", "Q": "DATA"}, outputs={"R": "R"})) == (
        "in ensemble pipe, step of model 'join' receives inputs originated from different decoupled models"
    )
    outputs_mixed = _start().step(stream, inputs={"X": "mid"}, outputs={"Y": "streamed"})
    outputs_mixed.step(A, inputs={"IN": "DATA"}, outputs={"OUT": "plain"}).output("streamed").output("plain")
    assert "receives inputs originated from different decoupled models" in _message(outputs_mixed.config)
    # fan-out from one decoupled step and re-joining its own outputs is fine
    fan = _start().step(stream, inputs={"X": "mid"}, outputs={"Y": "s"})
    fan.step(join, inputs={"P": "s", "Q": "s"}, outputs={"R": "R"}).output("R")
    assert fan.config().platform == "ensemble"


def test_a_member_input_with_reshape_is_fed_by_its_dims_as_triton_checks_it() -> None:
    # upstream's LLM wiring: a [1] tensor feeds `input_lengths` dims [1] reshape [] (Triton compares dims)
    lengths = ModelIO("trt", 8, {"input_lengths": TensorSpec("input_lengths", "TYPE_INT32", (1,), reshape=())},
                      {"out": TensorSpec("out", "TYPE_INT32", (1,))})
    cfg = (
        Ensemble("pipe", max_batch_size=8)
        .input("LEN", "TYPE_INT32", [1], reshape=[], allow_ragged_batch=True)
        .step(lengths, inputs={"input_lengths": "LEN"}, outputs={"out": "OUT"})
        .output("OUT")
        .config(parameters={"note": "x"})
    )
    assert cfg.input[0].HasField("reshape") and list(cfg.input[0].reshape.shape) == []
    assert cfg.input[0].allow_ragged_batch
    assert cfg.parameters["note"].string_value == "x"


def test_a_declared_output_shape_must_agree_with_its_producer() -> None:
    pipeline = _start().step(B, inputs={"X": "mid"}, outputs={"Y": "RESULT"})
    assert list(pipeline.output("RESULT", dims=[-1]).config().output[0].dims) == [-1]  # a wildcard agrees
    msg = _message(lambda: _start().step(B, inputs={"X": "mid"}, outputs={"Y": "R"}).output("R", dims=[3]))
    assert msg == "in ensemble pipe, ensemble tensor R: inconsistent shape: [-1,2] is inferred from model b while " \
        "[-1,3] is inferred from model pipe"
    msg = _message(lambda: _start().step(B, inputs={"X": "mid"}, outputs={"Y": "R"}).output("R", data_type="TYPE_FP16"))
    assert "inconsistent data type: TYPE_FP32 is inferred from model b while TYPE_FP16" in msg


def test_mistakes_triton_refuses_at_load_raise_where_they_are_made() -> None:
    """Each was accepted by the DAG API and refused by Triton 2.51 at load (found by an audit)."""
    two = _model("two", {"IN": ("TYPE_FP32", (4,))}, {"P": ("TYPE_FP32", (4,)), "Q": ("TYPE_FP32", (4,))})
    start = Ensemble("pipe", max_batch_size=8).input("DATA", "TYPE_FP32", [4])
    assert _message(lambda: start.step(two, inputs={"IN": "DATA"}, outputs={"P": "X", "Q": "X"})) == (
        "ensemble tensor 'X' can appear in an output map only once for ensemble 'pipe' step 0"
    )
    assert _message(lambda: Ensemble("e", max_batch_size=8).input("T", "TYPE_FP32", [1], reshape=[2, 3])) == (
        "model input 'T' has different size for dims and reshape"
    )
    assert _message(lambda: _start().output("mid", reshape=[5, 7])) == (
        "model output 'mid' has different size for dims and reshape"
    )
    itself = _model("pipe", {"IN": ("TYPE_FP32", (4,))}, {"OUT": ("TYPE_FP32", (4,))})
    assert _message(lambda: _start().step(itself, inputs={"IN": "mid"}, outputs={"OUT": "R"})) == (
        "circular dependency between ensembles: pipe -> ... -> pipe -> pipe"
    )
    for name in ("bad/name", ".", ".."):
        assert "cannot be a model name: it is also the model's folder" in _message(
            lambda name=name: Ensemble(name, max_batch_size=8)
        )
