"""Triton python-backend model (decoupled): the `rag` pipeline as one BLS model instead of an ensemble (tritonforge).

It runs the same served models as the `rag` ensemble, in the same order, through BLS (`pb_utils.InferenceRequest`):

    QUERY ─► search (encode ─► retrieve) ─► rerank (pair tokenizer ─► cross-encoder) ─► select (best TOP_N)
          ─► prompt (template, trimmed to the LLM's limits) ─► llm (preprocessing ─► engine ─► postprocessing)

and answers with the `rag` ensemble's contract, so a client calls either one the same way (`Client.rag(model=...)`):

Input  QUERY       TYPE_STRING [1]  the question (one per request)
       TOP_K       TYPE_INT32  [1]  optional, candidates retrieved (the retriever's default otherwise)
       TOP_N       TYPE_INT32  [1]  optional, passages kept after reranking (the select step's default otherwise)
       max_tokens  TYPE_INT32  [1]  optional (the prompt step's default otherwise)
       MIN_SCORE   TYPE_FP32   [1]  optional, reranker score floor (the prompt step's default otherwise)
       temperature, top_k, top_p, seed, stream, ... (optional)       forwarded to the LLM unchanged
Output text_output TYPE_STRING [-1]  the LLM's pieces (streamed) or whole answer
       SOURCE_IDS, SOURCE_SCORES, PROMPT, PASSAGES_DROPPED          in the FIRST response only, with the LLM's
                   first piece, as the `rag` ensemble sends them (rag_answer.py, shipped beside this file)

Parameters (model names in the same repository): search_model (default `search`), rerank_model (`rerank`),
select_model (`passages_select`), prompt_model (`answer_prompt`), llm_model (`llm`).

Decoupled because the LLM streams; each request is answered on its own thread so concurrent requests overlap
(a BLS call blocks its caller, and execute() must return for the next requests to arrive). The LLM request carries
this request's id, so a client that stops reading can send upstream's stop signal to the engine with that id.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

OWN_INPUTS = ("QUERY", "TOP_K", "TOP_N", "max_tokens", "MIN_SCORE")
SOURCES = ("SOURCE_IDS", "SOURCE_SCORES", "PROMPT", "PASSAGES_DROPPED")
DEFAULT_MODELS = {
    "search_model": "search",
    "rerank_model": "rerank",
    "select_model": "passages_select",
    "prompt_model": "answer_prompt",
    "llm_model": "llm",
}


def _load_sibling(name: str) -> Any:
    """A module shipped next to this model.py, loaded by path: neither Triton's sys.path nor another model's module
    of the same name decides which file it is."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"{__name__}_{name}", path)
    if spec is None or spec.loader is None:  # not for a path ending in .py (a source file's loader)
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_answer = _load_sibling("rag_answer")  # the LLM's pieces relayed, the sources with the first (shared with rag_generate)
_retired = _load_sibling("bls_retired").Retired()  # finished BLS iterators, kept past their end


class StepError(RuntimeError):
    """A step's error response, with its Triton error code: a step that refused the request (INVALID_ARG) is the
    request's fault, a step that failed (INTERNAL) the server's."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.models = {key: params.get(key) or default for key, default in DEFAULT_MODELS.items()}
        self.forwarded = [i["name"] for i in config["input"] if i["name"] not in OWN_INPUTS]
        self.threads: list[threading.Thread] = []

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            thread = threading.Thread(target=self.answer, args=(request,), daemon=True)
            thread.start()
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        return None

    def call(self, key: str, inputs: list[Any], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """One non-decoupled step; its outputs as numpy arrays by name."""
        model = self.models[key]
        response = pb_utils.InferenceRequest(
            model_name=model, inputs=inputs, requested_output_names=list(outputs)
        ).exec()
        if response.has_error():
            raise StepError(f"{model}: {response.error().message()}", response.error().code())
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs}

    def answer(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:

            def get(name: str) -> np.ndarray | None:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                return None if tensor is None else tensor.as_numpy()

            query = get("QUERY")
            if query is None or query.shape[0] != 1:
                raise ValueError("send one QUERY per request")
            top_k, top_n, max_tokens = get("TOP_K"), get("TOP_N"), get("max_tokens")

            search_in = [pb_utils.Tensor("QUERY", query)]
            if top_k is not None:
                search_in.append(pb_utils.Tensor("TOP_K", top_k))
            found = self.call("search_model", search_in, ("DOC_IDS", "DOCUMENTS"))
            scored = self.call(
                "rerank_model",
                [pb_utils.Tensor("QUERY", query), pb_utils.Tensor("PASSAGES", found["DOCUMENTS"])],
                ("SCORES",),
            )
            select_in = [
                pb_utils.Tensor("CANDIDATE_IDS", found["DOC_IDS"]),
                pb_utils.Tensor("CANDIDATE_DOCUMENTS", found["DOCUMENTS"]),
                pb_utils.Tensor("RERANK_SCORES", scored["SCORES"]),
            ]
            if top_n is not None:
                select_in.append(pb_utils.Tensor("TOP_N", top_n))
            ranked = self.call("select_model", select_in, ("DOC_IDS", "SCORES", "DOCUMENTS"))
            prompt_in = [pb_utils.Tensor("QUERY", query)] + [
                pb_utils.Tensor(name, ranked[name]) for name in ("DOC_IDS", "DOCUMENTS", "SCORES")
            ]
            if max_tokens is not None:
                prompt_in.append(pb_utils.Tensor("max_tokens", max_tokens))
            if get("MIN_SCORE") is not None:
                prompt_in.append(pb_utils.Tensor("MIN_SCORE", get("MIN_SCORE")))
            prompt = self.call("prompt_model", prompt_in, (*SOURCES, "REQUEST_OUTPUT_LEN"))

            sources = [pb_utils.Tensor(name, prompt[name]) for name in SOURCES]  # sent with the first piece

            llm_in = [
                pb_utils.Tensor("text_input", prompt["PROMPT"].astype(object)),
                pb_utils.Tensor("max_tokens", prompt["REQUEST_OUTPUT_LEN"].astype(np.int32)),
            ]
            for name in self.forwarded:
                value = get(name)
                if value is not None:
                    llm_in.append(pb_utils.Tensor(name, value))
            llm_request = pb_utils.InferenceRequest(
                model_name=self.models["llm_model"],
                inputs=llm_in,
                requested_output_names=["text_output"],
                request_id=request.request_id(),
            )
            _answer.relay(sender, llm_request, sources, _retired)
        except Exception as err:  # a failed step is this request's error, never the model's
            code = err.code if isinstance(err, StepError) else (
                pb_utils.TritonError.INVALID_ARG if isinstance(err, ValueError) else pb_utils.TritonError.INTERNAL)
            error = pb_utils.TritonError(f"{type(err).__name__}: {err}", code)
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)

    def finalize(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)
