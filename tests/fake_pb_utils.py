"""A minimal, faithful stand-in for Triton's `triton_python_backend_utils`, to run python-backend `model.py` files
outside Triton in unit tests.

It keeps to the real module's API (tritonserver 2.x python backend) for what tritonforge's models use:
`Tensor(name, array)` with `name()` and `as_numpy()`; `InferenceResponse(output_tensors=..., error=...)` with
`output_tensors()`, `has_error()` and `error()`; `TritonError(message, code)` with `message()`, `code()` and the code
constants; `Logger.log_info/log_warn/log_error` (kept in `Logger.lines`); and the pure-Python helpers `get_input_tensor_by_name`, `get_output_tensor_by_name` (same bodies as
upstream) and `triton_string_to_numpy`; for decoupled and BLS models also a response sender
(`DecoupledRequest.get_response_sender()`), `TRITONSERVER_RESPONSE_COMPLETE_FINAL` and `InferenceRequest(...).exec()`
over handlers that stand in for the called models. TYPE_STRING tensors hold numpy object arrays of `bytes`, as in Triton.
Real-Triton tests live in tests/integration.

Usage::

    module = load_model(path_to_model_py, monkeypatch)      # fake installed in sys.modules for the import
    model = module.TritonPythonModel()
    model.initialize(initialize_args(config_dict, repository_dir, "1"))
    (response,) = model.execute([Request(QUERY=strings([["q"]]), ...)])
"""

from __future__ import annotations

import importlib.util
import json
import threading
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

MODULE_NAME = "triton_python_backend_utils"


class Tensor:
    def __init__(self, name: str, data: np.ndarray) -> None:
        if not isinstance(name, str):
            raise TypeError("Tensor name must be a string")
        if not isinstance(data, np.ndarray):
            raise TypeError("Tensor data must be a numpy array")
        self._name, self._data = name, data

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._data


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._outputs, self._error = list(output_tensors or []), error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class Request:
    """Stands in for pb_utils.InferenceRequest as a model sees it: only `inputs()` is used."""

    def __init__(self, **inputs: np.ndarray) -> None:
        self._inputs = [Tensor(name, array) for name, array in inputs.items()]

    def inputs(self) -> list[Tensor]:
        return self._inputs


TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1


class ResponseSender:
    """pb_utils.InferenceResponseSender of a decoupled model: records responses and flags (nothing may follow
    FINAL); ``cancelled`` is what ``is_cancelled()`` answers."""

    def __init__(self) -> None:
        self.responses: list[Any] = []
        self.flags: list[int] = []
        self.final = threading.Event()
        self.errors: list[str] = []
        self.cancelled = False
        self.late_probes = 0  # is_cancelled() after FINAL: real Triton has deleted the factory (2.51 can crash)

    def send(self, response: Any = None, flags: int = 0) -> None:
        if self.final.is_set():
            self.errors.append("send after FINAL")
        self.responses.append(response)
        self.flags.append(flags)
        if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
            self.final.set()

    def is_cancelled(self) -> bool:
        if self.final.is_set():
            self.late_probes += 1
        return self.cancelled


class DecoupledRequest(Request):
    """A request to a decoupled model: inputs, a request id and a ResponseSender."""

    def __init__(self, request_id: str = "", **inputs: np.ndarray) -> None:
        super().__init__(**inputs)
        self._id = request_id
        self.sender = ResponseSender()

    def get_response_sender(self) -> ResponseSender:
        return self.sender

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int:
        return 0

    def is_cancelled(self) -> bool:
        return self.sender.is_cancelled()  # counted as a late probe after FINAL, as the sender's own is


class InferenceRequest:
    """pb_utils.InferenceRequest for BLS calls. ``exec()`` hands the request to the handler served for its model
    name (``module.served[name] = handler``, see make_module); a handler returns one response, a list of them, or
    an iterator (consumed lazily, as a decoupled model's responses arrive). ``exec()`` answers the first response,
    ``exec(decoupled=True)`` an iterator over all; an unknown model gets an error response, as in Triton."""

    served: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        model_name: str,
        inputs: list[Tensor],
        requested_output_names: list[str] | None = None,
        request_id: str = "",
        correlation_id: int = 0,
        **_: Any,
    ) -> None:
        self.model_name = model_name
        self._inputs = list(inputs)
        self.requested_output_names = list(requested_output_names or [])
        self._id, self._correlation_id = request_id, correlation_id

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def request_id(self) -> str:
        return self._id

    def correlation_id(self) -> int:
        return self._correlation_id

    def _responses(self) -> Iterator[InferenceResponse]:
        handler = self.served.get(self.model_name)
        if handler is None:
            message = f"Failed for execute the inference request. Model '{self.model_name}' is not ready."
            return iter([InferenceResponse(error=TritonError(message, TritonError.NOT_FOUND))])
        answer = handler(self)
        if isinstance(answer, InferenceResponse):
            return iter([answer])
        return iter(answer)

    def exec(self, decoupled: bool = False) -> Any:
        responses = self._responses()
        return responses if decoupled else next(responses)


def get_input_tensor_by_name(inference_request: Any, name: str) -> Tensor | None:
    for input_tensor in inference_request.inputs():
        if input_tensor.name() == name:
            return input_tensor
    return None


def get_output_tensor_by_name(inference_response: Any, name: str) -> Tensor | None:
    for output_tensor in inference_response.output_tensors():
        if output_tensor.name() == name:
            return output_tensor
    return None


TRITON_STRING_TO_NUMPY = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


class Logger:
    """``pb_utils.Logger``: the real one writes to Triton's log; this one keeps (level, message) in ``lines``."""

    lines: ClassVar[list[tuple[str, str]]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.lines.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.lines.append(("warn", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.lines.append(("error", message))


def make_module() -> types.ModuleType:
    """A fresh `triton_python_backend_utils` module object backed by the classes above.

    BLS: ``module.served`` (empty) maps model names to the handlers that ``module.InferenceRequest(...).exec()``
    calls (each module has its own)."""
    module = types.ModuleType(MODULE_NAME)
    served: ClassVar[dict[str, Any]] = {}
    module.served = served  # type: ignore[attr-defined]
    module.InferenceRequest = type("InferenceRequest", (InferenceRequest,), {"served": served})  # type: ignore[attr-defined]
    module.TRITONSERVER_RESPONSE_COMPLETE_FINAL = TRITONSERVER_RESPONSE_COMPLETE_FINAL  # type: ignore[attr-defined]
    module.Tensor = Tensor  # type: ignore[attr-defined]
    module.Logger = type("Logger", (Logger,), {"lines": []})  # type: ignore[attr-defined]
    module.TritonError = TritonError  # type: ignore[attr-defined]
    module.InferenceResponse = InferenceResponse  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = get_input_tensor_by_name  # type: ignore[attr-defined]
    module.get_output_tensor_by_name = get_output_tensor_by_name  # type: ignore[attr-defined]
    module.triton_string_to_numpy = triton_string_to_numpy  # type: ignore[attr-defined]
    return module


_SHIPPED: dict[str, Path] = {}


def shipped_folder(model_py: Path) -> Path:
    """The folder ``model_py`` runs from. A shipped model's model.py (python_backends/<name>/model.py) runs from a
    copy of exactly the files a repository's version folder gets (python_backends.sources: its folder's modules
    plus the shared ones such as cores.py), as in Triton; any other model.py from where it is."""
    import atexit
    import shutil
    import tempfile

    from tritonforge import python_backends

    folder = Path(model_py).resolve().parent
    if folder.parent != python_backends.HERE or folder.name not in python_backends.MODELS:
        return folder
    if folder.name not in _SHIPPED:
        copy = Path(tempfile.mkdtemp(prefix=f"tritonforge-shipped-{folder.name}-"))
        atexit.register(shutil.rmtree, copy, True)
        for file, data in python_backends.sources(folder.name).items():
            (copy / file).write_bytes(data)
        _SHIPPED[folder.name] = copy
    return _SHIPPED[folder.name]


def load_model(model_py: Path, monkeypatch: pytest.MonkeyPatch, name: str | None = None) -> types.ModuleType:
    """Import ``model_py`` as a fresh module with the fake installed in ``sys.modules`` (undone by monkeypatch)."""
    import sys

    monkeypatch.setitem(sys.modules, MODULE_NAME, make_module())
    model_py = shipped_folder(model_py) / "model.py"
    spec = importlib.util.spec_from_file_location(name or f"model_under_test_{Path(model_py).parent.name}", model_py)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def initialize_args(config: dict[str, Any], repository: Path, version: str = "1") -> dict[str, str]:
    """The ``args`` Triton passes to ``TritonPythonModel.initialize`` (model_repository is the model's folder)."""
    return {
        "model_config": json.dumps(config),
        "model_instance_kind": "CPU",
        "model_instance_name": f"{config.get('name', 'model')}_0_0",
        "model_instance_device_id": "0",
        "model_repository": str(repository),
        "model_version": version,
        "model_name": str(config.get("name", "model")),
    }


def strings(rows: Iterable[Any]) -> np.ndarray:
    """A TYPE_STRING tensor as Triton hands it to a model: an object array of UTF-8 ``bytes`` (str is encoded)."""
    array = np.array(rows, dtype=object)
    out = np.empty(array.shape, dtype=object)
    for index, item in np.ndenumerate(array):
        out[index] = item.encode("utf-8") if isinstance(item, str) else item
    return out
