"""tritonforge's stand-in for the python backend's ``triton_python_backend_utils``, for running a model's
``TritonPythonModel.auto_complete_config`` offline (``tritonforge validate --auto-complete``).

Only what ``auto_complete_config`` can reach is implemented: the ``ModelConfig`` object it receives (its rules and
error messages follow the python backend's ``src/resources/triton_python_backend_utils.py`` at 28aaeb7b, so a
failure reads as in Triton's log) and the plain helpers a model
module commonly touches at import time. Anything a model calls at inference time raises ``NotImplementedError``.
"""

from __future__ import annotations

import json
from typing import Any

TRITON_STRING_TO_NUMPY: dict[str, Any] = {}
try:  # numpy is optional here: only a model that uses it at import time needs it
    import numpy as _np

    TRITON_STRING_TO_NUMPY = {
        "TYPE_BOOL": bool,
        "TYPE_UINT8": _np.uint8,
        "TYPE_UINT16": _np.uint16,
        "TYPE_UINT32": _np.uint32,
        "TYPE_UINT64": _np.uint64,
        "TYPE_INT8": _np.int8,
        "TYPE_INT16": _np.int16,
        "TYPE_INT32": _np.int32,
        "TYPE_INT64": _np.int64,
        "TYPE_FP16": _np.float16,
        "TYPE_FP32": _np.float32,
        "TYPE_FP64": _np.float64,
        "TYPE_STRING": _np.object_,
    }
except ImportError:  # pragma: no cover - numpy comes with the project's extras
    pass


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((i for i in model_config.get("input", []) if i["name"] == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((o for o in model_config.get("output", []) if o["name"] == name), None)


def _inference_only(*_args: Any, **_kwargs: Any) -> Any:
    raise NotImplementedError("only auto_complete_config runs offline (tritonforge validate)")


def __getattr__(name: str) -> Any:
    """Everything else the python backend offers (Tensor, InferenceResponse, TritonModelException, BLS, ...) exists
    but may not be used: auto_complete_config runs before any request."""
    if name.startswith("__"):
        raise AttributeError(name)
    return _inference_only


TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

_TENSOR_KEYS = {"input": ("name", "data_type", "dims", "optional"), "output": ("name", "data_type", "dims")}
_TENSOR_KEYS_TEXT = {"input": "'name', 'data_type', 'dims' and 'optional'", "output": "'name', 'data_type' and 'dims'"}


class ModelConfig:
    """The config handed to ``auto_complete_config``: read it with ``as_dict()``, complete it with the setters."""

    def __init__(self, model_config: str) -> None:
        self._model_config: dict[str, Any] = json.loads(model_config)

    def as_dict(self) -> dict[str, Any]:
        return self._model_config

    @property
    def _name(self) -> str:
        return str(self._model_config["name"])

    def set_max_batch_size(self, max_batch_size: int) -> None:
        configured = self._model_config["max_batch_size"]
        if configured > max_batch_size:
            raise ValueError(
                f"configuration specified max_batch_size {configured}, but in auto-complete-config function for model "
                f"'{self._name}' specified max_batch_size {max_batch_size}"
            )
        self._model_config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        for scheduler in ("sequence_batching", "ensemble_scheduling"):
            if scheduler in self._model_config:
                raise ValueError(
                    f"Configuration specified scheduling_choice as '{scheduler}', but auto-complete-config function "
                    f"for model '{self._name}' tries to set scheduling_choice as 'dynamic_batching'"
                )
        self._model_config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict[str, Any]) -> None:
        self._add("input", input)

    def add_output(self, output: dict[str, Any]) -> None:
        self._add("output", output)

    def _add(self, kind: str, tensor: dict[str, Any]) -> None:
        where = f"in auto-complete-config function for model '{self._name}'"
        if any(key not in _TENSOR_KEYS[kind] for key in tensor):
            raise ValueError(
                f"{kind} '{tensor['name']}' {where} contains property other than {_TENSOR_KEYS_TEXT[kind]}."
            )
        if "name" not in tensor:
            raise ValueError(f"{kind} {where} is missing 'name' property.")
        for key in ("data_type", "dims"):
            if key not in tensor:
                raise ValueError(f"{kind} '{tensor['name']}' {where} is missing '{key}' property.")
        for current in self._model_config[kind]:
            if current["name"] != tensor["name"]:
                continue
            if current["data_type"] != "TYPE_INVALID" and current["data_type"] != tensor["data_type"]:
                raise ValueError(
                    f"unable to load model '{self._name}', configuration expects datatype {current['data_type']} "
                    f"for {kind} '{tensor['name']}', model provides {tensor['data_type']}"
                )
            if current["dims"] and current["dims"] != tensor["dims"]:
                raise ValueError(
                    f"model '{self._name}', tensor '{tensor['name']}': the model expects dims {tensor['dims']} but "
                    f"the model configuration specifies dims {current['dims']}"
                )
            if (
                kind == "input"
                and "optional" in tensor
                and current.get("optional", tensor["optional"]) != tensor["optional"]
            ):
                raise ValueError(
                    f"model '{self._name}', tensor '{tensor['name']}': the model expects optional "
                    f"{tensor['optional']} but the model configuration specifies optional {current['optional']}"
                )
            current["data_type"], current["dims"] = tensor["data_type"], tensor["dims"]
            if "optional" in tensor:
                current["optional"] = tensor["optional"]
            return
        self._model_config[kind].append(tensor)

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        if any(key != "decoupled" for key in transaction_policy_dict):
            raise ValueError(
                f"model transaction property in auto-complete-config function for model '{self._name}' contains "
                "property other than 'decoupled'."
            )
        policy = self._model_config.setdefault("model_transaction_policy", {})
        if "decoupled" in transaction_policy_dict:
            wanted = transaction_policy_dict["decoupled"]
            if "decoupled" in policy and policy["decoupled"] != wanted:
                raise ValueError(
                    f"trying to change decoupled property in auto-complete-config for model '{self._name}', which is "
                    f"already set to '{policy['decoupled']}'."
                )
            policy["decoupled"] = wanted
