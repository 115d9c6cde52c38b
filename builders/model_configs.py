"""Spec serving settings + tensor signatures → `ModelConfig` protobuf messages (never text templates)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from tritonforge.config_io import model_config_pb2, render_config
from tritonforge.repository import FileContent
from tritonforge.spec import InstanceGroup, Optimization, Serving

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInput, ModelOutput

Target = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a model; dims exclude the batch dimension when max_batch_size > 0."""

    name: str
    data_type: str  # Triton's enum name, e.g. "TYPE_FP32"
    dims: tuple[int, ...]
    allow_ragged_batch: bool = False
    optional: bool = False
    reshape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ModelSet:
    """The Triton models one spec entry renders: configs by model name, and the file plan that ships them."""

    files: dict[str, FileContent] = field(default_factory=dict)
    configs: dict[str, ModelConfig] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, config: ModelConfig, version_files: Mapping[str, FileContent], version: int = 1) -> None:
        """A model: its config.pbtxt plus files in its version folder (an ensemble gets an empty one, R5)."""
        self.configs[config.name] = config
        self.files[f"{config.name}/config.pbtxt"] = render_config(config).encode()
        self.files[f"{config.name}/{version}/"] = b""
        self.add_files(config.name, version_files, version)

    def add_files(self, model: str, version_files: Mapping[str, FileContent], version: int = 1) -> None:
        for rel, content in version_files.items():
            self.files[f"{model}/{version}/{rel}"] = content

    def set_parameter(self, model: str, key: str, value: str) -> None:
        """A ``parameters`` entry on a model already added (its config.pbtxt rendered again)."""
        config = self.configs[model]
        config.parameters[key].string_value = value
        self.files[f"{model}/config.pbtxt"] = render_config(config).encode()

    def merge(self, other: ModelSet) -> None:
        self.files.update(other.files)
        self.configs.update(other.configs)
        self.notes += other.notes


def _io(message: ModelInput | ModelOutput, spec: TensorSpec) -> None:
    pb = model_config_pb2()
    message.name = spec.name
    message.data_type = pb.DataType.Value(spec.data_type)
    message.dims.extend(spec.dims)
    if spec.reshape is not None:
        message.reshape.shape.extend(spec.reshape)


def add_io(config: ModelConfig, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    for spec in inputs:
        tensor = config.input.add()
        _io(tensor, spec)
        tensor.allow_ragged_batch = spec.allow_ragged_batch
        tensor.optional = spec.optional
    for spec in outputs:
        _io(config.output.add(), spec)


def _instance_groups(config: ModelConfig, groups: Sequence[InstanceGroup], target: Target, cpu_only: bool) -> list[str]:
    """Render instance groups; returns notes on what the target changed (kept in the build report)."""
    pb = model_config_pb2()
    notes = []
    for g in groups:
        msg = config.instance_group.add()
        msg.count = g.count
        kind = g.kind
        if kind == "auto":
            kind = "cpu" if cpu_only or target == "cpu" else "gpu"
        elif kind == "gpu" and (cpu_only or target == "cpu"):
            notes.append(f"{config.name}: instance kind 'gpu' served as KIND_CPU on the {target} target")
            kind = "cpu"
        msg.kind = pb.ModelInstanceGroup.Kind.Value(f"KIND_{kind.upper()}")
        if kind == "gpu":
            msg.gpus.extend(g.gpus)
        if g.rate_limiter:
            for r in g.rate_limiter.resources:
                res = msg.rate_limiter.resources.add()
                res.name = r.name
                res.count = r.count
                setattr(res, "global", r.global_)  # `global` is a Python keyword
            msg.rate_limiter.priority = g.rate_limiter.priority
    return notes


def _dynamic_batching(config: ModelConfig, serving: Serving) -> None:
    db = serving.dynamic_batching
    if db is None or serving.max_batch_size == 0:
        return
    pb = model_config_pb2()
    msg = config.dynamic_batching
    msg.SetInParent()
    msg.preferred_batch_size.extend(db.preferred_batch_sizes)
    msg.max_queue_delay_microseconds = db.max_queue_delay_microseconds
    msg.preserve_ordering = db.preserve_ordering
    msg.priority_levels = db.priority_levels
    msg.default_priority_level = db.default_priority_level

    def policy(target: Any, p: Any) -> None:
        target.timeout_action = pb.ModelQueuePolicy.TimeoutAction.Value(p.timeout_action.upper())
        target.default_timeout_microseconds = p.default_timeout_microseconds
        target.allow_timeout_override = p.allow_timeout_override
        target.max_queue_size = p.max_queue_size

    if db.default_queue_policy:
        policy(msg.default_queue_policy, db.default_queue_policy)
    for level, p in sorted(db.priority_queue_policy.items()):
        policy(msg.priority_queue_policy[level], p)


def _optimization(config: ModelConfig, opt: Optimization | None, target: Target, backend: str) -> None:
    # Accelerators and graph levels are onnxruntime-backend settings: rendered only where that backend serves.
    if opt is None or backend != "onnxruntime":
        return
    accelerators = opt.gpu_execution_accelerators if target == "gpu" else opt.cpu_execution_accelerators
    field_name = "gpu_execution_accelerator" if target == "gpu" else "cpu_execution_accelerator"
    for acc in accelerators:
        msg = getattr(config.optimization.execution_accelerators, field_name).add()
        msg.name = acc.name
        for k in sorted(acc.parameters):
            msg.parameters[k] = acc.parameters[k]
    if opt.graph_level is not None:
        config.optimization.graph.level = opt.graph_level
    if opt.cuda_graphs and target == "gpu":
        config.optimization.cuda.graphs = True


def _warmup(config: ModelConfig, serving: Serving) -> None:
    pb = model_config_pb2()
    for w in serving.warmup:
        msg = config.model_warmup.add()
        msg.name, msg.batch_size, msg.count = w.name, w.batch_size, w.count
        for name in sorted(w.inputs):
            i = w.inputs[name]
            entry = msg.inputs[name]
            entry.data_type = pb.DataType.Value(f"TYPE_{i.data_type}")
            entry.dims.extend(i.dims)
            if i.data == "zero":
                entry.zero_data = True
            else:
                entry.random_data = True


def render_model(
    name: str,
    serving: Serving,
    signature: Signature,
    *,
    target: Target,
    backend: str,
    parameters: Mapping[str, str] | None = None,
    cpu_only: bool = False,
    decoupled: bool = False,
) -> tuple[ModelConfig, list[str]]:
    """One non-ensemble model. Returns the ModelConfig and notes on target-specific changes."""
    pb = model_config_pb2()
    config = pb.ModelConfig()
    config.name = name
    config.backend = backend
    config.max_batch_size = serving.max_batch_size
    vp = serving.version_policy
    if vp.all:
        config.version_policy.all.SetInParent()
    elif vp.specific:
        config.version_policy.specific.versions.extend(vp.specific)
    elif vp.latest is not None:
        config.version_policy.latest.num_versions = vp.latest
    add_io(config, signature.inputs, signature.outputs)
    notes = _instance_groups(config, serving.instance_groups, target, cpu_only)
    _dynamic_batching(config, serving)
    _optimization(config, serving.optimization, target, backend)
    params = {**(parameters or {}), **serving.parameters}
    for k in sorted(params):
        config.parameters[k].string_value = params[k]
    _warmup(config, serving)
    if decoupled:
        config.model_transaction_policy.decoupled = True
    if serving.response_cache:
        config.response_cache.enable = True
    return config, notes
