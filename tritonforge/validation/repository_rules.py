"""Rules across models: dependencies and cycles, ensembles against their composing models (dtypes, shapes,
decoupled joins). The rate limiter's resources: :mod:`tritonforge.validation.rate_limit`."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tritonforge.config_io import model_config_pb2
from tritonforge.validation import ensemble_rules as rules
from tritonforge.validation.common import WILDCARD, _Model
from tritonforge.validation.config_rules import _decoupled_cache_message

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig


def _check_dependencies(models: dict[str, _Model]) -> None:
    """Steps 6 and 9: the dependency graph of the models that polled, then each ensemble against its models."""
    nodes = {name: m for name, m in models.items() if not m.findings.poll}
    upstreams = {
        name: list(dict.fromkeys(s.model_name for s in m.config.ensemble_scheduling.step))
        for name, m in nodes.items()
        if m.is_ensemble
    }
    status: dict[str, str] = {}
    for name, ups in upstreams.items():
        missing = sorted({u for u in ups if u not in nodes})
        if missing:  # R53
            status[name] = f"ensemble {name} contains models that are not available or ambiguous: {', '.join(missing)}"
    for name in upstreams:
        if name not in status:
            last = _cycle_back_to(name, upstreams)
            if last is not None:  # R54
                status[name] = rules.circular_dependency(name, last)
    for name, message in status.items():
        nodes[name].cross.append(message)
    resolver = _EnsembleResolver(nodes, upstreams, status)
    for name in nodes:
        resolver.resolve(name)


def _cycle_back_to(start: str, upstreams: Mapping[str, list[str]]) -> str | None:
    """The ensemble through which ``start`` depends on itself, if any (depth first, in step order)."""
    stack, seen = [start], {start}
    while stack:
        current = stack.pop()
        for up in upstreams.get(current, []):
            if up == start:
                return current
            if up not in seen:
                seen.add(up)
                stack.append(up)
    return None


class _EnsembleResolver:
    """Checks ensembles upstream-first, as Triton loads them, deriving each ensemble's decoupled flag (R62)."""

    def __init__(self, nodes: dict[str, _Model], upstreams: dict[str, list[str]], status: dict[str, str]) -> None:
        self.nodes, self.upstreams, self.status = nodes, upstreams, status
        self.decoupled: dict[str, bool] = {}
        self.failed_load: dict[str, str] = {}
        self.done: set[str] = set()

    def loaded(self, name: str) -> set[int]:
        return set() if name in self.failed_load else self.nodes[name].findings.loaded_versions()

    def load_error(self, name: str) -> str:
        return self.failed_load.get(name) or self.nodes[name].findings.load_error()

    def resolve(self, name: str) -> None:
        if name in self.done:
            return
        self.done.add(name)
        model = self.nodes[name]
        if not model.is_ensemble:
            self.decoupled[name] = model.config.model_transaction_policy.decoupled
            return
        if name in self.status:
            return
        errors = self._check_upstreams(name)  # CheckNode (R55, R56)
        if not errors:
            configs = {up: self.nodes[up].config for up in self.upstreams[name]}
            errors, decoupled = _ensemble_cross_rules(model.config, configs, self.decoupled)
            self.decoupled[name] = decoupled
        if errors:
            self.status[name] = errors[0]
            model.cross.extend(errors)
            return
        if self.decoupled[name] and model.config.response_cache.enable:  # R63: Model::Init re-runs R66
            message = _decoupled_cache_message(name)
            model.cross.append(message)
            self.failed_load[name] = message

    def _check_upstreams(self, name: str) -> list[str]:
        required: dict[str, set[int]] = {}
        for step in self.nodes[name].config.ensemble_scheduling.step:
            required.setdefault(step.model_name, set()).add(step.model_version)
        errors: list[str] = []
        for up, versions in required.items():
            self.resolve(up)
            loaded = self.loaded(up)
            if up in self.status:
                errors.append(
                    f"ensemble '{name}' depends on '{up}' which is not valid. Model '{up}' failed with error: "
                    f"{self.status[up]}"
                )
            elif not loaded:
                errors.append(
                    f"ensemble '{name}' depends on '{up}' which has no loaded version. Model '{up}' loading failed "
                    f"with error: {self.load_error(up)}"
                )
            else:
                errors += [
                    f"ensemble '{name}' depends on '{up}' whose required version {v} is not loaded."
                    for v in sorted(versions)
                    if v != -1 and v not in loaded
                ]
        return errors


@dataclass(eq=False)
class _TensorNode:
    """One ensemble tensor as inferred from a model (core's TensorNode in ensemble_utils.cc)."""

    model: str
    dtype: int = 0
    dims: tuple[int, ...] = ()
    full_dims: tuple[int, ...] = ()
    is_decoupled: bool = False
    label: int = 0
    visited: bool = False
    prev: list[_TensorNode] = field(default_factory=list)
    next: list[_TensorNode] = field(default_factory=list)
    sibling: _TensorNode | None = None

    @classmethod
    def inferred(cls, model: str, batching: bool, dtype: int, dims: Iterable[int]) -> _TensorNode:
        dims = tuple(dims)
        return cls(model, dtype, dims, ((WILDCARD,) if batching else ()) + dims)


def _consistency(lhs: _TensorNode, rhs: _TensorNode, prefix: str) -> str | None:
    """R60/R61: dtype equal; shapes equal with -1 wildcards, or equal once the batch dim is added."""
    name = model_config_pb2().DataType.Name
    return rules.inconsistent_type(prefix, name(lhs.dtype), lhs.model, name(rhs.dtype), rhs.model) or (
        rules.inconsistent_shape(prefix, (lhs.dims, lhs.full_dims, lhs.model), (rhs.dims, rhs.full_dims, rhs.model))
    )


def _ensemble_cross_rules(
    config: ModelConfig, composing: Mapping[str, ModelConfig], decoupled: Mapping[str, bool]
) -> tuple[list[str], bool]:
    """Core's ValidateEnsembleConfig (R57-R62): problems, and the ensemble's derived decoupled flag."""
    ensemble, batching = config.name, config.max_batch_size > 0
    tensors: dict[str, _TensorNode] = {}
    for tensor in config.input:
        dims = tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims
        tensors.setdefault(tensor.name, _TensorNode.inferred(ensemble, batching, tensor.data_type, dims))
    sink = _TensorNode(ensemble)
    for output in config.output:
        dims = output.reshape.shape if output.HasField("reshape") else output.dims
        node = tensors.setdefault(output.name, _TensorNode.inferred(ensemble, batching, output.data_type, dims))
        sink.prev.append(node)
        node.next.append(sink)
    errors: list[str] = []
    for step in config.ensemble_scheduling.step:
        model = composing[step.model_name]
        too_small = rules.batch_size_too_small(ensemble, config.max_batch_size, step.model_name, model.max_batch_size)
        if too_small:
            errors.append(too_small)
        errors += _tensor_mapping_rules(ensemble, step, model, decoupled.get(step.model_name, False), tensors)
    if errors:
        return errors, False
    return _decoupled_flow_rules(config, tensors)


def _tensor_mapping_rules(
    ensemble: str, step: Any, model: ModelConfig, decoupled: bool, tensors: dict[str, _TensorNode]
) -> list[str]:
    """Core's ValidateTensorMapping for one step (R58-R61), then links the step into the graph."""
    name, batching = step.model_name, model.max_batch_size > 0
    prefix = f"in ensemble {ensemble}, ensemble tensor "
    inputs = {t.name: t for t in model.input}
    outputs = {t.name: t for t in model.output}
    errors = [
        rules.non_existing_input(ensemble, tensor, key, name)
        for key, tensor in sorted(step.input_map.items())
        if key not in inputs
    ]
    for model_input in model.input:
        tensor = step.input_map.get(model_input.name)
        if tensor is None:
            if not model_input.optional:
                errors.append(rules.unmapped_input(ensemble, model_input.name, name))
            continue
        node = _TensorNode.inferred(name, batching, model_input.data_type, model_input.dims)
        errors += _register(tensors, tensor, node, f"{prefix}{tensor}: ")
    errors += [
        rules.non_existing_output(ensemble, tensor, key, name)
        for key, tensor in sorted(step.output_map.items())
        if key not in outputs
    ]
    sibling = _TensorNode(name)
    produced: list[_TensorNode] = []
    for key, tensor in sorted(step.output_map.items()):
        if key not in outputs:
            continue
        model_output = outputs[key]
        node = _TensorNode.inferred(name, batching, model_output.data_type, model_output.dims)
        errors += _register(tensors, tensor, node, f"{prefix}{tensor}: ")
        tensors[tensor].sibling = sibling
        produced.append(tensors[tensor])
    consumed = [tensors[t] for _k, t in sorted(step.input_map.items()) if t in tensors]
    for node in produced:
        node.is_decoupled = decoupled
        for source in consumed:
            node.prev.append(source)
            source.next.append(node)
    return errors


def _register(tensors: dict[str, _TensorNode], tensor: str, node: _TensorNode, prefix: str) -> list[str]:
    known = tensors.get(tensor)
    if known is None:
        tensors[tensor] = node
        return []
    message = _consistency(known, node, prefix)
    return [message] if message else []


def _decoupled_flow_rules(config: ModelConfig, tensors: dict[str, _TensorNode]) -> tuple[list[str], bool]:
    """R62: label each tensor with the decoupled producer it descends from; a step may not join two labels."""
    labels = 0
    queue: deque[_TensorNode] = deque()
    for tensor in config.input:
        node = tensors[tensor.name]
        node.visited = True
        queue.append(node)
    while queue:
        current = queue.popleft()
        for nxt in current.next:
            if nxt.visited or not all(p.visited for p in nxt.prev):
                continue
            label = nxt.prev[0].label
            if any(p.label != label for p in nxt.prev):
                return [rules.mixed_decoupled(config.name, nxt.model)], False
            if nxt.sibling is not None and nxt.sibling.visited:
                nxt.label = nxt.sibling.label
            else:
                if nxt.is_decoupled:
                    labels += 1
                nxt.label = labels if nxt.is_decoupled else label
                if nxt.sibling is not None:
                    nxt.sibling.label, nxt.sibling.visited = nxt.label, True
            nxt.visited = True
            queue.append(nxt)
    return [], labels != 0

