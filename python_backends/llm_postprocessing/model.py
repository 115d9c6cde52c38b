"""Triton python-backend model: token ids -> text for the LLM ensemble, like TensorRT-LLM's `postprocessing`.

Tensor names, dtypes and shapes are those of the `postprocessing` model of NVIDIA TensorRT-LLM's
`triton_backend/all_models/inflight_batcher_llm`:
  TOKENS_BATCH     TYPE_INT32  [-1, -1]  (beam x tokens per batch item)
  SEQUENCE_LENGTH  TYPE_INT32  [-1]      (valid tokens per beam)
  OUTPUT           TYPE_STRING [-1]      one string per batch item and beam (a flat list, as upstream)
Parameters: tokenizer_dir (relative to the version folder, absolute, or starting with $$TRITON_MODEL_DIRECTORY;
default `tokenizer`), skip_special_tokens (default true), stream_state_ttl_seconds (default 300; 0 turns the
incremental decoding below off), max_stream_states (default 4096).

Streaming and multi-byte characters
-----------------------------------
In a streamed ensemble request every response of the generator reaches this model as a separate request carrying
only the new token(s). Decoding each fragment on its own (what upstream does) breaks a character whose UTF-8
bytes are spread over several tokens (byte-level BPE, byte-fallback SentencePiece: emoji, CJK, accents) into
U+FFFD replacement characters, and for SentencePiece tokenizers it also drops the space that starts a word.

This model therefore decodes incrementally, with a little state per stream (a dozen token ids at most). The
stream is identified by what the ensemble forwards from the client's request to every step (checked with
tritonserver 2.51): the request id and the correlation id, plus the batch item and beam. For each stream it keeps
the last few emitted token ids (as decoding context) and any tokens held back. A fragment is decoded together
with its context and the text beyond the context's text is emitted; when the result ends inside a multi-byte
character (U+FFFD at the end), nothing is emitted and the tokens are carried to the next fragment. So the
concatenation of the streamed pieces equals the decoding of all tokens at once, and no piece ever ends in a
broken character. Tokens that are simply invalid UTF-8 are held for at most four tokens, then emitted as U+FFFD,
as a one-shot decode would.

Limits (documented, by design of a stateless ensemble step):
* The client must give each streamed request a unique request id (or correlation id); without either, fragments
  are decoded one by one, as upstream does (HTTP generate_stream without "id", for instance).
* State lives in this model instance's process: use one instance (instance_group count 1) so that every fragment
  of a stream reaches the same state; requests of one `execute` batch are handled in arrival order.
* The model cannot see the end of a stream (the final, empty response of the generator never reaches it): states
  expire after stream_state_ttl_seconds without a fragment, and the oldest are dropped beyond max_stream_states.
  Reusing a request id within the TTL continues the old stream's context: harmless for byte-level tokenizers,
  but a SentencePiece first word may then keep its leading space, and bytes held back at the end of the old
  stream (cut mid-character by max_tokens) would be prepended.
* Non-streamed outputs with an id go through the same path: identical text, except that a trailing incomplete
  character is held back instead of being emitted as U+FFFD.
Incremental decoding uses clean_up_tokenization_spaces=False (so a prefix decodes to a prefix of the whole);
one-shot decoding (no id) uses the tokenizer's own setting, as upstream.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

REPLACEMENT = "\ufffd"
MAX_HELD_TOKENS = 4  # a UTF-8 character has at most 4 bytes, so at most 4 byte tokens
CONTEXT_TOKENS = 8  # emitted tokens kept per stream as decoding context


def _truthy(text: Any) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "y", "t", "on")


class _Stream:
    __slots__ = ("ids", "prefix", "read", "touched")

    def __init__(self) -> None:
        self.ids: list[int] = []  # context (ids[prefix:read], already emitted) followed by held-back / new tokens
        self.prefix = 0
        self.read = 0
        self.touched = time.monotonic()


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
        tokenizer_dir = param("tokenizer_dir", "tokenizer")
        if tokenizer_dir.startswith("$$TRITON_MODEL_DIRECTORY"):
            tokenizer_dir = model_dir + tokenizer_dir[len("$$TRITON_MODEL_DIRECTORY"):]
        if not os.path.isabs(tokenizer_dir):
            tokenizer_dir = os.path.join(version_dir, tokenizer_dir)
        # upstream's exact call (NVIDIA/TensorRT-LLM triton_backend/all_models/inflight_batcher_llm/
        # postprocessing/1/model.py @ 2e2327b93c0a9aa9abbf4c4672f734b03c1e441f): trust_remote_code loads
        # tokenizers shipped as code (Qwen's tokenization_qwen.py + qwen.tiktoken), here only when the spec says
        # so (upstream always passes True: any code a checkpoint shipped ran inside Triton), legacy=False the fixed
        # sentencepiece handling of special tokens
        trusted = _truthy(param("trust_remote_code", "false"))
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            tokenizer_dir, legacy=False, padding_side="left", trust_remote_code=trusted
        )
        self.skip_special_tokens = _truthy(param("skip_special_tokens", "true"))
        self.ttl = float(param("stream_state_ttl_seconds", "300"))
        self.max_streams = int(param("max_stream_states", "4096"))
        self.streams: OrderedDict[tuple[Any, ...], _Stream] = OrderedDict()
        self.last_purge = time.monotonic()

    # ------------------------------------------------------------------------------------------------ decoding

    def decode(self, ids: list[int], incremental: bool = False) -> str:
        if incremental:
            return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens,
                                         clean_up_tokenization_spaces=False)
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def decode_incremental(self, key: tuple[Any, ...], new_ids: list[int]) -> str:
        """The text that ``new_ids`` add to stream ``key`` (holding back an incomplete trailing character)."""
        stream = self.streams.pop(key, None) or _Stream()
        stream.ids.extend(new_ids)
        stream.touched = time.monotonic()
        self.streams[key] = stream  # most recently used last
        while len(self.streams) > self.max_streams:
            self.streams.popitem(last=False)

        ids, prefix, read = stream.ids, stream.prefix, stream.read
        prefix_text = self.decode(ids[prefix:read], incremental=True)
        full_text = self.decode(ids[prefix:], incremental=True)
        end = len(ids)
        if full_text.endswith(REPLACEMENT):
            if end - read < MAX_HELD_TOKENS:
                return ""  # the last token(s) end inside a character: wait for the rest
            # too long to be one character: emit up to the last point that decodes cleanly (the invalid bytes
            # become U+FFFD, as in a one-shot decode), keep holding a trailing partial character
            for cut in range(end - 1, read, -1):
                text = self.decode(ids[prefix:cut], incremental=True)
                if not text.endswith(REPLACEMENT):
                    full_text, end = text, cut
                    break
        if full_text.startswith(prefix_text):
            piece = full_text[len(prefix_text):]
        else:  # a tokenizer whose decoding of a prefix is not a prefix: emit what differs
            common = 0
            while common < min(len(prefix_text), len(full_text)) and prefix_text[common] == full_text[common]:
                common += 1
            piece = full_text[common:]
        # the last emitted tokens become the next context (a few are enough: a leading partial character decodes
        # to the same U+FFFD with or without what follows); anything after `end` is still held back
        start = max(0, end - CONTEXT_TOKENS)
        stream.ids = ids[start:]
        stream.prefix, stream.read = 0, end - start
        return piece

    def _purge(self) -> None:
        now = time.monotonic()
        if now - self.last_purge < 1.0 or not self.streams:
            return
        self.last_purge = now
        while self.streams:
            key, stream = next(iter(self.streams.items()))
            if now - stream.touched <= self.ttl:
                break
            del self.streams[key]

    @staticmethod
    def _stream_key(request: Any) -> tuple[str, Any] | None:
        try:
            request_id = request.request_id() or ""
        except Exception:
            request_id = ""
        try:
            correlation = request.correlation_id()
        except Exception:
            correlation = 0
        if not request_id and correlation in (0, "", None):
            return None
        return (request_id, correlation)

    # ------------------------------------------------------------------------------------------------- execute

    def execute(self, requests: list[Any]) -> list[Any]:
        self._purge()
        responses = []
        for request in requests:
            try:
                responses.append(self._response(request))
            except Exception as err:  # one bad request must not fail the others
                bad_input = isinstance(err, ValueError)
                code = pb_utils.TritonError.INVALID_ARG if bad_input else pb_utils.TritonError.INTERNAL
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"postprocessing failed: {type(err).__name__}: {err}", code)))
        return responses

    def _response(self, request: Any) -> Any:
        tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH")
        lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH")
        if tokens is None or lengths is None:
            raise ValueError("inputs TOKENS_BATCH (TYPE_INT32 [-1, -1]) and SEQUENCE_LENGTH (TYPE_INT32 [-1]) "
                             "are required")
        tokens, lengths = tokens.as_numpy(), lengths.as_numpy()
        if tokens.ndim == 2:  # a model without batching: [beam, tokens]
            tokens, lengths = tokens[np.newaxis], lengths.reshape(1, -1)
        lengths = lengths.reshape(tokens.shape[0], -1)
        key = self._stream_key(request) if self.ttl > 0 else None
        texts = []
        for b in range(tokens.shape[0]):
            for beam in range(tokens.shape[1]):
                n = int(lengths[b, beam]) if beam < lengths.shape[1] else tokens.shape[2]
                ids = [int(t) for t in tokens[b, beam, : max(0, n)] if t >= 0]
                text = self.decode(ids) if key is None else self.decode_incremental((*key, b, beam), ids)
                texts.append(text.encode("utf-8"))
        output = np.empty(len(texts), dtype=np.object_)
        output[:] = texts
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)])
