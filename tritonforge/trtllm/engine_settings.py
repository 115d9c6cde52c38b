"""What a TensorRT-LLM engine is built with (the engine path, images <= 26.07): typed settings every combination
TensorRT-LLM refuses is refused by first, the architectures it converts, the LoRA modules it knows.

Spec-level: the spec types an LLM's `engine:` section with these; the builder (:mod:`tritonforge.builders.
trtllm_engine`) turns them into commands.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tritonforge.spec_base import Checked, Flag, Found, Frozen, NonNeg, Pos, raw_dict, raw_int, raw_list

# Hugging Face architectures -> the TensorRT-LLM example family whose convert_checkpoint.py handles them
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",  # TensorRT-LLM converts Mistral with the llama script
    "Qwen2ForCausalLM": "qwen",
    "QWenLMHeadModel": "qwen",
    "GPT2LMHeadModel": "gpt",
}
FAMILY_ALIASES = {"llama": "llama", "mistral": "llama", "qwen": "qwen", "qwen2": "qwen", "gpt": "gpt", "gpt2": "gpt"}
LORA_MODULES = (
    "attn_qkv",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_dense",
    "mlp_h_to_4h",
    "mlp_4h_to_h",
    "mlp_gate",
)
Quantization = Literal["none", "fp8", "int4_awq", "w4a8_awq", "int8_sq", "int8_wo", "int4_wo"]


# ================================================================ settings


class LoraSettings(Frozen):
    enabled: Flag = False
    max_rank: Pos = 64
    target_modules: list[Literal[LORA_MODULES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["attn_q", "attn_k", "attn_v"]
    )
    lora_dirs: list[str] = Field(default_factory=list, description="adapters to build in (optional)")


class SpeculativeSettings(Frozen):
    mode: Literal["none", "draft_tokens_external", "medusa", "eagle"] = "none"
    max_draft_len: NonNeg = 0
    medusa_model_dir: str | None = None
    num_medusa_heads: Pos = 4
    eagle_model_dir: str | None = None
    num_eagle_layers: Pos = 4


class EngineSettings(Checked):
    """What a TensorRT-LLM engine is built with; every combination TensorRT-LLM refuses is refused here first."""

    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    quantization: Quantization = "none"
    kv_cache_quantization: Literal["none", "int8", "fp8"] = "none"
    tp_size: Pos = 1
    pp_size: Pos = 1
    max_batch_size: Pos = 64
    max_input_len: Pos = 1024
    max_seq_len: Pos = 2048
    max_num_tokens: Pos = 8192
    max_beam_width: Pos = 1
    paged_kv_cache: Flag = True
    use_paged_context_fmha: Flag = True
    gemm_plugin: Literal["auto", "disable", "float16", "bfloat16", "float32", "fp8"] = "auto"
    gather_logits: Literal["none", "context", "generation", "all"] = "none"
    logits_dtype: Literal["float16", "float32"] | None = None
    chunked_context: Flag = Field(False, description="intent: serve with enable_chunked_context")
    kv_cache_reuse: Flag = Field(True, description="intent: serve with enable_kv_cache_reuse")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    speculative: SpeculativeSettings = Field(default_factory=SpeculativeSettings)
    calib_dataset: str | None = Field(None, description="quantize.py --calib_dataset (a local folder offline)")
    calib_size: Pos = 512
    workers: Pos = 1

    @property
    def world_size(self) -> int:
        """GPUs one engine needs: tp_size × pp_size."""
        return self.tp_size * self.pp_size

    @classmethod
    def _cross(cls, data: dict[str, Any]) -> Found:
        found: Found = []
        inp, seq, tokens = (
            raw_int(data.get(k, d))
            for k, d in (("max_input_len", 1024), ("max_seq_len", 2048), ("max_num_tokens", 8192))
        )
        if inp is not None and seq is not None and inp >= seq:
            found.append(
                (
                    ("max_input_len",),
                    f"{inp} must be smaller than max_seq_len {seq}: max_seq_len counts the prompt and the "
                    "generated tokens",
                )
            )
        chunked = data.get("chunked_context") is True
        if inp is not None and tokens is not None and tokens < inp and not chunked:
            found.append(
                (
                    ("max_num_tokens",),
                    f"{tokens} is smaller than max_input_len {inp}: a prompt longer than max_num_tokens only runs "
                    "with chunked_context",
                )
            )
        paged = data.get("paged_kv_cache", True) is not False
        paged_fmha = data.get("use_paged_context_fmha", True) is not False
        if paged_fmha and not paged:
            found.append((("use_paged_context_fmha",), "needs paged_kv_cache"))
        for feature, default in (("kv_cache_reuse", True), ("chunked_context", False)):
            if data.get(feature, default) is True:
                if not paged:
                    found.append(((feature,), "needs paged_kv_cache"))
                if not paged_fmha:
                    found.append(((feature,), "needs use_paged_context_fmha (paged context FMHA)"))
        spec = raw_dict(data.get("speculative"))
        mode = spec.get("mode", "none")
        if mode != "none":
            draft = raw_int(spec.get("max_draft_len", 0))
            if mode == "draft_tokens_external" and not draft:
                found.append((("speculative", "max_draft_len"), "must be at least 1 for draft_tokens_external"))
            if mode == "medusa" and not spec.get("medusa_model_dir"):
                found.append((("speculative", "medusa_model_dir"), "must name the Medusa heads' checkpoint"))
            if mode == "eagle" and not spec.get("eagle_model_dir"):
                found.append((("speculative", "eagle_model_dir"), "must name the EAGLE checkpoint"))
            if data.get("gather_logits") in ("context", "all"):
                found.append(
                    (
                        ("gather_logits",),
                        f"'{data.get('gather_logits')}' (context logits) is not supported with speculative decoding",
                    )
                )
            beam = raw_int(data.get("max_beam_width", 1))
            if beam is not None and beam > 1:
                found.append((("max_beam_width",), f"{beam}: speculative decoding runs with beam width 1"))
            if mode in ("medusa", "eagle") and data.get("quantization", "none") != "none":
                found.append(
                    (
                        ("quantization",),
                        f"tritonforge plans {mode} builds unquantized only (its convert script "
                        "is not ModelOpt's quantize.py)",
                    )
                )
        lora = raw_dict(data.get("lora"))
        if lora.get("enabled") is True and "target_modules" in lora and not raw_list(lora.get("target_modules")):
            found.append((("lora", "target_modules"), f"name at least one of {', '.join(LORA_MODULES)}"))
        if lora.get("lora_dirs") and lora.get("enabled") is not True:
            found.append((("lora", "lora_dirs"), "is only used with lora.enabled: true"))
        if data.get("kv_cache_quantization") == "fp8" and data.get("dtype") == "float32":
            found.append((("kv_cache_quantization",), "fp8 KV cache needs dtype float16 or bfloat16"))
        return found


def engine_settings(data: dict[str, Any] | None) -> EngineSettings:
    """Raw settings (YAML) -> EngineSettings, or SpecError listing every problem with its field path."""
    from tritonforge.trtllm.params import parse_params

    return parse_params(data, EngineSettings)
