"""Triton python-backend model: (query, candidate passages) -> token ids for a cross-encoder (tritonforge).

Input  QUERY           TYPE_STRING [1]       one UTF-8 query per batch item
       DOCUMENTS       TYPE_STRING [-1]      that query's k candidate passages (a request is [n, 1] and [n, k])
Output input_ids       TYPE_INT64  [-1, -1]  [n, k, L]: one row per (query, passage) pair
       attention_mask  TYPE_INT64  [-1, -1]
       token_type_ids  TYPE_INT64  [-1, -1]  only when the cross-encoder takes it
       NUM_TOKENS      TYPE_INT32  [-1]      [n, k]: tokens of each pair after truncation (when the config
                                             declares it: the rerank ensemble returns it for usage counts)

Each pair is encoded as the checkpoint's tokenizer does ``tokenizer(query, passage, truncation=True,
max_length=max_seq_length)``: special tokens around both parts, token type 1 on the passage, and the
``longest_first`` truncation strategy (one token at a time from whichever part is longer). L is the longest pair
of the request, rounded up to a multiple of ``pad_to_multiple_of`` when set; shorter rows are padded with
``pad_id`` (attention_mask and token_type_ids 0).

Empty DOCUMENTS entries (b"", which the retriever uses to pad its results) are encoded as an empty passage:
``[CLS] query [SEP] [SEP]`` for BERT-like tokenizers. (transformers' ``tokenizer(query, "")`` drops an empty
passage altogether; the difference does not matter because the caller drops the scores of empty documents.)

Parameters (config.pbtxt): max_seq_length, pad_to_multiple_of, pad_id, model_input_names (comma separated),
max_text_bytes (default 1 MiB: a longer query or passage is refused, as the embedding tokenizer does; a 10 MB
passage had held the model for everyone for ~10 s and left the stub at 1.5 GB).
The tokenizer files live beside this file in `tokenizer/`. Only `tokenizers` and numpy are needed at serve
time, so the same file runs in an NGC Triton container.

Bad input (missing tensors, mismatched shapes, invalid UTF-8, an empty query) is answered with an error to that
request only; the other requests of the batch are served.
"""

from __future__ import annotations

import json
import os
from typing import Any, cast

import numpy as np
import triton_python_backend_utils as pb_utils

FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
CUT_SLACK = 64  # tokens kept past max_seq_length when a long text is cut before pairing (_cut_long)
WORD_SLACK = 64  # a word running this many tokens past the cut is cut inside (a text without spaces)


def _cut(text: str, encoding: Any, at_least: int) -> tuple[str, int]:
    """``(text cut after the word holding its token at_least - 1, its tokens)``; the text whole when shorter."""
    if len(encoding.ids) <= at_least:
        return text, len(encoding.ids)
    last, words = at_least - 1, encoding.word_ids
    word = words[last]
    while last + 1 < len(words) and word is not None and words[last + 1] == word and last - at_least < WORD_SLACK:
        last += 1
    return text[: encoding.offsets[last][1]], last + 1


class _BadRequest(Exception):
    """A request's input is unusable; its message goes back to that request only."""


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from tokenizers import Tokenizer

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        self.max_len = int(params["max_seq_length"])
        self.multiple = max(1, int(params.get("pad_to_multiple_of") or 1))
        self.pad_id = int(params.get("pad_id") or 0)
        self.names = [n.strip() for n in params["model_input_names"].split(",") if n.strip()]
        self.counts = any(o.get("name") == "NUM_TOKENS" for o in config.get("output", []))
        self.max_bytes = int(params.get("max_text_bytes") or 1 << 20)
        unknown = [n for n in self.names if n not in FIELDS]
        if unknown:
            raise ValueError(f"model_input_names has {unknown}; allowed: {', '.join(FIELDS)}")
        self.tokenizer = Tokenizer.from_file(os.path.join(here, "tokenizer", "tokenizer.json"))
        # the same vocabulary without truncation or padding: where a long text's first tokens end (_cut_long)
        self.single = Tokenizer.from_file(os.path.join(here, "tokenizer", "tokenizer.json"))
        self.single.no_truncation()
        self.single.no_padding()
        shipped = self.tokenizer.truncation or {}
        self.tokenizer.no_padding()
        # transformers' tokenizer(query, passage, truncation=True) truncates pairs with the longest_first strategy
        self.tokenizer.enable_truncation(
            max_length=self.max_len, strategy="longest_first", direction=shipped.get("direction", "right")
        )

    def _strings(self, tensor: Any, name: str) -> np.ndarray:
        """Decode a TYPE_STRING array into str, keeping its shape; _BadRequest names the first bad element."""
        raw = tensor.as_numpy()
        out = np.empty(raw.shape, dtype=object)
        for index, item in np.ndenumerate(raw):
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError as err:
                    where = ", ".join(str(i) for i in index)
                    message = f"{name}[{where}] is not valid UTF-8 ({err.reason} at byte {err.start})"
                    raise _BadRequest(message) from None
            if not isinstance(item, str):
                where = ", ".join(str(i) for i in index)
                raise _BadRequest(f"{name}[{where}] must be a string, got {type(item).__name__}")
            if len(item) * 4 > self.max_bytes and len(item.encode("utf-8")) > self.max_bytes:  # (<= 4 bytes a char)
                where = ", ".join(str(i) for i in index)
                raise _BadRequest(f"{name}[{where}] is {len(item.encode('utf-8'))} bytes; at most {self.max_bytes} "
                                  "are accepted")
            out[index] = item
        return out

    def _pairs(self, request: Any) -> tuple[list[tuple[str, str]], int, int]:
        """One request's checked ``(pairs, n, k)``: k (query, passage) pairs for each of its n queries."""
        q_tensor = pb_utils.get_input_tensor_by_name(request, "QUERY")
        d_tensor = pb_utils.get_input_tensor_by_name(request, "DOCUMENTS")
        if q_tensor is None:
            raise _BadRequest("missing input 'QUERY' (TYPE_STRING, one query per batch item)")
        if d_tensor is None:
            raise _BadRequest("missing input 'DOCUMENTS' (TYPE_STRING, the candidate passages of each query)")
        queries = self._strings(q_tensor, "QUERY").reshape(-1)
        docs = self._strings(d_tensor, "DOCUMENTS")
        n = queries.size
        if n == 0:
            raise _BadRequest("QUERY is empty: send at least one query")
        if docs.ndim != 2 or docs.shape[0] != n:
            raise _BadRequest(
                f"DOCUMENTS must have shape [batch, candidates] = [{n}, k] to match QUERY "
                f"{list(q_tensor.as_numpy().shape)}, got {list(docs.shape)}"
            )
        k = docs.shape[1]
        if k == 0:
            raise _BadRequest("DOCUMENTS is empty: send at least one candidate passage per query")
        for i, query in enumerate(queries):
            if not query.strip():
                raise _BadRequest(f"QUERY[{i}] is an empty string: send a query to rerank passages for")
        return [(queries[i], docs[i, j]) for i in range(n) for j in range(k)], n, k

    def _check(self, request: Any) -> tuple[list[tuple[str, str]] | None, int, int, str | None]:
        """``(pairs, n, k, None)`` for a good request, ``(None, 0, 0, message)`` for a bad one."""
        try:
            return (*self._pairs(request), None)
        except _BadRequest as bad:
            return None, 0, 0, str(bad)

    def _cut_long(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Each pair with a part over max_seq_length + CUT_SLACK tokens, that part cut at a word's end past there.

        Uncut, the tokenizers library kept every overflowing piece of both parts and combined them pairwise: memory
        grew with the square of the texts' lengths (one 16k-character pair took 1.8 GB; a rerank of 512 passages of
        8k characters 20 GB and the OOM killer). longest_first keeps at most max_seq_length tokens of either part,
        so nothing kept is lost; which part keeps the odd token depends only on which is longer (the query when
        strictly longer, else the passage), and the cuts keep that order. Cutting at a word's end keeps the kept
        tokens as they were (a word cut in two could tokenize otherwise)."""
        keep = self.max_len + CUT_SLACK
        # a text of c characters has at most 4c tokens (byte-level vocabularies: a byte each); shorter ones stay
        long = sorted({t for pair in pairs for t in pair if len(t) * 4 > keep})
        if not long:
            return pairs
        encodings = dict(zip(long, self.single.encode_batch(long, add_special_tokens=False), strict=True))
        out = []
        for q, d in pairs:
            eq, ed = encodings.get(q), encodings.get(d)
            lq = len(eq.ids) if eq is not None else 0  # 0: not measured, at most keep tokens
            ld = len(ed.ids) if ed is not None else 0
            if lq <= keep and ld <= keep:
                out.append((q, d))
            elif lq > keep and lq > ld:  # the query is the longer part, and stays it
                d, cd = _cut(d, ed, keep) if ld > keep else (d, keep)
                out.append((_cut(q, eq, max(keep, cd + 1))[0], d))
            else:  # the passage is at least as long, and stays it
                q, cq = _cut(q, eq, keep) if lq > keep else (q, keep)
                out.append((q, _cut(d, ed, max(keep, cq))[0]))
        return out

    def execute(self, requests: list[Any]) -> list[Any]:
        checked = [self._check(r) for r in requests]
        # one tokenizer call for the whole dynamic batch; the Rust tokenizer parallelises it
        flat = self._cut_long([pair for pairs, _, _, _ in checked if pairs for pair in pairs])
        encodings = iter(self.tokenizer.encode_batch(flat) if flat else [])
        responses = []
        for pairs, n, k, error in checked:
            if error:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(error, pb_utils.TritonError.INVALID_ARG))
                )
                continue
            # no error: _check returned _pairs' pairs (its messages are never empty)
            encs = [next(encodings) for _ in cast("list[tuple[str, str]]", pairs)]
            responses.append(self._response(encs, n, k))
        return responses

    def _response(self, encs: list[Any], n: int, k: int) -> Any:
        longest = max(len(e.ids) for e in encs)
        width = -(-longest // self.multiple) * self.multiple
        arrays = {
            "input_ids": np.full((n * k, width), self.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((n * k, width), dtype=np.int64),
            "token_type_ids": np.zeros((n * k, width), dtype=np.int64),
        }
        for row, e in enumerate(encs):
            length = len(e.ids)
            for name, values in arrays.items():
                values[row, :length] = getattr(e, FIELDS[name])
        outputs = [pb_utils.Tensor(name, arrays[name].reshape(n, k, width)) for name in self.names]
        if self.counts:
            lengths = np.array([len(e.ids) for e in encs], dtype=np.int32).reshape(n, k)
            outputs.append(pb_utils.Tensor("NUM_TOKENS", lengths))
        return pb_utils.InferenceResponse(output_tensors=outputs)
