"""The validator reads model files: ONNX graphs, TorchScript forward() arity, python auto_complete_config (cases
written here; Triton's own autofill QA cases are replayed separately, see docs/validation.md)."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest

from tritonforge.config_io import model_config_pb2
from tritonforge.validation.autocomplete import compare_dims
from tritonforge.validator import check_repository

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

Dim = int | str


def _onnx(
    path: Path,
    inputs: dict[str, tuple[int, list[Dim]]],
    outputs: dict[str, tuple[int, list[Dim]]],
    initializers: tuple[str, ...] = (),
) -> None:
    """A graph whose outputs are Identity copies of its first input (shapes are declared, not inferred)."""
    first = next(iter(inputs))
    nodes = [helper.make_node("Identity", [first], [name]) for name in outputs]
    inits = [helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0]) for name in initializers]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, d) for n, (t, d) in inputs.items()],
        [helper.make_tensor_value_info(n, t, d) for n, (t, d) in outputs.items()],
        initializer=inits,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph), str(path))


def _repo(tmp_path: Path, name: str, config: str | None) -> Path:
    model = tmp_path / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    if config is not None:
        (model / "config.pbtxt").write_text(config)
    return model


def _messages(repo: Path, auto_complete: bool = True) -> list[str]:
    return [p.message for p in check_repository(repo, auto_complete=auto_complete)]


F32, I64 = TensorProto.FLOAT, TensorProto.INT64


# ---------------------------------------------------------------- ONNX: completing


def test_an_empty_onnx_config_is_completed_with_batching(tmp_path: Path) -> None:
    model = _repo(tmp_path, "enc", None)
    _onnx(
        model / "1" / "model.onnx",
        {"IDS": (I64, ["N", 8]), "W": (F32, [1])},
        {"OUT": (F32, ["N", 8])},
        initializers=("W",),
    )
    assert _messages(tmp_path) == []
    assert _messages(tmp_path, auto_complete=False)  # no config.pbtxt without auto-complete


def test_onnx_without_a_batch_dimension_refuses_a_max_batch_size(tmp_path: Path) -> None:
    model = _repo(tmp_path, "m", 'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 8\n')
    _onnx(model / "1" / "model.onnx", {"IN": (F32, [4])}, {"OUT": (F32, [4])})
    assert _messages(tmp_path) == [
        "autofill failed for model 'm': model does not support batching while non-zero max_batch_size is specified"
    ]


def test_onnx_completion_fills_what_is_missing(tmp_path: Path) -> None:
    from tritonforge.validator import _check_model

    model = _repo(tmp_path, "m", None)
    _onnx(model / "1" / "model.onnx", {"B": (F32, ["batch", 3]), "A": (I64, ["batch"])}, {"OUT": (F32, ["batch", 3])})
    config = model_config_pb2().ModelConfig()
    config.name, config.backend = "m", "onnxruntime"
    assert _check_model(config, model, tmp_path, 8, None, True).messages() == []
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims), i.HasField("reshape")) for i in config.input] == [
        ("A", [1], True),
        ("B", [3], False),
    ]
    assert [(o.name, list(o.dims)) for o in config.output] == [("OUT", [3])]


# ---------------------------------------------------------------- ONNX: checking the config against the file


@pytest.mark.parametrize("auto_complete", [True, False])
@pytest.mark.parametrize(
    ("io", "expected"),
    [
        (
            'input { name: "IN" data_type: TYPE_INT32 dims: 4 }\noutput { name: "OUT" data_type: TYPE_FP32 dims: 4 }',
            "unable to load model 'm', configuration expects datatype TYPE_INT32 for input 'IN', model provides TYPE_FP32",
        ),
        (
            'input { name: "X" data_type: TYPE_FP32 dims: 4 }\noutput { name: "OUT" data_type: TYPE_FP32 dims: 4 }',
            "unexpected inference input 'X', allowed inputs are: IN",
        ),
        (
            'input { name: "IN" data_type: TYPE_FP32 dims: 4 }\noutput { name: "Y" data_type: TYPE_FP32 dims: 4 }',
            "unexpected inference output 'Y', allowed outputs are: OUT",
        ),
        (
            'input { name: "IN" data_type: TYPE_FP32 dims: 4 }\ninput { name: "J" data_type: TYPE_FP32 dims: 4 }\n'
            'output { name: "OUT" data_type: TYPE_FP32 dims: 4 }',
            "unable to load model 'm', configuration expects 2 inputs, model provides 1",
        ),
        (
            'input { name: "IN" data_type: TYPE_FP32 dims: 5 }\noutput { name: "OUT" data_type: TYPE_FP32 dims: 4 }',
            "model 'm', tensor 'IN': the model expects 2 dimensions (shape [-1,4]) but the model configuration "
            "specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit "
            "tensor shape, making complete shape [-1,5])",
        ),
        (
            'input { name: "IN" data_type: TYPE_FP32 dims: 4 }\noutput { name: "OUT" data_type: TYPE_FP32 dims: -1 }',
            "model 'm', tensor 'OUT': the model expects 2 dimensions (shape [-1,4]) but the model configuration "
            "specifies 2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit "
            "tensor shape, making complete shape [-1,-1])",
        ),
    ],
)
def test_an_onnx_config_must_match_its_graph(tmp_path: Path, io: str, expected: str, auto_complete: bool) -> None:
    model = _repo(tmp_path, "m", f'name: "m"\nbackend: "onnxruntime"\nmax_batch_size: 4\n{io}\n')
    _onnx(model / "1" / "model.onnx", {"IN": (F32, ["N", 4])}, {"OUT": (F32, ["N", 4])})
    assert expected in _messages(tmp_path, auto_complete=auto_complete)


def test_wildcards_match_any_input_dimension() -> None:
    assert compare_dims("m", "t", [-1, -1, 3], [5, 3], 4, False) is None
    assert compare_dims("m", "t", [2, 3], [2, -1], 0, False) is None
    assert compare_dims("m", "t", [2, 3], [2, -1], 0, True) is not None  # outputs compare exactly
    assert "first dimension must be -1; but shape expected by the model is [2,3]" in (
        compare_dims("m", "t", [2, 3], [3], 4, False) or ""
    )


# ---------------------------------------------------------------- TorchScript


def test_torchscript_forward_arity(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Add(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    model = _repo(
        tmp_path,
        "m",
        'name: "m"\nplatform: "pytorch_libtorch"\nmax_batch_size: 0\n'
        'input { name: "INPUT__0" data_type: TYPE_FP32 dims: 4 }\n'
        'output { name: "OUTPUT__0" data_type: TYPE_FP32 dims: 4 }\n',
    )
    with warnings.catch_warnings():  # torch deprecates TorchScript; Triton's pytorch_libtorch backend loads only that
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", DeprecationWarning)
        torch.jit.script(Add()).save(str(model / "1" / "model.pt"))
    expected = "unable to load model 'm', configuration expects 1 inputs, model provides 2"
    assert expected in _messages(tmp_path, auto_complete=False)
    assert expected in _messages(tmp_path, auto_complete=True)
    (model / "config.pbtxt").write_text(
        'name: "m"\nplatform: "pytorch_libtorch"\nmax_batch_size: 0\n'
        'input { name: "A" data_type: TYPE_FP32 dims: 4 }\ninput { name: "B" data_type: TYPE_FP32 dims: 4 }\n'
    )
    assert _messages(tmp_path) == ["model configuration must contain at least one output, none were specified."]


# ---------------------------------------------------------------- python auto_complete_config

PY_HEAD = "import triton_python_backend_utils as pb_utils\n\nclass TritonPythonModel:\n    @staticmethod\n"


def _python(tmp_path: Path, config: str | None, body: str) -> None:
    model = _repo(tmp_path, "m", config)
    (model / "1" / "model.py").write_text(PY_HEAD + textwrap.indent(textwrap.dedent(body), "    "))


AC = "def auto_complete_config(c):\n"
IN4 = "{'name': 'IN', 'data_type': 'TYPE_FP32', 'dims': [4]}"
OUT4 = "{'name': 'OUT', 'data_type': 'TYPE_FP32', 'dims': [4]}"


def test_python_auto_complete_fills_an_empty_config(tmp_path: Path) -> None:
    _python(
        tmp_path,
        None,
        AC + f"    c.set_max_batch_size(8)\n    c.set_dynamic_batching()\n"
        f"    c.add_input({IN4})\n    c.add_output({OUT4})\n    return c\n",
    )
    assert _messages(tmp_path) == []


def test_python_auto_complete_with_a_relative_repository_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tritonforge validate repo --auto-complete` from the repository's parent failed every python model: the
    runner, started in model.py's folder, was handed model.py's relative path."""
    _python(
        tmp_path / "repo",
        None,
        AC + f"    c.set_max_batch_size(8)\n    c.set_dynamic_batching()\n"
        f"    c.add_input({IN4})\n    c.add_output({OUT4})\n    return c\n",
    )
    monkeypatch.chdir(tmp_path)
    assert _messages(Path("repo")) == []


@pytest.mark.parametrize(
    ("config", "body", "expected"),
    [
        (
            "max_batch_size: 16",
            "c.set_max_batch_size(4)\nreturn c",
            "configuration specified max_batch_size 16, but in auto-complete-config function for model 'm' specified "
            "max_batch_size 4",
        ),
        (
            "",
            f"c.add_input({IN4})",
            "auto_complete_config function in model 'm' must return a valid pb.ModelConfig object.",
        ),
        (
            "",
            "c.add_input({'name': 'IN', 'dims': [4]})\nreturn c",
            "input 'IN' in auto-complete-config function for model 'm' is missing 'data_type' property.",
        ),
        (
            "",
            "c.add_output({'name': 'OUT', 'data_type': 'TYPE_FP32', 'dims': [4], 'shape': [4]})\nreturn c",
            "output 'OUT' in auto-complete-config function for model 'm' contains property other than 'name', "
            "'data_type' and 'dims'.",
        ),
        (
            'input { name: "IN" data_type: TYPE_INT32 dims: 4 }',
            f"c.add_input({IN4})\nreturn c",
            "unable to load model 'm', configuration expects datatype TYPE_INT32 for input 'IN', model provides "
            "TYPE_FP32",
        ),
        (
            'input { name: "IN" data_type: TYPE_FP32 dims: 2 }',
            f"c.add_input({IN4})\nreturn c",
            "model 'm', tensor 'IN': the model expects dims [4] but the model configuration specifies dims [2]",
        ),
        (
            "sequence_batching { }",
            "c.set_dynamic_batching()\nreturn c",
            "Configuration specified scheduling_choice as 'sequence_batching', but auto-complete-config function for "
            "model 'm' tries to set scheduling_choice as 'dynamic_batching'",
        ),
        (
            "model_transaction_policy { decoupled: true }",
            "c.set_model_transaction_policy({'decoupled': False})\nreturn c",
            "trying to change decoupled property in auto-complete-config for model 'm', which is already set to "
            "'True'.",
        ),
        (
            "",
            "c.set_model_transaction_policy({'stream': True})\nreturn c",
            "model transaction property in auto-complete-config function for model 'm' contains property other than "
            "'decoupled'.",
        ),
    ],
)
def test_python_auto_complete_errors(tmp_path: Path, config: str, body: str, expected: str) -> None:
    _python(tmp_path, f'name: "m"\nbackend: "python"\n{config}\n', AC + textwrap.indent(body, "    ") + "\n")
    messages = _messages(tmp_path)
    assert any(expected in m for m in messages), messages
    assert not any(expected in m for m in _messages(tmp_path, auto_complete=False))


def test_python_models_that_cannot_run_here_are_skipped(tmp_path: Path) -> None:
    _python(tmp_path, 'name: "m"\nbackend: "python"\n', AC + "    import not_installed_anywhere\n    return c\n")
    assert _messages(tmp_path) == []


def test_python_auto_complete_runs_with_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tritonforge.validation import python_autocomplete

    monkeypatch.setattr(python_autocomplete, "TIMEOUT_S", 1.0)
    _python(tmp_path, 'name: "m"\nbackend: "python"\n', AC + "    import time\n    time.sleep(30)\n    return c\n")
    assert _messages(tmp_path) == ["auto_complete_config of model 'm' did not return within 1 s"]


# ---------------------------------------------------------------- OpenVINO IR


def _ir(path: Path, params: dict[str, tuple[str, list[int], str]], results: dict[str, list[int]]) -> None:
    """An IR whose Results copy the first Parameter (names on the ports, optional layout in rt_info)."""
    layers, edges = [], []
    for i, (name, (etype, dims, layout)) in enumerate(params.items()):
        rt = f'<rt_info><attribute name="layout" version="0" layout="{layout}"/></rt_info>' if layout else ""
        dim_xml = "".join(f"<dim>{d}</dim>" for d in dims)
        layers.append(
            f'<layer id="{i}" name="p{i}" type="Parameter" version="opset1"><data shape="" element_type="{etype}"/>'
            f'{rt}<output><port id="0" precision="{etype.upper()}" names="{name},{name}:0">{dim_xml}</port></output>'
            "</layer>"
        )
    for j, (name, dims) in enumerate(results.items(), start=100):
        dim_xml = "".join(f"<dim>{d}</dim>" for d in dims)
        layers.append(
            f'<layer id="{j}" name="c{j}" type="Convert" version="opset1"><input><port id="0">{dim_xml}</port></input>'
            f'<output><port id="1" precision="FP32" names="{name}">{dim_xml}</port></output></layer>'
            f'<layer id="{j + 100}" name="r{j}" type="Result" version="opset1"><input><port id="0">{dim_xml}</port>'
            "</input></layer>"
        )
        edges += [
            f'<edge from-layer="0" from-port="0" to-layer="{j}" to-port="0"/>',
            f'<edge from-layer="{j}" from-port="1" to-layer="{j + 100}" to-port="0"/>',
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<?xml version="1.0"?><net name="n" version="11"><layers>{"".join(layers)}</layers>'
        f"<edges>{''.join(edges)}</edges></net>"
    )


def test_an_empty_openvino_config_is_completed(tmp_path: Path) -> None:
    from tritonforge.validator import _check_model

    model = _repo(tmp_path, "ov", None)
    _ir(model / "1" / "model.xml", {"x": ("f32", [1, 3], "")}, {"y": [1, 3]})
    config = model_config_pb2().ModelConfig()
    config.name = "ov"
    assert _check_model(config, model, tmp_path, 8, None, True).messages() == []
    assert config.backend == "openvino" and config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in [*config.input, *config.output]] == [("x", [1, 3]), ("y", [1, 3])]


def test_an_openvino_layout_with_a_batch_dimension_enables_batching(tmp_path: Path) -> None:
    from tritonforge.validator import _check_model

    model = _repo(tmp_path, "ov", None)
    _ir(model / "1" / "model.xml", {"x": ("f32", [-1, 3], "[N,C]")}, {})
    config = model_config_pb2().ModelConfig()
    config.name = "ov"
    _check_model(config, model, tmp_path, 8, None, True)
    assert config.max_batch_size == 4 and config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[-1]]  # a dynamic shape is -1 throughout


@pytest.mark.parametrize(
    ("io", "expected"),
    [
        (
            'input { name: "x" data_type: TYPE_FP32 dims: [1, 5] }',
            "model 'ov', tensor 'x': the model expects 2 dimensions (shape [1,3]) but the model configuration specifies "
            "2 dimensions (shape [1,5])",
        ),
        (
            'input { name: "z" data_type: TYPE_FP32 dims: [1, 3] }',
            "unexpected inference input 'z', allowed inputs are: x",
        ),
        (
            'input { name: "x" data_type: TYPE_FP32 dims: [1, 3] }\ninput { name: "w" data_type: TYPE_FP32 dims: 1 }',
            "unable to load model 'ov', configuration expects 2 inputs, model provides 1",
        ),
        (
            'input { name: "x" data_type: TYPE_FP32 dims: [1, 3] }\noutput { name: "q" data_type: TYPE_FP32 dims: 1 }',
            "unexpected inference output 'q', allowed outputs are: y",
        ),
    ],
)
def test_an_openvino_config_must_match_its_ir(tmp_path: Path, io: str, expected: str) -> None:
    model = _repo(tmp_path, "ov", f'name: "ov"\nbackend: "openvino"\n{io}\n')
    _ir(model / "1" / "model.xml", {"x": ("f32", [1, 3], "")}, {"y": [1, 3]})
    assert expected in _messages(tmp_path, auto_complete=False)


def test_the_completed_config_goes_through_the_config_rules_again(tmp_path: Path) -> None:
    """Only its inputs and outputs were checked again: a decoupled policy set by the model beside the response cache
    passed, and Triton refused the load."""
    _python(
        tmp_path,
        'name: "m"\nbackend: "python"\nresponse_cache { enable: true }\n',
        AC + f"    c.set_model_transaction_policy({{'decoupled': True}})\n"
        f"    c.add_input({IN4})\n    c.add_output({OUT4})\n    return c\n",
    )
    assert _messages(tmp_path) == [
        "Response Cache does not currently support model m with 'decoupled' transaction policy. Please disable the "
        "response cache."
    ]
