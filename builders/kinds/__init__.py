"""The registry of model kinds: what each `kind:` of a spec entry becomes.

Each kind is one module here declaring its spec class, the Triton model names it renders (from
``tritonforge.naming``, the one place names are decided), the spec entries it builds on, how its artifact is built
and its configs rendered, and what its lineage records. ``tritonforge.build`` only walks the spec in dependency
order and asks each entry's kind; a new kind is one module plus its line in ``_registry()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from tritonforge.builders.model_configs import ModelSet
from tritonforge.spec import Spec

Progress = Callable[[str], None]
M = TypeVar("M", bound=BaseModel, contravariant=True)


def emulated_bf16_notes(key: str, reduced: str) -> list[str]:
    """A note when a model is built in bf16 on a machine whose CPU has neither amx_bf16 nor avx512_bf16 (this
    machine's, not the artifact's: not cached); every kind with a bf16 build (embedding, reranker, llm) adds it."""
    from tritonforge.builders.onnx_common import native_bf16

    if reduced != "bf16" or native_bf16() is not False:
        return []
    return [
        f"{key}: bf16: this build machine's CPU has neither amx_bf16 nor avx512_bf16, so PyTorch emulates bf16 here, "
        "slower than fp32; it pays off where the serving CPU has AMX (Sapphire Rapids and later)"
    ]


def unused_cpu_quantization_notes(key: str, cpu_quantization: str, target: str, gpu_precision: str) -> list[str]:
    """A note when the spec asks for cpu_quantization on the gpu target, which serves gpu_precision instead (the
    field is the cpu target's: the same spec builds both)."""
    if target != "gpu" or cpu_quantization == "none":
        return []
    return [f"{key}: cpu_quantization {cpu_quantization} is the cpu target's; the gpu target serves gpu_precision "
            f"{gpu_precision}"]


def int8_llm_notes(key: str, weights: str) -> list[str]:
    """int8 decoder weights have no quality gate (a decoder's output has no one figure to hold to fp32's): say what
    they cost in agreement, measured, where the build shows it and not only in docs/llm.md."""
    if weights != "int8":
        return []
    return [
        f"{key}: int8 weights (no quality gate): greedy output leaves fp32's within a few tokens "
        "(SmolLM2-135M-Instruct: 0.19 / 0.12 of greedy tokens the same as fp32's, docs/llm.md); bf16 keeps near-fp32 "
        "output on CPUs with AMX"
    ]


@dataclass(frozen=True)
class ArtifactInfo:
    model: str
    kind: str
    precision: str
    content_hash: str
    parity_max_abs_diff: float | None
    quantized_min_cosine: float | None
    quantization_gate: dict[str, Any] | None = None  # int8/fp16 encoders: mean/min cosine, search overlap


@dataclass
class Built:
    """One spec entry, built: its rendered models, what it was built from, and the artifact later entries use (an
    embedder's encoder embeds a retriever's corpus)."""

    models: ModelSet
    artifacts: list[ArtifactInfo] = field(default_factory=list)
    artifact: Any = None


@dataclass
class BuildContext:
    """What a kind may read while it builds: the spec, the entries built before it, and the build's options."""

    spec: Spec
    progress: Progress | None = None
    engine_plans: list[Any] | None = None  # `build --plan`: engine builds collected here instead of run
    built: dict[str, Built] = field(default_factory=dict)

    def say_for(self, key: str) -> Progress | None:
        progress = self.progress
        return (lambda msg: progress(f"{key}: {msg}")) if progress else None

    def source_path(self, path: str | Path) -> Path:
        """A spec path (corpus, checkpoint folder) resolved against the spec's folder."""
        path = Path(path)
        return path if path.is_absolute() or self.spec.source_dir is None else self.spec.source_dir / path

    def artifacts_of(self, key: str) -> list[ArtifactInfo]:
        return self.built[key].artifacts if key in self.built else []


class Kind(Protocol, Generic[M]):
    """One kind of spec entry (see the module docstring)."""

    spec_class: type[BaseModel]

    def triton_names(self, key: str, model: M) -> tuple[str, ...]: ...

    def dependencies(self, model: M) -> tuple[str, ...]: ...

    def build(self, ctx: BuildContext, key: str, model: M) -> Built: ...

    def lineage_inputs(self, ctx: BuildContext, key: str, model: M) -> dict[str, str]: ...


def _registry() -> tuple[Kind[Any], ...]:
    from tritonforge.builders.kinds import embedding, llm, rag, reranker, retriever

    # this order is the build order among independent entries (and the manifest's artifact order)
    return (embedding.KIND, reranker.KIND, retriever.KIND, llm.KIND, rag.KIND)


def kinds() -> tuple[Kind[Any], ...]:
    return _registry()


def kind_of(model: BaseModel) -> Kind[Any]:
    for kind in _registry():
        if isinstance(model, kind.spec_class):
            return kind
    raise TypeError(f"no kind is registered for {type(model).__name__}")  # a programming error: see _registry()


def build_order(spec: Spec) -> list[str]:
    """The spec's keys, each after the entries it builds on; otherwise by kind (registry order), then spec order."""
    rank = {id(kind): i for i, kind in enumerate(_registry())}
    pending = sorted(spec.models, key=lambda k: rank[id(kind_of(spec.models[k]))])
    done: list[str] = []
    while pending:
        ready = next(
            (k for k in pending if all(d in done for d in kind_of(spec.models[k]).dependencies(spec.models[k]))),
            None,
        )
        if ready is None:  # the spec's reference checks refuse cycles before a build starts
            raise ValueError(f"spec entries depend on each other in a cycle: {', '.join(pending)}")
        done.append(ready)
        pending.remove(ready)
    return done
