"""Triton python-backend model (decoupled): generate the answer of a RAG request and stream it with its sources.

Why a step of its own: Triton refuses a decoupled ensemble whose outputs come from different decoupled origins
("step of model 'rag' receives inputs originated from different decoupled models"), so the sources (from the
non-decoupled prompt step) cannot be ensemble outputs beside text_output (from the decoupled engine). This step
receives both and is the one producer of every output: it calls the LLM's ensemble (parameter `llm_model`) through
BLS with the prompt, and streams its responses.

Input  PROMPT, SOURCE_IDS, SOURCE_SCORES, PASSAGES_DROPPED, REQUEST_OUTPUT_LEN   from the prompt step
       temperature, top_k, top_p, seed, stream, ... (optional)                 forwarded to the LLM unchanged
Output text_output       TYPE_STRING [-1]  the LLM's pieces (streamed) or whole answer
       SOURCE_IDS, SOURCE_SCORES, PROMPT, PASSAGES_DROPPED                  in the FIRST response only, with the
                         LLM's first piece (empty text if the LLM ended without one); a request the LLM refuses
                         gets its error alone (rag_answer.py says why)

The LLM request carries this request's id, so a client that stops reading can send upstream's stop signal to the
engine model with that id, as for the `llm` ensemble.
"""

from __future__ import annotations

import json
import threading
from typing import Any, cast

import numpy as np
import triton_python_backend_utils as pb_utils

SOURCES = ("SOURCE_IDS", "SOURCE_SCORES", "PROMPT", "PASSAGES_DROPPED")
OWN_INPUTS = (*SOURCES, "REQUEST_OUTPUT_LEN")


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


_answer = _load_sibling("rag_answer")  # the LLM's pieces relayed, the sources with the first (shared with rag_bls)
_retired = _load_sibling("bls_retired").Retired()  # finished BLS iterators, kept past their end


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: (v or {}).get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.llm_model = params.get("llm_model") or "llm"
        # the prompt as one user turn of the LLM checkpoint's chat template (the llm ensemble's apply_chat_template)
        self.chat = params.get("apply_chat_template", "false").strip().lower() == "true"
        self.forwarded = [i["name"] for i in config["input"] if i["name"] not in OWN_INPUTS]
        self.threads: list[threading.Thread] = []

    def execute(self, requests: list[Any]) -> None:
        for request in requests:
            thread = threading.Thread(target=self.answer, args=(request,), daemon=True)
            thread.start()
            self.threads = [t for t in self.threads if t.is_alive()] + [thread]
        return None

    def answer(self, request: Any) -> None:
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:

            def get(name: str) -> np.ndarray | None:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                return None if tensor is None else tensor.as_numpy()

            # PROMPT and REQUEST_OUTPUT_LEN are required inputs (builders/rag.py): never missing from a request
            prompt = cast("np.ndarray", get("PROMPT"))
            if prompt.shape[0] != 1:
                raise ValueError(f"send one query per request (this request holds {prompt.shape[0]})")
            sources = [pb_utils.Tensor(name, get(name)) for name in SOURCES]  # sent with the first piece
            inputs = [
                pb_utils.Tensor("text_input", prompt.astype(object)),
                pb_utils.Tensor("max_tokens", cast("np.ndarray", get("REQUEST_OUTPUT_LEN")).astype(np.int32)),
            ]
            for name in self.forwarded:
                value = get(name)
                if value is not None:
                    inputs.append(pb_utils.Tensor(name, value))
            if self.chat:
                inputs.append(pb_utils.Tensor("apply_chat_template", np.array([[True]], dtype=bool)))
            llm_request = pb_utils.InferenceRequest(
                model_name=self.llm_model,
                inputs=inputs,
                requested_output_names=["text_output"],
                request_id=request.request_id(),
            )
            _answer.relay(sender, llm_request, sources, _retired)
        except Exception as err:
            # a bad request (ValueError) is the caller's; anything else this step's own fault (a 500 at the gateway)
            code = pb_utils.TritonError.INVALID_ARG if isinstance(err, ValueError) else pb_utils.TritonError.INTERNAL
            error = pb_utils.TritonError(f"{type(err).__name__}: {err}", code)
            sender.send(pb_utils.InferenceResponse(error=error), flags=final)

    def finalize(self) -> None:
        for thread in self.threads:
            thread.join(timeout=5)
