"""TensorRT-LLM's LLM API model for Triton: typed `model.yaml`, the model's tensors, and the `LLM()` argument names.

Upstream's default LLM path since TensorRT-LLM removed its TensorRT engine backend (July 2026) is the python-backend
model ``triton_backend/all_models/llmapi/tensorrt_llm``: its ``1/model.yaml`` holds ``tensorrt_llm.LLM(...)``
keyword arguments (``model``, ``backend: pytorch``, parallel sizes, KV cache, LoRA, ...) plus a ``triton_config``
section; no engine is built. Its tensors are ``text_input``, ``streaming``, ``sampling_param_*`` (mapped by name onto
``SamplingParams``), ``return_*``, ``stop`` and ``lora_id``/``lora_name``/``lora_path`` → ``text_output``,
``finish_reason``, ... (``tritonforge/trtllm/data/trtllm_llmapi.json``, with the upstream commit they were read at).

Three deliberate differences from upstream's files, all so that one `llm` ensemble contract serves every path:

* ``max_batch_size`` is the ensemble's (> 0, every tensor with a leading batch dimension) where upstream's model.yaml
  says 0 ("the current implementation does not support batching"): Triton refuses an ensemble whose batch size is
  larger than a member's. tritonforge ships its own model.py (``python_backends/trtllm_llmapi``), which takes
  batched requests; upstream's model.py only takes 1-D ``text_input``.
* ``model`` (the checkpoint) and adapter ``lora_path`` values may be relative: they are resolved against the
  ``tensorrt_llm`` model's version folder, so a repository copied anywhere (or fetched from S3 into a temp folder by
  Triton) still finds them.
* An empty ``lora_name`` means the base model: the ensemble always feeds the three LoRA inputs from its
  preprocessing step, and upstream's rule ("all three or none") cannot be met by an ensemble otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from tritonforge.spec_base import Checked, Flag, Found, Frozen, Pos, raw_dict

DATA_FILE = Path(__file__).resolve().parent / "data" / "trtllm_llmapi.json"
MODEL_YAML = "model.yaml"

Fraction = Annotated[float, Field(gt=0, le=1)]


@cache
def llmapi_data() -> dict[str, Any]:
    """The upstream-derived data (parsed once)."""
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def llmapi_minimum() -> str:
    """The first TensorRT-LLM release the LLM API path runs on (trtllm_llmapi.json ``minimum_release``)."""
    return str(llmapi_data()["minimum_release"]["tensorrt_llm"])


def llm_arg_names(tensorrt_llm_version: str) -> tuple[str, frozenset[str]] | None:
    """(the release line the names were read from, the keyword arguments `LLM()` accepts) for a TensorRT-LLM
    version ('1.2.1' -> the '1.2' line), or None when no list is recorded for that line."""
    parts = str(tensorrt_llm_version).split(".")
    line = ".".join(parts[:2])
    args = llmapi_data()["llm_args"]
    if line not in args["releases"]:
        return None
    return line, frozenset(args["lists"][args["releases"][line]["list"]]["names"])


class KvCacheSettings(Frozen):
    """``kv_cache_config`` of ``LLM()`` (``KvCacheConfig``): the fields tritonforge types; more go in extra_llm_args."""

    free_gpu_memory_fraction: Fraction = Field(0.9, description="share of free GPU memory for the KV cache")
    enable_block_reuse: Flag = Field(True, description="reuse KV blocks of shared prompt prefixes")


class LLMAPISettings(Checked):
    """The `tensorrt_llm` model of the LLM API path, rendered as its ``1/model.yaml``.

    Every field is an ``LLM()`` argument of the same name except ``decoupled`` and ``cancellation_check_period_ms``
    (``triton_config``) and the LoRA cache sizes (``lora_config``, written only when the model has adapters).
    """

    backend: Literal["pytorch"] = Field("pytorch", description="the LLM API backend (upstream's default)")
    tensor_parallel_size: Pos = 1
    pipeline_parallel_size: Pos = 1
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    max_batch_size: Pos | None = Field(
        None, description="sequences the LLM batches in flight, LLM()'s max_batch_size (default: TensorRT-LLM's own, "
        "2048, on the gpu target; cpu.max_active on the cpu target); separate from Triton's triton_max_batch_size",
    )
    max_num_tokens: Pos | None = Field(None, description="tokens per scheduled iteration (default: TensorRT-LLM's)")
    kv_cache_config: KvCacheSettings = Field(default_factory=KvCacheSettings)
    trust_remote_code: Flag = Field(False, description="the model's trust_remote_code (kept for older specs)")
    enable_iter_perf_stats: Flag = Field(
        True, description="LLM()'s iteration statistics: the model publishes the LLM's queue from them as "
        "nv_trt_llm_request_metrics (waiting, active, scheduled, max), which deploy's autoscaler reads",
    )
    decoupled: Flag = Field(True, description="triton_config.decoupled: true is needed to stream")
    cancellation_check_period_ms: Pos = Field(100, description="triton_config: how often cancellation is polled")
    max_lora_rank: Pos = Field(64, description="lora_config.max_lora_rank (with adapters)")
    max_loras: Pos | None = Field(None, description="lora_config.max_loras: adapters on the GPU (default: all)")
    max_cpu_loras: Pos | None = Field(None, description="lora_config.max_cpu_loras (default: all)")
    model_in_container: str | None = Field(
        None,
        description="the checkpoint folder as the server sees it; default: the copy shipped in the version folder "
        "(written relative to it)",
    )
    extra_llm_args: dict[str, Any] = Field(
        default_factory=dict,
        description="further LLM() arguments, written to model.yaml as given; names are checked against the "
        "TensorRT-LLM release of the target image",
    )

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found: Found = []
        typed = set(cls.model_fields) - {"extra_llm_args", "model_in_container", "decoupled"}
        typed |= {"model", "lora_config", "enable_lora", "max_input_len", "max_seq_len"}  # the llm model's own
        for key in raw_dict(data.get("extra_llm_args")):
            if key in typed or key in ("triton_config", "cancellation_check_period_ms"):
                found.append((("extra_llm_args", key), f"'{key}' is set by tritonforge; use the typed field instead"))
        return found


def llm_args_problems(settings_data: Any, tensorrt_llm_version: str, image: str) -> list[str]:
    """Messages for ``extra_llm_args`` keys the image's `LLM()` does not take (raw data; tolerant of bad types)."""
    extra = raw_dict(raw_dict(settings_data).get("extra_llm_args"))
    if not extra:
        return []
    known = llm_arg_names(tensorrt_llm_version)
    if known is None:
        return [
            f"no LLM() argument list is recorded for TensorRT-LLM {tensorrt_llm_version} ({image}); cannot check "
            f"extra_llm_args {sorted(extra)}: choose an image of a recorded release "
            f"({', '.join(sorted(llmapi_data()['llm_args']['releases']))})"
        ]
    line, names = known
    return [
        f"extra_llm_args.{key}: not an argument of tensorrt_llm.LLM() in TensorRT-LLM {line} ({image})"
        for key in extra
        if key not in names
    ]


def model_yaml_problems(text: str | bytes, tensorrt_llm_version: str, image: str) -> list[str]:
    """The keys of a rendered model.yaml that the image's `LLM()` does not take: top-level arguments, and the
    fields of ``kv_cache_config`` and ``lora_config`` where their names are recorded. Every key is checked, not
    only extra_llm_args: a typed field tritonforge writes may postdate the image's release, and LLM() refuses an
    unknown key when Triton loads the model, after the whole build and deploy. Empty when no list is recorded
    for the release (runtime_problems has refused the releases known to be too old)."""
    known = llm_arg_names(tensorrt_llm_version)
    if known is None:
        return []
    line, names = known
    data = read_model_yaml(text)
    skip = set(llmapi_data()["model"]["model_yaml"]["not_llm_args"])
    found = [
        f"model.yaml key '{key}' is not an argument of tensorrt_llm.LLM() in TensorRT-LLM {line} ({image})"
        for key in data
        if key not in skip and key not in names
    ]
    nested = llmapi_data()["llm_args"]
    for section in ("kv_cache_config", "lora_config"):
        recorded = nested.get(section)
        fields = set(recorded["names"] if isinstance(recorded, dict) else recorded or ())
        value = data.get(section)
        if not fields or not isinstance(value, dict):
            continue
        found += [
            f"model.yaml key '{section}.{key}' is not a field of {section} in TensorRT-LLM {line} ({image}); "
            f"its fields: {', '.join(sorted(fields))}"
            for key in value
            if key not in fields
        ]
    return found


# LLM()'s max_num_tokens when not given (NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py
# @ 0004396720054fd8e205cbf616f21f0b57c6b412, BaseLlmArgs.max_num_tokens; None in some earlier releases); a prompt
# longer than it is refused without chunked prefill (tensorrt_llm/llmapi/llm.py _check_arguments
# @ 4c05a74891e4df8066f08ed4ce14b0972abe4e25)
LLM_DEFAULT_MAX_NUM_TOKENS = 8192


def model_yaml(
    settings: LLMAPISettings,
    *,
    model_path: str,
    max_batch_size: int,
    adapters: int = 0,
    lora_target_modules: Sequence[str] = (),
    llm_max_batch_size: int | None = None,
    context: tuple[int, int] | None = None,
) -> bytes:
    """The ``1/model.yaml`` text: ``LLM()`` arguments, then ``triton_config`` (as upstream's template lays it out).

    ``max_batch_size`` is Triton's (triton_config); the LLM's own is ``settings.max_batch_size``, else
    ``llm_max_batch_size`` (the cpu engine's max_active), else left out: LLM() then batches up to its own default
    (BaseLlmArgs.max_batch_size 2048: NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm_args.py
    @ 0004396720054fd8e205cbf616f21f0b57c6b412). Triton's max_batch_size only bounds the requests one execute() call
    hands the decoupled model, which submits them all at once; writing it as the LLM's capped the in-flight batch at
    it (8 sequences for the example). ``context`` is the llm model's (max_input_len, max_seq_len), written as
    LLM()'s limits (the gpu target; the cpu engine gets them as parameters). ``lora_target_modules`` are the
    TensorRT-LLM names of the modules the adapters adapt: the PyTorch backend asserts "Expecting at least one lora
    target module" without them when no single lora_dir is given (NVIDIA/TensorRT-LLM
    tensorrt_llm/_torch/pyexecutor/_util.py @ d8ae02caed59708512e5aa578a09bb09f365bfed), and maps them back to the
    PEFT names with its default table (tensorrt_llm/lora_helper.py @ 585c756579dc4d01f21fc13c2f604cdb461ac4f0)."""
    args: dict[str, Any] = {
        "model": model_path,
        "backend": settings.backend,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "pipeline_parallel_size": settings.pipeline_parallel_size,
    }
    llm_batch = settings.max_batch_size or llm_max_batch_size
    if llm_batch:
        args["max_batch_size"] = llm_batch
    args["kv_cache_config"] = settings.kv_cache_config.model_dump()
    if settings.dtype != "auto":
        args["dtype"] = settings.dtype
    if settings.max_num_tokens:
        args["max_num_tokens"] = settings.max_num_tokens
    if context is not None:
        args["max_input_len"], args["max_seq_len"] = context
        chunked = settings.extra_llm_args.get("enable_chunked_prefill") is True
        if not settings.max_num_tokens and not chunked and context[0] > LLM_DEFAULT_MAX_NUM_TOKENS:
            # without chunked prefill the PyTorch backend refuses a prompt over max_num_tokens (its default 8192):
            # every prompt max_input_len admits must fit one iteration (the spec refuses a smaller explicit value).
            # It sizes the iteration's activations: a long context is cheaper with chunked prefill (docs/gpu.md)
            args["max_num_tokens"] = context[0]
    if settings.trust_remote_code:
        args["trust_remote_code"] = True
    if settings.enable_iter_perf_stats:
        args["enable_iter_perf_stats"] = True
    if adapters:
        lora: dict[str, Any] = {"max_lora_rank": settings.max_lora_rank}
        lora["max_loras"] = settings.max_loras or adapters
        lora["max_cpu_loras"] = settings.max_cpu_loras or adapters
        if lora_target_modules:
            lora["lora_target_modules"] = sorted(set(lora_target_modules))
        args["lora_config"] = lora  # the pytorch backend enables LoRA from lora_config (enable_lora is ignored)
    args.update(settings.extra_llm_args)
    args["triton_config"] = {
        "max_batch_size": max_batch_size,
        "decoupled": settings.decoupled,
        "cancellation_check_period_ms": settings.cancellation_check_period_ms,
    }
    header = (
        "# tritonforge: tensorrt_llm.LLM() arguments of TensorRT-LLM's LLM API Triton model "
        "(triton_backend/all_models/llmapi); relative paths are relative to this folder.\n"
    )
    return (header + yaml.safe_dump(args, sort_keys=False)).encode()


def read_model_yaml(text: str | bytes) -> dict[str, Any]:
    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}
