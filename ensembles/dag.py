"""Typed ensemble pipelines whose wiring is checked while they are written.

    dag = Ensemble("embed", max_batch_size=64)
    dag.input("TEXT", "TYPE_STRING", [1])
    dag.step(tokenizer, inputs={"TEXT": "TEXT"}, outputs={"input_ids": "ids", ...})
    dag.step(encoder, inputs={"input_ids": "ids", ...}, outputs={"EMBEDDING": "EMBEDDING"})
    dag.output("EMBEDDING")
    config = dag.config()          # a ModelConfig with platform "ensemble"

Every mistake raises `ValidationError` at the line that makes it, worded as Triton words it at load time
(so the message a user sees here is the one they would otherwise find in the server log).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tritonforge.builders.model_configs import TensorSpec, add_io
from tritonforge.config_io import model_config_pb2
from tritonforge.errors import Problem, ValidationError


@dataclass(frozen=True)
class ModelIO:
    """What an ensemble needs to know about a member model: its tensors, batch limit and decoupling."""

    name: str
    max_batch_size: int
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    decoupled: bool = False

    @classmethod
    def from_config(cls, config: Any) -> ModelIO:
        pb = model_config_pb2()

        def spec(t: Any, is_input: bool) -> TensorSpec:
            return TensorSpec(
                t.name,
                pb.DataType.Name(t.data_type),
                tuple(t.dims),
                optional=bool(is_input and t.optional),
                reshape=tuple(t.reshape.shape) if t.HasField("reshape") else None,
            )

        return cls(
            name=config.name,
            max_batch_size=config.max_batch_size,
            inputs={t.name: spec(t, True) for t in config.input},
            outputs={t.name: spec(t, False) for t in config.output},
            decoupled=config.model_transaction_policy.decoupled,
        )


def _shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _dims_match(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


@dataclass
class _Tensor:
    data_type: str
    dims: tuple[int, ...]
    batching: bool
    source: str  # the model the type and shape were inferred from
    producer: int | None = None  # step index, None for ensemble inputs
    consumers: list[int] = field(default_factory=list)
    origin: int | None = None  # the nearest decoupled step upstream (R62), None when there is none


@dataclass(frozen=True)
class _Step:
    model: ModelIO
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]


class Ensemble:
    """An ensemble under construction; see the module docstring."""

    def __init__(self, name: str, *, max_batch_size: int) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self._tensors: dict[str, _Tensor] = {}
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._steps: list[_Step] = []

    # -- errors -------------------------------------------------------------
    def _fail(self, message: str) -> None:
        raise ValidationError([Problem(f"ensemble {self.name}", message)])

    def _agree(self, tensor: str, data_type: str, dims: Sequence[int], batching: bool, source: str) -> None:
        """R60/R61: a tensor's dtype and shape must agree wherever it appears (-1 is a wildcard)."""
        known = self._tensors[tensor]
        if known.data_type != data_type:
            self._fail(
                f"in ensemble {self.name}, ensemble tensor {tensor}: inconsistent data type: {known.data_type} "
                f"is inferred from model {known.source} while {data_type} is inferred from model {source}"
            )
        full_known = ((-1,) if known.batching else ()) + known.dims
        full_new = ((-1,) if batching else ()) + tuple(dims)
        if not (_dims_match(known.dims, dims) or _dims_match(full_known, full_new)):
            self._fail(
                f"in ensemble {self.name}, ensemble tensor {tensor}: inconsistent shape: {_shape(full_known)} "
                f"is inferred from model {known.source} while {_shape(full_new)} is inferred from model {source}"
            )

    def _single_origin(self, origins: set[int | None], who: str) -> int | None:
        """R62: a step (and the ensemble's outputs, which Triton treats as one more step) may not join tensors that
        come from different decoupled producers, or from a decoupled and a non-decoupled branch."""
        if len(origins) > 1:
            self._fail(
                f"in ensemble {self.name}, step of {who} receives inputs originated from different decoupled models"
            )
        return next(iter(origins), None)

    # -- building -----------------------------------------------------------
    def input(self, name: str, data_type: str, dims: Sequence[int], *, optional: bool = False) -> Ensemble:
        if name in self._tensors:
            self._fail(f"ensemble tensor '{name}' is declared twice in ensemble '{self.name}'")
        self._inputs.append(TensorSpec(name, data_type, tuple(dims), optional=optional))
        self._tensors[name] = _Tensor(data_type, tuple(dims), self.max_batch_size > 0, self.name)
        return self

    def step(self, model: ModelIO, *, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> Ensemble:
        """Add a member model; `inputs`/`outputs` map the model's tensor names to ensemble tensor names."""
        index = len(self._steps)
        if model.max_batch_size != 0 and model.max_batch_size < self.max_batch_size:
            self._fail(
                f"ensemble {self.name} allows maximum batch size {self.max_batch_size}, but it contains model "
                f"{model.name} which only allows maximum batch size to be {model.max_batch_size}"
            )
        batching = model.max_batch_size > 0
        for key, tensor in inputs.items():
            if key not in model.inputs:
                self._fail(
                    f"in ensemble {self.name}, ensemble tensor {tensor} is mapping to non-existing input "
                    f"{key} in model {model.name}"
                )
            if tensor not in self._tensors:
                known = ", ".join(sorted(self._tensors)) or "none yet"
                self._fail(
                    f"in ensemble {self.name}, step {index} (model {model.name}) reads ensemble tensor '{tensor}' "
                    f"that no ensemble input or earlier step provides (known tensors: {known})"
                )
            spec = model.inputs[key]
            self._agree(
                tensor,
                spec.data_type,
                spec.dims,
                batching,
                model.name,  # members are compared by dims, as Triton does
            )
        for key, spec in model.inputs.items():
            if key not in inputs and not spec.optional:
                self._fail(
                    f"in ensemble {self.name}, input {key} in model {model.name} is not mapped to any ensemble tensors"
                )
        for key, tensor in outputs.items():
            if key not in model.outputs:
                self._fail(
                    f"in ensemble {self.name}, ensemble tensor {tensor} is mapped from non-existing output "
                    f"{key} in model {model.name}"
                )
            if tensor in self._tensors:
                self._fail(
                    f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble "
                    f"'{self.name}' step {index}"
                )
        origin = self._single_origin({self._tensors[t].origin for t in inputs.values()}, f"model '{model.name}'")
        # all checks passed: record the step
        for tensor in inputs.values():
            self._tensors[tensor].consumers.append(index)
        for key, tensor in outputs.items():
            spec = model.outputs[key]
            out_origin = index if model.decoupled else origin
            self._tensors[tensor] = _Tensor(spec.data_type, spec.dims, batching, model.name, index, origin=out_origin)
        self._steps.append(_Step(model, dict(inputs), dict(outputs)))
        return self

    def output(self, name: str) -> Ensemble:
        """Expose an ensemble tensor as an output; its type and shape come from the step that produces it."""
        if name not in self._tensors or self._tensors[name].producer is None:
            self._fail(f"ensemble output '{name}' for ensemble {self.name}' is not used")
        t = self._tensors[name]
        self._outputs.append(TensorSpec(name, t.data_type, t.dims))
        return self

    # -- rendering ----------------------------------------------------------
    def _check_complete(self) -> None:
        self._single_origin({self._tensors[o.name].origin for o in self._outputs}, f"model '{self.name}'")
        problems = []
        for spec in self._inputs:
            if not self._tensors[spec.name].consumers:
                problems.append(f"ensemble input '{spec.name}' for ensemble {self.name}' is not used")
        exposed = {o.name for o in self._outputs}
        for name, t in self._tensors.items():
            if t.producer is not None and not t.consumers and name not in exposed:
                problems.append(f"ensemble tensor '{name}' is unused in ensemble '{self.name}'")
        if not self._steps:
            problems.append(f"must specify 'step' for ensemble '{self.name}'")
        if problems:
            raise ValidationError([Problem(f"ensemble {self.name}", p) for p in problems])

    @property
    def decoupled(self) -> bool:
        """R62: an ensemble is decoupled when any of its steps is."""
        return any(s.model.decoupled for s in self._steps)

    def config(self) -> Any:
        self._check_complete()
        pb = model_config_pb2()
        config = pb.ModelConfig()
        config.name = self.name
        config.platform = "ensemble"
        config.max_batch_size = self.max_batch_size
        add_io(config, self._inputs, self._outputs)
        for s in self._steps:
            step = config.ensemble_scheduling.step.add()
            step.model_name = s.model.name
            step.model_version = -1  # R55: never let proto3's default 0 pin a version that does not exist
            for k in sorted(s.inputs):
                step.input_map[k] = s.inputs[k]
            for k in sorted(s.outputs):
                step.output_map[k] = s.outputs[k]
        return config
