"""What backends do with a model file: complete the config from it (auto-complete mode only) and check the config
against it (every mode, when an instance loads). Messages are the backends' own.

* onnxruntime (onnxruntime_backend ``src/onnxruntime.cc`` at 9fc82939: ``AutoCompleteConfig``,
  ``AutoCompleteMaxBatch``, ``AutoCompleteIO``, ``ValidateInputs``, ``ValidateOutputs``), read with the ``onnx``
  package: graph inputs minus initializers (an initializer listed as a graph input is an overridable input),
  outputs, element types, symbolic or unknown dimensions as -1. Batching is possible when every input and output has
  a first dimension of -1; an empty config then gets max_batch_size 4 (Triton's ``default-max-batch-size``) and a
  dynamic batcher.
* openvino (openvino_backend ``src/openvino.cc`` at bdf9687e: ``AutoCompleteBatching``, ``AutoCompleteInputOrOutput``,
  ``ValidateInputs``, ``ValidateOutputs``), read from the IR's ``model.xml`` (Parameter and Result layers, their
  ports' tensor names, element types, dims and layouts): batching when every input and output layout has a batch
  dimension ``N``; an absent input or output list is filled; configs are checked for counts, names and dims (the
  backend converts data types itself, so those are not compared).
* pytorch (pytorch_backend ``src/libtorch.cc`` at 636a7818, ``ValidateInputs``): the TorchScript ``forward()``
  input count. The pytorch backend does not auto-complete.
* python: ``python_autocomplete.py``.

TensorRT plans, TensorFlow and TorchAOTI files are not read: nothing is completed or checked for them.
When the reader (``onnx``, ``torch``) is not installed the file is not checked either.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge.validation.python_autocomplete import python_auto_complete

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

DEFAULT_MAX_BATCH_SIZE = 4  # core's backend_config_defaults: default-max-batch-size

# onnx TensorProto element type -> Triton config type (OnnxDataTypeToModelConfigDataType)
_ONNX_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


@dataclass
class _Tensor:
    dtype: str | None  # None: not a tensor
    dims: list[int]


@dataclass
class _OnnxModel:
    inputs: dict[str, _Tensor] = field(default_factory=dict)
    overridable: dict[str, _Tensor] = field(default_factory=dict)
    outputs: dict[str, _Tensor] = field(default_factory=dict)


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _shape(dims: list[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _type_name(config_type: str) -> str:
    """TRITONSERVER_DataTypeString after 'TYPE_': strings are BYTES."""
    return "BYTES" if config_type == "TYPE_STRING" else config_type[len("TYPE_") :]


# ================================================================ which file a backend loads


def model_file(config: ModelConfig, model_dir: Path, version: int) -> Path:
    default = {"onnxruntime": "model.onnx", "pytorch": "model.pt", "python": "model.py", "openvino": "model.xml"}.get(
        config.backend, ""
    )
    path = model_dir / str(version) / (config.default_model_filename or default)
    if config.backend == "onnxruntime" and path.is_dir():
        return path / "model.onnx"
    return path


# ================================================================ auto-complete (TRITONBACKEND_ModelInitialize)


def auto_complete(config: ModelConfig, model_dir: Path, version: int | None) -> list[str]:
    """Complete ``config`` in place as its backend would in auto-complete mode; the backend's errors."""
    if version is None:
        return []
    if config.backend == "python":
        return python_auto_complete(config, model_file(config, model_dir, version))
    if config.backend == "onnxruntime" and available("onnx"):
        return _onnx_auto_complete(config, model_file(config, model_dir, version))
    if config.backend == "openvino":
        return _openvino_auto_complete(config, model_file(config, model_dir, version))
    return []


def _read_onnx(path: Path) -> _OnnxModel | None:
    """The graph's inputs and outputs; None when ``onnx`` cannot parse the file (ONNX Runtime's own load error is
    not reproduced: such a file is not checked)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    initializers = {init.name for init in model.graph.initializer}
    found = _OnnxModel()
    for value in model.graph.input:
        (found.overridable if value.name in initializers else found.inputs)[value.name] = _onnx_tensor(value)
    for value in model.graph.output:
        found.outputs[value.name] = _onnx_tensor(value)
    return found


def _onnx_tensor(value: Any) -> _Tensor:
    if value.type.WhichOneof("value") != "tensor_type":
        return _Tensor(None, [])
    tensor = value.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
    return _Tensor(_ONNX_TYPES.get(tensor.elem_type, "TYPE_INVALID"), dims)


def _onnx_auto_complete(config: ModelConfig, path: Path) -> list[str]:
    input_count = len(config.input) + len(config.batch_input)
    output_count = len(config.output)
    if input_count and output_count:
        return []  # "skipping model configuration auto-complete ...: inputs and outputs already specified"
    if not path.is_file():
        return [f"unable to find '{path}' for model instance '{config.name}'"]
    model = _read_onnx(path)
    if model is None:
        return []
    tensors = [*model.inputs.values(), *model.outputs.values()]
    batching = all(t.dims and t.dims[0] == -1 for t in tensors)
    if batching:
        if config.max_batch_size == 0:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        if config.max_batch_size > 1 and config.WhichOneof("scheduling_choice") is None:
            config.dynamic_batching.SetInParent()
    elif config.max_batch_size != 0:
        return [
            f"autofill failed for model '{config.name}': model does not support batching while non-zero "
            "max_batch_size is specified"
        ]
    if input_count == 0:
        _fill(config.input, model.inputs, config.max_batch_size)
    if output_count == 0:
        _fill(config.output, model.outputs, config.max_batch_size)
    return []


def _fill(target: Any, tensors: dict[str, _Tensor], max_batch_size: int) -> None:
    from tritonforge.config_io import model_config_pb2

    types = model_config_pb2().DataType
    del target[:]
    for name in sorted(tensors):  # the backend's std::map orders them by name
        tensor = tensors[name]
        entry = target.add(name=name, data_type=types.Value(tensor.dtype or "TYPE_INVALID"))
        dims = tensor.dims[1:] if max_batch_size > 0 else tensor.dims
        entry.dims.extend(dims or [1])
        if not dims and max_batch_size > 0:
            entry.reshape.SetInParent()  # an empty reshape: the tensor is a scalar per batch item


# ================================================================ instance load: config against the file


def model_file_rules(config: ModelConfig, model_dir: Path, versions: list[int]) -> dict[int, str]:
    """The first config-against-file error of each version whose file exists (checked when its instances load)."""
    if config.backend == "onnxruntime" and available("onnx"):
        check = _onnx_rules
    elif config.backend == "pytorch" and config.platform != "torch_aoti" and available("torch"):
        check = _torchscript_rules
    elif config.backend == "openvino":
        check = _openvino_rules
    else:
        return {}
    found: dict[int, str] = {}
    for version in versions:
        path = model_file(config, model_dir, version)
        if path.is_file():
            message = check(config, path)
            if message:
                found[version] = message
    return found


def _expected_input_count(config: ModelConfig) -> int:
    count = sum(1 for i in config.input if not i.optional) + len(config.batch_input)
    if config.HasField("sequence_batching"):
        count += len({c.name for c in config.sequence_batching.control_input}) + len(config.sequence_batching.state)
    return count


def _onnx_rules(config: ModelConfig, path: Path) -> str | None:
    model = _read_onnx(path)
    if model is None:
        return None
    name, mbs = config.name, config.max_batch_size
    expected = _expected_input_count(config)
    if len(model.inputs) != expected:
        provided = len(model.inputs)
        return f"unable to load model '{name}', configuration expects {expected} inputs, model provides {provided}"
    from tritonforge.config_io import model_config_pb2

    types = model_config_pb2().DataType
    known_inputs = {**model.inputs, **model.overridable}
    for tensor in config.input:
        if tensor.optional and mbs != 0:
            return (
                f"unable to load model '{name}', optional input '{tensor.name}' is not supported for models that "
                "support batching"
            )
        message = _onnx_tensor_rule(name, "input", tensor, known_inputs, types.Name(tensor.data_type), mbs, False)
        if message:
            return message
    batch_outputs = {target for batch_output in config.batch_output for target in batch_output.target_name}
    for output in config.output:
        skip_dims = output.name in batch_outputs
        message = _onnx_tensor_rule(
            name, "output", output, model.outputs, types.Name(output.data_type), mbs, True, skip_dims=skip_dims
        )
        if message:
            return message
    return None


def _onnx_tensor_rule(
    name: str,
    kind: str,
    tensor: Any,
    known: dict[str, _Tensor],
    dtype: str,
    mbs: int,
    exact: bool,
    *,
    skip_dims: bool = False,
) -> str | None:
    found = known.get(tensor.name)
    if found is None:  # CheckAllowedModelInput / CheckAllowedModelOutput
        return f"unexpected inference {kind} '{tensor.name}', allowed {kind}s are: {', '.join(sorted(known))}"
    if found.dtype is None or dtype != found.dtype:
        provided = _type_name(found.dtype) if found.dtype else "INVALID"
        return (
            f"unable to load model '{name}', configuration expects datatype {dtype} for {kind} '{tensor.name}', "
            f"model provides TYPE_{provided}"
        )
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    if skip_dims:
        return None
    if not found.dims:
        if any(d != 1 for d in dims):
            return (
                f"unable to load model '{name}', scalar tensor '{tensor.name}', should only provide 1 in the model "
                f"configuration when the model doesn't support batching. Model configuration provided: {_shape(dims)}."
            )
        return None
    return compare_dims(name, tensor.name, found.dims, dims, mbs, exact)


def compare_dims(name: str, tensor: str, model: list[int], dims: list[int], mbs: int, exact: bool) -> str | None:
    """The backends' CompareDimsSupported (triton-inference-server/backend ``backend_common.cc``)."""
    head = f"model '{name}', tensor '{tensor}': "
    if mbs > 0:
        if not model or model[0] != -1:
            return (
                f"{head}for the model to support batching the shape should have at least 1 dimension and the first "
                f"dimension must be -1; but shape expected by the model is {_shape(model)}"
            )
        full = [-1, *dims]
    else:
        full = dims
    same = len(model) == len(full) and all(
        m == d for m, d in zip(model, full, strict=True) if exact or (m != -1 and d != -1)
    )
    if same:
        return None
    if mbs > 0:
        return (
            f"{head}the model expects {len(model)} dimensions (shape {_shape(model)}) but the model configuration "
            f"specifies {len(full)} dimensions (an initial batch dimension because max_batch_size > 0 followed by "
            f"the explicit tensor shape, making complete shape {_shape(full)})"
        )
    return (
        f"{head}the model expects {len(model)} dimensions (shape {_shape(model)}) but the model configuration "
        f"specifies {len(full)} dimensions (shape {_shape(full)})"
    )


def _torchscript_rules(config: ModelConfig, path: Path) -> str | None:
    """pytorch_backend's ValidateInputs (``forward()`` takes one Dict(str, Tensor) or one Tensor per config input)
    and the start of ValidateOutputs (at least one output)."""
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated upstream; Triton's pytorch backend still loads it
            module = torch.jit.load(str(path), map_location="cpu")
        arguments = module.forward.schema.arguments[1:]  # without self
    except Exception:
        return None
    if len(arguments) == 1 and str(arguments[0].type).startswith("Dict(str, Tensor)"):
        pass
    else:
        for argument in arguments:
            if argument.type.kind() != "TensorType":
                return (
                    f"An input of type '{argument.type}' was detected in the model. Only a single input of type "
                    "Dict(str, Tensor) or input(s) of type Tensor are supported."
                )
        expected = _expected_input_count(config)
        if len(arguments) != expected:
            return (
                f"unable to load model '{config.name}', configuration expects {expected} inputs, model provides "
                f"{len(arguments)}"
            )
    if not config.input:
        return "model configuration must contain at least one input, none were specified."
    if not config.output:  # ValidateOutputs
        return "model configuration must contain at least one output, none were specified."
    return None


# ================================================================ OpenVINO IR (model.xml)

# IR element types (Parameter ``element_type``, port ``precision``) -> Triton config type
_OV_TYPES = {
    "boolean": "TYPE_BOOL", "u8": "TYPE_UINT8", "u16": "TYPE_UINT16", "u32": "TYPE_UINT32", "u64": "TYPE_UINT64",
    "i8": "TYPE_INT8", "i16": "TYPE_INT16", "i32": "TYPE_INT32", "i64": "TYPE_INT64", "f16": "TYPE_FP16",
    "f32": "TYPE_FP32", "bool": "TYPE_BOOL", "fp16": "TYPE_FP16", "fp32": "TYPE_FP32",
}  # fmt: skip


@dataclass
class _IrTensor(_Tensor):
    batched: bool = False  # its layout has a batch dimension (ov::layout::has_batch)


@dataclass
class _IrModel:
    inputs: dict[str, _IrTensor] = field(default_factory=dict)
    outputs: dict[str, _IrTensor] = field(default_factory=dict)


def _read_ir(path: Path) -> _IrModel | None:
    """Parameters and Results of an IR (names as ``get_any_name()``: the smallest of a port's tensor names)."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError):
        return None
    layers = {layer.get("id"): layer for layer in root.iter("layer")}
    found = _IrModel()

    def port_tensor(layer: Any, port: Any, fallback: str) -> tuple[str, _IrTensor]:
        names = [n for n in (port.get("names") or "").split(",") if n]
        dims = [int(d.text) if (d.text or "").lstrip("-").isdigit() else -1 for d in port.findall("dim")]
        dtype = _OV_TYPES.get((port.get("precision") or "").lower(), "TYPE_INVALID")
        data = layer.find("data")
        if data is not None and data.get("element_type"):
            dtype = _OV_TYPES.get(data.get("element_type", "").lower(), dtype)
        layout = next(
            (a.get("layout") or a.get("value") or "" for a in layer.iter("attribute") if a.get("name") == "layout"), ""
        )
        return (min(names) if names else fallback), _IrTensor(dtype, dims, "N" in layout.upper())

    for layer in layers.values():
        if layer.get("type") == "Parameter":
            port = layer.find("output/port")
            if port is not None:
                name, tensor = port_tensor(layer, port, layer.get("name", ""))
                found.inputs[name] = tensor
    for edge in root.iter("edge"):
        result = layers.get(edge.get("to-layer"))
        source = layers.get(edge.get("from-layer"))
        if result is None or source is None or result.get("type") != "Result":
            continue
        port = next((p for p in source.findall("output/port") if p.get("id") == edge.get("from-port")), None)
        if port is not None:
            name, tensor = port_tensor(result, port, result.get("name", ""))
            found.outputs[name] = tensor
    return found


def _openvino_auto_complete(config: ModelConfig, path: Path) -> list[str]:
    model = _read_ir(path)
    if model is None:
        return []
    tensors = [*model.inputs.values(), *model.outputs.values()]
    if tensors and all(t.batched for t in tensors):
        if config.max_batch_size == 0:
            config.max_batch_size = DEFAULT_MAX_BATCH_SIZE
        if config.max_batch_size > 1 and config.WhichOneof("scheduling_choice") is None:
            config.dynamic_batching.SetInParent()
    for target, found in ((config.input, model.inputs), (config.output, model.outputs)):
        if len(target) == 0:
            _fill_ir(target, found, config.max_batch_size)
    return []


def _fill_ir(target: Any, tensors: dict[str, _IrTensor], max_batch_size: int) -> None:
    from tritonforge.config_io import model_config_pb2

    types = model_config_pb2().DataType
    for name, tensor in tensors.items():  # the model's own order
        static = all(d >= 0 for d in tensor.dims)
        dims = tensor.dims[1:] if max_batch_size > 0 else tensor.dims
        entry = target.add(name=name, data_type=types.Value(tensor.dtype or "TYPE_INVALID"))
        entry.dims.extend(d if static else -1 for d in dims)


def _openvino_rules(config: ModelConfig, path: Path) -> str | None:
    model = _read_ir(path)
    if model is None:
        return None
    name, mbs = config.name, config.max_batch_size
    if len(model.inputs) != len(config.input):
        return (
            f"unable to load model '{name}', configuration expects {len(config.input)} inputs, model provides "
            f"{len(model.inputs)}"
        )
    for kind, tensors, known, exact in (
        ("input", config.input, model.inputs, False),
        ("output", config.output, model.outputs, True),
    ):
        for tensor in tensors:
            found = known.get(tensor.name)
            if found is None:
                return f"unexpected inference {kind} '{tensor.name}', allowed {kind}s are: {', '.join(sorted(known))}"
            dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
            message = _openvino_dims(name, tensor.name, found.dims, dims, mbs, exact and kind == "output")
            if message:
                return message
    return None


def _openvino_dims(name: str, tensor: str, model: list[int], dims: list[int], mbs: int, exact: bool) -> str | None:
    """openvino_backend's own CompareDimsSupported (a dynamic model dimension matches anything)."""
    head = f"model '{name}', tensor '{tensor}': "
    if mbs > 0:
        if not model:
            return f"{head}for the model to support batching the shape should have at least 1 dimension"
        model = [mbs, *model[1:]] if exact else model  # the backend reshapes the batch before checking outputs
        full = [mbs, *dims]
        same = len(model) == len(full) and all(
            m == -1 or m == d for i, (m, d) in enumerate(zip(model, full, strict=True)) if exact or (i and d != -1)
        )
        if same:
            return None
        return (
            f"{head}the model expects {len(model)} dimensions (shape {_shape(model)}) but the model configuration "
            f"specifies {len(full)} dimensions (an initial batch dimension because max_batch_size > 0 followed by "
            f"the explicit tensor shape, making complete shape {_shape(full)})"
        )
    if len(model) == len(dims) and all(m == -1 or m == d for m, d in zip(model, dims, strict=True)):
        return None
    return (
        f"{head}the model expects {len(model)} dimensions (shape {_shape(model)}) but the model configuration "
        f"specifies {len(dims)} dimensions (shape {_shape(dims)})"
    )
