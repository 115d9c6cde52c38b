"""What the validator's rule modules share: Triton's constants and tables, and what one model's checks found."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

CONFIG_FILE = "config.pbtxt"
WILDCARD = -1
ENSEMBLE = "ensemble"
# std::to_string(min_compute_capability) of Triton's default build (TRITON_MIN_COMPUTE_CAPABILITY 6.0)
MIN_COMPUTE_CAPABILITY = "6.000000"
# sub-directories of a model that are never versions (R4)
RESERVED_DIRS = frozenset({"warmup", "initial_state", "configs"})

# R9: only these backends are checked against the platform (an unknown backend accepts any platform)
_BACKEND_TYPE = {"tensorflow": "tf", "tensorrt": "trt", "onnxruntime": "ort", "pytorch": "torch"}
_PLATFORM_TYPE = {
    "tensorflow_graphdef": "tf",
    "tensorflow_savedmodel": "tf",
    "tensorrt_plan": "trt",
    "onnxruntime_onnx": "ort",
    "pytorch_libtorch": "torch",
    "torch_aoti": "torch",
}
# default artifact of each backend whose files can be checked offline (R10/R11)
_DEFAULT_FILE = {
    "onnxruntime": "model.onnx",
    "tensorrt": "model.plan",
    "openvino": "model.xml",
    "python": "model.py",
}
_DTYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 2, 8: 4, 9: 8, 10: 2, 11: 4, 12: 8, 13: 0, 14: 2}
_CORRID_TYPES = frozenset({"TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING"})
_LEADING_INT = re.compile(r"\s*[+-]?\d+")


# ================================================================ public API


@dataclass
class _Findings:
    """What one model's own checks found, split by the stage at which Triton would fail."""

    poll: list[str] = field(default_factory=list)  # the model never enters the dependency graph
    load: list[str] = field(default_factory=list)  # every version fails to load
    version_errors: dict[int, str] = field(default_factory=dict)  # only these versions fail to load
    versions: list[int] = field(default_factory=list)  # selected by the version policy (R39)

    def messages(self) -> list[str]:
        return _dedupe([*self.poll, *self.load, *self.version_errors.values()])

    def loaded_versions(self) -> set[int]:
        if self.poll or self.load:
            return set()
        return {v for v in self.versions if v not in self.version_errors}

    def load_error(self) -> str:
        return next(iter([*self.load, *self.version_errors.values()]), "")


@dataclass
class _Model:
    name: str
    where: str
    config: ModelConfig
    findings: _Findings
    cross: list[str] = field(default_factory=list)  # dependency, ensemble cross-model and repository-wide checks

    @property
    def is_ensemble(self) -> bool:
        return self.config.HasField("ensemble_scheduling")


def _subdirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _dedupe(messages: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(messages))
