"""Chat and text completions over the access layer's stream: whole answers, or server-sent events."""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tritonforge.clients.client import AsyncClient
from tritonforge.clients.generation import Sampling, generation_inputs
from tritonforge.errors import ClientError, InvalidInputError
from tritonforge.gateway.errors import APIError, from_client_error
from tritonforge.gateway.schemas import GatewayLimits, Message, Sampled
from tritonforge.triton.tensors import is_final, text_of

TOKEN_COUNT_INPUTS = ("return_num_input_tokens", "return_num_output_tokens")

if TYPE_CHECKING:  # the state module imports this one's neighbours; only the annotations need it
    from tritonforge.gateway.state import Gateway, Target

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------- generation


def flatten_messages(messages: list[Message]) -> str:
    """The text sent as one user turn (see the module docstring)."""
    texts = [(m.role, m.text(i)) for i, m in enumerate(messages)]
    if len(texts) == 1 and texts[0][0] == "user":
        return texts[0][1]
    labels = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
    return "\n\n".join(f"{labels[role]}: {text}" for role, text in texts)


class _Generation:
    """One generation over Triton's gRPC stream; iterate for text pieces, ``steps`` counts engine responses."""

    def __init__(
        self,
        client: AsyncClient,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None,
        engine_model: str | None,
        version: str = "",
    ) -> None:
        self.client, self.model, self.inputs, self.timeout = client, model, inputs, timeout
        self.engine_model, self.version = engine_model, version
        self.steps = 0
        self.prompt_tokens = 0  # from the engine's num_input_tokens, when the request asked for it
        self.output_tokens: int | None = None  # the sum of num_output_tokens over the responses, likewise

    @property
    def completion_tokens(self) -> int:
        """Exact when the engine reports num_output_tokens; otherwise the number of streamed engine responses."""
        return self.steps if self.output_tokens is None else self.output_tokens

    def _count(self, result: Any) -> None:
        prompt, output = result.as_numpy("num_input_tokens"), result.as_numpy("num_output_tokens")
        if prompt is not None and prompt.size:
            self.prompt_tokens = int(prompt.reshape(-1)[0])
        if output is not None and output.size:
            self.output_tokens = (self.output_tokens or 0) + int(output.reshape(-1)[0])

    def _on_result(self, result: Any) -> None:
        piece = text_of({"text_output": result.as_numpy("text_output")})
        if piece or not is_final(result):
            self.steps += 1
        self._count(result)

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces over the access layer's stream: leaving early cancels it and sends upstream's stop to the
        engine; an adapter TensorRT-LLM evicted from its LoRA cache is sent once more with its weights."""
        stream = self.client.stream_text(
            self.model,
            self.inputs,
            timeout=self.timeout,
            engine_model=self.engine_model,
            on_result=self._on_result,
            version=self.version,
        )
        async with contextlib.aclosing(stream) as pieces:
            async for piece in pieces:
                yield piece


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def sampling(
    limits: GatewayLimits, body: Sampled, max_tokens: int | None, default_tokens: int, *, chat: bool,
    adapter: str | None = None,
) -> Sampling:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    limits.check(len(stop), limits.stop_strings, "stop strings", "stop")
    for i, word in enumerate(stop):
        limits.check(len(word), limits.stop_chars, f"characters in stop[{i}]", "stop")
    return Sampling(
        max_tokens=max_tokens or default_tokens,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        seed=body.seed,
        stop_words=stop,
        chat=chat,
        adapter=adapter,
    )


async def generate(
    gw: Gateway, request: Request, body: Sampled, prompt: str, params: Sampling, *, kind: Literal["chat", "text"],
    target: Target,
) -> Any:
    """The completion as one JSON response, or (``stream: true``) as server-sent events ending with [DONE]."""
    try:
        inputs = generation_inputs(prompt, params, stream=True)
    except InvalidInputError as err:
        raise APIError(400, str(err), code="invalid_value") from None
    await gw.discover_adapters()  # also learns which ensembles report token counts (at most every 30 s)
    if gw.counts_tokens.get(target.triton_model):  # the engine reports exact token counts for `usage`
        inputs = {**inputs, **{name: np.array([[True]]) for name in TOKEN_COUNT_INPUTS}}
    gen = _Generation(
        gw.client, target.triton_model, inputs, timeout=gw.timeout,
        engine_model=gw.models.engine_model(target.model_id), version=target.version,
    )
    pieces = gen.pieces()
    created, rid = int(time.time()), ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    # the first piece before the first byte: a request Triton rejects gets a proper status, not a broken stream
    first: str | None
    try:
        first = await pieces.__anext__()
    except StopAsyncIteration:
        first = None
    except BaseException:
        await pieces.aclose()  # type: ignore[attr-defined]
        raise

    def finish_reason() -> str:
        return "length" if gen.completion_tokens >= params.max_tokens else "stop"

    def usage() -> dict[str, int]:
        done, prompt_tokens = gen.completion_tokens, gen.prompt_tokens
        return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}

    if not body.stream:
        parts = [] if first is None else [first]
        try:
            parts.extend([p async for p in pieces])
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]
        text = "".join(parts)
        if kind == "chat":
            choice = {
                "index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None, "finish_reason": finish_reason(),
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason()}
            obj = "text_completion"
        return JSONResponse({
            "id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": None,
            "choices": [choice], "usage": usage(),
        })

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(piece: str | None, *, role: bool = False, reason: str | None = None) -> dict[str, Any]:
        if kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if piece is not None:
                delta["content"] = piece
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": reason}
        payload = {
            "id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": None,
            "choices": [choice],
        }
        if include_usage:
            payload["usage"] = None
        return payload

    async def events() -> AsyncIterator[str]:
        try:
            if kind == "chat":
                yield _sse(chunk(None, role=True))
            if first is not None:
                yield _sse(chunk(first))
                try:
                    async for piece in pieces:
                        yield _sse(chunk(piece))
                except ClientError as err:
                    request.state.gw_upstream_error = True
                    yield _sse(from_client_error(err).body())
                    yield "data: [DONE]\n\n"
                    return
            yield _sse(chunk(None, reason=finish_reason()))
            if include_usage:
                yield _sse({
                    "id": rid, "object": obj, "created": created, "model": body.model,
                    "system_fingerprint": None, "choices": [], "usage": usage(),
                })
            yield "data: [DONE]\n\n"
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
