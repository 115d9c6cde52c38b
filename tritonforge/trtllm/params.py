"""Typed settings for TensorRT-LLM's Triton model set (preprocessing, tensorrt_llm, postprocessing, BLS).

Every parameter key of the upstream templates (``tritonforge/trtllm/data/trtllm_templates.json``, derived from
NVIDIA/TensorRT-LLM ``triton_backend/all_models/inflight_batcher_llm``) is a typed field here, named after the key
(the fill_template.py variable is accepted as an alias where it differs: ``engine_dir`` for ``gpt_model_path``,
``batching_strategy`` for ``gpt_model_type``). Defaults are upstream's documented defaults; a field whose upstream
default is "unset" is ``None``.

Rendering (``parameter_strings``) is mechanical: one string per key, in the template's order.
An unset value is

* omitted for the ``tensorrt_llm`` model: its C++ backend treats a missing key as "use the default", while an
  empty string is a value (``gpu_device_ids: ""`` would be an empty device list). The exception are the keys the
  backend reads without a default (``required_parameter_keys``: a missing one fails instance creation with
  "Cannot find parameter with name"): they are always rendered, as ``""`` when unset, which the backend reads as
  "not given";
* rendered as ``""`` for the python models (preprocessing, postprocessing, BLS): upstream's model.py files read
  some keys unconditionally and treat ``""`` as unset, so the key must exist.

No ``${...}`` placeholder is ever rendered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, ConfigDict, Field, field_validator

from tritonforge.spec_base import Big, Checked, Flag, Found, Frozen, NonNeg, Pos, raw_dict, raw_int, raw_list
from tritonforge.values import is_whole

DATA_FILE = Path(__file__).resolve().parent / "data" / "trtllm_templates.json"

Fraction = Annotated[float, Field(gt=0, le=1)]
TritonFloatType = Literal["TYPE_FP32", "TYPE_FP16", "TYPE_BF16"]
IdGroups = list[list[NonNeg]]


@cache
def templates() -> dict[str, Any]:
    """The upstream-derived template data (parsed once)."""
    return json.loads(DATA_FILE.read_text(encoding="utf-8"))


def model_template(model: str) -> dict[str, Any]:
    """One model's entry: 'preprocessing', 'tensorrt_llm', 'postprocessing', 'ensemble' or 'tensorrt_llm_bls'."""
    models = templates()["models"]
    if model not in models:
        raise KeyError(f"no upstream template named {model!r}; known: {', '.join(models)}")
    return models[model]


def parameter_keys(model: str) -> list[str]:
    """The parameter keys upstream's config.pbtxt of ``model`` carries, in its order."""
    return [p["key"] for p in model_template(model).get("parameters", [])]


def required_parameter_keys(model: str) -> list[str]:
    """The keys ``model``'s backend reads without a default (upstream source recorded in the template data)."""
    return list(model_template(model).get("required_parameters", []))


def _first(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in data:
            return data[name]
    return None


def _groups(value: Any) -> Any:
    """[0, 1] means one model instance on GPUs 0 and 1: [[0, 1]]."""
    if isinstance(value, list) and value and all(is_whole(v) for v in value):
        return [value]
    return value


# ================================================================ tensorrt_llm


class TensorRTLLMParams(Checked):
    """The ``tensorrt_llm`` model: its ``parameters`` (one field per upstream key) and its templated settings.

    Templated settings that are not parameters: ``triton_backend``, ``decoupled_mode`` and the three templated
    data types. Serving settings shared by the whole set (batch size, queue, instance counts) are in
    ``LLMServing``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # -- templated settings (not parameters) -----------------------------------------------------------
    triton_backend: Literal["tensorrtllm", "python"] = Field(
        "tensorrtllm", description="tensorrtllm = the C++ backend; python = TensorRT-LLM's python runtime model.py"
    )
    decoupled_mode: Flag = Field(False, description="true is required for requests that set stream=true")
    logits_datatype: TritonFloatType = "TYPE_FP32"
    encoder_input_features_data_type: TritonFloatType = "TYPE_FP16"
    prompt_embedding_table_data_type: TritonFloatType = "TYPE_FP16"

    # -- parameters, in the template's order ------------------------------------------------------------
    max_beam_width: Pos = 1
    force_cpu_only_input_tensors: Literal["no", "yes"] = Field(
        "no", validation_alias=AliasChoices("force_cpu_only_input_tensors", "FORCE_CPU_ONLY_INPUT_TENSORS")
    )
    gpt_model_type: Literal["inflight_fused_batching", "inflight_batching", "V1"] = Field(
        "inflight_fused_batching", validation_alias=AliasChoices("gpt_model_type", "batching_strategy")
    )
    gpt_model_path: str | None = Field(
        None,
        validation_alias=AliasChoices("gpt_model_path", "engine_dir"),
        description="the engine folder inside the container (gpu_llm_model_set fills it)",
    )
    encoder_model_path: str | None = Field(
        None, validation_alias=AliasChoices("encoder_model_path", "encoder_engine_dir")
    )
    max_tokens_in_paged_kv_cache: Pos | None = None
    max_attention_window_size: Pos | list[Pos] | None = None
    sink_token_length: NonNeg | None = None
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = "guaranteed_no_evict"
    kv_cache_free_gpu_mem_fraction: Fraction = 0.9
    cross_kv_cache_fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="encoder-decoder models only (upstream default 0.5 there); refused for decoder-only models"
    )
    kv_cache_host_memory_bytes: Big = 0
    kv_cache_onboard_blocks: Flag = True
    exclude_input_in_output: Flag = False
    cancellation_check_period_ms: Pos = 100
    stats_check_period_ms: Pos = 100
    iter_stats_max_iterations: NonNeg = 1000
    request_stats_max_iterations: NonNeg = 0
    enable_kv_cache_reuse: Flag = True
    normalize_log_probs: Flag = True
    enable_chunked_context: Flag = False
    gpu_device_ids: IdGroups | None = Field(None, description="one list of GPU ids per model instance")
    participant_ids: IdGroups | None = Field(None, description="one list of MPI ranks per model instance")
    num_nodes: Pos = 1
    lora_cache_optimal_adapter_size: Pos = 8
    lora_cache_max_adapter_size: Pos = 64
    lora_cache_gpu_memory_fraction: Fraction = 0.05
    lora_cache_host_memory_bytes: Big = 1 << 30
    lora_prefetch_dir: str | None = None
    decoding_mode: (
        Literal["top_k", "top_p", "top_k_top_p", "beam_search", "medusa", "redrafter", "lookahead", "eagle"] | None
    ) = Field(None, description="unset: top_k_top_p when max_beam_width == 1, beam_search otherwise")
    executor_worker_path: str = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"
    lookahead_window_size: Pos | None = None
    lookahead_ngram_size: Pos | None = None
    lookahead_verification_set_size: Pos | None = None
    medusa_choices: list[list[NonNeg]] | None = None
    eagle_choices: list[list[NonNeg]] | None = None
    gpu_weights_percent: Annotated[float, Field(ge=0, le=1)] = 1.0
    enable_context_fmha_fp32_acc: bool = False
    multi_block_mode: Flag = True
    cuda_graph_mode: Flag = False
    cuda_graph_cache_size: NonNeg = 0
    speculative_decoding_fast_logits: Flag = False
    tokenizer_dir: str | None = None
    guided_decoding_backend: Literal["xgrammar"] | None = None
    xgrammar_tokenizer_info_path: str | None = None
    # documented, not in the template: rendered only when set
    recv_poll_period_ms: NonNeg | None = None

    @field_validator("gpu_device_ids", "participant_ids", mode="before")
    @classmethod
    def _one_instance(cls, value: Any) -> Any:
        return _groups(value)

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found: Found = []
        mode = data.get("decoding_mode")
        lookahead = ("lookahead_window_size", "lookahead_ngram_size", "lookahead_verification_set_size")
        if mode == "lookahead":
            found += [((k,), "must be set when decoding_mode is 'lookahead'") for k in lookahead if data.get(k) is None]
        else:
            found += [
                ((k,), f"is only read when decoding_mode is 'lookahead' (decoding_mode is {mode!r})")
                for k in lookahead
                if data.get(k) is not None
            ]
        beam = raw_int(data.get("max_beam_width", 1))
        if mode == "beam_search" and beam == 1:
            found.append((("decoding_mode",), "'beam_search' needs max_beam_width > 1 (it is 1)"))
        for choices, wanted in (("medusa_choices", "medusa"), ("eagle_choices", "eagle")):
            if data.get(choices) is not None and mode not in (None, wanted):
                found.append(((choices,), f"is only read when decoding_mode is '{wanted}' (decoding_mode is {mode!r})"))
        backend = data.get("triton_backend", "tensorrtllm")
        xgrammar = data.get("guided_decoding_backend") == "xgrammar" and backend == "tensorrtllm"
        if xgrammar and not data.get("xgrammar_tokenizer_info_path"):
            found.append(
                (
                    ("xgrammar_tokenizer_info_path",),
                    "must be set with guided_decoding_backend 'xgrammar': the C++ backend silently disables "
                    "guided decoding without it",
                )
            )
        optimal = raw_int(data.get("lora_cache_optimal_adapter_size", 8))
        largest = raw_int(data.get("lora_cache_max_adapter_size", 64))
        if optimal is not None and largest is not None and optimal > largest:
            found.append(
                (
                    ("lora_cache_optimal_adapter_size",),
                    f"{optimal} is larger than lora_cache_max_adapter_size {largest}",
                )
            )
        if data.get("speculative_decoding_fast_logits") is True and not raw_list(data.get("participant_ids")):
            found.append(
                (
                    ("speculative_decoding_fast_logits",),
                    "needs orchestrator mode with participant_ids (TRTLLM_ORCHESTRATOR=1, spawning disabled); "
                    "the backend turns it off otherwise",
                )
            )
        devices, ranks = raw_list(_groups(data.get("gpu_device_ids"))), raw_list(_groups(data.get("participant_ids")))
        if devices and ranks and len(devices) != len(ranks):
            found.append(
                (
                    ("participant_ids",),
                    f"lists {len(ranks)} model instances but gpu_device_ids lists {len(devices)}",
                )
            )
        if _first(data, "gpt_model_type", "batching_strategy") == "V1" and data.get("enable_chunked_context") is True:
            found.append((("enable_chunked_context",), "needs in-flight batching (gpt_model_type is 'V1')"))
        return found

    def values(self) -> dict[str, Any]:
        """Parameter key -> typed value (None = unset), for every key of the template and recv_poll_period_ms."""
        out = {key: getattr(self, key.lower()) for key in parameter_keys("tensorrt_llm")}
        out["recv_poll_period_ms"] = self.recv_poll_period_ms
        return out


# ================================================================ python models


class PreprocessingParams(Frozen):
    """The ``preprocessing`` model's parameters (tokenization)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    tokenizer_dir: str | None = Field(None, description="None: the tokenizer files the model set ships")
    add_special_tokens: Flag = True
    multimodal_model_path: str | None = None
    gpt_model_path: str | None = Field(
        None,
        validation_alias=AliasChoices("gpt_model_path", "engine_dir"),
        description="only read for multimodal models; None: the tensorrt_llm engine folder when multimodal",
    )
    max_num_images: Pos | None = None

    def values(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in parameter_keys("preprocessing")}


class PostprocessingParams(Frozen):
    """The ``postprocessing`` model's parameters (detokenization)."""

    tokenizer_dir: str | None = Field(None, description="None: the tokenizer files the model set ships")
    skip_special_tokens: Flag = True

    def values(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in parameter_keys("postprocessing")}


class BLSParams(Frozen):
    """The ``tensorrt_llm_bls`` model's parameters."""

    accumulate_tokens: Flag = Field(False, description="streaming: detokenize all tokens so far, not only the new one")
    tensorrt_llm_model_name: str | None = Field(None, description="None: the set's tensorrt_llm model")
    tensorrt_llm_draft_model_name: str | None = Field(None, description="a draft model for speculative decoding")
    multimodal_encoders_name: str | None = None

    def values(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in parameter_keys("tensorrt_llm_bls")}


# ================================================================ serving settings of the whole set


class LLMServing(Frozen):
    """The fill_template.py variables that shape the Triton side of the set (not TensorRT-LLM's runtime)."""

    triton_max_batch_size: Pos = 64
    max_queue_delay_microseconds: Big = 0
    max_queue_size: NonNeg = Field(0, description="0 = unbounded")
    preprocessing_instance_count: Pos = 1
    postprocessing_instance_count: Pos = 1
    bls_instance_count: Pos = 1


# ================================================================ rendering values as parameter strings


def _number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return repr(value) if isinstance(value, float) else str(value)


def parameter_string(key: str, value: Any) -> str:
    """One typed value as the string the backend parses (bool 'true'/'false', id groups '0,1;2,3', ...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, list):
        if key in ("medusa_choices", "eagle_choices"):  # parsed as a list of lists: "{0, 0}, {0, 1}"
            return ", ".join("{" + ", ".join(str(i) for i in path) + "}" for path in value)
        if value and isinstance(value[0], list):  # id groups: ',' within an instance, ';' between instances
            return ";".join(",".join(str(i) for i in group) for group in value)
        return ",".join(str(i) for i in value)
    return str(value)


def parameter_strings(model: str, values: Mapping[str, Any], *, omit_unset: bool) -> dict[str, str]:
    """Render ``values`` for ``model`` in the template's key order; template keys missing from ``values`` are an
    error (every key is typed), extra keys (documented but not templated) follow when set. ``omit_unset`` never
    omits a key the backend requires: that one is rendered as the template's "unset" value."""
    keys = parameter_keys(model)
    missing = [k for k in keys if k not in values]
    if missing:
        raise KeyError(f"{model}: no value given for parameter keys {', '.join(missing)}")
    required = set(required_parameter_keys(model))
    unset_value = model_template(model).get("required_parameters_unset_value", "")
    out: dict[str, str] = {}
    for key in [*keys, *(k for k in values if k not in keys)]:
        value = values[key]
        if value is None:
            if key in required:
                out[key] = unset_value
                continue
            if omit_unset or key not in keys:
                continue
            out[key] = ""
        else:
            out[key] = parameter_string(key, value)
    return out


def upstream_defaults(model: str) -> dict[str, Any]:
    """Key -> upstream default (None where upstream has none), from the template data."""
    entry = model_template(model)
    rows = [*entry.get("parameters", []), *entry.get("extra_documented_parameters", [])]
    return {p["key"]: p.get("fixed_value", p.get("upstream_default")) for p in rows}


def parse_params(data: Mapping[str, Any] | None, model: type[Frozen]) -> Any:
    """Validate raw settings (YAML/JSON) into ``model``, raising SpecError with every problem."""
    from pydantic import ValidationError as PydanticValidationError

    from tritonforge.errors import SpecError
    from tritonforge.spec import format_errors

    try:
        return model.model_validate(raw_dict(data) if data is not None else {})
    except PydanticValidationError as err:
        raise SpecError(format_errors(err, model)) from None
