"""Rules of one config on its own (Triton's ``ValidateModelConfig`` / ``ValidateModelIOConfig``): scheduling,
batching, I/O shapes, ensemble scheduling and data flow within one ensemble."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonforge.config_io import model_config_pb2
from tritonforge.validation import ensemble_rules as rules
from tritonforge.validation.batching_rules import dynamic_batching_problems
from tritonforge.validation.common import _BACKEND_TYPE, _CORRID_TYPES, _PLATFORM_TYPE, ENSEMBLE, WILDCARD

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def _normalize(config: ModelConfig) -> None:
    """Core's NormalizeModelConfig, limited to the defaults that later rules depend on (§3.11)."""
    if not config.HasField("version_policy"):
        config.version_policy.latest.num_versions = 1
    batching = config.dynamic_batching
    if config.HasField("dynamic_batching") and not batching.preferred_batch_size and config.max_batch_size > 0:
        batching.preferred_batch_size.append(config.max_batch_size)
    if config.HasField("sequence_batching"):
        batcher = config.sequence_batching
        if batcher.max_sequence_idle_microseconds == 0:
            batcher.max_sequence_idle_microseconds = 1_000_000
        if batcher.HasField("oldest") and not batcher.oldest.preferred_batch_size and config.max_batch_size > 0:
            batcher.oldest.preferred_batch_size.append(config.max_batch_size)


# ================================================================ ValidateModelConfig (poll)


def _model_config_rules(config: ModelConfig) -> list[str]:
    found: list[str] = []
    if problem := name_problem(config.name):
        found.append(problem)
    found += _platform_rules(config)
    if problem := max_batch_size_problem(config.name, config.max_batch_size):
        found.append(problem)
    found += _dynamic_batching_rules(config)
    found += _sequence_batching_rules(config)
    found += _ensemble_scheduling_rules(config)
    if config.model_transaction_policy.decoupled and config.response_cache.enable:  # R66
        found.append(_decoupled_cache_message(config.name))
    found += _model_metrics_rules(config)
    found += _repository_agent_rules(config)
    return found


def name_problem(name: str) -> str | None:
    """R2: a model has a name (the DAG API asks the same of an ensemble it writes)."""
    return None if name else "model configuration must specify 'name'"


def _repository_agent_rules(config: ModelConfig) -> list[str]:
    """tritonforge's own words: Triton 2.51 has no message for these, it dies (SIGSEGV) polling the model."""
    if not config.HasField("model_repository_agents"):
        return []
    agents = config.model_repository_agents.agents
    if not agents:
        return ["model_repository_agents lists no agent (Triton 2.51 crashes polling such a model): name an agent "
                "or remove the block"]
    return [f"model_repository_agents: agent {i} has no name" for i, agent in enumerate(agents) if not agent.name]


def max_batch_size_problem(name: str, max_batch_size: int) -> str | None:
    """R12: 0 (no batching) or a positive batch limit."""
    return None if max_batch_size >= 0 else f"'max_batch_size' must be non-negative value for {name}"


def _platform_rules(config: ModelConfig) -> list[str]:
    name, platform, backend = config.name, config.platform, config.backend
    if not backend and platform != ENSEMBLE:  # R7
        return [f"unexpected platform type '{platform}' for {name}"]
    if backend and platform == ENSEMBLE:  # R8
        return [f"Ensemble model '{name}' must have platform type '{platform}' and empty backend type"]
    kind = _BACKEND_TYPE.get(backend)
    if kind is not None and kind != _PLATFORM_TYPE.get(platform):  # R9
        return [f"unexpected 'platform' and 'backend' pair, got:{platform}, {backend}"]
    return []


def _dynamic_batching_rules(config: ModelConfig) -> list[str]:
    if not config.HasField("dynamic_batching"):
        return []
    batching = config.dynamic_batching
    delay = model_config_pb2().ModelQueuePolicy.DELAY
    policies = [batching.default_queue_policy, *batching.priority_queue_policy.values()]
    problems = dynamic_batching_problems(
        config.name,
        max_batch_size=config.max_batch_size,
        preferred_batch_sizes=batching.preferred_batch_size,
        priority_levels=batching.priority_levels,
        default_priority_level=batching.default_priority_level,
        policy_levels=batching.priority_queue_policy,
        preserve_ordering=batching.preserve_ordering,
        delays_on_timeout=any(p.default_timeout_microseconds != 0 and p.timeout_action == delay for p in policies),
    )
    return [message for _field, message in problems]


def _sequence_batching_rules(config: ModelConfig) -> list[str]:
    if not config.HasField("sequence_batching"):
        return []
    pb = model_config_pb2()
    name, batcher = config.name, config.sequence_batching
    kinds = pb.ModelSequenceBatching.Control
    found: list[str] = []
    if config.response_cache.enable:  # R32
        found.append(
            f"Response Cache does not currently support model {name} with sequence batching scheduler. "
            "Please disable the response cache."
        )
    for kind in (kinds.CONTROL_SEQUENCE_START, kinds.CONTROL_SEQUENCE_END, kinds.CONTROL_SEQUENCE_READY):
        found += _control_rules(batcher, name, kind, typed=False)  # R33, R34
    found += _control_rules(batcher, name, kinds.CONTROL_SEQUENCE_CORRID, typed=True)  # R35
    if batcher.HasField("oldest"):  # R36
        for size in batcher.oldest.preferred_batch_size:
            if size <= 0:
                found.append(f"sequence batching preferred batch size must be positive for {name}")
            elif size > config.max_batch_size:
                found.append(f"sequence batching preferred batch size must be <= max batch size for {name}")
    if batcher.HasField("direct") and not 0.0 <= batcher.direct.minimum_slot_utilization <= 1.0:
        found.append(f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}")
    return found


def _control_rules(batcher: Any, name: str, kind: int, *, typed: bool) -> list[str]:
    """Core's Get{Boolean,Typed}SequenceControlProperties for one control kind (first error, as Triton)."""
    pb = model_config_pb2()
    kind_name = pb.ModelSequenceBatching.Control.Kind.Name(kind)
    seen_tensors: set[str] = set()
    seen_control = False
    for control_input in batcher.control_input:
        if not control_input.name:
            return [f"sequence batching control tensor must have a name for {name}"]
        if control_input.name in seen_tensors:
            return [
                f"sequence batching control tensor '{control_input.name}' is specified for multiple control kinds "
                f"for {name}"
            ]
        seen_tensors.add(control_input.name)
        for control in control_input.control:
            if control.kind != kind:
                continue
            if seen_control:
                return [f"sequence batching specifies multiple {kind_name} tensors for {name}"]
            seen_control = True
            lists = [
                ("int32_false_true", len(control.int32_false_true)),
                ("fp32_false_true", len(control.fp32_false_true)),
                ("bool_false_true", len(control.bool_false_true)),
            ]
            used = [(label, size) for label, size in lists if size]
            if typed:
                if used:
                    return [
                        "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or "
                        f"'bool_false_true' for {kind_name} for {name}"
                    ]
                dtype = pb.DataType.Name(control.data_type)
                if dtype not in _CORRID_TYPES:
                    return [
                        f"unexpected data type for control {kind_name} for {name}. Allowed data types are "
                        "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
                    ]
            elif not used:
                return [
                    "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or "
                    f"'bool_false_true' for {kind_name} for {name}"
                ]
            elif len(used) > 1:
                return [
                    "sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and "
                    f"'bool_false_true' for {kind_name} for {name}"
                ]
            elif used[0][1] != 2:
                return [
                    f"sequence batching control '{used[0][0]}' must have exactly 2 entries for {kind_name} for {name}"
                ]
    return []


def _model_metrics_rules(config: ModelConfig) -> list[str]:
    if not config.HasField("model_metrics"):
        return []
    for control in config.model_metrics.metric_control:  # R67
        if not control.HasField("metric_identifier"):
            return ["metric control must specify 'metric_identifier'"]
        if not control.metric_identifier.family:
            return ["metric identifier must specify non-empty 'family'"]
        if not control.HasField("histogram_options"):
            return ["metric control must specify 'histogram_options'"]
        if not control.histogram_options.buckets:
            return ["histogram options must specify non-empty 'buckets'"]
    return []


def _decoupled_cache_message(name: str) -> str:
    return (
        f"Response Cache does not currently support model {name} with 'decoupled' transaction policy. "
        "Please disable the response cache."
    )


# ================================================================ ensembles, single config (R46-R51)


def _ensemble_scheduling_rules(config: ModelConfig) -> list[str]:
    name = config.name
    if not config.HasField("ensemble_scheduling"):
        if config.platform == ENSEMBLE:  # R46
            return [f"ensemble scheduling must be set for ensemble {name} whose platform is {ENSEMBLE}"]
        return []
    if config.platform != ENSEMBLE:  # R46
        return [f"ensemble scheduling cannot be set for model '{name}' whose platform is not {ENSEMBLE}"]
    found: list[str] = []
    if config.instance_group:  # R47
        found.append(f"instance group should not be specified for ensemble '{name}'")
    if config.HasField("optimization"):
        found.append(f"optimization should not be specified for ensemble '{name}'")
    if config.model_warmup:
        found.append(f"model_warmup can not be specified for ensemble '{name}'")
    if not config.ensemble_scheduling.step:  # R48
        return [*found, rules.no_steps(name)]
    tensors, graph_errors = _build_ensemble_graph(config)
    if graph_errors:
        return found + graph_errors
    return found + _ensemble_data_flow_rules(config, tensors)


@dataclass(eq=False)
class _FlowTensor:
    """One ensemble tensor of the single-config data-flow graph (core's EnsembleTensor)."""

    name: str
    is_output: bool
    ready: bool = False
    prev: list[_FlowTensor] = field(default_factory=list)
    next: list[_FlowTensor] = field(default_factory=list)


def _build_ensemble_graph(config: ModelConfig) -> tuple[dict[str, _FlowTensor], list[str]]:
    name = config.name
    tensors: dict[str, _FlowTensor] = {}
    found: list[str] = []
    for index, step in enumerate(config.ensemble_scheduling.step):
        missing = next((f for f in rules.STEP_FIELDS if not getattr(step, f)), None)
        if missing:  # R48
            found.append(rules.step_missing(name, missing, index))
            continue
        produced: list[_FlowTensor] = []
        for _key, tensor in sorted(step.output_map.items()):
            node = tensors.get(tensor)
            if node is None:
                node = tensors[tensor] = _FlowTensor(tensor, is_output=True)
            elif node.is_output:  # R49
                found.append(rules.output_mapped_twice(name, tensor, index))
            else:
                node.is_output = True
            produced.append(node)
        for _key, tensor in sorted(step.input_map.items()):
            node = tensors.setdefault(tensor, _FlowTensor(tensor, is_output=False))
            for output in produced:
                output.prev.append(node)
                node.next.append(output)
    return tensors, found


def _ensemble_data_flow_rules(config: ModelConfig, tensors: dict[str, _FlowTensor]) -> list[str]:
    """R50/R51: a data-flow closure from the ensemble inputs (a cycle inside one ensemble never becomes ready)."""
    name = config.name
    found: list[str] = []
    queue: deque[_FlowTensor] = deque()
    for tensor in config.input:
        node = tensors.get(tensor.name)
        if node is None:
            found.append(rules.unused_input(name, tensor.name))
            continue
        node.ready = True
        queue.append(node)
    while queue:
        for nxt in queue.popleft().next:
            if not nxt.ready and all(p.ready for p in nxt.prev):
                nxt.ready = True
                queue.append(nxt)
    outputs = {tensor.name for tensor in config.output}
    for output in config.output:
        node = tensors.get(output.name)
        if node is None:
            found.append(rules.unused_output(name, output.name))
        elif not node.ready:
            found.append(_not_written_message(name, node))
    flow_broken = bool(found)
    for tensor_name, node in sorted(tensors.items()):
        if tensor_name in outputs:
            continue
        if (node.ready and not node.next) or (not node.ready and not flow_broken):
            found.append(rules.unused_tensor(name, tensor_name))
    return found


def _not_written_message(name: str, output: _FlowTensor) -> str:
    message = f"output '{output.name}' for ensemble '{name}' is not written"
    last, prev, seen = output, output.prev, set()
    while prev:
        source = next((n for n in prev if not n.ready and n.name not in seen), None)
        if source is None:
            break
        seen.add(source.name)
        last, prev = source, source.prev
    if last is not output:
        message += f": at least one of its depending tensors, '{last.name}', is not connected"
    return message


# ================================================================ ValidateModelIOConfig (R13-R27)


def _model_io_rules(config: ModelConfig) -> list[str]:
    """Input/output/batch-IO rules; Triton appends ' for <model>' to each of these messages."""
    platform, batch = config.platform, config.max_batch_size
    found = [_io_rules(t, batch, platform, "input") for t in config.input]
    found += [_io_rules(t, batch, platform, "output") for t in config.output]
    messages = [message for message in found if message] + _batch_io_rules(config)
    return [f"{message} for {config.name}" for message in messages]


def _io_rules(tensor: Any, max_batch_size: int, platform: str, kind: str) -> str | None:
    shape_error = _io_shape_rules(tensor, max_batch_size, f"model {kind} ")
    if shape_error:
        return shape_error
    formats = model_config_pb2().ModelInput
    if kind == "input" and tensor.format in (formats.FORMAT_NHWC, formats.FORMAT_NCHW) and len(tensor.dims) != 3:
        return "model input NHWC/NCHW require 3 dims"  # R20
    if platform != "tensorrt_plan" and tensor.is_shape_tensor:  # R21
        return "shape tensors are only supported for TensorRT platform"
    if tensor.is_non_linear_format_io:  # R22
        if platform != "tensorrt_plan":
            return "Non-linear IO format is only supported for the TensorRT platform"
        if len(tensor.dims) != 3:
            return f"Non-linear IO format {kind} requires 3 dims"
    return None


def _element_count(dims: Iterable[int]) -> int:
    """Core's GetElementCount: 0 for no dims, -1 when any dim is variable."""
    dims = list(dims)
    if not dims:
        return 0
    if WILDCARD in dims:
        return WILDCARD
    return math.prod(dims)


def io_shape_problem(tensor: Any, max_batch_size: int, kind: str) -> str | None:
    """R13-R19 for one model ``kind`` ("input" or "output") tensor (the DAG API checks what it declares)."""
    return _io_shape_rules(tensor, max_batch_size, f"model {kind} ")


def _io_shape_rules(tensor: Any, max_batch_size: int, prefix: str) -> str | None:
    """Core's ValidateIOShape (R13-R19)."""
    if not tensor.name:
        return f"{prefix}must specify 'name'"
    prefix = f"{prefix}'{tensor.name}' "
    if tensor.data_type == 0:
        return f"{prefix}must specify 'data_type'"
    if not tensor.dims:
        return f"{prefix}must specify 'dims'"
    has_reshape = tensor.HasField("reshape")
    shape = list(tensor.reshape.shape)
    if has_reshape and not shape and max_batch_size == 0:
        return f"{prefix}cannot have empty reshape for non-batching model as scalar tensors are not supported"
    variable = f"{WILDCARD} to indicate a variable-size dimension"
    if any(d < 1 and d != WILDCARD for d in tensor.dims):
        return f"{prefix}dimension must be integer >= 1, or {variable}"
    if not has_reshape:
        return None
    if any(d < 1 and d != WILDCARD for d in shape):
        return f"{prefix}reshape dimensions must be integer >= 1, or {variable}"
    dims_size, reshape_size = _element_count(tensor.dims), _element_count(shape)
    if dims_size != reshape_size and (reshape_size != 0 or dims_size != 1):
        return f"{prefix}has different size for dims and reshape"
    if dims_size == WILDCARD:
        dims_chunks, reshape_chunks = _wildcard_chunks(tensor.dims), _wildcard_chunks(shape)
        if len(dims_chunks) != len(reshape_chunks):
            return f"{prefix}has different number of variable-size dimensions for dims and reshape"
        if dims_chunks != reshape_chunks:
            return f"{prefix}has different size for dims and reshape"
    return None


def _wildcard_chunks(dims: Iterable[int]) -> list[int]:
    """Element counts of the runs of fixed dims between variable dims: [2, 4, -1, 6] -> [8, 6]."""
    chunks, current = [], 1
    for dim in dims:
        if dim == WILDCARD:
            chunks.append(current)
            current = 1
        else:
            current *= dim
    return [*chunks, current]


def _batch_io_rules(config: ModelConfig) -> list[str]:
    """Core's ValidateBatchIO (R24-R27): one message per offending entry."""
    pb = model_config_pb2()
    inputs = {t.name for t in config.input}
    outputs = {t.name for t in config.output}
    found: list[str] = []
    for batch_input in config.batch_input:
        kind = pb.BatchInput.Kind.Name(batch_input.kind)
        if len(batch_input.source_input) != 1:
            found.append(f"batch input kind '{kind}' expects 1 source input, got {len(batch_input.source_input)}")
        elif batch_input.data_type not in (pb.TYPE_INT32, pb.TYPE_FP32):
            found.append("batch input data type must be TYPE_INT32 or TYPE_FP32")
        elif batch_input.source_input[0] not in inputs:
            found.append(f"unknown source input name '{batch_input.source_input[0]}'")
    for batch_output in config.batch_output:
        kind = pb.BatchOutput.Kind.Name(batch_output.kind)
        if len(batch_output.source_input) != 1:
            found.append(f"batch output kind '{kind}' expects 1 source input, got {len(batch_output.source_input)}")
            continue
        if batch_output.source_input[0] not in inputs:
            found.append(f"unknown source input name '{batch_output.source_input[0]}'")
            continue
        targets: set[str] = set()
        for target in batch_output.target_name:
            if target not in outputs:
                found.append(f"unknown target output name '{target}'")
                break
            if target in targets:
                found.append(f"target output name '{target}' can only be specified once")
                break
            targets.add(target)
    return found


# ================================================================ versions (R4, R5, R39)
