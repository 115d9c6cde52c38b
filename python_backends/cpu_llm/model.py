"""Triton python-backend model (tritonforge): a CPU LLM engine with the contract of TensorRT-LLM's `tensorrt_llm`.

The `cpu` target serves the generator with this file in place of `backend: "tensorrtllm"`: same model name, same
input/output tensor names, dtypes and shapes as the `tensorrt_llm` template of NVIDIA TensorRT-LLM's
`triton_backend/all_models/inflight_batcher_llm`, so the upstream `preprocessing` -> `tensorrt_llm` ->
`postprocessing` ensemble and its clients work unchanged. The network is a Hugging Face causal LM run by
`transformers` on the CPU in fp32 (or bf16 / int8 weights: parameter `weights`).

Inputs (max_batch_size > 0: every tensor has a leading batch dimension; a request may carry B > 1 prompts)
  input_ids INT32 [-1] (right-padded when B > 1), input_lengths INT32 [1], request_output_len INT32 [1]
  Implemented optional inputs, upstream defaults:
    streaming BOOL (false), exclude_input_in_output BOOL (parameter `exclude_input_in_output`, default false),
    end_id INT32 (the checkpoint's generation_config eos ids when absent; -1 = none), pad_id INT32,
    temperature FP32 (1.0; below 1e-5 greedy), runtime_top_k INT32 (0 = off), runtime_top_p FP32 (0 = unset),
    seed UINT64 (0; `random_seed` is accepted as an alias), min_tokens INT32 (1), repetition_penalty FP32 (1.0),
    presence_penalty FP32 (0.0), frequency_penalty FP32 (0.0), stop_words_list / bad_words_list INT32 [2, -1]
    (upstream format: row 0 the flattened token ids, row 1 the cumulative end offsets padded with -1),
    embedding_bias FP32 [-1] (empty = none; shorter than the vocabulary is zero-padded), return_log_probs,
    return_context_logits, return_generation_logits, return_perf_metrics, return_num_input_tokens,
    return_num_output_tokens BOOL, stop BOOL (true: stop the running request that has this request's id).
  Greedy decoding when temperature is 0, or top_k is 1, or neither top_k nor top_p is set (TensorRT-LLM's
  default for these tensors; the LLM API tensors follow the LLM API's rule instead, in which a temperature alone
  samples: cpu_llm_llmapi.py); otherwise temperature, then top-k, then top-p sampling with a per-request
  `torch.Generator` seeded from `seed` (0 when absent, as upstream), so sampled outputs are reproducible.
  Penalties count the prompt and the generated tokens. Stop words are matched at token level against the end of
  the sequence and kept in the output; end_id stops generation and is not part of the output (as upstream).
  min_tokens defaults to 1 as in TensorRT-LLM, so end_id is never the first token (transformers' generate() has
  no such floor: the only case where greedy output differs from it). `stop` (true) with the id of a running
  request ends that request with what it has generated (FINAL), and the stop request gets an empty FINAL.
  Accepted and ignored (no effect without beam search / KV-cache reuse, as upstream): len_penalty,
  early_stopping, beam_search_diversity_rate, runtime_top_p_min, runtime_top_p_reset_ids, retention_*,
  decoder_input_ids / decoder_input_lengths (decoder-only models; the upstream preprocessing always sends them),
  prompt_table_extra_ids and prompt_vocab_size (only meaningful with a prompt table), draft_logits and
  draft_acceptance_threshold (only meaningful with draft_input_ids).
  Accepted but answered with an UNSUPPORTED error when a request sets them: beam_width > 1,
  num_return_sequences > 1, runtime_top_p_decay != 1, lora_weights / lora_config (adapters are loaded at start-up
  from the adapters table, not sent with requests), lora_task_id when no adapters are configured,
  prompt_embedding_table, encoder_input_features / encoder_output_lengths, draft_input_ids,
  cross_attention_mask, skip_cross_attn_blocks (true), mrope_*, context_phase_params, guided_decoding_*,
  lookahead_* (upstream also rejects them without an executor lookahead config).

Outputs (per response; batch dimension 1, one beam)
  output_ids INT32 [1, 1, n], sequence_length INT32 [1, 1]: streaming -> the new token of each step; otherwise the
  whole sequence (prompt + generated, or generated only with exclude_input_in_output).
  When asked for: cum_log_probs FP32 [1, 1] and output_log_probs FP32 [1, 1, n] (return_log_probs: log-softmax of
  the logits the token was drawn from, after penalties/bias/temperature, before top-k/top-p), context_logits
  [1, prompt, vocab], generation_logits [1, 1, n, vocab] (raw logits), num_input_tokens / num_output_tokens
  INT32 [1, 1], and the perf outputs (arrival/first_scheduled/first_token/last_token_time_ns INT64 [1, 1],
  kv_cache_* = 0, acceptance_rate = 0, *_draft_tokens = 0). batch_index INT32 [1, 1] when a request has B > 1.

Decoupled (`model_transaction_policy { decoupled: true }`, the normal configuration): `execute` validates, hands
the requests to the scheduler and returns None. Streaming requests get one response per generated token and then
an empty response with the FINAL flag; other requests get one response per prompt, the last one with FINAL.
A bad request gets an error response with FINAL (to that request only). A cancelled request (client gone,
`is_cancelled()`) stops generating at the next iteration and is closed with a CANCELLED error + FINAL.
(Observed with tritonserver 2.51: cancelling a stream to the *ensemble* does not cancel the request Triton made
for this step, so the engine then runs that request to its end; cancelling a request to this model does work.)
Not decoupled: `execute` blocks until its requests are done and returns one response each (no streaming, B = 1).

Parameters (config.pbtxt `parameters`, all optional; `${...}` template placeholders count as unset)
  checkpoint_dir   the Hugging Face checkpoint folder. Relative paths are relative to the version folder
                   (`<model>/<version>/`); a leading `$$TRITON_MODEL_DIRECTORY` is the model folder. Default:
                   `checkpoint` (i.e. `<model>/<version>/checkpoint`).
  max_batch_size   sequences decoded together (default: the config's max_batch_size, or 8); more wait in a queue
  max_seq_len      prompt + output tokens per sequence (default: the checkpoint's max_position_embeddings)
  max_input_len    prompt tokens per sequence (default: max_seq_len - 1)
  torch_threads    intra-op threads for torch (default: the machine's cores minus one, at least 1: the Triton
                   server, its gRPC frontend and local clients need a core while the engine computes; on 2 cores
                   one torch thread measured 2x the tokens/s of two, at concurrency 1 and 1.3x at 8)
  exclude_input_in_output  default for requests that do not send the input (default false, as upstream)
  attn_implementation      "sdpa" (default) or "eager"
  weights          "fp32" (default: greedy output equals transformers' generate() token for token), "bf16" or "int8".
                   bf16: the checkpoint loaded in torch.bfloat16 (logits are sampled in float32); fast on CPUs with
                   AMX or AVX512-BF16 (measured on a 2-core Xeon with AMX, SmolLM2-135M: 0.98-1.08x fp32's tokens/s
                   at batch 1, 1.8-1.9x at batch 8, greedy tokens 0.89-1.00 equal to fp32's; docs/llm.md), slower
                   than fp32 where emulated; combines with LoRA adapters (peft on the bf16 base). int8:
                   torch's dynamic int8 quantization of every Linear layer (weights int8 per tensor, activations
                   quantized per call; fbgemm kernels). A 135M model reads 4x fewer weight bytes per token: measured
                   here 1.9x faster at batch 1 and 2.6x at batch 8 (docs/performance.md); outputs differ slightly
                   from fp32. Not with LoRA adapters (refused at load).
  adapters_table   LoRA adapters (JSON, relative to the version folder; default: none), as tritonforge ships it:
                   {"adapters": {name: {"lora_task_id": int, "path": "adapters/<name>", ...}}}, each path a PEFT
                   adapter folder (relative to the version folder, or absolute)

LoRA (with an adapters table; needs `peft`): every adapter is loaded once, at start-up, on ONE shared base model
(`PeftModel.from_pretrained(base, first)` + `load_adapter` for the others). A request picks its adapter with
`lora_task_id` (UINT64 [1], the table's id; an unknown id gets an error listing the known ones); without it, the
base model. Sequences with different adapters share the running batch and its iterations: each forward pass hands
peft one adapter name per row (`adapter_names=`, peft's mixed-adapter batch inference for LoRA layers, `__base__`
for base-model rows), so one forward serves every adapter and the base model at once. An iteration with only
base-model sequences runs with the adapters disabled (`disable_adapter()`), i.e. exactly the plain base model.

Batching (iteration-level, "continuous"): one background thread owns the model. Each iteration it (1) closes
cancelled or stopped requests, (2) admits waiting requests while fewer than max_batch_size sequences run and
prefills them together in one left-padded forward pass (sampling their first token), merging their KV cache into
the running batch (left-padding the shorter one), and (3) runs ONE batched decode step for every running sequence
(a [B, 1] forward with the 2-D padding mask and per-sequence position ids), samples each sequence with its own
settings and retires finished sequences (dropping their cache rows and the all-padding cache columns). Requests
that arrive while others are generating join at the next iteration.

Limits: one beam; full-attention KV caches (`DynamicCache` layers: Llama, Mistral without sliding window, Qwen2,
Phi, ...); the whole running batch shares one padded cache, so a long sequence makes the padded width of all;
a prefill runs before (not fused with) the decode step of its iteration, and a long prompt delays the running
sequences by one prefill; fp32, bf16 or int8 weights only (no fp16); LoRA only from the adapters table (no
lora_weights in requests); no prompt tuning, speculative decoding or guided decoding; a request with more prompts
than max_batch_size runs alone (over the limit) rather than being split.

LLM API tensors (the `llmapi` runtime: the config declares `text_input`): the same engine serves the tensors of
TensorRT-LLM's LLM API model (`triton_backend/all_models/llmapi/tensorrt_llm`), so one `llm` ensemble works over
either runtime; cpu_llm_llmapi.py, next to this file, translates them (its docstring has the contract).

Only numpy, torch, transformers and triton_python_backend_utils are imported (never tritonforge), so the file
runs in an NGC Triton container too.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _load_sibling(name: str) -> ModuleType:
    """A module shipped next to this model.py, loaded by path: neither Triton's sys.path nor another model's module
    of the same name decides which file it is."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_engine = _load_sibling("cpu_llm_engine")
RequestError, _error_code, _log = _engine.RequestError, _engine._error_code, _engine._log
_Engine, _Job, _Sequence, _Collector = _engine._Engine, _engine._Job, _engine._Sequence, _engine._Collector
_llmapi = _load_sibling("cpu_llm_llmapi")

FINAL = getattr(pb_utils, "TRITONSERVER_RESPONSE_COMPLETE_FINAL", 1)
SAMPLING_EPS = 1e-5  # temperatures below it decode greedily

# inputs accepted but not implemented: a request that sets them gets an UNSUPPORTED error
#   name -> "any": present with any element; "nonempty": more than zero elements; ("ne", default): value != default;
#   "true": a true boolean; "text": a non-empty string
UNSUPPORTED = {
    "beam_width": ("ne", 1),
    "num_return_sequences": ("ne", 1),
    "runtime_top_p_decay": ("ne", 1.0),
    "lora_weights": "nonempty",
    "lora_config": "nonempty",
    "prompt_embedding_table": "nonempty",
    "encoder_input_features": "nonempty",
    "encoder_output_lengths": "any",
    "draft_input_ids": "nonempty",
    "cross_attention_mask": "nonempty",
    "skip_cross_attn_blocks": "true",
    "mrope_rotary_cos_sin": "nonempty",
    "mrope_position_deltas": "any",
    "context_phase_params": "nonempty",
    "guided_decoding_guide_type": "text",
    "guided_decoding_guide": "text",
    "lookahead_window_size": "any",
    "lookahead_ngram_size": "any",
    "lookahead_verification_set_size": "any",
}

WEIGHTS = ("fp32", "bf16", "int8")  # the `weights` parameter

PERF_OUTPUTS_INT32 = ("kv_cache_alloc_new_blocks", "kv_cache_reused_blocks", "kv_cache_alloc_total_blocks",
                      "total_accepted_draft_tokens", "total_draft_tokens")



def _truthy(text: object) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "y", "t", "on")


# ---------------------------------------------------------------------------------------------------- requests


def _int8_linear_layers(torch: Any, model: Any) -> Any:
    """torch's dynamic int8 quantization of the Linear layers (see the `weights` parameter).

    torch deprecates torch.ao.quantization for torchao (its DeprecationWarning says "will be removed in 2.10"; 2.13
    still ships it unchanged) and warns that the quantized dtypes under it will go. torchao's quantize_ is another
    dependency with other kernels and outputs, so this keeps torch's API while torch has it: its two warnings (one
    per model load in the server log, nothing the operator can act on) are silenced for this call only, and a torch
    without it is named in the load error. tests/unit/test_cpu_llm_model.py checks both.
    """
    import warnings

    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as exc:
        raise RuntimeError(
            f"weights=int8 needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} does not "
            f"have ({exc}); serve with weights=fp32") from exc
    linear = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"torch\.ao\.quantization is deprecated", DeprecationWarning)
        warnings.filterwarnings("ignore", r"torch\.quantize_per_tensor, .* are deprecated", UserWarning)
        return quantize_dynamic(model, linear, dtype=torch.qint8)


class TritonPythonModel:
    # set in initialize() (None unless the LLM API tensors are served): the tokenizer and the LLMAPITensors
    tokenizer: Any
    text: Any

    def initialize(self, args: dict[str, Any]) -> None:
        import torch

        self.torch = torch
        self.config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", "tensorrt_llm")
        self.model_version = args.get("model_version", "1")  # the engine's request metrics' label
        params = {k: (v or {}).get("string_value", "") for k, v in self.config.get("parameters", {}).items()}

        def param(name: str, default: Any = None) -> Any:
            value = params.get(name, "")
            value = value.strip() if isinstance(value, str) else value
            return default if value in ("", None) or str(value).startswith("${") else value

        model_dir = args["model_repository"]
        version_dir = os.path.join(model_dir, str(args["model_version"]))
        self.llmapi = any(i.get("name") == "text_input" for i in self.config.get("input", []))
        llm_args = _llmapi.read_model_yaml(version_dir) if self.llmapi else {}
        for key in ("max_batch_size", "max_seq_len", "max_input_len"):  # LLM() arguments with a CPU meaning
            if llm_args.get(key):
                params[key] = str(llm_args[key])
        checkpoint = str(llm_args.get("model") or param("checkpoint_dir", "checkpoint"))
        if checkpoint.startswith("$$TRITON_MODEL_DIRECTORY"):
            checkpoint = model_dir + checkpoint[len("$$TRITON_MODEL_DIRECTORY"):]
        if not os.path.isabs(checkpoint):
            checkpoint = os.path.join(version_dir, checkpoint)
        if not os.path.isfile(os.path.join(checkpoint, "config.json")):
            raise RuntimeError(
                f"model '{self.model_name}': checkpoint_dir {checkpoint} has no config.json (parameter checkpoint_dir "
                "is relative to the version folder, or starts with $$TRITON_MODEL_DIRECTORY, or is absolute)"
            )

        # one core left for the stub's I/O, of those this process may use (cores.py: affinity set, cgroup quota)
        threads = int(param("torch_threads", 0)) or max(1, _load_sibling("cores").available_cores() - 1)
        torch.set_num_threads(threads)
        self.decoupled = bool(self.config.get("model_transaction_policy", {}).get("decoupled", False))
        self.batched = int(self.config.get("max_batch_size", 0)) > 0
        self.exclude_input_default = _truthy(param("exclude_input_in_output", "false"))

        from transformers import AutoModelForCausalLM, GenerationConfig
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        attn = param("attn_implementation", "sdpa")
        self.weights = param("weights", "fp32")
        if self.weights not in WEIGHTS:
            raise RuntimeError(f"model '{self.model_name}': parameter weights={self.weights!r} is not one of "
                               + ", ".join(WEIGHTS))
        # bf16: the checkpoint loaded in bfloat16 (the engine samples from the logits in float32)
        dtype = torch.bfloat16 if self.weights == "bf16" else torch.float32
        # the build machine's CPU was checked; this is the one that serves
        cores = _load_sibling("cores")
        if self.weights == "bf16" and (warning := cores.emulated_bf16_warning(f"model '{self.model_name}'")):
            pb_utils.Logger.log_warn(warning)
        # the checkpoint's own code (its auto_map) only when the spec's trust_remote_code said so
        trusted = _truthy(param("trust_remote_code", "false"))
        try:
            model: Any = AutoModelForCausalLM.from_pretrained(
                checkpoint, dtype=dtype, attn_implementation=attn, trust_remote_code=trusted
            )
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_pretrained(
                checkpoint, torch_dtype=dtype, attn_implementation=attn, trust_remote_code=trusted
            )
        model.eval()
        if self.weights == "int8":
            if param("adapters_table", None):
                raise RuntimeError(
                    f"model '{self.model_name}': weights=int8 does not combine with LoRA adapters (peft wraps the "
                    "fp32 Linear layers the quantization replaces); serve adapters with weights=fp32 or bf16")
            model = _int8_linear_layers(torch, model)
        self.model = model
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        positions = getattr(text_config, "max_position_embeddings", None) or 2048
        self.max_seq_len = int(param("max_seq_len", positions))
        self.max_input_len = int(param("max_input_len", self.max_seq_len - 1))
        default_batch = int(self.config.get("max_batch_size", 0)) or 8
        self.max_batch = max(1, int(param("max_batch_size", default_batch)))
        try:
            eos = GenerationConfig.from_pretrained(checkpoint).eos_token_id
        except Exception:
            eos = getattr(text_config, "eos_token_id", None)
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.default_end_ids = [int(e) for e in eos if e is not None and int(e) >= 0]
        self.logits_dtypes: dict[str, Any] = {}  # output name -> numpy dtype
        for out in self.config.get("output", []):
            if out["name"] in ("context_logits", "generation_logits"):
                self.logits_dtypes[out["name"]] = pb_utils.triton_string_to_numpy(out["data_type"])

        with torch.inference_mode():  # warm up (first-call allocations, lazy initialisation)
            model(input_ids=torch.zeros((1, 2), dtype=torch.long), use_cache=False, logits_to_keep=1)
        self.peft: Any = None  # the peft.PeftModel over self.model, with adapters
        self.adapter_names: dict[int, str] = {}  # lora_task_id -> adapter name
        table = param("adapters_table", None)
        if table:
            self._load_adapters(table, model_dir, version_dir)
        self.tokenizer = self.text = None
        if self.llmapi:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(checkpoint, trust_remote_code=trusted)
            self.text = _llmapi.LLMAPITensors(_engine, self.tokenizer, self.model_name, self.batched)
        self.request_gauges = _load_sibling("request_metrics").request_gauges(
            pb_utils, self.model_name, self.model_version, lambda message: _log("warn", message))
        self.engine = _Engine(self, threads)
        _log("info", f"model '{self.model_name}': {type(model).__name__} from {checkpoint} on CPU, {self.weights}; "
                     f"max_batch_size={self.max_batch} max_seq_len={self.max_seq_len} "
                     f"max_input_len={self.max_input_len} decoupled={self.decoupled}")

    def _load_adapters(self, table: str, model_dir: str, version_dir: str) -> None:
        """Every adapter of the table on one shared base model (see the module docstring)."""
        def resolve(path: str) -> str:
            if path.startswith("$$TRITON_MODEL_DIRECTORY"):
                path = model_dir + path[len("$$TRITON_MODEL_DIRECTORY"):]
            return path if os.path.isabs(path) else os.path.join(version_dir, path)

        with open(resolve(table), encoding="utf-8") as f:
            entries = json.load(f).get("adapters", {})
        if not entries:
            return
        from peft import PeftModel

        ordered = sorted(entries.items(), key=lambda kv: int(kv[1]["lora_task_id"]))
        for name, entry in ordered:
            folder = resolve(entry["path"])
            if self.peft is None:
                with warnings.catch_warnings():
                    # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` while wrapping the
                    # model: peft's to fix, and in Triton's log at every load it would only say that
                    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                            category=FutureWarning)
                    self.peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(folder, adapter_name=name, is_trainable=False)
            self.adapter_names[int(entry["lora_task_id"])] = name
        self.peft.eval()
        _log("info", f"model '{self.model_name}': {len(ordered)} LoRA adapter(s) on the base model: "
                     + ", ".join(f"{n} (lora_task_id {int(e['lora_task_id'])})" for n, e in ordered))

    # ------------------------------------------------------------------------------------------- execute

    def execute(self, requests: list[Any]) -> list[Any] | None:
        collectors, jobs = [], []
        for request in requests:
            sender = request.get_response_sender() if self.decoupled else _Collector()
            collectors.append(sender)
            job = None
            try:
                job = self._job(request, sender)
                if job is not None:
                    jobs.append(job)
            except RequestError as err:
                job = job or _Job(request, sender, self._request_id(request), False, 1)
                job.fail(str(err), err.code)
            except Exception as err:  # a bug here must not take the other requests down
                job = job or _Job(request, sender, self._request_id(request), False, 1)
                job.fail(f"internal error while reading the request: {type(err).__name__}: {err}",
                         pb_utils.TritonError.INTERNAL)
        if jobs:
            try:
                self.engine.submit(jobs)  # together: requests that arrive together are prefilled together
            except RequestError as err:
                for job in jobs:
                    job.fail(str(err), err.code)
        if self.decoupled:
            return None
        responses = []
        for collector in collectors:
            collector.event.wait()
            responses.append(collector.response or pb_utils.InferenceResponse(output_tensors=[]))
        return responses

    def finalize(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()

    # -------------------------------------------------------------------------------------- request parsing

    @staticmethod
    def _request_id(request: Any) -> str:
        try:
            return request.request_id() or ""
        except Exception:
            return ""

    def _job(self, request: Any, sender: Any) -> Any:
        """Read and check one request; returns the job to schedule, or None when it was answered already."""
        arrays = {}
        for tensor in request.inputs():
            arrays[tensor.name()] = tensor.as_numpy()
        if not self.batched:
            arrays = {k: v[np.newaxis, ...] for k, v in arrays.items()}
        request_id = self._request_id(request)
        llmapi_extra = None
        if self.llmapi:
            arrays, llmapi_extra = self.text.engine_inputs(arrays)

        def present(name: str) -> bool:
            return name in arrays and arrays[name].size > 0

        if present("stop") and bool(arrays["stop"].reshape(-1)[0]):
            job = _Job(request, sender, request_id, False, 1)
            if not request_id:  # checked first: a stop without an id stopped every running request without one
                job.fail("stop=true needs the request id of the request to stop", pb_utils.TritonError.INVALID_ARG)
                return None
            if not self.engine.request_stop(request_id):
                _log("verbose", f"stop: no running request with id '{request_id}'")
            job.send(final=True)
            return None

        for name, rule in UNSUPPORTED.items():
            if name not in arrays:
                continue
            value = arrays[name]
            if rule == "any":
                is_set = True
            elif rule == "nonempty":
                is_set = value.size > 0
            elif rule == "true":
                is_set = value.size > 0 and bool(value.reshape(-1).any())
            elif rule == "text":
                is_set = any(bytes(x) if not isinstance(x, str) else x for x in value.reshape(-1))
            else:
                is_set = value.size > 0 and bool(np.any(value.reshape(-1) != rule[1]))
            if is_set:
                raise RequestError(
                    f"input '{name}' is not supported by the cpu engine of model '{self.model_name}' "
                    "(it serves one beam of a decoder-only model, with LoRA adapters only from its adapters table, "
                    "without prompt tuning, speculative or guided decoding); leave it out or send its default",
                    _error_code("UNSUPPORTED"),
                )

        if not present("input_ids"):
            raise RequestError("input 'input_ids' (TYPE_INT32 [-1]) is required")
        ids = arrays["input_ids"]
        if ids.ndim == 1:
            ids = ids[np.newaxis, :]
        batch = ids.shape[0]
        if not self.batched and batch != 1:
            raise RequestError("a model without batching takes one prompt per request")
        if not present("request_output_len"):
            raise RequestError("input 'request_output_len' (TYPE_INT32 [1]) is required")

        def scalar(name: str, b: int, default: Any) -> Any:
            if not present(name):
                return default
            flat = arrays[name].reshape(arrays[name].shape[0], -1)
            row = flat[b if flat.shape[0] > b else 0]
            return default if row.size == 0 else row[0].item()

        streaming = bool(scalar("streaming", 0, False))
        if streaming and not self.decoupled:
            raise RequestError("streaming is only supported when the model is decoupled "
                               "(model_transaction_policy { decoupled: true })")
        if batch > 1 and not self.decoupled:
            raise RequestError("a request with more than one prompt needs the decoupled transaction policy")

        job = _Job(request, sender, request_id, streaming, batch)
        for b in range(batch):
            job.sequences.append(self._sequence(job, b, ids, arrays, scalar, present))
            if llmapi_extra is not None:
                seq = job.sequences[-1]
                seq.stop_strings = llmapi_extra["stop"][b]
                seq.flags = llmapi_extra["flags"]
        job.open = len(job.sequences)
        return job

    def _sequence(self, job: Any, b: int, ids: np.ndarray, arrays: dict[str, np.ndarray],
                  scalar: Callable[[str, int, Any], Any], present: Callable[[str], bool]) -> Any:
        torch = self.torch
        where = f"batch item {b}: " if job.batch > 1 else ""
        width = ids.shape[1]
        length = int(scalar("input_lengths", b, width))
        if length <= 0:
            raise RequestError(f"{where}the prompt is empty (input_lengths={length}): send at least one token")
        if length > width:
            raise RequestError(f"{where}input_lengths={length} is longer than input_ids ({width} tokens)")
        if length > self.max_input_len:
            raise RequestError(f"{where}the prompt has {length} tokens, more than max_input_len={self.max_input_len}")
        prompt = [int(t) for t in ids[b, :length]]
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise RequestError(f"{where}input_ids holds {bad[0]}, outside the vocabulary [0, {self.vocab_size})")
        max_new = int(scalar("request_output_len", b, 0))
        if max_new <= 0:
            raise RequestError(f"{where}request_output_len={max_new} must be > 0")
        if length + max_new > self.max_seq_len:
            raise RequestError(
                f"{where}prompt ({length} tokens) + request_output_len ({max_new}) = {length + max_new} exceeds "
                f"max_seq_len={self.max_seq_len}"
            )

        seq = _Sequence(job, b, prompt)
        seq.max_new = max_new
        seq.adapter = None
        if present("lora_task_id"):
            task_id = int(scalar("lora_task_id", b, 0))
            if not self.adapter_names:
                raise RequestError(
                    f"input 'lora_task_id' is not supported by the cpu engine of model '{self.model_name}': it has no "
                    "LoRA adapters configured (parameter adapters_table); leave it out", _error_code("UNSUPPORTED"))
            if task_id not in self.adapter_names:
                known = ", ".join(f"{i} ({n})" for i, n in sorted(self.adapter_names.items()))
                raise RequestError(f"{where}lora_task_id {task_id} is not an adapter of model '{self.model_name}'; "
                                   f"known: {known}; leave lora_task_id out for the base model")
            seq.adapter = self.adapter_names[task_id]
        end_id = scalar("end_id", b, None)
        seq.end_ids = self.default_end_ids if end_id is None else ([int(end_id)] if int(end_id) >= 0 else [])
        seq.pad_id = int(scalar("pad_id", b, -1))
        default_exclude = self.exclude_input_default
        seq.exclude_input = bool(scalar("exclude_input_in_output", b, default_exclude))

        temperature = float(scalar("temperature", b, 1.0))
        top_k = int(scalar("runtime_top_k", b, 0))
        top_p = float(scalar("runtime_top_p", b, 0.0))
        if not 0 <= temperature < float("inf"):  # NaN too: it compares false with everything
            raise RequestError(f"{where}temperature={temperature} must be a finite number >= 0")
        if top_k < 0:
            raise RequestError(f"{where}runtime_top_k={top_k} must be >= 0")
        if not 0 <= top_p <= 1.0:
            raise RequestError(f"{where}runtime_top_p={top_p} must be in (0, 1] (or 0: not set)")
        seq.temperature, seq.top_k, seq.top_p = temperature, top_k, (top_p if top_p > 0 else None)
        if self.llmapi:  # the LLM API's rule: temperature alone samples (from every token)
            seq.greedy = _llmapi.implies_greedy(temperature=temperature if present("temperature") else None,
                                                top_p=top_p if present("runtime_top_p") else None,
                                                top_k=top_k if present("runtime_top_k") else None)
        else:  # the tensorrt_llm (engine) contract's: without top_k > 1 or top_p, greedy whatever the temperature
            seq.greedy = temperature == 0 or top_k == 1 or (top_k == 0 and seq.top_p is None)
        # a temperature this small is greedy in effect, and dividing logits by it overflows float32 into a
        # distribution of NaNs (vLLM's _SAMPLING_EPS rule)
        seq.greedy = seq.greedy or temperature < SAMPLING_EPS
        if not seq.greedy:
            seed = scalar("seed", b, None)
            if seed is None:
                seed = scalar("random_seed", b, 0)
            seq.generator = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)

        seq.min_tokens = int(scalar("min_tokens", b, 1))
        seq.repetition = float(scalar("repetition_penalty", b, 1.0))
        seq.presence = float(scalar("presence_penalty", b, 0.0))
        seq.frequency = float(scalar("frequency_penalty", b, 0.0))
        if not seq.repetition > 0:
            raise RequestError(f"{where}repetition_penalty={seq.repetition} must be a number > 0")
        for name, value in (("presence_penalty", seq.presence), ("frequency_penalty", seq.frequency)):
            if value != value or value in (float("inf"), float("-inf")):
                raise RequestError(f"{where}{name}={value} must be a finite number")
        if seq.repetition != 1.0 or seq.presence != 0.0 or seq.frequency != 0.0:
            seq.counts = torch.bincount(torch.tensor(prompt, dtype=torch.long), minlength=self.vocab_size).float()

        seq.stop_words = self._word_list(arrays, "stop_words_list", b, where) if present("stop_words_list") else []
        seq.bad_words = self._word_list(arrays, "bad_words_list", b, where) if present("bad_words_list") else []
        seq.bias = None
        if present("embedding_bias"):
            flat = arrays["embedding_bias"].reshape(arrays["embedding_bias"].shape[0], -1)
            row = flat[b if flat.shape[0] > b else 0].astype(np.float32)
            if row.size > self.vocab_size:
                raise RequestError(f"{where}embedding_bias has {row.size} values, more than the vocabulary "
                                   f"({self.vocab_size})")
            if row.size and np.any(row != 0):
                bias = torch.zeros(self.vocab_size)
                bias[: row.size] = torch.from_numpy(row)
                seq.bias = bias
        for flag in ("return_log_probs", "return_context_logits", "return_generation_logits",
                     "return_perf_metrics", "return_num_input_tokens", "return_num_output_tokens"):
            setattr(seq, flag, bool(scalar(flag, b, False)))
        return seq

    def _word_list(self, arrays: dict[str, np.ndarray], name: str, b: int, where: str) -> list[list[int]]:
        """Upstream's [2, L] word list (flattened ids, cumulative offsets padded with -1) -> list of token lists."""
        value = arrays[name]
        if value.ndim == 2:  # [2, L] without a batch dimension
            value = value[np.newaxis]
        if value.ndim != 3 or value.shape[1] != 2:
            raise RequestError(f"{where}{name} must have shape [batch, 2, L], got {list(value.shape)}")
        item = value[b if value.shape[0] > b else 0]
        flat, offsets = [int(x) for x in item[0]], [int(x) for x in item[1]]
        words, start, previous = [], 0, 0
        for i, end in enumerate(offsets):
            if end < 0:
                if any(o >= 0 for o in offsets[i:]):
                    raise RequestError(f"{where}{name}: offsets continue after the -1 padding: {offsets}")
                break
            if end > len(flat) or (end <= previous and i > 0) or end == 0:
                raise RequestError(f"{where}{name}: offsets must increase and stay within the {len(flat)} ids: "
                                   f"{offsets}")
            word = flat[start:end]
            if any(not 0 <= t < self.vocab_size for t in word):
                raise RequestError(f"{where}{name}: token ids outside the vocabulary [0, {self.vocab_size})")
            words.append(word)
            start = previous = end
        return words

    # ------------------------------------------------------------------------------------------- responses

    def response_for(self, seq: Any, tokens: list[int], log_probs: list[float], gen_logits: list[Any],
                     include_context: bool) -> Any:
        """The output tensors of one response for ``seq`` carrying ``tokens``."""
        if self.llmapi:
            return self.text.response(seq)
        job = seq.job
        n = len(tokens)
        tensors = [
            pb_utils.Tensor("output_ids", np.asarray(tokens, dtype=np.int32).reshape(1, 1, n)),
            pb_utils.Tensor("sequence_length", np.array([[n]], dtype=np.int32)),
        ]
        if seq.return_log_probs:
            total = float(sum(seq.log_probs))
            tensors.append(pb_utils.Tensor("cum_log_probs", np.array([[total]], dtype=np.float32)))
            tensors.append(pb_utils.Tensor("output_log_probs",
                                           np.asarray(log_probs, dtype=np.float32).reshape(1, 1, len(log_probs))))
        if seq.return_context_logits and include_context and seq.context_logits is not None:
            dtype = self.logits_dtypes.get("context_logits", np.float32)
            tensors.append(pb_utils.Tensor("context_logits", seq.context_logits[np.newaxis].astype(dtype)))
        if seq.return_generation_logits:
            dtype = self.logits_dtypes.get("generation_logits", np.float32)
            stacked = np.stack(gen_logits) if gen_logits else np.zeros((0, self.vocab_size), dtype=np.float32)
            tensors.append(pb_utils.Tensor("generation_logits", stacked[np.newaxis, np.newaxis].astype(dtype)))
        if job.batch > 1:
            tensors.append(pb_utils.Tensor("batch_index", np.array([[seq.index]], dtype=np.int32)))
        if seq.return_num_input_tokens:
            tensors.append(pb_utils.Tensor("num_input_tokens", np.array([[len(seq.prompt)]], dtype=np.int32)))
        if seq.return_num_output_tokens:
            tensors.append(pb_utils.Tensor("num_output_tokens", np.array([[n]], dtype=np.int32)))
        if seq.return_perf_metrics:
            times = (("arrival_time_ns", job.arrival_ns), ("first_scheduled_time_ns", seq.first_scheduled_ns),
                     ("first_token_time_ns", seq.first_token_ns), ("last_token_time_ns", seq.last_token_ns))
            for name, value in times:
                tensors.append(pb_utils.Tensor(name, np.array([[value]], dtype=np.int64)))
            for name in PERF_OUTPUTS_INT32:
                tensors.append(pb_utils.Tensor(name, np.zeros((1, 1), dtype=np.int32)))
            tensors.append(pb_utils.Tensor("acceptance_rate", np.zeros((1, 1), dtype=np.float32)))
        if not self.batched:  # no batch dimension in the config: drop the leading 1
            tensors = [pb_utils.Tensor(t.name(), t.as_numpy()[0]) for t in tensors]
        return pb_utils.InferenceResponse(output_tensors=tensors)
