"""An LLM's model set on either target, with upstream TensorRT-LLM's model, tensor and parameter names.

Both targets render the same preprocessing → tensorrt_llm → postprocessing graph and the `llm` ensemble; only the
`tensorrt_llm` step differs: Triton's tensorrtllm backend over a built engine (`gpu`), or the python-backend CPU
engine with the identical contract (`cpu`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tritonforge import python_backends
from tritonforge.builders import lora
from tritonforge.builders.llm_gpu import LLMNames, gpu_llm_model_set, tensorrt_llm_signature
from tritonforge.builders.model_configs import ModelSet, Signature, Target, render_model
from tritonforge.config_io import model_config_pb2
from tritonforge.errors import BuildError
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
LORA_NAME_INPUT = "lora_name"  # tritonforge addition: the adapter's name, looked up by preprocessing
LORA_TASK_ID_INPUT = "LORA_TASK_ID"  # preprocessing: the ensemble's upstream `lora_task_id`, passed through
LORA_TASK_ID_OUTPUT = "OUT_LORA_TASK_ID"  # preprocessing -> tensorrt_llm's lora_task_id
LORA_TASK_ID_TENSOR = "_LORA_TASK_ID"  # the ensemble's internal tensor between the two


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
    for config in (pre, ens, *_bls(out, names)):
        config.input.add(name=CHAT_INPUT, data_type=pb.TYPE_BOOL, dims=[1], optional=True)
    for step in ens.ensemble_scheduling.step:
        if step.model_name == names.preprocessing:
            step.input_map[CHAT_INPUT] = CHAT_INPUT
    for config in (pre, ens, *_bls(out, names)):
        out.add(config, {})


def _bls(out: ModelSet, names: LLMNames) -> list[Any]:
    """tensorrt_llm_bls's config when the set has one: it declares tritonforge's additions to the ensemble's inputs
    too, and routes them to the steps as the ensemble does (python_backends/llm_bls reads them off its config)."""
    return [out.configs[names.bls]] if names.bls in out.configs else []


def _add_adapters(out: ModelSet, names: LLMNames, adapters: list[lora.Adapter], target: Target) -> None:
    """Adapter selection by name: an optional `lora_name` TYPE_STRING [1] on the ensemble (a tritonforge addition,
    like apply_chat_template), fed to preprocessing, which looks it up in adapters.json and sends the adapter's
    `lora_task_id` on to tensorrt_llm. The ensemble's upstream `lora_task_id` input now also goes through
    preprocessing (passed on unchanged), as tensorrt_llm's input can have one source only."""
    pb = model_config_pb2()
    pre, trt, ens = (out.configs[n] for n in (names.preprocessing, names.tensorrt_llm, names.ensemble))
    for config in (pre, ens, *_bls(out, names)):
        config.input.add(name=LORA_NAME_INPUT, data_type=pb.TYPE_STRING, dims=[1], optional=True)
    pre.input.add(name=LORA_TASK_ID_INPUT, data_type=pb.TYPE_UINT64, dims=[1], optional=True)
    pre.output.add(name=LORA_TASK_ID_OUTPUT, data_type=pb.TYPE_UINT64, dims=[1])
    for config in (pre, trt) if target == "cpu" else (pre,):  # the tensorrtllm backend has no such parameter
        config.parameters["adapters_table"].string_value = lora.TABLE_FILE
    # discoverable through Triton's model-config API (the gateway lists each adapter as a model, as vLLM does)
    ens.parameters[ADAPTER_NAMES_PARAMETER].string_value = ",".join(sorted(a.name for a in adapters))
    for step in ens.ensemble_scheduling.step:
        if step.model_name == names.preprocessing:
            step.input_map[LORA_NAME_INPUT] = LORA_NAME_INPUT
            step.input_map[LORA_TASK_ID_INPUT] = "lora_task_id"
            step.output_map[LORA_TASK_ID_OUTPUT] = LORA_TASK_ID_TENSOR
        elif step.model_name == names.tensorrt_llm:
            step.input_map["lora_task_id"] = LORA_TASK_ID_TENSOR
    table = lora.table_bytes(adapters)
    out.add(pre, {lora.TABLE_FILE: table})
    out.add(trt, {lora.TABLE_FILE: table})
    for config in (ens, *_bls(out, names)):
        out.add(config, {})


ADAPTER_NAMES_PARAMETER = "lora_adapters"  # on the ensemble: the adapter names, comma separated
LORA_SEND_INPUT = "lora_send_weights"  # tritonforge addition: resend an evicted adapter's weights
LORA_WEIGHTS_TENSOR, LORA_CONFIG_TENSOR = "_LORA_WEIGHTS", "_LORA_CONFIG"


def _add_gpu_lora_weights(out: ModelSet, names: LLMNames, files: dict[str, Path]) -> None:
    """gpu: the ensemble's lora_weights/lora_config now go through preprocessing (tensorrt_llm's inputs can have
    one source only), which passes them on, or attaches the adapter's converted weights when TensorRT-LLM does
    not have them yet: the first request per adapter, and any request with `lora_send_weights` (after
    "LoRA task N not found in cache")."""
    pb = model_config_pb2()
    pre, trt, ens = (out.configs[n] for n in (names.preprocessing, names.tensorrt_llm, names.ensemble))
    trt_inputs = {i.name: i for i in trt.input}
    weights_type, config_type = trt_inputs["lora_weights"].data_type, trt_inputs["lora_config"].data_type
    pre.input.add(name="LORA_WEIGHTS", data_type=weights_type, dims=[-1, -1], optional=True, allow_ragged_batch=True)
    pre.input.add(name="LORA_CONFIG", data_type=config_type, dims=[-1, 3], optional=True, allow_ragged_batch=True)
    for config in (pre, ens, *_bls(out, names)):
        config.input.add(name=LORA_SEND_INPUT, data_type=pb.TYPE_BOOL, dims=[1], optional=True)
    pre.output.add(name="OUT_LORA_WEIGHTS", data_type=weights_type, dims=[-1, -1])
    pre.output.add(name="OUT_LORA_CONFIG", data_type=config_type, dims=[-1, 3])
    pre.parameters["lora_weights_dir"].string_value = lora.GPU_LORA_FOLDER
    for step in ens.ensemble_scheduling.step:
        if step.model_name == names.preprocessing:
            step.input_map["LORA_WEIGHTS"] = "lora_weights"
            step.input_map["LORA_CONFIG"] = "lora_config"
            step.input_map[LORA_SEND_INPUT] = LORA_SEND_INPUT
            step.output_map["OUT_LORA_WEIGHTS"] = LORA_WEIGHTS_TENSOR
            step.output_map["OUT_LORA_CONFIG"] = LORA_CONFIG_TENSOR
        elif step.model_name == names.tensorrt_llm:
            step.input_map["lora_weights"] = LORA_WEIGHTS_TENSOR
            step.input_map["lora_config"] = LORA_CONFIG_TENSOR
    out.add(pre, files)
    out.add(trt, files)
    for config in (ens, *_bls(out, names)):
        out.add(config, {})


def _gpu_lora_params(
    model: LLMModel, names: LLMNames, adapters: list[lora.Adapter]
) -> tuple[Any, dict[str, Path], list[str]]:
    """gpu: each adapter converted to TensorRT-LLM's LoRA tensors (cached by content hash), shipped as
    ``lora/<task_id>/`` in tensorrt_llm (preloaded from lora_prefetch_dir) and in preprocessing (sent with a
    request the first time, and again after an eviction)."""
    problems = lora.engine_problems(adapters, model.engine)
    if problems:
        raise BuildError("cannot serve the LoRA adapters on the gpu target:\n  " + "\n  ".join(problems))
    prefetch = model.tensorrt_llm.lora_prefetch_dir or f"/models/{names.tensorrt_llm}/1/{lora.GPU_LORA_FOLDER}"
    params = model.tensorrt_llm.model_copy(update={"lora_prefetch_dir": prefetch})
    files: dict[str, Path] = {}
    for adapter in adapters:
        converted = lora.converted_for_trtllm(adapter)
        for name, path in converted.items():
            files[f"{lora.GPU_LORA_FOLDER}/{adapter.lora_task_id}/{name}"] = path
    notes = [
        f"{names.tensorrt_llm}: {len(adapters)} LoRA adapter(s) converted to TensorRT-LLM's format (fp16) under "
        f"{lora.GPU_LORA_FOLDER}/<task id>/ of {names.tensorrt_llm} (lora_prefetch_dir {prefetch}) and "
        f"{names.preprocessing} (sent with a request on first use and after an eviction)"
    ]
    return params, files, notes


def llm_model_set(
    key: str,
    model: LLMModel,
    target: Target,
    checkpoint: Path,
    engine: Any = None,
    *,
    source_dir: Path | None = None,
) -> ModelSet:
    """Render the set. On `gpu`, `engine` is the engine folder to ship (None when it is not built here).

    ``source_dir`` is the spec's folder (relative adapter paths resolve from it); by default it is recovered from
    the relative checkpoint reference. Adapters are checked first (BuildError listing every problem).
    """
    names = llm_names(key, model)
    adapters: list[lora.Adapter] = []
    if model.adapters:
        if source_dir is None:
            source_dir = lora.infer_source_dir(model.checkpoint, checkpoint)
        adapters = lora.check_adapters(model.adapters, checkpoint, source_dir=source_dir)
    tokenizer_files = _files(checkpoint, TOKENIZER_FILES)
    engine_dir = model.engine_dir_in_container or f"/models/{names.tensorrt_llm}/1/engine"
    sources = {role: python_backends.source(f"llm_{role}") for role in ("preprocessing", "postprocessing")}
    trt_params, lora_files, lora_notes = model.tensorrt_llm, {}, []
    if adapters and target == "gpu":
        trt_params, lora_files, lora_notes = _gpu_lora_params(model, names, adapters)
    out = gpu_llm_model_set(
        names,
        model.serving,
        trt_params,
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
        if adapters:
            _add_adapters(out, names, adapters, target)
            _add_gpu_lora_weights(out, names, lora_files)
            out.notes += lora_notes
        return out
    # cpu: swap the tensorrtllm-backend step for the CPU engine; everything around it stays as rendered
    for path in [p for p in out.files if p.startswith(f"{names.tensorrt_llm}/")]:
        del out.files[path]
    config, files, notes = _cpu_engine(names.tensorrt_llm, model, checkpoint)
    files.update(lora.cpu_files(adapters))
    out.add(config, files)
    out.notes += notes
    if adapters:
        _add_adapters(out, names, adapters, target)
    return out
