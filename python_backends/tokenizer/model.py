"""Triton python-backend model: text -> token ids for an encoder (tritonforge).

Input  TEXT            TYPE_STRING [1]   one UTF-8 string per batch item
Output input_ids       TYPE_INT64  [-1]  padded per request (to a multiple of pad_to_multiple_of when set)
       attention_mask  TYPE_INT64  [-1]
       token_type_ids  TYPE_INT64  [-1]  only when the encoder takes it
       NUM_TOKENS      TYPE_INT32  [1]   tokens kept per item (after truncation)
       TRUNCATED       TYPE_BOOL   [1]   true where the text was cut to max_seq_length

Parameters (config.pbtxt): max_seq_length, pad_to_multiple_of, pad_id, model_input_names (comma separated),
max_text_bytes (default 1 MiB: longer items are refused).

A text far longer than max_seq_length tokens is cut at a whitespace boundary before tokenizing, once the cut
alone already yields more tokens than are kept: the kept tokens are then exactly those of the whole text, and
a 1 MB text costs what a few KB cost instead of blocking the model for everyone.
The tokenizer files live beside this file in `tokenizer/`. Only `tokenizers` and numpy are needed at serve
time, so the same file runs in an NGC Triton container.

Bad input is answered with an error to that request only; the other requests of the batch are served.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        self.max_len = int(params["max_seq_length"])
        self.multiple = int(params.get("pad_to_multiple_of") or 1)
        self.pad_id = int(params.get("pad_id") or 0)
        self.names = [n for n in params["model_input_names"].split(",") if n]
        self.max_bytes = int(params.get("max_text_bytes") or 1 << 20)
        path = os.path.join(here, "tokenizer", "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_len)
        self.counter = Tokenizer.from_file(path)  # no truncation: counts the tokens of a cut text
        self.counter.no_padding()
        self.counter.no_truncation()

    def _bounded(self, text: str) -> str:
        """`text`, or a whitespace-bounded prefix of it that tokenizes to the same kept tokens (see above)."""
        limit = self.max_len * 32
        if len(text) <= limit:
            return text
        cut = text[:limit]
        boundary = max(cut.rfind(c) for c in " \n\t")
        if boundary > 0:
            cut = cut[:boundary]
            if len(self.counter.encode(cut, add_special_tokens=False).ids) >= self.max_len:
                return cut
        return text

    def _texts(self, request: Any) -> tuple[list[str] | None, str | None]:
        """Decode and check one request's TEXT; returns (texts, None) or (None, error message)."""
        tensor = pb_utils.get_input_tensor_by_name(request, "TEXT")
        if tensor is None:
            return None, "missing input 'TEXT' (TYPE_STRING, one string per batch item)"
        raw = tensor.as_numpy().reshape(-1)
        if raw.size == 0:
            return None, "TEXT is empty: send at least one string"
        texts = []
        for i, item in enumerate(raw):
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError as err:
                    return None, f"TEXT[{i}] is not valid UTF-8 ({err.reason} at byte {err.start})"
            if not isinstance(item, str):
                return None, f"TEXT[{i}] must be a string, got {type(item).__name__}"
            if not item.strip():
                return None, f"TEXT[{i}] is an empty string: send text to embed"
            # (a character is at most 4 bytes: only a text that could be over the limit is encoded to measure it)
            if len(item) * 4 > self.max_bytes and len(item.encode("utf-8")) > self.max_bytes:
                return None, f"TEXT[{i}] is {len(item.encode('utf-8'))} bytes; at most {self.max_bytes} are accepted"
            texts.append(self._bounded(item))
        return texts, None

    def execute(self, requests: list[Any]) -> list[Any]:
        checked = [self._texts(r) for r in requests]
        # one tokenizer call for the whole dynamic batch; the Rust tokenizer parallelises it
        flat = [t for texts, _ in checked if texts for t in texts]
        encodings = iter(self.tokenizer.encode_batch(flat) if flat else [])
        responses = []
        for texts, error in checked:
            if error:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG))
                )
                continue
            # no error: _texts returned the texts
            encs = [next(encodings) for _ in cast("list[str]", texts)]
            responses.append(self._response(encs))
        return responses

    def _response(self, encs: list[Any]) -> Any:
        longest = max(len(e.ids) for e in encs)
        width = -(-longest // self.multiple) * self.multiple
        n = len(encs)
        arrays = {
            "input_ids": np.full((n, width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((n, width), dtype=np.int64),
            "token_type_ids": np.zeros((n, width), dtype=np.int64),
        }
        lengths = np.zeros((n, 1), dtype=np.int32)
        truncated = np.zeros((n, 1), dtype=bool)
        for i, e in enumerate(encs):
            k = len(e.ids)
            arrays["input_ids"][i, :k] = e.ids
            arrays["attention_mask"][i, :k] = e.attention_mask
            arrays["token_type_ids"][i, :k] = e.type_ids
            lengths[i, 0] = k
            truncated[i, 0] = bool(e.overflowing)
        outputs = [pb_utils.Tensor(name, arrays[name]) for name in self.names]
        outputs += [pb_utils.Tensor("NUM_TOKENS", lengths), pb_utils.Tensor("TRUNCATED", truncated)]
        return pb_utils.InferenceResponse(output_tensors=outputs)
