"""Auto-complete of a python-backend model: run its ``TritonPythonModel.auto_complete_config`` against a stand-in of the
python backend's config object (``stand_in/triton_python_backend_utils.py``), as the python backend's stub does when
Triton runs without ``--disable-auto-complete-config``, then merge the result back as Triton core does (core
``src/backend_model.cc`` at a3599d1e, ``TritonModel::UpdateModelConfig``: max_batch_size, inputs, outputs, a scheduler
when none is set, the decoupled policy).

``model.py`` is user code: it runs in a subprocess with a timeout, never in the validator's process. A module the
model imports that is not installed here (torch, transformers, ...) says nothing about the serving image, so such a
model is skipped, not refused.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

STAND_IN = Path(__file__).resolve().parent / "stand_in"
TIMEOUT_S = 60.0
_MARK = "\x00tritonforge-auto-complete "

# runs in the subprocess: argv = stand-in folder, model.py, model name; stdin = the config as Triton's JSON
_RUNNER = r"""
import importlib.util, json, sys
stand_in, model_py, name = sys.argv[1:4]
sys.path[:0] = [stand_in, str(__import__("pathlib").Path(model_py).parent)]
import triton_python_backend_utils as pb_utils
config = sys.stdin.read()

def done(**result):
    print("\x00tritonforge-auto-complete " + json.dumps(result), flush=True)
    sys.exit(0)

try:
    spec = importlib.util.spec_from_file_location("model", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
except ModuleNotFoundError as err:
    done(unavailable=f"{model_py} imports {err.name!r}, which is not installed here")
except BaseException as err:
    done(error=f"{type(err).__name__}: {err}")
model_class = getattr(module, "TritonPythonModel", None)
if model_class is None or not hasattr(model_class, "auto_complete_config"):
    done(skipped=True)
try:
    completed = model_class.auto_complete_config(pb_utils.ModelConfig(config))
except ModuleNotFoundError as err:
    done(unavailable=f"auto_complete_config of {model_py} imports {err.name!r}, which is not installed here")
except BaseException as err:
    done(error=f"{type(err).__name__}: {err}")
if not isinstance(completed, pb_utils.ModelConfig):
    done(error=f"auto_complete_config function in model '{name}' must return a valid pb.ModelConfig object.")
done(config=completed.as_dict())
"""


def config_json(config: ModelConfig) -> str:
    """The config as Triton hands it to a backend: every primitive field printed, int64 values as numbers."""
    from google.protobuf import json_format

    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return json.dumps(_numbers(data))


def _numbers(value: Any) -> Any:
    """protobuf's JSON writes int64 as strings; Triton's writer prints them as numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) < 20:
        return int(value)
    return value


def run_auto_complete(model_py: Path, config: ModelConfig, *, timeout: float | None = None) -> dict[str, Any]:
    """What ``auto_complete_config`` did: {"config": dict}, {"error": str}, {"skipped": True} or
    {"unavailable": str}."""
    timeout = TIMEOUT_S if timeout is None else timeout
    model_py = model_py.resolve()  # the runner runs in model.py's folder: a relative path would not be found there
    args = [sys.executable, "-c", _RUNNER, str(STAND_IN), str(model_py), config.name]
    try:
        run = subprocess.run(
            args, input=config_json(config), capture_output=True, text=True, timeout=timeout, cwd=model_py.parent
        )
    except subprocess.TimeoutExpired:
        return {"error": f"auto_complete_config of model '{config.name}' did not return within {timeout:g} s"}
    lines = [line for line in run.stdout.splitlines() if line.startswith(_MARK)]
    if not lines:
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"auto_complete_config of model '{config.name}' failed: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1][len(_MARK) :])
    return result


def merge_completed(config: ModelConfig, completed: dict[str, Any]) -> str | None:
    """Core's UpdateModelConfig: take what a backend may change from its completed config (None, or an error)."""
    from google.protobuf import json_format

    from tritonforge.config_io import model_config_pb2

    updated = model_config_pb2().ModelConfig()
    try:
        json_format.ParseDict(completed, updated, ignore_unknown_fields=True)
    except json_format.ParseError as err:
        return f"failed to parse the auto-completed model configuration of '{config.name}': {err}"
    config.max_batch_size = updated.max_batch_size
    del config.input[:]
    config.input.extend(updated.input)
    del config.output[:]
    config.output.extend(updated.output)
    if config.WhichOneof("scheduling_choice") is None:
        choice = updated.WhichOneof("scheduling_choice")
        if choice is not None:
            getattr(config, choice).CopyFrom(getattr(updated, choice))
    elif updated.WhichOneof("scheduling_choice") not in (None, config.WhichOneof("scheduling_choice")):
        case = config.DESCRIPTOR.fields_by_name[config.WhichOneof("scheduling_choice") or ""].number
        return f"Cannot update scheduling choice from {case} to {case} when auto-completing."  # sic: core prints one
    if updated.HasField("model_transaction_policy"):
        config.model_transaction_policy.decoupled = updated.model_transaction_policy.decoupled
    return None


def python_auto_complete(config: ModelConfig, model_py: Path) -> list[str]:
    """Complete ``config`` in place from ``model_py``; Triton's errors (empty when it loads or cannot be run here)."""
    if not model_py.is_file():
        return []  # the missing-file rule reports it
    result = run_auto_complete(model_py, config)
    if "error" in result:
        return [str(result["error"])]
    if "config" in result:
        error = merge_completed(config, result["config"])
        return [error] if error else []
    return []
