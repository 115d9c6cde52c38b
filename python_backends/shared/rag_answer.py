"""The LLM's answer to a RAG request, relayed to the client with its sources: one copy for the `rag` ensemble's
generate step (python_backends/rag_generate) and the BLS variant (python_backends/rag_bls).

The sources go out with the LLM's first piece, not ahead of generation: a request the LLM refuses (a sampling value
out of range, an unknown adapter) is answered with its error alone, rather than sources followed by an error a
client must tell apart from an answer cut short. What it costs is the time to the first token, which the sources
could otherwise arrive ahead of.

Shipped beside model.py in each python model that needs it (python_backends.SHARED).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def relay(sender: Any, llm_request: Any, sources: list[Any], retired: Any) -> None:
    """Send ``llm_request``'s responses (a decoupled BLS call) to ``sender``, ``sources`` (output tensors) with the
    first piece, and the final flag; an error response ends the answer with that error alone. The call's iterator
    goes to ``retired`` (a bls_retired.Retired) at the end, which says why."""
    responses = llm_request.exec(decoupled=True)
    try:
        _relay(sender, responses, sources)
    finally:
        retired.keep(responses)  # the last reference stays Python's


def _relay(sender: Any, responses: Iterable[Any], sources: list[Any]) -> None:
    final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
    for response in responses:
        if response.has_error():
            sender.send(pb_utils.InferenceResponse(error=response.error()), flags=final)
            return
        text = pb_utils.get_output_tensor_by_name(response, "text_output")
        if text is not None:
            sender.send(pb_utils.InferenceResponse(
                output_tensors=[*sources, pb_utils.Tensor("text_output", text.as_numpy())]))
            sources = []
    if sources:  # the LLM ended without a piece: the sources still go out, with empty text
        sender.send(pb_utils.InferenceResponse(
            output_tensors=[*sources, pb_utils.Tensor("text_output", np.array([[b""]], dtype=object))]))
    sender.send(flags=final)
