"""spec → artifacts → rendered configs → file plan → (validated) repository on disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tritonforge.errors import Problem, ValidationError
from tritonforge.repository import FileContent, write_repository
from tritonforge.spec import EmbeddingModel, Spec, load_spec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ArtifactInfo:
    model: str
    kind: str
    precision: str
    content_hash: str
    parity_max_abs_diff: float | None
    quantized_min_cosine: float | None


@dataclass(frozen=True)
class BuildReport:
    repo: Path
    target: str
    models: tuple[str, ...]
    artifacts: tuple[ArtifactInfo, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0


def _precision(model: EmbeddingModel, target: str) -> str:
    if target == "gpu":
        return model.gpu_precision
    return "int8" if model.cpu_quantization == "int8" else "fp32"


def plan_repository(
    spec: Spec, progress: Progress | None = None
) -> tuple[dict[str, FileContent], list[ArtifactInfo], list[str]]:
    """Compile every artifact (cached by content hash) and render the whole repository as a file plan."""
    from tritonforge.builders.checkpoints import resolve_checkpoint
    from tritonforge.builders.embedding import embedding_model_set
    from tritonforge.builders.onnx_encoder import export_encoder

    plan: dict[str, FileContent] = {}
    artifacts: list[ArtifactInfo] = []
    notes: list[str] = []
    for key, model in spec.models.items():
        say = (lambda msg, key=key: progress(f"{key}: {msg}")) if progress else None
        checkpoint = resolve_checkpoint(model.checkpoint, spec.source_dir)
        precision = _precision(model, spec.target)
        artifact = export_encoder(
            checkpoint,
            pooling=model.pooling,
            normalize=model.normalize,
            max_seq_length=model.max_seq_length,
            precision=precision,
            parity_tolerance=model.parity_tolerance,
            min_cosine=model.min_cosine,
            force=model.force_quantization,
            progress=say,
        )
        files, model_notes = embedding_model_set(key, model, spec.target, artifact)
        plan.update(files)
        notes += model_notes
        artifacts.append(
            ArtifactInfo(
                key,
                "onnx-encoder",
                precision,
                artifact.content_hash,
                artifact.parity_max_abs_diff,
                artifact.quantized_min_cosine,
            )
        )
    manifest = {
        "spec": spec.name,
        "target": spec.target,
        "artifacts": [asdict(a) for a in artifacts],
    }
    # Files at the repository root are not models; Triton ignores them.
    plan["tritonforge.json"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return plan, artifacts, notes


def build(
    spec: Spec | str | Path,
    out: str | Path,
    *,
    target: Literal["cpu", "gpu"] | None = None,
    progress: Progress | None = None,
    check: bool = True,
) -> BuildReport:
    """Build a deployment spec into the model repository `out`.

    Artifacts are built (or taken from the cache), configs rendered, the repository written to a temporary
    folder and validated against Triton's load rules there; only then does it replace `out`. On any error
    the previous repository is left untouched.
    """
    from tritonforge.validator import check_repository

    started = time.perf_counter()
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    spec = spec.with_target(target)
    plan, artifacts, notes = plan_repository(spec, progress)

    def _validate(tmp: Path) -> None:
        if progress:
            progress("validating repository")
        # GPU ids cannot be checked here: the build machine is not the serving machine
        problems = [
            Problem(p.where.replace(str(tmp), str(Path(out))), p.message) for p in check_repository(tmp, gpus=None)
        ]
        if problems:
            raise ValidationError(problems, "the built repository breaks Triton's load rules (nothing was written)")

    repo = write_repository(plan, out, check=_validate if check else None)
    models = tuple(sorted({p.split("/", 1)[0] for p in plan if "/" in p}))
    return BuildReport(repo, spec.target, models, tuple(artifacts), tuple(notes), time.perf_counter() - started)


def report_dict(report: BuildReport) -> dict[str, Any]:
    return {**asdict(report), "repo": str(report.repo)}
