"""Triton python-backend model: text -> token ids for the LLM ensemble, like TensorRT-LLM's `preprocessing`.

Tensor names, dtypes and shapes are those of the `preprocessing` model of NVIDIA TensorRT-LLM's
`triton_backend/all_models/inflight_batcher_llm`, so the upstream ensemble wiring works unchanged.

Inputs (a leading batch dimension when max_batch_size > 0)
  QUERY                  TYPE_STRING [1]   the prompt
  REQUEST_OUTPUT_LEN     TYPE_INT32  [1]   passed through
  BAD_WORDS_DICT         TYPE_STRING [-1]  optional; words (any strings) banned from the output
  STOP_WORDS_DICT        TYPE_STRING [-1]  optional; words that end generation
  EMBEDDING_BIAS_WORDS   TYPE_STRING [-1]  optional, with EMBEDDING_BIAS_WEIGHTS TYPE_FP32 [-1]
  END_ID, PAD_ID         TYPE_INT32  [1]   optional; default: the tokenizer's eos id, pad id (eos when none)
  PROMPT_TABLE_EXTRA_ID  TYPE_UINT64 [1]   optional (p-tuning KV-cache reuse id)
  apply_chat_template    TYPE_BOOL   [1]   optional, a tritonforge addition (upstream clients never send it):
                                           render QUERY as one user message with the checkpoint's chat template
  chat_messages          TYPE_STRING [1]   optional, a tritonforge addition: a whole conversation, JSON
                                           [{"role": ..., "content": "..."}, ...] (roles as the template knows
                                           them: system, user, assistant, ...), rendered by the chat template in
                                           place of QUERY (which is still required: the text a client without
                                           templates would send)
  lora_name              TYPE_STRING [1]   optional, a tritonforge addition (with LoRA adapters): the adapter to
                                           use, looked up in the adapters table; absent or empty: the base model
  LORA_TASK_ID           TYPE_UINT64 [1]   optional (the ensemble's upstream `lora_task_id`): passed on unchanged
  LORA_WEIGHTS, LORA_CONFIG  engine dtype [-1, -1], TYPE_INT32 [-1, 3]  optional (gpu: the ensemble's upstream
                                           `lora_weights`/`lora_config`): passed on unchanged
  lora_send_weights      TYPE_BOOL   [1]   optional, a tritonforge addition (gpu): attach the selected adapter's
                                           weights even if this instance sent them before — what a client does
                                           after TensorRT-LLM answered "LoRA task N not found in cache" (evicted)
  DECODER_QUERY, IMAGE_BYTES, IMAGE_URL, IMAGES, IMAGE_SIZES, VIDEO_BYTES (encoder-decoder and multimodal inputs
  of the template's versions) are accepted; a request that sets them gets an UNSUPPORTED error (the cpu engine
  serves decoder-only text models). Vision outputs (PIXEL_VALUES, ...) are never produced.
Outputs
  INPUT_ID INT32 [-1] (right-padded with the pad id), REQUEST_INPUT_LEN INT32 [1], DECODER_INPUT_ID INT32 [-1]
  (= [pad id]), REQUEST_DECODER_INPUT_LEN INT32 [1] (= 1), REQUEST_OUTPUT_LEN INT32 [-1], BAD_WORDS_IDS and
  STOP_WORDS_IDS INT32 [2, -1] (upstream format: row 0 the token ids of all words one after the other, row 1 the
  cumulative end offset of each word, both padded to the same length with 0 / -1; [2, 0] when none),
  EMBEDDING_BIAS FP32 [-1] (vocabulary-sized, or empty), OUT_END_ID INT32 [1], OUT_PAD_ID INT32 [1], and
  OUT_PROMPT_TABLE_EXTRA_IDS UINT64 [-1] only when PROMPT_TABLE_EXTRA_ID is sent (as upstream), and
  OUT_LORA_TASK_ID UINT64 [1] only when an adapter is selected (lora_name or LORA_TASK_ID): absent, tensorrt_llm
  runs the base model. OUT_LORA_WEIGHTS [-1, -1] in the engine's dtype (FP16, BF16 or FP32) and OUT_LORA_CONFIG
  INT32 [-1, 3] (gpu, with `lora_weights_dir`) only when weights go with the request: the first request of each
  adapter on this instance, and every request that sets lora_send_weights (TensorRT-LLM keeps them in its LoRA
  cache by task id after that).

Text mode (the LLM API path: the config declares the output PROMPT instead of INPUT_ID): the same inputs
(REQUEST_OUTPUT_LEN not needed), plus optional exclude_input_in_output BOOL [1]; outputs PROMPT STRING [1] (the
query, or its chat-template rendering), EXCLUDE_INPUT BOOL [1] (the request's exclude_input_in_output, else the
parameter `exclude_input_in_output`, default true) and, only when an adapter is selected, LORA_ID UINT64 [1],
LORA_NAME STRING [1] and LORA_PATH STRING [1] (the adapter's `path` in the table, relative to the tensorrt_llm
model's version folder) for the llmapi model's lora_id/lora_name/lora_path. TensorRT-LLM's LLM API tokenizes the
prompt itself.

Parameters (config.pbtxt; `${...}` placeholders count as unset)
  tokenizer_dir        Hugging Face tokenizer folder, relative to the version folder (or absolute, or starting
                       with $$TRITON_MODEL_DIRECTORY = the model folder). Default: `tokenizer`.
  add_special_tokens   add BOS etc. when encoding a raw prompt (default true, as upstream)
  apply_chat_template  default for requests that do not send `apply_chat_template` (default false)
  adapters_table       the adapters table (JSON, relative to the version folder like tokenizer_dir; default: none):
                       {"adapters": {name: {"lora_task_id": int, "system_prompt": str | null, ...}}}. An unknown
                       lora_name gets an error listing the known names. An adapter with a system prompt always
                       renders the chat template, with the system prompt as the first (system) message.
  lora_weights_dir     gpu: the adapters in TensorRT-LLM's format, <dir>/<lora_task_id>/model.lora_weights.npy and
                       model.lora_config.npy (relative like tokenizer_dir; default: none, no weights are sent).

Chat formatting renders the tokenizer's jinja2 `chat_template` (tokenizer_config.json or chat_template.jinja) with
jinja2 directly, as transformers' `apply_chat_template` does: a sandboxed environment with trim_blocks,
lstrip_blocks and loopcontrols, `raise_exception`, `strftime_now` and a `tojson` that keeps non-ASCII text,
`messages=[{"role": "user", "content": QUERY}]` (or the chat_messages), `add_generation_prompt=True` and the special
tokens
(`bos_token`, `eos_token`, ...). The rendered text already holds the template's special tokens, so it is encoded
without adding more. An adapter's system prompt comes first unless the conversation has a system message of its own.

Bad input gets an error response for that request only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from types import ModuleType
from typing import Any, NoReturn, cast

import numpy as np
import triton_python_backend_utils as pb_utils

UNSUPPORTED_INPUTS = ("DECODER_QUERY", "IMAGE_BYTES", "IMAGE_URL", "IMAGES", "IMAGE_SIZES", "VIDEO_BYTES")


class RequestError(Exception):
    def __init__(self, message: str, code: Any = None) -> None:
        super().__init__(message)
        self.code = pb_utils.TritonError.INVALID_ARG if code is None else code


def _truthy(text: Any) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "y", "t", "on")


def _resolve(path: str, model_dir: str, version_dir: str) -> str:
    if path.startswith("$$TRITON_MODEL_DIRECTORY"):
        path = model_dir + path[len("$$TRITON_MODEL_DIRECTORY"):]
    return path if os.path.isabs(path) else os.path.join(version_dir, path)


def _lora_weights_tensor(name: str, weights: np.ndarray) -> Any:
    """OUT_LORA_WEIGHTS in the engine's dtype (tensorrt_llm's input is rendered with it). bf16 is stored as its
    uint16 bit pattern (numpy has no bfloat16) and goes out as a BF16 tensor through DLPack."""
    if weights.dtype != np.uint16:
        return pb_utils.Tensor(name, weights)
    import torch

    bf16 = torch.from_numpy(np.ascontiguousarray(weights).view(np.int16)).view(torch.bfloat16)
    return pb_utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(bf16))


# a text longer than this is refused before it is decoded or tokenized: a 100 MB prompt took the engine's stub to
# 13 GB before its length was checked against max_input_len (robustness audit); the tokenizers' limit too
MAX_TEXT_BYTES = 1 << 20


def _text(item: Any, name: str) -> str:
    if isinstance(item, bytes) and len(item) > MAX_TEXT_BYTES:
        raise RequestError(f"{name} is {len(item)} bytes; at most {MAX_TEXT_BYTES} are taken (a prompt that long is "
                           "far past any model's context)")
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8")
        except UnicodeDecodeError as err:
            raise RequestError(f"{name} is not valid UTF-8 ({err.reason} at byte {err.start})") from None
    return str(item)


def _conversation(value: Any) -> list[dict[str, str]] | None:
    """chat_messages: None when absent or empty, else the JSON list of {"role", "content"} messages it holds, checked
    (a bad one is this request's error, naming what is wrong)."""
    if value is None:
        return None
    text = _text(value, "chat_messages").strip()
    if not text:
        return None
    try:
        messages = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"chat_messages is not JSON: {err}") from None
    except RecursionError:  # an internal error before (robustness audit)
        raise RequestError('chat_messages is nested too deeply: give a flat JSON list of {"role", "content"} '
                           "objects") from None
    if not isinstance(messages, list) or not messages:
        raise RequestError('chat_messages must be a non-empty JSON list of {"role": ..., "content": ...} objects')
    for i, message in enumerate(messages):
        if (not isinstance(message, dict) or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)):
            raise RequestError(f'chat_messages[{i}] must be an object {{"role": str, "content": str}}, got '
                               f"{json.dumps(message)[:80]}")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def compile_chat_template(source: str) -> Any:
    """A jinja2 template compiled the way transformers compiles chat templates."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> NoReturn:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | str | None = None,
               separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def find_chat_template(tokenizer_dir: str, tokenizer: Any = None) -> str | None:
    """The default chat template of a tokenizer folder (chat_template.jinja, else tokenizer_config.json), or None."""
    jinja_file = os.path.join(tokenizer_dir, "chat_template.jinja")
    if os.path.isfile(jinja_file):
        with open(jinja_file, encoding="utf-8") as f:
            return f.read()
    config_file = os.path.join(tokenizer_dir, "tokenizer_config.json")
    template = None
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            template = json.load(f).get("chat_template")
    if template is None and tokenizer is not None:
        template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    elif isinstance(template, list):  # [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value", "") for k, v in config.get("parameters", {}).items()}

        def param(name: str, default: str) -> str:
            value = (params.get(name) or "").strip()
            return default if not value or value.startswith("${") else value

        model_dir = args["model_repository"]
        version_dir = os.path.join(model_dir, str(args["model_version"]))
        self.tokenizer_dir = _resolve(param("tokenizer_dir", "tokenizer"), model_dir, version_dir)
        self.add_special_tokens = _truthy(param("add_special_tokens", "true"))
        self.chat_default = _truthy(param("apply_chat_template", "false"))
        # upstream's exact call (NVIDIA/TensorRT-LLM triton_backend/all_models/inflight_batcher_llm/
        # preprocessing/1/model.py @ beb339f52cd272074176448006a3184f7d18f20b): trust_remote_code loads
        # tokenizers shipped as code (Qwen's tokenization_qwen.py + qwen.tiktoken), here only when the spec says
        # so (upstream always passes True: any code a checkpoint shipped ran inside Triton), legacy=False the fixed
        # sentencepiece handling of special tokens
        trusted = _truthy(param("trust_remote_code", "false"))
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            self.tokenizer_dir, legacy=False, padding_side="left", trust_remote_code=trusted
        )
        tok = self.tokenizer
        if tok.eos_token_id is None:
            raise RuntimeError(f"the tokenizer in {self.tokenizer_dir} has no eos token: set one, or send END_ID")
        self.end_id = int(tok.eos_token_id)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.vocab_size = len(tok)
        self.special_tokens = dict(tok.special_tokens_map)  # bos_token, eos_token, ... as the template sees them
        # control tokens a client writes in a message are read as text: the rendered conversation is tokenized
        # with special tokens parsed, and `<|im_end|><|im_start|>system ...` in a user's message would open a system
        # turn of its own (past an adapter's system_prompt, which the operator set)
        self.control_tokens = _load_sibling("control_tokens")
        self.control = self.control_tokens.control_pattern(tok)
        source = find_chat_template(self.tokenizer_dir, tok)
        self.chat_template = compile_chat_template(source) if source else None
        self.batched = int(config.get("max_batch_size", 0)) > 0
        # the LLM API path (tritonforge's llm ensemble over TensorRT-LLM's llmapi model) wants text, not token ids
        self.text_mode = any(o.get("name") == "PROMPT" for o in config.get("output", []))
        self.exclude_default = _truthy(param("exclude_input_in_output", "true"))
        probe = tok.encode("a") if self.text_mode else []
        self.adds_bos = bool(probe) and tok.bos_token_id is not None and probe[0] == tok.bos_token_id
        self.adapters: dict[str, dict[str, Any]] = {}  # name -> {"lora_task_id": int, "system_prompt": str | None}
        table = param("adapters_table", "")
        if table:
            table = _resolve(table, model_dir, version_dir)
            with open(table, encoding="utf-8") as f:
                self.adapters = dict(json.load(f).get("adapters", {}))
        lora_dir = param("lora_weights_dir", "")
        self.lora_dir = _resolve(lora_dir, model_dir, version_dir) if lora_dir else None
        # task id -> (weights [1, rows, width], config [1, rows, 3])
        self.lora_loaded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.lora_sent: set[int] = set()  # task ids whose weights this instance has sent to TensorRT-LLM

    def lora_tensors(self, task_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The TensorRT-LLM LoRA tensors of an adapter (read once, then kept)."""
        if task_id not in self.lora_loaded:
            # only called by lora_outputs once it has returned when lora_dir is None
            folder = os.path.join(cast(str, self.lora_dir), str(task_id))
            try:
                weights = np.load(os.path.join(folder, "model.lora_weights.npy"))
                config = np.load(os.path.join(folder, "model.lora_config.npy"))
            except OSError:
                raise RequestError(f"no TensorRT-LLM LoRA weights for lora_task_id {task_id} in {self.lora_dir}; "
                                   "send lora_weights and lora_config with the request") from None
            # kept in the stored dtype: the build converted them to the engine's dtype (TensorRT-LLM refuses others)
            self.lora_loaded[task_id] = (weights, config.astype(np.int32))
        return self.lora_loaded[task_id]

    def lora_outputs(
        self, arrays: dict[str, np.ndarray], task_ids: list[int | None], per_item: Callable[[str, Any], list[Any]]
    ) -> list[Any]:
        """OUT_LORA_WEIGHTS/OUT_LORA_CONFIG for this request, or [] when TensorRT-LLM has the weights cached."""
        if "LORA_WEIGHTS" in arrays and arrays["LORA_WEIGHTS"].size:
            if "LORA_CONFIG" not in arrays or not arrays["LORA_CONFIG"].size:
                raise RequestError("lora_weights was sent without lora_config: send both")
            # Triton already checked the declared type (the engine's): passed on as sent
            return [pb_utils.Tensor("OUT_LORA_WEIGHTS", arrays["LORA_WEIGHTS"]),
                    pb_utils.Tensor("OUT_LORA_CONFIG", arrays["LORA_CONFIG"].astype(np.int32))]
        chosen = {t for t in task_ids if t is not None}
        if self.lora_dir is None or not chosen:
            return []
        resend = any(bool(x) for x in per_item("lora_send_weights", False))
        if not resend and chosen <= self.lora_sent:
            return []
        if len(chosen) > 1:
            raise RequestError("the prompts of one request use different adapters whose weights must be sent: send "
                               "one adapter per request")
        (task_id,) = chosen
        weights, config = self.lora_tensors(task_id)
        batch = len(task_ids)
        self.lora_sent.add(task_id)
        return [_lora_weights_tensor("OUT_LORA_WEIGHTS", np.repeat(weights, batch, axis=0)),
                pb_utils.Tensor("OUT_LORA_CONFIG", np.repeat(config, batch, axis=0))]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._response(request))
            except RequestError as err:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), err.code)))
            except Exception as err:  # one bad request must not fail the others of the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"preprocessing failed: {type(err).__name__}: {err}", pb_utils.TritonError.INTERNAL)))
        return responses

    # ----------------------------------------------------------------------------------------------- encoding

    def render_chat(
        self, query: str, system_prompt: str | None = None, messages: list[dict[str, str]] | None = None
    ) -> str:
        """The chat-template rendering of one user message (or of ``messages``, a conversation), after the system
        prompt if any and the conversation has none (special tokens included)."""
        if self.chat_template is None:
            what = ("the adapter has a system_prompt" if system_prompt else
                    "chat_messages were sent" if messages else "apply_chat_template is set")
            raise RequestError(f"{what} but the tokenizer in {self.tokenizer_dir} has no chat_template")
        import jinja2

        messages = list(messages) if messages else [{"role": "user", "content": query}]
        messages = [{**m, "content": self.control_tokens.defuse(self.control, m["content"])} for m in messages]
        if system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": system_prompt})
        try:
            return self.chat_template.render(
                messages=messages, tools=None, documents=None,
                add_generation_prompt=True, **self.special_tokens,
            )
        except jinja2.exceptions.TemplateError as err:
            raise RequestError(f"the chat template failed: {err}") from None

    def encode_query(
        self, query: str, chat: bool, system_prompt: str | None = None,
        messages: list[dict[str, str]] | None = None,
    ) -> list[int]:
        if chat or system_prompt or messages:
            return self.tokenizer.encode(self.render_chat(query, system_prompt, messages), add_special_tokens=False)
        return self.tokenizer.encode(query, add_special_tokens=self.add_special_tokens)

    def word_list(self, rows: np.ndarray | None, batch: int) -> np.ndarray:
        """Upstream's [batch, 2, L] word-list format from per-item lists of strings (None: [batch, 2, 0])."""
        if rows is None:
            return np.zeros((batch, 2, 0), dtype=np.int32)
        flat_ids, offsets = [], []
        for row in rows:
            ids, ends = [], []
            for word in np.asarray(row, dtype=object).reshape(-1):
                word = _text(word, "a stop/bad word")
                if not word:
                    continue
                tokens = self.tokenizer.encode(word, add_special_tokens=False)
                if not tokens:
                    continue
                ids.extend(tokens)
                ends.append(len(ids))
            flat_ids.append(ids)
            offsets.append(ends)
        width = max(1, *(len(ids) for ids in flat_ids))
        out = np.zeros((len(flat_ids), 2, width), dtype=np.int32)
        out[:, 1, :] = -1
        for i, (ids, ends) in enumerate(zip(flat_ids, offsets, strict=True)):
            out[i, 0, : len(ids)] = ids
            out[i, 1, : len(ends)] = ends
        return out

    def embedding_bias(self, words: np.ndarray | None, weights: np.ndarray | None, batch: int) -> np.ndarray:
        if words is None or weights is None:
            return np.zeros((batch, 0), dtype=np.float32)
        out = np.zeros((batch, self.vocab_size), dtype=np.float32)
        for i in range(batch):
            row_words = np.asarray(words[i if words.shape[0] > i else 0], dtype=object).reshape(-1)
            row_weights = np.asarray(weights[i if weights.shape[0] > i else 0], dtype=np.float32).reshape(-1)
            if len(row_words) != len(row_weights):
                raise RequestError(f"EMBEDDING_BIAS_WORDS has {len(row_words)} words but EMBEDDING_BIAS_WEIGHTS "
                                   f"{len(row_weights)} weights")
            for word, weight in zip(row_words, row_weights, strict=True):
                for token in self.tokenizer.encode(_text(word, "EMBEDDING_BIAS_WORDS"), add_special_tokens=False):
                    out[i, token] += weight
        return out

    def lookup_adapter(self, name: str) -> tuple[int, str | None]:
        """(lora_task_id, system_prompt) of the adapter called ``name``; a clear error for an unknown name."""
        entry = self.adapters.get(name)
        if entry is None:
            known = ", ".join(sorted(self.adapters)) if self.adapters else "none (no adapters are configured)"
            raise RequestError(f"unknown adapter '{name}' (lora_name): known adapters are {known}; leave lora_name "
                               "out for the base model")
        return int(entry["lora_task_id"]), entry.get("system_prompt") or None

    def adapter_rows(
        self, arrays: dict[str, np.ndarray], batch: int, per_item: Callable[[str, Any], list[Any]]
    ) -> tuple[list[int | None], list[str | None]]:
        """Per batch item: the lora_task_id to send on (None: the base model) and the adapter's system prompt."""
        names = [None if n is None else _text(n, "lora_name") for n in per_item("lora_name", None)]
        if any(n and not n.strip() for n in names):  # "" is the tensor left empty; blanks are a mistake, not the base
            raise RequestError("lora_name is blank: send an adapter's name, or an empty one for the base model")
        names = [n.strip() or None if n is not None else None for n in names]
        ids: list[int | None] = [None] * batch
        if "LORA_TASK_ID" in arrays and arrays["LORA_TASK_ID"].size:
            ids = [int(t) for t in per_item("LORA_TASK_ID", 0)]
        task_ids: list[int | None] = []
        prompts: list[str | None] = []
        for name, raw_id in zip(names, ids, strict=True):
            if name is None:
                task_ids.append(raw_id)
                prompts.append(None)
                continue
            task_id, system_prompt = self.lookup_adapter(name)
            if raw_id is not None and raw_id != task_id:
                raise RequestError(f"lora_name '{name}' is lora_task_id {task_id} but lora_task_id {raw_id} was "
                                   "sent: send one of them")
            task_ids.append(task_id)
            prompts.append(system_prompt)
        if any(t is None for t in task_ids) and any(t is not None for t in task_ids):
            raise RequestError("the prompts of one request must all use an adapter or all the base model: send "
                               "them in separate requests")
        return task_ids, prompts

    def text_response(
        self, arrays: dict[str, np.ndarray], queries: np.ndarray, chat: list[bool], task_ids: list[int | None],
        system_prompts: list[str | None], conversations: list[list[dict[str, str]] | None],
        per_item: Callable[[str, Any], list[Any]],
    ) -> Any:
        """The LLM API path: the prompt as text (chat template applied), the exclude flag and the adapter."""
        batch = queries.shape[0]
        prompts = []
        for i in range(batch):
            query = _text(queries[i, 0], "text_input (QUERY)")
            if chat[i] or system_prompts[i] or conversations[i]:
                text = self.render_chat(query, system_prompts[i], conversations[i])
                # the LLM API tokenizes the prompt with the tokenizer's special tokens: a template that writes the
                # BOS token itself would get two
                bos = self.special_tokens.get("bos_token")
                if self.adds_bos and isinstance(bos, str) and bos and text.startswith(bos):
                    text = text[len(bos):]
                prompts.append(text)
            else:
                prompts.append(query)
        exclude = per_item("exclude_input_in_output", self.exclude_default)
        tensors = [
            pb_utils.Tensor("PROMPT", np.array([[p.encode("utf-8")] for p in prompts], dtype=np.object_)),
            pb_utils.Tensor("EXCLUDE_INPUT", np.array([[bool(x)] for x in exclude], dtype=bool)),
        ]
        if any(t is not None for t in task_ids):  # absent: tensorrt_llm serves the base model (all three or none)
            by_id = {int(e["lora_task_id"]): (n, e) for n, e in self.adapters.items()}
            # adapter_rows made them all set or all None: all set here (the casts below)
            tensors += [
                pb_utils.Tensor("LORA_ID", np.array([[t] for t in task_ids], dtype=np.uint64)),
                pb_utils.Tensor("LORA_NAME", np.array([[by_id[cast(int, t)][0].encode()] for t in task_ids],
                                                      dtype=np.object_)),
                pb_utils.Tensor("LORA_PATH", np.array([[str(by_id[cast(int, t)][1].get("path", "")).encode()]
                                                       for t in task_ids], dtype=np.object_)),
            ]
        if not self.batched:
            tensors = [pb_utils.Tensor(t.name(), t.as_numpy()[0]) for t in tensors]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _response(self, request: Any) -> Any:
        arrays = {t.name(): t.as_numpy() for t in request.inputs()}
        if not self.batched:
            arrays = {k: v[np.newaxis, ...] for k, v in arrays.items()}
        for name in UNSUPPORTED_INPUTS:
            value = arrays.get(name)
            is_set = value is not None and (
                any(len(x) for x in value.reshape(-1)) if value.dtype == np.object_ else value.size > 0
            )
            if is_set:
                raise RequestError(f"input '{name}' is not supported: the cpu engine serves decoder-only text models",
                                   getattr(pb_utils.TritonError, "UNSUPPORTED", pb_utils.TritonError.INVALID_ARG))
        if "QUERY" not in arrays or arrays["QUERY"].size == 0:
            raise RequestError("input 'QUERY' (TYPE_STRING [1]) is required")
        if "REQUEST_OUTPUT_LEN" not in arrays and not self.text_mode:
            raise RequestError("input 'REQUEST_OUTPUT_LEN' (TYPE_INT32 [1]) is required")
        queries = arrays["QUERY"].reshape(arrays["QUERY"].shape[0], -1)
        batch = queries.shape[0]

        def per_item(name: str, default: Any) -> list[Any]:
            """Each batch item's value of input ``name`` (one row broadcast to all): a Python scalar, or the bytes
            of a string tensor; ``default`` when the input is absent or empty."""
            if name not in arrays or arrays[name].size == 0:
                return [default] * batch
            flat = arrays[name].reshape(arrays[name].shape[0], -1)
            values = [flat[i if flat.shape[0] > i else 0][0] for i in range(batch)]
            return [v.item() if isinstance(v, np.generic) else v for v in values]

        chat = [bool(c) for c in per_item("apply_chat_template", self.chat_default)]
        conversations = [_conversation(m) for m in per_item("chat_messages", None)]
        task_ids, system_prompts = self.adapter_rows(arrays, batch, per_item)
        if self.text_mode:
            return self.text_response(arrays, queries, chat, task_ids, system_prompts, conversations, per_item)
        encoded = []
        for i in range(batch):
            query = _text(queries[i, 0], "text_input (QUERY)")
            encoded.append(self.encode_query(query, chat[i], system_prompts[i], conversations[i]))
        end_ids = per_item("END_ID", self.end_id)
        pad_ids = per_item("PAD_ID", self.pad_id)
        width = max(1, *(len(ids) for ids in encoded))
        input_id = np.empty((batch, width), dtype=np.int32)
        for i, ids in enumerate(encoded):
            input_id[i, :] = pad_ids[i]
            input_id[i, : len(ids)] = ids
        lengths = np.array([[len(ids)] for ids in encoded], dtype=np.int32)

        tensors = [
            pb_utils.Tensor("INPUT_ID", input_id),
            pb_utils.Tensor("REQUEST_INPUT_LEN", lengths),
            pb_utils.Tensor("DECODER_INPUT_ID", np.array([[p] for p in pad_ids], dtype=np.int32)),
            pb_utils.Tensor("REQUEST_DECODER_INPUT_LEN", np.ones((batch, 1), dtype=np.int32)),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", arrays["REQUEST_OUTPUT_LEN"].astype(np.int32).reshape(batch, -1)),
            pb_utils.Tensor("BAD_WORDS_IDS", self.word_list(arrays.get("BAD_WORDS_DICT"), batch)),
            pb_utils.Tensor("STOP_WORDS_IDS", self.word_list(arrays.get("STOP_WORDS_DICT"), batch)),
            pb_utils.Tensor("EMBEDDING_BIAS", self.embedding_bias(
                arrays.get("EMBEDDING_BIAS_WORDS"), arrays.get("EMBEDDING_BIAS_WEIGHTS"), batch)),
            pb_utils.Tensor("OUT_END_ID", np.array([[e] for e in end_ids], dtype=np.int32)),
            pb_utils.Tensor("OUT_PAD_ID", np.array([[p] for p in pad_ids], dtype=np.int32)),
        ]
        if "PROMPT_TABLE_EXTRA_ID" in arrays and arrays["PROMPT_TABLE_EXTRA_ID"].size:
            extra = per_item("PROMPT_TABLE_EXTRA_ID", 0)
            table = np.where(input_id >= self.vocab_size, np.array(extra, dtype=np.uint64)[:, None], 0)
            tensors.append(pb_utils.Tensor("OUT_PROMPT_TABLE_EXTRA_IDS", table.astype(np.uint64)))
        if any(t is not None for t in task_ids):
            tensors.append(pb_utils.Tensor("OUT_LORA_TASK_ID", np.array([[t] for t in task_ids], dtype=np.uint64)))
        tensors += self.lora_outputs(arrays, task_ids, per_item)
        if not self.batched:
            tensors = [pb_utils.Tensor(t.name(), t.as_numpy()[0]) for t in tensors]
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _load_sibling(name: str) -> ModuleType:
    """A module shipped next to this model.py (python_backends.SHARED), loaded by path so that no other model's
    module of that name is used (onnx_runner's model.py has the same helper: each shipped folder is copied alone)."""
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
