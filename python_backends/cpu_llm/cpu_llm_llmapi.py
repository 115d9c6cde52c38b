"""The LLM API tensors for the CPU engine (tritonforge): a module of the `cpu_llm` python-backend model, shipped next
to its model.py (which loads it by path). Imports only numpy, pyyaml and triton_python_backend_utils.

LLM API tensors (the `llmapi` runtime: the config declares `text_input`): the same engine serves the tensors of
TensorRT-LLM's LLM API model (`triton_backend/all_models/llmapi/tensorrt_llm`), so one `llm` ensemble works over
either runtime. The version folder's `model.yaml` is read where it applies: `model` (the checkpoint; relative to
the version folder), `max_batch_size` (sequences decoded together), `max_seq_len`, `max_input_len`; `triton_config`
is Triton's; the other LLM() arguments (parallel sizes, KV cache, ...) have no CPU counterpart and are ignored.
  Inputs: text_input STRING (the prompt, tokenized here with the checkpoint's tokenizer and its special tokens, as
  the LLM API does), streaming, sampling_param_{max_tokens (default 32, as SamplingParams), temperature, top_k,
  top_p, seed, frequency_penalty, presence_penalty, exclude_input_from_output (default true: the completion only),
  stop (strings, matched on the text; the text stops before them)}, return_finish_reason, return_stop_reason,
  return_cumulative_logprob, stop, lora_id/lora_name/lora_path (the adapter with that lora_id in the adapters
  table; an empty lora_name is the base model). sampling_param_best_of > 1, sampling_param_return_perf_metrics and
  sampling_param_logits_post_processor_name are answered UNSUPPORTED.
  Outputs: text_output STRING (streaming: the new text of each token, held back while it ends inside a UTF-8
  character or could be the start of a stop string), and finish_reason ("stop", "length", "cancelled"),
  stop_reason (the stop string, or "None") as strings, cumulative_logprob as FP32 (as the config declares; upstream's
model.py sends it as text, which contradicted the model's metadata), when asked for.
  tritonforge's additions: return_num_input_tokens / return_num_output_tokens BOOL -> num_input_tokens and
  num_output_tokens INT32 (the prompt's tokens; the tokens a response covers), as the engine's own tensors have.

Greedy or sampled: as the LLM API decides (`implies_greedy`), not as the engine contract does: a
sampling_param_temperature alone samples here, where the tensorrt_llm tensors' temperature alone decodes greedily.

model.py hands requests of a model whose config declares `text_input` to :class:`LLMAPITensors`, which turns them
into the engine's own tensors and, for each response, the engine's sequence back into text outputs.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# the LLM API tensors (runtime llmapi) -> the engine's own names
INPUTS = {
    "sampling_param_max_tokens": "request_output_len",
    "sampling_param_temperature": "temperature",
    "sampling_param_top_k": "runtime_top_k",
    "sampling_param_top_p": "runtime_top_p",
    "sampling_param_seed": "seed",
    "sampling_param_frequency_penalty": "frequency_penalty",
    "sampling_param_presence_penalty": "presence_penalty",
    "sampling_param_exclude_input_from_output": "exclude_input_in_output",
    "streaming": "streaming",
    "stop": "stop",
    "return_num_input_tokens": "return_num_input_tokens",  # tritonforge additions to the LLM API tensors
    "return_num_output_tokens": "return_num_output_tokens",
}
# accepted but answered UNSUPPORTED when set (the rules of model.py's UNSUPPORTED)
UNSUPPORTED = {"sampling_param_best_of": ("ne", 1), "sampling_param_return_perf_metrics": "true",
               "sampling_param_logits_post_processor_name": "text"}
MAX_TOKENS = 32  # SamplingParams.max_tokens' default
MAX_TEXT_BYTES = 1 << 20  # the tokenizers' limit
OUTPUT_FLAGS = ("return_finish_reason", "return_stop_reason", "return_cumulative_logprob")


def implies_greedy(*, temperature: float | None, top_p: float | None, top_k: int | None) -> bool:
    """Whether the LLM API decodes greedily given these sampling parameters (None: not sent). Upstream's rule
    (NVIDIA/TensorRT-LLM tensorrt_llm/sampling_params.py, SamplingParams.params_imply_greedy_decoding @
    a98a9061d72f6fd39f5d055ebdd2c6878a100e2c): greedy when none of the three is given, or top_k is 1, or top_p is 0,
    or temperature is 0. Otherwise it samples: a temperature alone samples from every token (top_k 0, top_p 1), a
    top_k or top_p alone at temperature 1. The engine contract differs (tensorrt_llm: greedy unless top_k > 1 or
    top_p is set), so model.py applies this one only to the LLM API tensors."""
    return (temperature is None and top_p is None and top_k is None) or top_k == 1 or top_p == 0 or temperature == 0


def decode(value: object, strict: bool = False) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="strict" if strict else "replace")
    return str(value)


def read_model_yaml(version_dir: str) -> dict[str, Any]:
    """The LLM API model's model.yaml (LLM() arguments) with a relative `model` resolved; {} without one."""
    path = os.path.join(version_dir, os.environ.get("LLM_CONFIG_PATH", "model.yaml"))
    if not os.path.isfile(path):
        return {}
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise RuntimeError(f"{path}: expected a mapping of LLM() arguments")
    model = data.get("model")
    if isinstance(model, str) and not os.path.isabs(model):
        data["model"] = os.path.join(version_dir, model)
    return data


class LLMAPITensors:
    """One model's translation between the LLM API tensors and the engine's.

    ``engine`` is the cpu_llm_engine module as model.py loaded it: its RequestError is the one model.py answers
    (a second load of that file would make another class, which model.py would not catch)."""

    def __init__(self, engine: ModuleType, tokenizer: Any, model_name: str, batched: bool) -> None:
        self.error, self.unsupported = engine.RequestError, engine._error_code("UNSUPPORTED")
        self.tokenizer, self.model_name, self.batched = tokenizer, model_name, batched

    def engine_inputs(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
        """LLM API inputs -> the engine's own (tokenized prompts, renamed sampling inputs), plus per-item stop
        strings and the requested output fields."""
        for name, rule in UNSUPPORTED.items():
            value = arrays.get(name)
            if value is None or value.size == 0:
                continue
            flat = value.reshape(-1)
            is_set = (bool(flat.any()) if rule == "true" else any(decode(x) for x in flat) if rule == "text"
                      else bool(np.any(flat != rule[1])))
            if is_set:
                raise self.error(f"input '{name}' is not supported by the cpu engine of model '{self.model_name}'",
                                 self.unsupported)
        out = {engine: arrays[name] for name, engine in INPUTS.items() if name in arrays}
        stop_only = "stop" in out and out["stop"].size and bool(out["stop"].reshape(-1)[0])
        texts = arrays.get("text_input")
        if texts is None or texts.size == 0:
            if stop_only:
                return out, None
            raise self.error("input 'text_input' (TYPE_STRING) is required")
        texts = texts.reshape(texts.shape[0], -1)
        batch = texts.shape[0]
        if texts.shape[1] != 1:  # the others were dropped without a word (robustness audit)
            raise self.error(f"text_input carries one prompt per batch item; got {texts.shape[1]}")
        encoded = []
        for b in range(batch):
            size = len(texts[b, 0]) if isinstance(texts[b, 0], bytes) else 0
            if size > MAX_TEXT_BYTES:  # before tokenizing: a 100 MB prompt took the stub to 13 GB (robustness audit)
                raise self.error(f"text_input[{b}] is {size} bytes; at most {MAX_TEXT_BYTES} are taken (a prompt "
                                 "that long is far past any model's context)")
            try:
                prompt = decode(texts[b, 0], strict=True)
            except UnicodeDecodeError:
                raise self.error(f"text_input[{b}] is not valid UTF-8") from None
            encoded.append(self.tokenizer.encode(prompt))
        width = max(1, *(len(e) for e in encoded))
        ids = np.zeros((batch, width), dtype=np.int32)
        for b, e in enumerate(encoded):
            ids[b, : len(e)] = e
        out["input_ids"] = ids
        out["input_lengths"] = np.array([[len(e)] for e in encoded], dtype=np.int32)
        if "request_output_len" not in out or out["request_output_len"].size == 0:
            out["request_output_len"] = np.full((batch, 1), MAX_TOKENS, dtype=np.int32)
        if "exclude_input_in_output" not in out:
            out["exclude_input_in_output"] = np.ones((batch, 1), dtype=bool)
        names = arrays.get("lora_name")
        if (names is None or not names.size) and "lora_id" in arrays and arrays["lora_id"].size:
            raise self.error("lora_id, lora_name and lora_path must all be provided together (a lora_id alone was "
                             "served by the base model)")
        if names is not None and names.size:
            flat = names.reshape(names.shape[0], -1)
            chosen = [bool(decode(flat[b if flat.shape[0] > b else 0][0]).strip()) for b in range(batch)]
            if any(chosen):
                if "lora_id" not in arrays or arrays["lora_id"].size == 0:
                    raise self.error("lora_id, lora_name and lora_path must all be provided together")
                if not all(chosen):
                    raise self.error("the prompts of one request must all use an adapter or all the base model")
                out["lora_task_id"] = arrays["lora_id"]
        stops = arrays.get("sampling_param_stop")
        per_item = []
        for b in range(batch):
            row = [] if stops is None or stops.size == 0 else stops[b if stops.shape[0] > b else 0].reshape(-1)
            per_item.append([t for t in (decode(x) for x in row) if t])
        flags = {name: bool(arrays[name].reshape(-1)[0]) for name in OUTPUT_FLAGS
                 if name in arrays and arrays[name].size}
        if flags.get("return_cumulative_logprob"):
            out["return_log_probs"] = np.ones((batch, 1), dtype=bool)
        return out, {"stop": per_item, "flags": flags}

    def stop_string_hit(self, seq: Any) -> bool:
        """After a new token: whether the text now holds a stop string (the text is cut before it)."""
        text = self.tokenizer.decode(seq.output, skip_special_tokens=True)
        hits = [(text.find(s), s) for s in seq.stop_strings if s in text]
        if not hits:
            return False
        index, string = min(hits)
        seq.text_cut, seq.stop_reason = index, string
        return True

    def response(self, seq: Any) -> Any:
        """LLM API outputs for ``seq``: the whole text (final, not streaming) or the new text since the last
        response (streaming; None when nothing can be sent yet)."""
        job = seq.job
        tokens = seq.output if seq.exclude_input or job.streaming else seq.prompt + seq.output
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = getattr(seq, "text_cut", None)
        if cut is not None:
            text = text[: len(text) - len(self.tokenizer.decode(seq.output, skip_special_tokens=True)) + cut]
        if job.streaming:
            done = seq.done or cut is not None
            safe = text
            if not done:
                if safe.endswith("\ufffd"):
                    return None  # inside a UTF-8 character: wait for the next token
                hold = max((len(s) - 1 for s in seq.stop_strings), default=0)
                safe = safe[: len(safe) - hold] if hold else safe
            sent = getattr(seq, "text_sent", 0)
            if len(safe) <= sent and not done:
                return None
            piece, seq.text_sent = safe[sent:], max(sent, len(safe))
            counted = getattr(seq, "tokens_sent", 0)
            new_tokens, seq.tokens_sent = len(seq.output) - counted, len(seq.output)
        else:
            piece, new_tokens = text, len(seq.output)
        tensors = [pb_utils.Tensor("text_output", np.array([[piece.encode("utf-8")]], dtype=np.object_))]
        flags = getattr(seq, "flags", {})
        if flags.get("return_finish_reason"):
            reason = getattr(seq, "finish_reason", None)
            tensors.append(pb_utils.Tensor("finish_reason", np.array([[str(reason).encode()]], dtype=np.object_)))
        if flags.get("return_stop_reason"):
            reason = getattr(seq, "stop_reason", None)
            tensors.append(pb_utils.Tensor("stop_reason", np.array([[str(reason).encode()]], dtype=np.object_)))
        if flags.get("return_cumulative_logprob"):  # FP32, as the config declares (upstream's model.py sends text)
            total = float(sum(seq.log_probs))
            tensors.append(pb_utils.Tensor("cumulative_logprob", np.array([[total]], dtype=np.float32)))
        if seq.return_num_input_tokens:
            tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[len(seq.prompt)]], dtype=np.int32)))
        if seq.return_num_output_tokens:
            tensors.append(pb_utils.Tensor("num_output_tokens", np.array([[new_tokens]], dtype=np.int32)))
        if not self.batched:
            tensors = [pb_utils.Tensor(t.name(), t.as_numpy()[0]) for t in tensors]
        return pb_utils.InferenceResponse(output_tensors=tensors)
