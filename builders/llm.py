"""An LLM's model set on either target, with upstream TensorRT-LLM's model, tensor and parameter names.

Both targets render the same preprocessing → tensorrt_llm → postprocessing graph and the `llm` ensemble; only the
`tensorrt_llm` step differs: Triton's tensorrtllm backend over a built engine (`gpu`), or the python-backend CPU
engine with the identical contract (`cpu`).
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tritonforge import naming, python_backends
from tritonforge.builders import lora
from tritonforge.builders.llm_gpu import ContractAdditions, gpu_llm_model_set, tensorrt_llm_signature
from tritonforge.builders.model_configs import ModelSet, Signature, Target, TensorSpec, render_model
from tritonforge.errors import BuildError
from tritonforge.naming import LLMNames
from tritonforge.repository import FileContent
from tritonforge.spec import DynamicBatching, InstanceGroup, LLMModel, Serving

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
    "added_tokens.json",
    "vocab.txt",
)
# top-level checkpoint files a tokenizer may also need: the vocabularies a slow tokenizer or a tokenizer that is
# code reads (qwen.tiktoken, tokenizer*.model, *.vocab), and, with trust_remote_code, that code (tokenizer_config.json's
# auto_map names e.g. tokenization_qwen.py). All *.py ship then, as auto_map may name helpers only through imports
TOKENIZER_PATTERNS = ("*.tiktoken", "tokenizer*.model", "*.vocab")
REMOTE_CODE_PATTERNS = ("*.py",)
# the pre/postprocessing models' parameter: upstream's model.py always passes trust_remote_code=True, so whatever
# code a checkpoint shipped ran inside Triton; here only when the spec says so
TRUST_PARAMETER = "trust_remote_code"
SKIPPED_IN_CHECKPOINT = {".git", ".cache"}
CHAT_INPUT = "apply_chat_template"
MESSAGES_INPUT = "chat_messages"  # tritonforge addition: a whole conversation (JSON), rendered by the chat template
LORA_NAME_INPUT = "lora_name"  # tritonforge addition: the adapter's name, looked up by preprocessing
LORA_TASK_ID_INPUT = "LORA_TASK_ID"  # preprocessing: the ensemble's upstream `lora_task_id`, passed through
LORA_TASK_ID_OUTPUT = "OUT_LORA_TASK_ID"  # preprocessing -> tensorrt_llm's lora_task_id
LORA_TASK_ID_TENSOR = "_LORA_TASK_ID"  # the ensemble's internal tensor between the two


def _tokenizer_code(checkpoint: Path) -> str:
    """The class a checkpoint's auto_map names for AutoTokenizer (a tokenizer that is code), or ""."""
    for name in ("tokenizer_config.json", "config.json"):
        try:
            data = json.loads((checkpoint / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        auto_map = data.get("auto_map") if isinstance(data, dict) else None
        entry = auto_map.get("AutoTokenizer") if isinstance(auto_map, dict) else None
        if entry:
            return str(next((e for e in entry if e), entry) if isinstance(entry, list) else entry)
    return ""


def _remote_code_patterns(key: str, model: LLMModel, checkpoint: Path) -> tuple[str, ...]:
    """The checkpoint's top-level file patterns the tokenizer ships with; a tokenizer that is code is refused
    unless the spec trusts it (it would fail to load inside Triton, after the whole build)."""
    if model.remote_code_trusted:
        return (*REMOTE_CODE_PATTERNS, *TOKENIZER_PATTERNS)
    code = _tokenizer_code(checkpoint) if model.preprocessing.tokenizer_dir is None else ""
    if code:
        raise BuildError(
            f"models.{key}: the checkpoint's tokenizer is code ({code}, named in its auto_map), which runs inside "
            f"Triton; set trust_remote_code: true on models.{key} if you trust {checkpoint}"
        )
    return TOKENIZER_PATTERNS


def _mark_trust(out: ModelSet, model: LLMModel, *names: str, engine: str | None = None) -> None:
    """The trust_remote_code parameter on the models that load the checkpoint's tokenizer; on the cpu target's
    engine (``engine``), which loads the model and tokenizer too, only when trusted (its golden config stays)."""
    for name in names:
        if name in out.configs:
            out.set_parameter(name, TRUST_PARAMETER, "true" if model.remote_code_trusted else "false")
    if engine is not None and model.remote_code_trusted and engine in out.configs:
        out.set_parameter(engine, TRUST_PARAMETER, "true")


def llm_names(key: str, model: LLMModel) -> LLMNames:
    return naming.llm_names(key, prefixed=model.model_names == "prefixed", ensemble=model.ensemble)


def _files(
    folder: Path, names: tuple[str, ...] | None = None, patterns: tuple[str, ...] = ()
) -> dict[str, FileContent]:
    """Files of a checkpoint folder to ship (all of them, or the named ones that exist and the top-level files
    matching ``patterns``), by relative path."""
    out: dict[str, FileContent] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if not path.is_file() or SKIPPED_IN_CHECKPOINT.intersection(rel.parts):
            continue
        top_level_match = len(rel.parts) == 1 and any(fnmatch.fnmatchcase(rel.name, p) for p in patterns)
        if names is None or rel.as_posix() in names or top_level_match:
            out[rel.as_posix()] = path
    return out


def _cpu_engine(
    name: str, model: LLMModel, checkpoint: Path, adapters: list[lora.Adapter]
) -> tuple[ModelConfig, dict[str, FileContent], list[str]]:
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
    if model.cpu.weights != "fp32":  # left out by default: the golden configs stay as they were
        params["weights"] = model.cpu.weights
    if adapters:  # the CPU engine reads the adapter table too (the tensorrtllm backend has no such parameter)
        params["adapters_table"] = lora.TABLE_FILE
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
    files: dict[str, FileContent] = dict(python_backends.sources("cpu_llm"))
    files.update({f"checkpoint/{rel}": path for rel, path in _files(checkpoint).items()})
    return config, files, notes


ADAPTER_NAMES_PARAMETER = "lora_adapters"  # on the ensemble: the adapter names, comma separated
LORA_SEND_INPUT = "lora_send_weights"  # tritonforge addition: resend an evicted adapter's weights
LORA_WEIGHTS_TENSOR, LORA_CONFIG_TENSOR = "_LORA_WEIGHTS", "_LORA_CONFIG"


def _optional(name: str, data_type: str, dims: tuple[int, ...], ragged: bool = False) -> TensorSpec:
    return TensorSpec(name, data_type, dims, optional=True, allow_ragged_batch=ragged)


def contract_additions(
    adapters: list[lora.Adapter], target: Target, lora_weights_type: str | None = None
) -> ContractAdditions:
    """tritonforge's additions to upstream's engine-path contract, all optional inputs upstream clients never send:

    - ``apply_chat_template`` BOOL [1] on the ensemble (and the BLS), fed to preprocessing, which then renders the
      checkpoint's jinja2 chat template over the prompt;
    - ``chat_messages`` STRING [1] likewise: a whole conversation as JSON, which preprocessing renders with the
      chat template in place of the prompt (the gateway sends a chat's messages so);
    - with adapters, ``lora_name`` STRING [1]: preprocessing looks it up in adapters.json and sends the adapter's
      ``lora_task_id`` on to tensorrt_llm; the ensemble's upstream ``lora_task_id`` now also goes through
      preprocessing (passed on unchanged), as tensorrt_llm's input can have one source only; the ensemble lists the
      adapter names in a parameter (the gateway lists each adapter as a model, as vLLM does);
    - on gpu with adapters (``lora_weights_type``: the engine's dtype as a Triton type), ``lora_weights`` /
      ``lora_config`` go through preprocessing too, which attaches an adapter's converted weights when TensorRT-LLM
      does not have them yet: its first request, and any with ``lora_send_weights`` (after "LoRA task N not found
      in cache"); ``lora_weights`` carries the engine's dtype everywhere (upstream hard-codes TYPE_FP16).
    """
    chat = _optional(CHAT_INPUT, "TYPE_BOOL", (1,))
    messages = _optional(MESSAGES_INPUT, "TYPE_STRING", (1,))
    chat_map = {CHAT_INPUT: CHAT_INPUT, MESSAGES_INPUT: MESSAGES_INPUT}
    if not adapters:
        return ContractAdditions(
            ensemble_inputs=(chat, messages), preprocessing_inputs=(chat, messages), preprocessing_input_map=chat_map
        )
    name = _optional(LORA_NAME_INPUT, "TYPE_STRING", (1,))
    ensemble_inputs = [chat, messages, name]
    pre_inputs = [chat, messages, name, _optional(LORA_TASK_ID_INPUT, "TYPE_UINT64", (1,))]
    pre_outputs = [TensorSpec(LORA_TASK_ID_OUTPUT, "TYPE_UINT64", (1,))]
    pre_in = {**chat_map, LORA_NAME_INPUT: LORA_NAME_INPUT, LORA_TASK_ID_INPUT: "lora_task_id"}
    pre_out = {LORA_TASK_ID_OUTPUT: LORA_TASK_ID_TENSOR}
    trt_in = {"lora_task_id": LORA_TASK_ID_TENSOR}
    table = {"adapters_table": lora.TABLE_FILE}
    parameters: dict[str, dict[str, str]] = {
        "preprocessing": dict(table),
        "ensemble": {ADAPTER_NAMES_PARAMETER: ",".join(sorted(a.name for a in adapters))},
    }
    data_types: dict[str, str] = {}
    if target == "gpu" and lora_weights_type is not None:
        config_type = next(t.data_type for t in tensorrt_llm_signature().inputs if t.name == "lora_config")
        data_types["lora_weights"] = lora_weights_type
        pre_inputs += [
            _optional("LORA_WEIGHTS", lora_weights_type, (-1, -1), ragged=True),
            _optional("LORA_CONFIG", config_type, (-1, 3), ragged=True),
        ]
        send = _optional(LORA_SEND_INPUT, "TYPE_BOOL", (1,))
        pre_inputs.append(send)
        ensemble_inputs.append(send)
        pre_outputs += [
            TensorSpec("OUT_LORA_WEIGHTS", lora_weights_type, (-1, -1)),
            TensorSpec("OUT_LORA_CONFIG", config_type, (-1, 3)),
        ]
        pre_in.update({"LORA_WEIGHTS": "lora_weights", "LORA_CONFIG": "lora_config", LORA_SEND_INPUT: LORA_SEND_INPUT})
        pre_out.update({"OUT_LORA_WEIGHTS": LORA_WEIGHTS_TENSOR, "OUT_LORA_CONFIG": LORA_CONFIG_TENSOR})
        trt_in.update({"lora_weights": LORA_WEIGHTS_TENSOR, "lora_config": LORA_CONFIG_TENSOR})
        parameters["preprocessing"]["lora_weights_dir"] = lora.GPU_LORA_FOLDER
    return ContractAdditions(
        ensemble_inputs=tuple(ensemble_inputs),
        preprocessing_inputs=tuple(pre_inputs),
        preprocessing_outputs=tuple(pre_outputs),
        preprocessing_input_map=pre_in,
        preprocessing_output_map=pre_out,
        tensorrt_llm_input_map=trt_in,
        data_types=data_types,
        parameters=parameters,
    )


def _gpu_lora_params(
    model: LLMModel, names: LLMNames, adapters: list[lora.Adapter]
) -> tuple[Any, dict[str, Path], list[str]]:
    """gpu: each adapter converted to TensorRT-LLM's LoRA tensors (cached by content hash), shipped as
    ``lora/<task_id>/`` in tensorrt_llm (preloaded from lora_prefetch_dir) and in preprocessing (sent with a
    request the first time, and again after an eviction)."""
    problems = lora.engine_problems(adapters, model.engine)
    if problems:
        raise BuildError("cannot serve the LoRA adapters on the gpu target:\n  " + "\n  ".join(problems))
    dtype = model.engine.dtype  # TensorRT-LLM refuses LoRA weights whose dtype is not the engine's
    prefetch = model.tensorrt_llm.lora_prefetch_dir
    if prefetch is None and dtype != "bfloat16":
        prefetch = f"/models/{names.tensorrt_llm}/1/{lora.GPU_LORA_FOLDER}"
    params = model.tensorrt_llm.model_copy(update={"lora_prefetch_dir": prefetch})
    files: dict[str, Path] = {}
    for adapter in adapters:
        converted = lora.converted_for_trtllm(adapter, dtype=dtype)
        for name, path in converted.items():
            files[f"{lora.GPU_LORA_FOLDER}/{adapter.lora_task_id}/{name}"] = path
    notes = [
        f"{names.tensorrt_llm}: {len(adapters)} LoRA adapter(s) converted to TensorRT-LLM's format ({dtype}, the "
        f"engine's dtype) under {lora.GPU_LORA_FOLDER}/<task id>/ of {names.tensorrt_llm} (lora_prefetch_dir "
        f"{prefetch or 'unset'}) and {names.preprocessing} (sent with a request on first use and after an eviction)"
    ]
    if dtype == "bfloat16" and model.tensorrt_llm.lora_prefetch_dir is None:
        # the C++ .npy reader (runtime/utils/numpyUtils.cpp) maps no numpy type to bf16, so a bf16 prefetch folder
        # would fail the model load: preprocessing sends the weights with the first request instead
        notes.append(
            f"{names.tensorrt_llm}: lora_prefetch_dir left unset for the bfloat16 engine (TensorRT-LLM's .npy "
            "reader has no bfloat16); the adapters are sent by preprocessing on first use"
        )
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
    tokenizer_files = _files(checkpoint, TOKENIZER_FILES, _remote_code_patterns(key, model, checkpoint))
    engine_dir = model.engine_dir_in_container or f"/models/{names.tensorrt_llm}/1/engine"
    sources = {role: python_backends.source(f"llm_{role}") for role in ("preprocessing", "postprocessing")}
    trt_params = model.tensorrt_llm
    lora_files: dict[str, Path] = {}
    lora_notes: list[str] = []
    if adapters and target == "gpu":
        trt_params, lora_files, lora_notes = _gpu_lora_params(model, names, adapters)
    cpu_engine = None
    if target == "cpu":  # the CPU engine serves the tensorrt_llm step's contract; everything around it is the same
        config, files, notes = _cpu_engine(names.tensorrt_llm, model, checkpoint, adapters)
        files.update(lora.cpu_files(adapters))
        cpu_engine = (config, files, notes)
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
        additions=contract_additions(adapters, target, lora.TRITON_TYPES[model.engine.dtype]),
        tensorrt_llm_model=cpu_engine,
    )
    _mark_trust(out, model, names.preprocessing, names.postprocessing,
                engine=names.tensorrt_llm if target == "cpu" else None)
    if engine is not None and target == "gpu":
        out.add_files(names.tensorrt_llm, {f"engine/{rel}": p for rel, p in _files(Path(engine)).items()})
    if adapters:
        table = lora.table_bytes(adapters)
        for name in (names.preprocessing, names.tensorrt_llm):
            out.add_files(name, {lora.TABLE_FILE: table, **lora_files})
        out.notes += lora_notes
    return out


# ================================================================ the LLM API path (runtime: llmapi)

# the `llm` ensemble's public inputs on the LLM API path -> the llmapi model's input (None: to preprocessing);
# data types and dims are taken from the engine path's ensemble, so both paths have one contract
LLMAPI_ENSEMBLE_INPUTS: dict[str, str | None] = {
    "text_input": None,
    "max_tokens": "sampling_param_max_tokens",
    "stream": "streaming",
    "temperature": "sampling_param_temperature",
    "top_k": "sampling_param_top_k",
    "top_p": "sampling_param_top_p",
    "seed": "sampling_param_seed",
    "presence_penalty": "sampling_param_presence_penalty",
    "frequency_penalty": "sampling_param_frequency_penalty",
    "stop_words": "sampling_param_stop",
    "exclude_input_in_output": None,
}
LLMAPI_PREPROCESSING_OUTPUTS = {"PROMPT": "text_input", "EXCLUDE_INPUT": "sampling_param_exclude_input_from_output"}
LLMAPI_LORA_OUTPUTS = {"LORA_ID": "lora_id", "LORA_NAME": "lora_name", "LORA_PATH": "lora_path"}


def llmapi_signature() -> Signature:
    """The llmapi ``tensorrt_llm`` model's tensors (upstream's names, types and dims)."""
    from tritonforge.trtllm.llmapi import llmapi_data

    model = llmapi_data()["model"]

    def specs(entries: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(e["name"], e["data_type"], tuple(e["dims"]), optional=bool(e.get("optional"))) for e in entries
        )

    # tritonforge's additions (as the engine path's tensorrt_llm has them): exact token counts, which the gateway
    # reports as `usage`; upstream's llmapi model has no such tensors, and its clients never send these inputs
    counts_in = tuple(TensorSpec(n, "TYPE_BOOL", (1,), optional=True) for n in TOKEN_COUNT_INPUTS)
    counts_out = tuple(TensorSpec(n, "TYPE_INT32", (1,)) for n in TOKEN_COUNT_OUTPUTS)
    return Signature(specs(model["inputs"]) + counts_in, specs(model["outputs"]) + counts_out)


TOKEN_COUNT_INPUTS = ("return_num_input_tokens", "return_num_output_tokens")
TOKEN_COUNT_OUTPUTS = ("num_input_tokens", "num_output_tokens")


def _llmapi_preprocessing(
    names: LLMNames, model: LLMModel, adapters: list[lora.Adapter], target: Target
) -> tuple[ModelConfig, list[str]]:
    from tritonforge.builders.llm_gpu import _queue, _serving

    inputs = (
        TensorSpec("QUERY", "TYPE_STRING", (1,)),
        TensorSpec(CHAT_INPUT, "TYPE_BOOL", (1,), optional=True),
        TensorSpec(MESSAGES_INPUT, "TYPE_STRING", (1,), optional=True),
        TensorSpec("exclude_input_in_output", "TYPE_BOOL", (1,), optional=True),
        *((TensorSpec(LORA_NAME_INPUT, "TYPE_STRING", (1,), optional=True),) if adapters else ()),
    )
    outputs = (
        TensorSpec("PROMPT", "TYPE_STRING", (1,)),
        TensorSpec("EXCLUDE_INPUT", "TYPE_BOOL", (1,)),
        *(
            (
                TensorSpec("LORA_ID", "TYPE_UINT64", (1,)),
                TensorSpec("LORA_NAME", "TYPE_STRING", (1,)),
                TensorSpec("LORA_PATH", "TYPE_STRING", (1,)),
            )
            if adapters
            else ()
        ),
    )
    params = {
        "tokenizer_dir": model.preprocessing.tokenizer_dir or "tokenizer",
        "exclude_input_in_output": "true" if model.tensorrt_llm.exclude_input_in_output else "false",
    }
    if adapters:
        params["adapters_table"] = lora.TABLE_FILE
    serving = _serving(model.serving, _queue(model.serving), model.serving.preprocessing_instance_count)
    config, notes = render_model(
        names.preprocessing, serving, Signature(inputs, outputs), target=target, backend="python", parameters=params
    )
    return config, notes


def _llmapi_engine(
    names: LLMNames, model: LLMModel, adapters: list[lora.Adapter], target: Target, checkpoint: Path
) -> tuple[ModelConfig, dict[str, FileContent], list[str]]:
    """The llmapi ``tensorrt_llm`` model: config, model.py (the LLM API driver on gpu, the CPU engine on cpu),
    model.yaml and the checkpoint (unless the container already has it)."""
    from tritonforge.builders.llm_gpu import _queue
    from tritonforge.builders.lora_trtllm import target_modules
    from tritonforge.trtllm.llmapi import MODEL_YAML, model_yaml

    settings = model.llmapi.model_copy(update={"trust_remote_code": model.remote_code_trusted})
    dtype_notes: list[str] = []
    if target == "gpu" and settings.dtype == "auto" and _checkpoint_dtype(checkpoint) == "float32":
        # dtype auto reads the checkpoint's config.json (BaseLlmArgs.dtype, tensorrt_llm/llmapi/llm_args.py
        # @ 0004396720054fd8e205cbf616f21f0b57c6b412): a float32 checkpoint (the example's, dequantised from GGUF)
        # ran in float32, which most of the PyTorch backend's kernels do not support (NVIDIA/TensorRT-LLM issue
        # #5260: rmsnorm "failed to dispatch data type Float"; the maintainers' answer: convert to fp16 or bf16)
        settings = settings.model_copy(update={"dtype": "bfloat16"})
        dtype_notes.append(
            f"{names.tensorrt_llm}: the checkpoint's config.json says float32, which TensorRT-LLM's PyTorch backend "
            "mostly cannot run: model.yaml sets dtype: bfloat16 (llmapi.dtype auto would keep float32). GPUs before "
            "Ampere (compute capability 8.0) have no bfloat16: set llmapi.dtype: float16 for them"
        )
    batch = model.serving.triton_max_batch_size
    serving = Serving(
        max_batch_size=batch,
        dynamic_batching=_queue(model.serving),
        instance_groups=[InstanceGroup(count=1, kind="cpu")],  # as upstream: the LLM places itself on the GPUs
    )
    params: dict[str, str] = {}
    if target == "cpu":  # the CPU engine's own settings (the LLM API has no counterpart)
        params = {"max_input_len": str(model.max_input_len), "max_seq_len": str(model.max_seq_len)}
        if model.cpu.torch_threads:
            params["torch_threads"] = str(model.cpu.torch_threads)
        if model.cpu.weights != "fp32":
            params["weights"] = model.cpu.weights
        if adapters:
            params["adapters_table"] = lora.TABLE_FILE
    config, notes = render_model(
        names.tensorrt_llm,
        serving,
        llmapi_signature(),
        target=target,
        backend="python",
        parameters=params,
        decoupled=settings.decoupled,
    )
    source = "cpu_llm" if target == "cpu" else "trtllm_llmapi"
    files: dict[str, FileContent] = dict(python_backends.sources(source))
    model_path = settings.model_in_container or "checkpoint"
    if settings.model_in_container is None:
        files.update({f"checkpoint/{rel}": path for rel, path in _files(checkpoint).items()})
    # the CPU engine decodes cpu.max_active sequences together: written where the LLM API reads max_batch_size. On
    # gpu nothing is written unless llmapi.max_batch_size says so: the LLM's in-flight batch is not Triton's
    gpu = target != "cpu"
    text = model_yaml(
        settings,
        model_path=model_path,
        max_batch_size=batch,
        adapters=len(adapters),
        lora_target_modules=target_modules([a.folder for a in adapters]) if gpu and adapters else (),
        llm_max_batch_size=None if gpu else model.cpu.max_active,
        context=(model.max_input_len, model.max_seq_len) if gpu else None,  # the cpu engine's are parameters
    )
    files[MODEL_YAML] = text
    if adapters:
        files.update(lora.cpu_files(adapters))  # PEFT folders: what the LLM API's LoRARequest(lora_path) reads
        files[lora.TABLE_FILE] = lora.table_bytes(adapters)
    return config, files, notes + dtype_notes


def _checkpoint_dtype(checkpoint: Path) -> str | None:
    """The weights' dtype a Hugging Face config.json names (``dtype``, or the older ``torch_dtype``; a multimodal
    config's text_config), as LLM()'s dtype auto reads it; None when it names none or cannot be read."""
    try:
        config = json.loads((checkpoint / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for section in (config, config.get("text_config") if isinstance(config, dict) else None):
        if isinstance(section, dict):
            value = section.get("dtype") or section.get("torch_dtype")
            if isinstance(value, str):
                return value.removeprefix("torch.")
    return None


def llmapi_model_set(
    key: str, model: LLMModel, target: Target, checkpoint: Path, *, source_dir: Path | None = None
) -> ModelSet:
    """preprocessing (chat template, adapter by name) → tensorrt_llm (LLM API) as the `llm` ensemble, whose inputs
    and outputs are the engine path's (a subset: the sampling controls the LLM API takes)."""
    from tritonforge.builders.llm_gpu import EnsembleStep, EnsembleWiring, ensemble_signature, llm_ensemble_config

    names = llm_names(key, model)
    adapters: list[lora.Adapter] = []
    if model.adapters:
        if source_dir is None:
            source_dir = lora.infer_source_dir(model.checkpoint, checkpoint)
        adapters = lora.check_adapters(model.adapters, checkpoint, source_dir=source_dir)
    out = ModelSet()
    pre_cfg, notes = _llmapi_preprocessing(names, model, adapters, target)
    pre_files: dict[str, FileContent] = dict(python_backends.sources("llm_preprocessing"))  # and its shared modules
    if model.preprocessing.tokenizer_dir is None:
        patterns = _remote_code_patterns(key, model, checkpoint)
        pre_files.update({f"tokenizer/{rel}": p for rel, p in _files(checkpoint, TOKENIZER_FILES, patterns).items()})
    if adapters:
        pre_files[lora.TABLE_FILE] = lora.table_bytes(adapters)
    out.add(pre_cfg, pre_files)
    trt_cfg, trt_files, trt_notes = _llmapi_engine(names, model, adapters, target, checkpoint)
    out.add(trt_cfg, trt_files)
    _mark_trust(out, model, names.preprocessing, engine=names.tensorrt_llm if target == "cpu" else None)

    public = {t.name: t for t in ensemble_signature().inputs}
    inputs = [public[name] for name in LLMAPI_ENSEMBLE_INPUTS]

    inputs.append(TensorSpec(CHAT_INPUT, "TYPE_BOOL", (1,), optional=True))
    inputs.append(TensorSpec(MESSAGES_INPUT, "TYPE_STRING", (1,), optional=True))
    if adapters:
        inputs.append(TensorSpec(LORA_NAME_INPUT, "TYPE_STRING", (1,), optional=True))
    inputs += [public[name] for name in TOKEN_COUNT_INPUTS]
    outputs = tuple(t for t in ensemble_signature().outputs if t.name in ("text_output", *TOKEN_COUNT_OUTPUTS))
    pre_in = {"QUERY": "text_input", CHAT_INPUT: CHAT_INPUT, MESSAGES_INPUT: MESSAGES_INPUT,
              "exclude_input_in_output": "exclude_input_in_output"}
    pre_out = {name: f"_{name}" for name in LLMAPI_PREPROCESSING_OUTPUTS}
    trt_in = {model_input: name for name, model_input in LLMAPI_ENSEMBLE_INPUTS.items() if model_input}
    trt_in.update({model_input: f"_{name}" for name, model_input in LLMAPI_PREPROCESSING_OUTPUTS.items()})
    if adapters:
        pre_in[LORA_NAME_INPUT] = LORA_NAME_INPUT
        pre_out.update({name: f"_{name}" for name in LLMAPI_LORA_OUTPUTS})
        trt_in.update({model_input: f"_{name}" for name, model_input in LLMAPI_LORA_OUTPUTS.items()})
    wiring = EnsembleWiring(
        names.ensemble,
        (
            EnsembleStep(names.preprocessing, "preprocessing", pre_in, pre_out),
            EnsembleStep(
                names.tensorrt_llm,
                "tensorrt_llm",
                {**trt_in, **{n: n for n in TOKEN_COUNT_INPUTS}},
                {n: n for n in ("text_output", *TOKEN_COUNT_OUTPUTS)},
            ),
        ),
        Signature(tuple(inputs), outputs),
    )
    parameters = {ADAPTER_NAMES_PARAMETER: ",".join(sorted(a.name for a in adapters))} if adapters else None
    ens = llm_ensemble_config(
        wiring, max_batch_size=model.serving.triton_max_batch_size, members=out.configs, parameters=parameters
    )
    out.add(ens, {})
    out.notes += notes + trt_notes
    if target == "gpu":
        out.notes.append(
            f"{names.tensorrt_llm}: TensorRT-LLM's LLM API model (backend pytorch), driven by tritonforge's model.py; "
            "model.yaml holds the LLM() arguments; the model loads the checkpoint when Triton starts (no engine build)"
        )
    return out
