"""TensorRT-LLM engines: typed build settings, the exact commands of a build, the manifest, and version checks.

    settings = EngineSettings(dtype="bfloat16", max_input_len=2048, max_seq_len=4096)
    plan = plan_engine_build(checkpoint, settings, out_dir, architecture="LlamaForCausalLM")
    plan.commands          # argv lists: convert_checkpoint.py (or quantize.py), then trtllm-build
    build_engine(plan)     # runs them where TensorRT-LLM is installed; BuildError elsewhere, never a fake engine
    check_engine_manifest(manifest, "24.12-trtllm-python-py3")   # [] or "engine built with ... but ..." messages

A build is two steps, as TensorRT-LLM documents them:

1. the Hugging Face checkpoint becomes a TensorRT-LLM checkpoint: ``examples/models/core/<family>/
   convert_checkpoint.py`` (Llama and Mistral use the llama script, Qwen the qwen one, GPT-2 the gpt one), or
   ``examples/quantization/quantize.py`` (ModelOpt) when weights or KV cache are quantized, or
   ``examples/medusa|eagle/convert_checkpoint.py`` for those speculative-decoding heads;
2. ``trtllm-build`` compiles it, with every flag written out (flag names from ``tensorrt_llm/commands/build.py``
   and ``tensorrt_llm/plugin/plugin.py`` of NVIDIA/TensorRT-LLM), so the plan does not depend on the defaults of
   whatever TensorRT-LLM version runs it.

The conversion scripts are not part of the tensorrt_llm wheel: they come from the TensorRT-LLM source tree of the
same version (``examples_dir``; default ``$TRTLLM_EXAMPLES_DIR``, else ``/app/tensorrt_llm/examples``).

``engine_manifest.json`` (inside the engine folder, so it travels with the engine) records the TensorRT-LLM and
TensorRT versions, the GPU's compute capability, the settings, the commands and the checkpoint's content hash.
A build whose plan matches an existing manifest is skipped.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tritonforge.builders.checkpoints import checkpoint_hash
from tritonforge.errors import BuildError
from tritonforge.trtllm.compatibility import (  # noqa: F401  (re-exported: the builder's API)
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    check_engine_manifest,
    container_table,
    containers_shipping,
    gpus_needed,
)
from tritonforge.trtllm.engine_settings import (  # noqa: F401  (re-exported: the builder's settings)
    ARCHITECTURES,
    FAMILY_ALIASES,
    LORA_MODULES,
    EngineSettings,
    LoraSettings,
    Quantization,
    SpeculativeSettings,
    engine_settings,
)

# a source checkout's usual place (unverified): set TRTLLM_EXAMPLES_DIR or pass examples_dir
DEFAULT_EXAMPLES_DIR = "/app/tensorrt_llm/examples"
INSTALL_HINT = 'pip install "tritonforge[gpu]" on a machine with an NVIDIA GPU'

# ================================================================ plan


@dataclass(frozen=True)
class EnginePlan:
    """Everything a build will do, decided before anything runs."""

    checkpoint: Path
    out_dir: Path
    architecture: str
    family: str
    settings: EngineSettings
    checkpoint_sha256: str
    commands: tuple[tuple[str, ...], ...]
    converted_dir: Path  # the TensorRT-LLM checkpoint step 1 writes
    engine_dir: Path  # what trtllm-build writes; mount this as gpt_model_path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return self.engine_dir / MANIFEST_NAME

    @property
    def fingerprint(self) -> str:
        return self.manifest["plan_sha256"]


def read_architecture(checkpoint: Path) -> str:
    """The first entry of ``architectures`` in a Hugging Face checkpoint's config.json."""
    path = Path(checkpoint) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"{path}: cannot read the checkpoint's config.json: {exc}") from None
    names = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise BuildError(f"{path}: 'architectures' is missing; pass architecture= explicitly")
    return names[0]


def architecture_family(architecture: str) -> str:
    """'LlamaForCausalLM' (or 'llama', 'mistral', 'qwen', 'gpt2') -> the TensorRT-LLM example family."""
    if architecture in ARCHITECTURES:
        return ARCHITECTURES[architecture]
    if architecture.lower() in FAMILY_ALIASES:
        return FAMILY_ALIASES[architecture.lower()]
    known = ", ".join([*ARCHITECTURES, *FAMILY_ALIASES])
    raise BuildError(f"architecture {architecture!r} has no TensorRT-LLM build recipe in tritonforge; known: {known}")


def _examples(examples_dir: Path | None) -> Path:
    if examples_dir is not None:
        return Path(examples_dir)
    return Path(os.environ.get("TRTLLM_EXAMPLES_DIR", DEFAULT_EXAMPLES_DIR))


def _convert_script(examples: Path, family: str) -> Path:
    """examples/models/core/<family>/ (current layout), or examples/<family>/ when only the old layout exists."""
    current = examples / "models" / "core" / family / "convert_checkpoint.py"
    old = examples / family / "convert_checkpoint.py"
    return old if old.is_file() and not current.is_file() else current


def _convert_command(
    python: str, examples: Path, family: str, checkpoint: Path, out: Path, s: EngineSettings
) -> tuple[str, ...]:
    common = ("--output_dir", str(out), "--dtype", s.dtype, "--tp_size", str(s.tp_size), "--pp_size", str(s.pp_size))
    mode = s.speculative.mode
    if mode == "medusa":
        script = examples / "medusa" / "convert_checkpoint.py"
        extra = (
            "--medusa_model_dir", str(s.speculative.medusa_model_dir),
            "--num_medusa_heads", str(s.speculative.num_medusa_heads),
            "--max_medusa_token_len", str(s.speculative.max_draft_len or 63),
        )  # fmt: skip
        return (python, str(script), "--model_dir", str(checkpoint), *common, *extra)
    if mode == "eagle":
        script = examples / "eagle" / "convert_checkpoint.py"
        extra = (
            "--eagle_model_dir", str(s.speculative.eagle_model_dir),
            "--max_draft_len", str(s.speculative.max_draft_len or 63),
            "--num_eagle_layers", str(s.speculative.num_eagle_layers),
        )  # fmt: skip
        return (python, str(script), "--model_dir", str(checkpoint), *common, *extra)
    if s.quantization != "none" or s.kv_cache_quantization != "none":
        # ModelOpt quantization (calibrates on a dataset): one script for every family and format
        script = examples / "quantization" / "quantize.py"
        qformat = "full_prec" if s.quantization == "none" else s.quantization
        argv = [python, str(script), "--model_dir", str(checkpoint), *common, "--qformat", qformat]
        if s.kv_cache_quantization != "none":
            argv += ["--kv_cache_dtype", s.kv_cache_quantization]
        argv += ["--calib_size", str(s.calib_size)]
        if s.calib_dataset:
            argv += ["--calib_dataset", s.calib_dataset]
        return tuple(argv)
    return (python, str(_convert_script(examples, family)), "--model_dir", str(checkpoint), *common)


def _build_command(converted: Path, engine: Path, s: EngineSettings) -> tuple[str, ...]:
    def switch(on: bool) -> str:
        return "enable" if on else "disable"

    argv = [
        "trtllm-build",
        "--checkpoint_dir", str(converted),
        "--output_dir", str(engine),
        "--max_batch_size", str(s.max_batch_size),
        "--max_input_len", str(s.max_input_len),
        "--max_seq_len", str(s.max_seq_len),
        "--max_num_tokens", str(s.max_num_tokens),
        "--max_beam_width", str(s.max_beam_width),
        "--kv_cache_type", "paged" if s.paged_kv_cache else "continuous",
        "--gpt_attention_plugin", "auto",
        "--gemm_plugin", s.gemm_plugin,
        "--context_fmha", "enable",
        "--use_paged_context_fmha", switch(s.use_paged_context_fmha),
        "--use_fp8_context_fmha", switch(s.quantization == "fp8"),
        "--remove_input_padding", "enable",
    ]  # fmt: skip
    if s.logits_dtype:
        argv += ["--logits_dtype", s.logits_dtype]
    argv += {
        "none": [],
        "context": ["--gather_context_logits"],
        "generation": ["--gather_generation_logits"],
        "all": ["--gather_all_token_logits"],
    }[s.gather_logits]
    if s.lora.enabled:
        argv += ["--lora_plugin", "auto", "--max_lora_rank", str(s.lora.max_rank)]
        argv += ["--lora_target_modules", *s.lora.target_modules]
        if s.lora.lora_dirs:
            argv += ["--lora_dir", *s.lora.lora_dirs]
    if s.speculative.mode != "none":
        argv += ["--speculative_decoding_mode", s.speculative.mode]
        if s.speculative.mode == "draft_tokens_external":
            argv += ["--max_draft_len", str(s.speculative.max_draft_len)]
    argv += ["--workers", str(s.workers)]
    return tuple(argv)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def plan_engine_build(
    checkpoint: Path,
    settings: EngineSettings,
    out_dir: Path,
    *,
    architecture: str,
    examples_dir: Path | None = None,
    python: str | None = None,
    gpus: int | None = None,
) -> EnginePlan:
    """The exact commands (argv lists) that build ``checkpoint`` into ``out_dir/engine``, and the manifest to write.

    ``gpus`` (the GPUs of the build machine) is checked against tp_size × pp_size when given.
    """
    checkpoint, out_dir = Path(checkpoint).resolve(), Path(out_dir).resolve()
    family = architecture_family(architecture)
    if settings.speculative.mode in ("medusa", "eagle") and family != "llama":
        raise BuildError(
            f"{settings.speculative.mode} heads are converted by TensorRT-LLM's {settings.speculative.mode} example, "
            f"which handles Llama-family checkpoints; {architecture} is {family}"
        )
    if gpus is not None and settings.world_size > gpus:
        raise BuildError(
            f"tp_size {settings.tp_size} × pp_size {settings.pp_size} = {settings.world_size} GPUs, "
            f"but the build machine has {gpus}"
        )
    examples = _examples(examples_dir)
    converted, engine = out_dir / "checkpoint", out_dir / "engine"
    commands = (
        _convert_command(python or sys.executable, examples, family, checkpoint, converted, settings),
        _build_command(converted, engine, settings),
    )
    digest = checkpoint_hash(checkpoint)
    planned = {
        "architecture": architecture,
        "family": family,
        "checkpoint_sha256": digest,
        "settings": settings.model_dump(mode="json"),
        # argv without the interpreter: the same plan run by another python is the same build
        "commands": [list(c[1:]) if c[0] != "trtllm-build" else list(c) for c in commands],
    }
    manifest = {
        "format": MANIFEST_FORMAT,
        "plan_sha256": _digest(planned),
        **planned,
        "checkpoint": str(checkpoint),
        "gpus_required": settings.world_size,
    }
    return EnginePlan(
        checkpoint, out_dir, architecture, family, settings, digest, commands, converted, engine, manifest
    )


# ================================================================ manifest and skip


def read_manifest(engine_dir: Path) -> dict[str, Any] | None:
    """The manifest of a built engine, or None when there is none (or it is unreadable)."""
    path = Path(engine_dir) / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_matches(
    existing: dict[str, Any] | None, plan: EnginePlan, *, tensorrt_llm_version: str | None = None
) -> bool:
    """True when ``existing`` records a finished build of exactly this plan (and, when given, this TensorRT-LLM)."""
    if not existing or existing.get("format") != MANIFEST_FORMAT or existing.get("plan_sha256") != plan.fingerprint:
        return False
    if not existing.get("tensorrt_llm_version"):
        return False  # a manifest is only written after a successful build; a planned one does not count
    if tensorrt_llm_version is not None and existing["tensorrt_llm_version"] != tensorrt_llm_version:
        return False
    return (plan.engine_dir / "config.json").is_file()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ================================================================ build


def _runtime_versions() -> dict[str, str]:
    """TensorRT-LLM, TensorRT and the GPU (imports are heavy and need CUDA: only here)."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise BuildError(f"TensorRT-LLM is not installed, so no engine can be built here: {INSTALL_HINT}")
    try:
        import tensorrt_llm  # type: ignore[import-not-found]
    except Exception as exc:  # a broken CUDA setup surfaces here as any kind of error
        raise BuildError(f"TensorRT-LLM is installed but cannot be imported ({exc}): {INSTALL_HINT}") from None
    try:
        import tensorrt  # type: ignore[import-not-found]

        trt_version = str(tensorrt.__version__)
    except Exception:
        trt_version = "unknown"
    try:
        import torch

        if not torch.cuda.is_available():
            raise BuildError(
                f"no CUDA GPU is visible: TensorRT-LLM builds engines on the GPU that will run them; {INSTALL_HINT}"
            )
        major, minor = torch.cuda.get_device_capability(0)
        gpu_name = torch.cuda.get_device_name(0)
    except ImportError:
        raise BuildError("torch is missing: TensorRT-LLM needs it to build engines") from None
    return {
        "tensorrt_llm_version": str(tensorrt_llm.__version__),
        "tensorrt_version": trt_version,
        "gpu_compute_capability": f"{major}.{minor}",
        "gpu_name": gpu_name,
    }


def build_engine(plan: EnginePlan, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the plan (skipped when the engine folder's manifest matches it); returns the engine's manifest.

    Raises BuildError when TensorRT-LLM is not installed (``pip install "tritonforge[gpu]"`` on a machine with an
    NVIDIA GPU), when a script is missing, or when a command fails (with the end of its log).
    """
    say = progress or (lambda _msg: None)
    existing = read_manifest(plan.engine_dir)
    have_trtllm = importlib.util.find_spec("tensorrt_llm") is not None
    if existing is not None and manifest_matches(existing, plan) and not have_trtllm:
        say(f"engine up to date: {plan.engine_dir} (built with TensorRT-LLM {existing['tensorrt_llm_version']})")
        return existing  # type: ignore[return-value]
    runtime = _runtime_versions()
    if manifest_matches(existing, plan, tensorrt_llm_version=runtime["tensorrt_llm_version"]):
        say(f"engine up to date: {plan.engine_dir}")
        return existing  # type: ignore[return-value]
    for argv in plan.commands:
        script = next((a for a in argv[1:2] if a.endswith(".py")), None)
        if script and not Path(script).is_file():
            raise BuildError(
                f"{script} does not exist: TensorRT-LLM's conversion scripts come from its source tree (examples/) "
                f"of version {runtime['tensorrt_llm_version']}; set TRTLLM_EXAMPLES_DIR or pass examples_dir"
            )
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    log_path = plan.out_dir / "build.log"
    started = time.time()
    with log_path.open("w", encoding="utf-8") as log:
        for step, argv in enumerate(plan.commands, 1):
            say(f"[{step}/{len(plan.commands)}] {' '.join(argv[:2])}")
            log.write(f"$ {' '.join(argv)}\n")
            log.flush()
            result = subprocess.run(list(argv), stdout=log, stderr=subprocess.STDOUT, check=False)
            if result.returncode != 0:
                log.flush()
                tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
                raise BuildError(
                    f"step {step} ({argv[0]} {argv[1]}) exited with {result.returncode}; end of {log_path}:\n{tail}"
                )
    if not (plan.engine_dir / "config.json").is_file():
        raise BuildError(f"trtllm-build finished but {plan.engine_dir / 'config.json'} is missing; see {log_path}")
    manifest = {**plan.manifest, **runtime, "build_seconds": round(time.time() - started, 1)}
    _write_json_atomic(plan.manifest_path, manifest)
    say(f"engine built: {plan.engine_dir}")
    return manifest
