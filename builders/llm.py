"""An LLM's model set on either target, with upstream TensorRT-LLM's model, tensor and parameter names.

Both targets render the same preprocessing → tensorrt_llm → postprocessing graph and the `llm` ensemble; only the
`tensorrt_llm` step differs: Triton's tensorrtllm backend over a built engine (`gpu`), or the python-backend CPU
engine with the identical contract (`cpu`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonforge import python_backends
from tritonforge.builders.llm_gpu import LLMNames, gpu_llm_model_set, tensorrt_llm_signature
from tritonforge.builders.model_configs import ModelSet, Signature, Target, render_model
from tritonforge.config_io import model_config_pb2
from tritonforge.repository import FileContent
from tritonforge.spec import DynamicBatching, InstanceGroup, LLMModel, Serving

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
)
SKIPPED_IN_CHECKPOINT = {".git", ".cache"}
CHAT_INPUT = "apply_chat_template"


def llm_names(key: str, model: LLMModel) -> LLMNames:
    if model.model_names == "prefixed":
        return LLMNames.prefixed(key, ensemble=model.ensemble)
    return LLMNames(ensemble=model.ensemble)


def _files(folder: Path, names: tuple[str, ...] | None = None) -> dict[str, FileContent]:
    """Files of a checkpoint folder to ship (all of them, or the named ones that exist), by relative path."""
    out: dict[str, FileContent] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or SKIPPED_IN_CHECKPOINT.intersection(rel.parts):
            continue
        if names is None or rel.as_posix() in names:
            out[rel.as_posix()] = path
    return out


def _cpu_engine(name: str, model: LLMModel, checkpoint: Path) -> tuple[Any, dict[str, FileContent], list[str]]:
    """The `tensorrt_llm` step of the cpu target: the CPU engine, decoupled, with the checkpoint beside it."""
    batch = model.serving.triton_max_batch_size
    serving = Serving(
        max_batch_size=batch,
        dynamic_batching=DynamicBatching(max_queue_delay_microseconds=model.serving.max_queue_delay_microseconds),
        instance_groups=[InstanceGroup(count=1, kind="cpu")],  # one engine owns the model and batches inside
    )
    params = {
        "checkpoint_dir": "checkpoint",
        "max_batch_size": str(model.cpu.max_active),
        "max_input_len": str(model.max_input_len),
        "max_seq_len": str(model.max_seq_len),
        "exclude_input_in_output": "true" if model.tensorrt_llm.exclude_input_in_output else "false",
    }
    if model.cpu.torch_threads:
        params["torch_threads"] = str(model.cpu.torch_threads)
    sig = tensorrt_llm_signature(logits_datatype=model.tensorrt_llm.logits_datatype)
    config, notes = render_model(
        name,
        serving,
        Signature(sig.inputs, sig.outputs),
        target="cpu",
        backend="python",
        parameters=params,
        decoupled=model.tensorrt_llm.decoupled_mode,
    )
    files: dict[str, FileContent] = {"model.py": python_backends.source("cpu_llm")}
    files.update({f"checkpoint/{rel}": path for rel, path in _files(checkpoint).items()})
    return config, files, notes


def _add_chat_template_input(out: ModelSet, names: LLMNames) -> None:
    """tritonforge's one addition to upstream's contract: an optional `apply_chat_template` BOOL [1] on the
    ensemble, fed to preprocessing, which then renders the checkpoint's jinja2 chat template over the prompt.
    Upstream clients never send it, so they work unchanged."""
    pb = model_config_pb2()
    pre, ens = out.configs[names.preprocessing], out.configs[names.ensemble]
    for config in (pre, ens):
        config.input.add(name=CHAT_INPUT, data_type=pb.TYPE_BOOL, dims=[1], optional=True)
    for step in ens.ensemble_scheduling.step:
        if step.model_name == names.preprocessing:
            step.input_map[CHAT_INPUT] = CHAT_INPUT
    out.add(pre, {})
    out.add(ens, {})


def llm_model_set(key: str, model: LLMModel, target: Target, checkpoint: Path, engine: Any = None) -> ModelSet:
    """Render the set. On `gpu`, `engine` is the engine folder to ship (None when it is not built here)."""
    names = llm_names(key, model)
    tokenizer_files = _files(checkpoint, TOKENIZER_FILES)
    engine_dir = model.engine_dir_in_container or f"/models/{names.tensorrt_llm}/1/engine"
    sources = {role: python_backends.source(f"llm_{role}") for role in ("preprocessing", "postprocessing")}
    out = gpu_llm_model_set(
        names,
        model.serving,
        model.tensorrt_llm,
        engine_dir_in_container=engine_dir,
        preprocessing=model.preprocessing,
        postprocessing=model.postprocessing,
        bls=model.bls_params if model.bls else None,
        tokenizer_files=tokenizer_files,
        python_sources=sources,
        engine=model.engine if target == "gpu" else None,
    )
    _add_chat_template_input(out, names)
    if target == "gpu":
        if engine is not None:
            out.add_files(names.tensorrt_llm, {f"engine/{rel}": p for rel, p in _files(Path(engine)).items()})
        return out
    # cpu: swap the tensorrtllm-backend step for the CPU engine; everything around it stays as rendered
    for path in [p for p in out.files if p.startswith(f"{names.tensorrt_llm}/")]:
        del out.files[path]
    config, files, notes = _cpu_engine(names.tensorrt_llm, model, checkpoint)
    out.add(config, files)
    out.notes += notes
    return out
