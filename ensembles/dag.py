"""Typed ensemble pipelines whose wiring is checked while they are written.

    dag = Ensemble("embed", max_batch_size=64)
    dag.input("TEXT", "TYPE_STRING", [1])
    dag.step(tokenizer, inputs={"TEXT": "TEXT"}, outputs={"input_ids": "ids", ...})
    dag.step(encoder, inputs={"input_ids": "ids", ...}, outputs={"EMBEDDING": "EMBEDDING"})
    dag.output("EMBEDDING")
    config = dag.config()          # a ModelConfig with platform "ensemble"

Every mistake raises `ValidationError` at the line that makes it, worded as Triton words it at load time
(so the message a user sees here is the one they would otherwise find in the server log). An argument of the wrong
type is a `ValidationError` too, naming the argument, what was given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn

from tritonforge.builders.model_configs import TensorSpec, add_io
from tritonforge.config_io import model_config_pb2
from tritonforge.errors import Problem, ValidationError
from tritonforge.validation import ensemble_rules as rules
from tritonforge.validation.config_rules import io_shape_problem, max_batch_size_problem, name_problem
from tritonforge.values import is_whole

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig, ModelInput, ModelOutput


@dataclass(frozen=True)
class ModelIO:
    """What an ensemble needs to know about a member model: its tensors, batch limit and decoupling."""

    name: str
    max_batch_size: int
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    decoupled: bool = False

    @classmethod
    def from_config(cls, config: ModelConfig) -> ModelIO:
        pb = model_config_pb2()
        if not isinstance(config, pb.ModelConfig):
            raise ValidationError(
                [Problem("ModelIO.from_config(config=...)", f"{_given(config)} is not a ModelConfig message; read "
                         "one with tritonforge.config_io.read_config or parse_config_text")]
            )

        def spec(t: ModelInput | ModelOutput, optional: bool) -> TensorSpec:
            return TensorSpec(
                t.name,
                pb.DataType.Name(t.data_type),
                tuple(t.dims),
                optional=optional,
                reshape=tuple(t.reshape.shape) if t.HasField("reshape") else None,
            )

        return cls(
            name=config.name,
            max_batch_size=config.max_batch_size,
            inputs={t.name: spec(t, t.optional) for t in config.input},
            outputs={t.name: spec(t, False) for t in config.output},
            decoupled=config.model_transaction_policy.decoupled,
        )


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


_NAMES = "a mapping {model tensor name: ensemble tensor name}, both non-empty str"


def _given(value: object) -> str:
    """A value as an argument error shows it: its repr and its type."""
    text = repr(value)
    return f"{text[:80]}... ({type(value).__name__})" if len(text) > 80 else f"{text} ({type(value).__name__})"


def _is_name(value: object) -> bool:
    return isinstance(value, str) and bool(value)


class Ensemble:
    """An ensemble under construction; see the module docstring."""

    def __init__(self, name: str, *, max_batch_size: int) -> None:
        if not isinstance(name, str):
            raise ValidationError(
                [Problem("Ensemble(name=...)", f"{_given(name)} is not a model name; give a non-empty str")]
            )
        if problem := name_problem(name):
            raise ValidationError([Problem("Ensemble(name=...)", problem)])
        if name in (".", "..") or any(c in name for c in "/\\\0"):  # Triton names a model after its folder
            raise ValidationError([Problem("Ensemble(name=...)", f"'{name}' cannot be a model name: it is also the "
                                           "model's folder (no '/', '\\', '.' or '..')")])
        self.name = name
        if not is_whole(max_batch_size):
            self._argument(
                "Ensemble", "max_batch_size", max_batch_size, "give a whole number: 0 (no batching) or the batch limit"
            )
        self._fail(max_batch_size_problem(name, max_batch_size))
        self.max_batch_size: int = int(max_batch_size)  # numpy's too: it becomes a protobuf field
        self._tensors: dict[str, _Tensor] = {}
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._steps: list[_Step] = []

    # -- errors -------------------------------------------------------------
    def _fail(self, message: str | None) -> None:
        """Raise a rule's message (the rules are the validator's: one copy, Triton's words); None: it held."""
        if message is not None:
            raise ValidationError([Problem(f"ensemble {self.name}", message)])

    def _argument(self, call: str, argument: str, value: object, allowed: str) -> NoReturn:
        """An argument of the wrong type or form: name it, show what was given and what is allowed."""
        message = f"{call}({argument}=...): got {_given(value)}; {allowed}"
        raise ValidationError([Problem(f"ensemble {self.name}", message)])

    def _dims(self, call: str, argument: str, value: object) -> tuple[int, ...]:
        """A shape: a sequence of whole numbers (-1 for a variable dimension)."""
        if isinstance(value, str | bytes | Mapping) or not isinstance(value, Iterable):
            self._argument(call, argument, value, "give a sequence of whole numbers, e.g. [1] or [-1, 4]")
        dims = tuple(value)
        if not all(is_whole(d) for d in dims):
            self._argument(call, argument, value, "every dimension is a whole number (-1 for a variable one)")
        return dims

    def _names(self, call: str, argument: str, value: object) -> Mapping[str, str]:
        """A step's input or output map."""
        if not isinstance(value, Mapping):
            self._argument(call, argument, value, f"give {_NAMES}")
        for key, tensor in value.items():
            if not (_is_name(key) and _is_name(tensor)):
                self._argument(call, argument, value, f"{key!r}: {tensor!r} is not a pair of names; give {_NAMES}")
        return value

    def _shape(self, kind: str, spec: TensorSpec) -> None:
        """R13-R19 on a tensor the ensemble declares, as Triton checks it at load (a reshape whose element count
        differs from the dims', say)."""
        config = model_config_pb2().ModelConfig()
        try:
            add_io(config, [spec] if kind == "input" else [], [spec] if kind == "output" else [])
        except ValueError:
            self._argument(kind, "data_type", spec.data_type, "give a Triton type name such as 'TYPE_FP32'")
        tensor = (config.input if kind == "input" else config.output)[0]
        self._fail(io_shape_problem(tensor, self.max_batch_size, kind))

    def _declared_twice(self, kind: str, name: str) -> None:
        """Triton keeps one of two tensors of the same name silently (a map): refuse the second declaration."""
        self._fail(f"{kind} '{name}' is declared twice in ensemble '{self.name}'")

    def _agree(self, tensor: str, data_type: str, dims: Sequence[int], batching: bool, source: str) -> None:
        """R60/R61: a tensor's dtype and shape must agree wherever it appears (-1 is a wildcard)."""
        known = self._tensors[tensor]
        prefix = rules.tensor_prefix(self.name, tensor)
        self._fail(rules.inconsistent_type(prefix, known.data_type, known.source, data_type, source))
        full_known = ((-1,) if known.batching else ()) + known.dims
        full_new = ((-1,) if batching else ()) + tuple(dims)
        self._fail(rules.inconsistent_shape(prefix, (known.dims, full_known, known.source), (dims, full_new, source)))

    def _single_origin(self, origins: set[int | None], model: str) -> int | None:
        """R62: a step (and the ensemble's outputs, which Triton treats as one more step) may not join tensors that
        come from different decoupled producers, or from a decoupled and a non-decoupled branch."""
        if len(origins) > 1:
            self._fail(rules.mixed_decoupled(self.name, model))
        return next(iter(origins), None)

    # -- building -----------------------------------------------------------
    def input(
        self,
        name: str,
        data_type: str,
        dims: Sequence[int],
        *,
        optional: bool = False,
        allow_ragged_batch: bool = False,
        reshape: Sequence[int] | None = None,
    ) -> Ensemble:
        """Declare an ensemble input. Steps are checked against its ``dims``; a ``reshape`` is what Triton hands
        the ensemble's scheduler instead (as for any model input), so it is rendered but not compared."""
        if not _is_name(name):
            self._argument("input", "name", name, "give the input's name, a non-empty str")
        if not _is_name(data_type):
            self._argument("input", "data_type", data_type, "give a Triton type name such as 'TYPE_FP32'")
        shape = self._dims("input", "dims", dims)
        reshaped = self._dims("input", "reshape", reshape) if reshape is not None else None
        if name in self._tensors:
            self._declared_twice("ensemble tensor", name)
        spec = TensorSpec(
            name, data_type, shape, optional=optional, allow_ragged_batch=allow_ragged_batch, reshape=reshaped
        )
        self._shape("input", spec)
        self._inputs.append(spec)
        self._tensors[name] = _Tensor(data_type, shape, self.max_batch_size > 0, self.name)
        return self

    def inputs(self, specs: Sequence[TensorSpec]) -> Ensemble:
        """Declare several inputs at once, as a model signature lists them."""
        for t in specs:
            self.input(
                t.name,
                t.data_type,
                t.dims,
                optional=t.optional,
                allow_ragged_batch=t.allow_ragged_batch,
                reshape=t.reshape,
            )
        return self

    def step(self, model: ModelIO, *, inputs: Mapping[str, str], outputs: Mapping[str, str]) -> Ensemble:
        """Add a member model; `inputs`/`outputs` map the model's tensor names to ensemble tensor names."""
        index = len(self._steps)
        if not isinstance(model, ModelIO):
            self._argument("step", "model", model, "give a ModelIO (e.g. ModelIO.from_config(member_config))")
        inputs = self._names("step", "inputs", inputs)
        outputs = self._names("step", "outputs", outputs)
        if not model.name:
            self._fail(rules.step_missing(self.name, "model_name", index))
        if model.name == self.name:  # R54, the shortest cycle
            self._fail(rules.circular_dependency(self.name, self.name))
        self._fail(rules.batch_size_too_small(self.name, self.max_batch_size, model.name, model.max_batch_size))
        batching = model.max_batch_size > 0
        for key, tensor in inputs.items():
            if key not in model.inputs:
                self._fail(rules.non_existing_input(self.name, tensor, key, model.name))
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
                self._fail(rules.unmapped_input(self.name, key, model.name))
        for missing, mapping in (("input_map", inputs), ("output_map", outputs)):
            if not mapping:  # Triton refuses the step at load even when the model has nothing to map
                self._fail(rules.step_missing(self.name, missing, index))
        written: set[str] = set()
        for key, tensor in outputs.items():
            if key not in model.outputs:
                self._fail(rules.non_existing_output(self.name, tensor, key, model.name))
            if tensor in self._tensors or tensor in written:  # by an earlier step, or by this one already
                self._fail(rules.output_mapped_twice(self.name, tensor, index))
            written.add(tensor)
        origin = self._single_origin({self._tensors[t].origin for t in inputs.values()}, model.name)
        # all checks passed: record the step
        for tensor in inputs.values():
            self._tensors[tensor].consumers.append(index)
        for key, tensor in outputs.items():
            spec = model.outputs[key]
            out_origin = index if model.decoupled else origin
            self._tensors[tensor] = _Tensor(spec.data_type, spec.dims, batching, model.name, index, origin=out_origin)
        self._steps.append(_Step(model, dict(inputs), dict(outputs)))
        return self

    def output(
        self,
        name: str,
        *,
        data_type: str | None = None,
        dims: Sequence[int] | None = None,
        reshape: Sequence[int] | None = None,
    ) -> Ensemble:
        """Expose an ensemble tensor as an output. Its type and shape come from the step that produces it unless
        declared here (to keep a published contract's exact wording); a declaration must agree with the producer
        (R60/R61, -1 a wildcard). A ``reshape`` is the shape Triton gives the output in responses."""
        if not _is_name(name):
            self._argument("output", "name", name, "give the name of a tensor a step writes, a non-empty str")
        if data_type is not None and not _is_name(data_type):
            self._argument("output", "data_type", data_type, "give a Triton type name such as 'TYPE_FP32', or None")
        if dims is not None:
            dims = self._dims("output", "dims", dims)
        if reshape is not None:
            reshape = self._dims("output", "reshape", reshape)
        if any(o.name == name for o in self._outputs):
            self._declared_twice("ensemble output", name)
        if name not in self._tensors or self._tensors[name].producer is None:
            self._fail(rules.unused_output(self.name, name))
        t = self._tensors[name]
        declared_type = data_type or t.data_type
        declared_dims = tuple(dims) if dims is not None else t.dims
        self._agree(name, declared_type, declared_dims, self.max_batch_size > 0, self.name)
        spec = TensorSpec(name, declared_type, declared_dims, reshape=tuple(reshape) if reshape is not None else None)
        self._shape("output", spec)
        self._outputs.append(spec)
        return self

    # -- rendering ----------------------------------------------------------
    def _check_complete(self) -> None:
        self._single_origin({self._tensors[o.name].origin for o in self._outputs}, self.name)
        problems = []
        for spec in self._inputs:
            if not self._tensors[spec.name].consumers:
                problems.append(rules.unused_input(self.name, spec.name))
        exposed = {o.name for o in self._outputs}
        for name, t in self._tensors.items():
            if t.producer is not None and not t.consumers and name not in exposed:
                problems.append(rules.unused_tensor(self.name, name))
        if not self._steps:
            problems.append(rules.no_steps(self.name))
        if problems:
            raise ValidationError([Problem(f"ensemble {self.name}", p) for p in problems])

    @property
    def decoupled(self) -> bool:
        """R62: an ensemble is decoupled when any of its steps is."""
        return any(s.model.decoupled for s in self._steps)

    def config(self, *, parameters: Mapping[str, str] | None = None) -> ModelConfig:
        """The ensemble's ModelConfig; ``parameters`` are rendered as its string parameters (clients read them
        through Triton's model-config API)."""
        if parameters is not None:
            if not isinstance(parameters, Mapping):
                self._argument("config", "parameters", parameters, "give a mapping {name: value} of str, or None")
            for key, value in parameters.items():
                if not (_is_name(key) and isinstance(value, str)):
                    self._argument(
                        "config", "parameters", parameters, f"{key!r}: {value!r}: names and values are str"
                    )
        self._check_complete()
        pb = model_config_pb2()
        config = pb.ModelConfig()
        config.name = self.name
        config.platform = "ensemble"
        config.max_batch_size = self.max_batch_size
        add_io(config, self._inputs, self._outputs)
        for key, value in (parameters or {}).items():
            config.parameters[key].string_value = value
        for s in self._steps:
            step = config.ensemble_scheduling.step.add()
            step.model_name = s.model.name
            step.model_version = -1  # R55: never let proto3's default 0 pin a version that does not exist
            for k in sorted(s.inputs):
                step.input_map[k] = s.inputs[k]
            for k in sorted(s.outputs):
                step.output_map[k] = s.outputs[k]
        return config
