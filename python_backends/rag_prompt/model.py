"""Triton python-backend model: the prompt of a RAG request, from the query and its reranked passages (tritonforge).

Input  QUERY              TYPE_STRING [1]   the user's question
       DOC_IDS            TYPE_STRING [-1]  passage ids, best first ("" marks padding, as the select step pads)
       DOCUMENTS          TYPE_STRING [-1]  their texts
       SCORES             TYPE_FP32   [-1]  their reranker scores
       max_tokens         TYPE_INT32  [1]   optional, tokens to generate (default: parameter default_max_tokens)
       MIN_SCORE          TYPE_FP32   [1]   optional, passages scored below it are left out (default: min_score)
       TOP_N              TYPE_INT32  [1]   optional, only the best TOP_N passages are considered (default:
                                            parameter default_top_n)
Output PROMPT             TYPE_STRING [1]   the rendered prompt sent to the LLM
       SOURCE_IDS         TYPE_STRING [-1]  ids of the passages in the prompt, in rank order ("" pads)
       SOURCE_SCORES      TYPE_FP32   [-1]  their scores (NaN pads)
       PASSAGES_DROPPED   TYPE_INT32  [1]   how many reranked passages were left out (below MIN_SCORE, or so
                                            the prompt fits)
       REQUEST_OUTPUT_LEN TYPE_INT32  [1]   max_tokens, or its default (feeds the LLM's preprocessing)

Parameters:
  prompt_template      jinja2 over `query` and `passages` (a list of {id, text, score}, best first)
  tokenizer_dir        the LLM's tokenizer folder, relative to the version folder (default `tokenizer`)
  add_special_tokens   as the LLM's preprocessing encodes the prompt (default true)
  max_input_len        prompt tokens the LLM accepts; max_seq_len: prompt + generated tokens
  default_max_tokens   when a request sends no max_tokens
  min_score            when a request sends no MIN_SCORE (empty: no floor)
  default_top_n        passages considered when a request sends no TOP_N (empty: all it is given). Without a
                       reranker the retriever's default_top_k candidates arrive here, and this is what keeps the
                       retriever's default_top_n of them, as the select step does after reranking.

Passages scored below the floor go first (a query can so retrieve nothing). The prompt is counted with the LLM's
own tokenizer, exactly as its preprocessing will encode it; while it is longer than min(max_input_len, max_seq_len
- max_tokens) the lowest-ranked passage is dropped. A query with no passage gets the template rendered with an
empty list (the template says what to do then). A prompt that does not fit even without passages is an error to
that request only.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class RequestError(ValueError):
    pass


# a text longer than this is refused before it is decoded or tokenized: a 100 MB prompt took the engine's stub to
# 13 GB before its length was checked against max_input_len (robustness audit); the tokenizers' limit too
MAX_TEXT_BYTES = 1 << 20


def _text(item: object, where: str) -> str:
    """A TYPE_STRING element as str; RequestError naming the input and element when it is not UTF-8."""
    if not isinstance(item, bytes):
        return str(item)
    if len(item) > MAX_TEXT_BYTES:
        raise RequestError(f"{where} is {len(item)} bytes; at most {MAX_TEXT_BYTES} are taken")
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestError(f"{where} is not valid UTF-8 ({err.reason} at byte {err.start})") from None


def _truthy(text: object) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes", "y", "t", "on")


def compile_template(source: str) -> Any:
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    return env.from_string(source)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from transformers import AutoTokenizer

        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        tokenizer_dir = params.get("tokenizer_dir") or "tokenizer"
        if not os.path.isabs(tokenizer_dir):
            tokenizer_dir = os.path.join(version_dir, tokenizer_dir)
        # the LLM's tokenizer; code it ships runs only when the spec's trust_remote_code said so
        trusted = _truthy(params.get("trust_remote_code") or "false")
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trusted)
        # the tokenizer's control tokens as text: in a passage or the query they would be read as the tokens
        # themselves, and a document in the corpus could close the user's turn and write a system turn
        self.control_tokens = _load_sibling("control_tokens")
        self.control = self.control_tokens.control_pattern(self.tokenizer)
        self.add_special_tokens = _truthy(params.get("add_special_tokens") or "true")
        if not params.get("prompt_template"):
            raise RuntimeError("parameter prompt_template is missing")
        self.template = compile_template(params["prompt_template"])
        self.max_seq_len = int(params.get("max_seq_len") or 1024)
        self.max_input_len = int(params.get("max_input_len") or self.max_seq_len - 1)
        # the chat template's own tokens (the preprocessing wraps the prompt in it): max_input_len was reduced by
        # them at build time; the room max_seq_len leaves beside max_tokens must be too
        self.template_overhead = int(params.get("template_overhead") or 0)
        self.default_max_tokens = int(params.get("default_max_tokens") or 128)
        self.min_score = float(params["min_score"]) if params.get("min_score") else None
        self.default_top_n = int(params.get("default_top_n") or 0) or None

    def defuse(self, text: str) -> str:
        """``text`` with each control token broken by a zero-width space after its first character: read as the
        characters it shows, not as the token (the preprocessing parses special tokens in the whole prompt)."""
        return self.control_tokens.defuse(self.control, text)

    def count(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt, add_special_tokens=self.add_special_tokens))

    def fit(
        self, query: str, passages: list[dict[str, Any]], max_tokens: int
    ) -> tuple[str, list[dict[str, Any]]]:
        """The prompt with the passages that fit, best-ranked first, and those passages.

        Each passage is measured once (what it adds to the prompt after another), then taken in rank order while
        it fits; one that does not is skipped, not the end of the list (a long passage at rank 1 had
        left the LLM none, and smaller ones ranked below it went with it). The prompt of the passages taken is
        then counted whole, dropping the lowest-ranked while it is over (numbering or joins can cost a token or
        two more than measured alone). Before, the whole prompt was rendered and tokenized again for every
        passage dropped: 100 passages of 2,000 tokens took 68 s of the model's time."""
        budget = min(self.max_input_len, self.max_seq_len - self.template_overhead - max_tokens)
        if budget < 1:
            raise RequestError(f"max_tokens={max_tokens} leaves no room for a prompt in max_seq_len={self.max_seq_len}")

        def render(chosen: list[dict[str, Any]]) -> str:
            prompt = self.template.render(query=query, passages=chosen)
            if not prompt.strip():
                raise RequestError("prompt_template rendered an empty prompt")
            return prompt

        kept = []
        if passages:
            # a passage's cost is what it adds after another (its block, separators, numbering), measured against
            # an empty one; the prompt around the passages is the one-passage prompt less that block
            blank = {**passages[0], "id": "", "text": ""}
            one = self.count(render([blank]))
            used = one - (self.count(render([blank, blank])) - one)
            for passage in passages:
                cost = self.count(render([blank, passage])) - one
                if used + cost <= budget:
                    kept.append(passage)
                    used += cost
        while kept:
            prompt = render(kept)
            if self.count(prompt) <= budget:
                return prompt, kept
            kept.pop()
        prompt = render([])
        tokens = self.count(prompt)
        if tokens > budget:
            raise RequestError(
                f"the prompt has {tokens} tokens even without passages, more than the {budget} the LLM leaves for it "
                f"(max_input_len={self.max_input_len}, max_seq_len={self.max_seq_len} - max_tokens={max_tokens})"
            )
        return prompt, []

    def _one(self, request: Any) -> list[Any]:
        def get(name: str) -> np.ndarray | None:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            return None if tensor is None else tensor.as_numpy()

        queries, ids, docs, scores = get("QUERY"), get("DOC_IDS"), get("DOCUMENTS"), get("SCORES")
        if queries is None or ids is None or docs is None or scores is None:
            raise RequestError("QUERY, DOC_IDS, DOCUMENTS and SCORES are required")
        if ids.ndim != 2 or not (ids.shape == docs.shape == scores.shape) or queries.shape[0] != ids.shape[0]:
            raise RequestError(
                f"shapes differ: QUERY {queries.shape}, DOC_IDS {ids.shape}, DOCUMENTS {docs.shape}, "
                f"SCORES {scores.shape}"
            )
        batch = ids.shape[0]
        wanted = get("max_tokens")
        max_tokens = (
            np.full(batch, self.default_max_tokens) if wanted is None else np.broadcast_to(wanted.reshape(-1), (batch,))
        )
        if (max_tokens <= 0).any():
            raise RequestError(f"max_tokens must be >= 1, got {int(max_tokens.min())}")
        floor = get("MIN_SCORE")
        if floor is not None and not np.isfinite(floor).all():
            raise RequestError(f"MIN_SCORE must be a finite number, got {floor.reshape(-1).tolist()}")
        floors = (
            np.full(batch, -np.inf if self.min_score is None else self.min_score)
            if floor is None
            else np.broadcast_to(floor.reshape(-1).astype(np.float64), (batch,))
        )
        limit = get("TOP_N")  # keep the best N (without a reranker: the retriever's best; with one, select did it)
        if limit is not None and (limit <= 0).any():
            raise RequestError(f"TOP_N must be >= 1, got {int(limit.min())}")
        if limit is not None:
            limits: np.ndarray | None = np.broadcast_to(limit.reshape(-1), (batch,))
        else:
            limits = None if self.default_top_n is None else np.full(batch, self.default_top_n)
        prompts, kept, dropped = [], [], []
        for i in range(batch):
            query = self.defuse(_text(queries.reshape(batch, -1)[i, 0], f"QUERY[{i}]").strip())
            if not query:
                raise RequestError("QUERY is empty: send a question")
            ranked = [
                {"id": doc_id, "text": self.defuse(_text(docs[i, j], f"DOCUMENTS[{i}, {j}]")),
                 "score": float(scores[i, j])}
                for j in range(ids.shape[1])
                if (doc_id := _text(ids[i, j], f"DOC_IDS[{i}, {j}]"))
            ]
            if limits is not None:
                ranked = ranked[: int(limits[i])]
            passages = [p for p in ranked if p["score"] >= floors[i]]  # NaN scores never pass a floor
            prompt, used = self.fit(query, passages, int(max_tokens[i]))
            prompts.append(prompt)
            kept.append(used)
            dropped.append(len(ranked) - len(used))
        width = max((len(k) for k in kept), default=0)
        out_ids = np.full((batch, width), b"", dtype=object)
        out_scores = np.full((batch, width), np.nan, dtype=np.float32)
        for i, used in enumerate(kept):
            for slot, p in enumerate(used):
                out_ids[i, slot], out_scores[i, slot] = p["id"].encode("utf-8"), p["score"]
        return [
            pb_utils.Tensor("PROMPT", np.array([[p.encode("utf-8")] for p in prompts], dtype=object)),
            pb_utils.Tensor("SOURCE_IDS", out_ids),
            pb_utils.Tensor("SOURCE_SCORES", out_scores),
            pb_utils.Tensor("PASSAGES_DROPPED", np.array(dropped, dtype=np.int32).reshape(batch, 1)),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", np.asarray(max_tokens, dtype=np.int32).reshape(batch, 1)),
        ]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._one(request)))
            except (RequestError, UnicodeDecodeError) as err:
                error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            except Exception as err:  # a template error (undefined attribute, ...) fails this request alone; it is
                # the deployed template's fault, not the caller's: INTERNAL (a 500 at the gateway)
                error = pb_utils.TritonError(f"rendering the prompt failed: {type(err).__name__}: {err}",
                                             pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses


def _load_sibling(name: str) -> Any:
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
