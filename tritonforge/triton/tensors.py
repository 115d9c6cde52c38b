"""numpy arrays as Triton tensors and back (part of the access layer: only it builds tritonclient's InferInput)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tritonforge.errors import ClientError, InvalidInputError

# numpy kind/itemsize -> Triton datatype; object, bytes and str arrays travel as BYTES
_NUMPY_TO_TRITON: dict[np.dtype[Any], str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
}


def triton_dtype(array: np.ndarray) -> str:
    """The Triton datatype of a numpy array (object/bytes/str arrays are BYTES)."""
    dtype = array.dtype
    if dtype.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _NUMPY_TO_TRITON[dtype.newbyteorder("=")]
    except KeyError:
        allowed = ", ".join(sorted({str(d) for d in _NUMPY_TO_TRITON})) + ", object/bytes/str"
        raise InvalidInputError(f"numpy dtype {dtype} has no Triton datatype (allowed: {allowed})") from None


def as_tensor(name: str, value: Any) -> tuple[np.ndarray, str]:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"input names must be non-empty strings, got {name!r}")
    if value is None:
        raise InvalidInputError(f"input '{name}' is None")
    array = np.asarray(value)
    try:
        datatype = triton_dtype(array)
    except ClientError as err:
        raise InvalidInputError(f"input '{name}': {err}") from None
    if datatype == "BYTES":
        if array.dtype.kind == "U":
            encoded = np.empty(array.shape, dtype=object)
            for index, item in np.ndenumerate(array):
                try:
                    encoded[index] = str(item).encode("utf-8")
                except UnicodeEncodeError as err:
                    raise InvalidInputError(
                        f"input '{name}' element {list(index)} cannot be encoded as UTF-8 ({err.reason}): send text"
                    ) from None
            array = encoded
        elif array.dtype.kind == "S":
            array = array.astype(object)
        else:
            for i, item in enumerate(array.reshape(-1)):
                if not isinstance(item, (bytes, str, np.bytes_, np.str_)):
                    raise InvalidInputError(
                        f"input '{name}' element {i} is {type(item).__name__}: a BYTES tensor holds bytes or str"
                    )
    elif not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array, datatype


def build_inputs(mod: Any, inputs: Mapping[str, Any], *, binary: bool = False) -> list[Any]:
    """tritonclient ``InferInput`` objects of ``mod`` (a tritonclient grpc/http module) for numpy ``inputs``;
    ``binary``: HTTP's binary tensor extension."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise InvalidInputError("inputs must be a non-empty mapping of input name -> numpy array")
    built = []
    for name, value in inputs.items():
        array, datatype = as_tensor(name, value)
        tensor = mod.InferInput(name, list(array.shape), datatype)
        if binary:
            tensor.set_data_from_numpy(array, binary_data=True)
        else:
            tensor.set_data_from_numpy(array)
        built.append(tensor)
    return built


def requested_outputs(mod: Any, outputs: Sequence[str] | None, *, binary: bool = False) -> list[Any] | None:
    if outputs is None:
        return None
    if isinstance(outputs, str):
        raise InvalidInputError(f"outputs must be a list of output names, not the string {outputs!r}")
    for i, name in enumerate(outputs):
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"outputs[{i}] must be an output name (a non-empty str), got {name!r}")
    if binary:
        return [mod.InferRequestedOutput(o, binary_data=True) for o in outputs]
    return [mod.InferRequestedOutput(o) for o in outputs]


def output_arrays(result: Any, outputs: Sequence[str] | None, model: str, *, grpc: bool) -> dict[str, np.ndarray]:
    """``{name: array}`` of an InferResult: the ``outputs`` asked for (a ClientError names a missing one), or all."""
    response = result.get_response()
    names = [o.name for o in response.outputs] if grpc else [o["name"] for o in (response or {}).get("outputs", [])]
    wanted = list(outputs) if outputs is not None else names
    out = {}
    for name in wanted:
        array = result.as_numpy(name)
        if array is None:
            raise ClientError(f"model '{model}' returned no output '{name}' (it returned: {', '.join(names)})")
        out[name] = array
    return out


def text_of(outputs: Mapping[str, np.ndarray | None]) -> str:
    """The ``text_output`` tensor of a generation response as one string ("" when absent)."""
    out = outputs.get("text_output")
    if out is None:
        return ""
    return "".join(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(out).reshape(-1))


def is_final(result: Any) -> bool:
    """Whether a streamed gRPC response is the request's last (Triton's ``triton_final_response`` parameter)."""
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param
