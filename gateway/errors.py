"""The gateway's errors: OpenAI's error body with an HTTP status, mapped from the one error tree."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from tritonforge.errors import (
    ClientError,
    ContextLengthError,
    DeadlineExceededError,
    InternalServerError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    TransientError,
    TritonForgeError,
)

LOG = logging.getLogger(__name__)
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that hung up before its answer


# ------------------------------------------------------------------------------------------------------- errors


class APIError(TritonForgeError):
    """An OpenAI-style error response (the gateway's branch of the one error tree)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after = retry_after  # seconds, sent as Retry-After: the failure is the server's, and passes

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class AskedFor:
    """What a generation request named the parts of a context-length error by: its prompt's field (``messages``,
    ``prompt``), its token count's field (``max_tokens`` or ``max_completion_tokens``) and whether it sent one (the
    gateway's default applied if not)."""

    prompt_param: str
    tokens_param: str = "max_tokens"
    tokens_sent: bool = True


def from_client_error(err: ClientError, asked: AskedFor | None = None) -> APIError:
    """The HTTP answer for a failed call to Triton, chosen by the error's class (decided once, in
    tritonforge.triton.errors, never re-read from its message here). ``asked``: a generation request's field
    names, which a context-length error is told in (the engine names TensorRT-LLM's tensors)."""
    text = _without_address(err)
    if isinstance(err, ContextLengthError) and asked is not None:
        return _context_length(err, text, asked)
    if isinstance(err, OverloadedError):  # the model's queue is full: shed now, rather than queue without bound
        return APIError(429, f"the model is overloaded, retry later: {text}", type="server_error",
                        code="overloaded", retry_after=1)
    if isinstance(err, TransientError):
        return APIError(503, text, type="server_error", code="service_unavailable", retry_after=1)
    if isinstance(err, DeadlineExceededError):
        return APIError(504, text, type="server_error", code="timeout")
    if isinstance(err, ModelNotFoundError):
        return APIError(503, f"the model is not loaded on Triton: {text}", type="server_error", code="model_not_ready",
                        retry_after=5)
    if isinstance(err, ModelNotReadyError):  # a dead python stub (being healed), a model reloading
        return APIError(503, f"the model cannot serve right now, retry: {text}", type="server_error",
                        code="model_unavailable", retry_after=5)
    if isinstance(err, ContextLengthError):  # OpenAI's code for it, which client libraries look for to trim history
        return APIError(400, f"This model's maximum context length is exceeded: {text}", type="invalid_request_error",
                        code="context_length_exceeded")
    if isinstance(err, InternalServerError):  # a step's own fault: 5xx, which the SDKs retry and alerts count
        return APIError(500, f"the server failed on this request: {text}", type="server_error", code="internal_error")
    if isinstance(err, InvalidInputError):  # refused by the client's own checks, before anything was sent
        return APIError(400, text, type="invalid_request_error", code="invalid_value")
    return APIError(400, text, type="invalid_request_error", code="invalid_request")


def _context_length(err: ContextLengthError, text: str, asked: AskedFor) -> APIError:
    """In the request's own terms, as vLLM says it: the tokens asked for when they are what does not fit (param
    max_tokens), else the prompt (param messages / prompt); the engine's words when it gave no counts."""
    limit, prompt, output = err.limit, err.prompt_tokens, err.output_tokens
    if output is not None and limit is not None and err.limit_name == "max_seq_len":
        value = f"{output}" if asked.tokens_sent else f"{output} (the default: the request sent none)"
        room = (f"your request has {prompt} input tokens ({output} > {limit} - {prompt})" if prompt is not None
                else f"{output} leaves no room for a prompt")
        return APIError(400, f"'{asked.tokens_param}' is too large: {value}. This model's maximum context length is "
                        f"{limit} tokens and {room}.", param=asked.tokens_param, code="context_length_exceeded")
    if prompt is not None and limit is not None:
        return APIError(400, f"This model's maximum context length is exceeded: '{asked.prompt_param}' holds {prompt} "
                        f"tokens, more than the {limit} it takes for a prompt ({err.limit_name}). Shorten "
                        f"'{asked.prompt_param}'.", param=asked.prompt_param, code="context_length_exceeded")
    return APIError(400, f"This model's maximum context length is exceeded: {text}", param=asked.prompt_param,
                    code="context_length_exceeded")


# gRPC's own words name the peer it tried: "ipv4:10.0.0.5:8001", "ipv6:[::1]:8001", "unix:/run/triton.sock"
_PEER = re.compile(r"\b(?:ipv4:[0-9.]+|ipv6:\[[0-9a-fA-F:.%]*\]|unix:[^\s;,)]+)(?::\d+)?")


def _without_address(err: ClientError) -> str:
    """The error's words without where Triton listens: its address is the gateway's business, not its clients'
    (the whole text is logged at debug level)."""
    original = str(err)
    text = original
    url = str(getattr(err, "url", "") or "")
    for host in sorted({url, url.split("://", 1)[-1]} - {""}, key=len, reverse=True):
        text = text.replace(host, "<triton>")
    text = _PEER.sub("<triton>", text)
    if text != original:
        LOG.debug("gateway: Triton call failed: %s", original)
    return text


def clip(text: str, limit: int = 100) -> str:
    """A client's string as an error message quotes it: at most ``limit`` characters (a 4 MB model id is not sent
    back whole)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def error_response(err: APIError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(err.retry_after)
    return JSONResponse(err.body(), status_code=err.status, headers=headers or None)
