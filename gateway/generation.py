"""Chat and text completions over the access layer's stream: whole answers, or server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

from tritonforge.clients.client import AsyncClient
from tritonforge.clients.generation import (
    UINT64_MAX,
    Sampling,
    chat_inputs,
    chat_turns,
    flattened,
    generation_inputs,
)
from tritonforge.errors import ClientError, InvalidInputError
from tritonforge.gateway.errors import CLIENT_CLOSED_REQUEST, APIError, AskedFor, from_client_error
from tritonforge.gateway.schemas import GatewayLimits, Message, Sampled
from tritonforge.triton.bounded import gather_bounded
from tritonforge.triton.tensors import is_final, text_of

TOKEN_COUNT_INPUTS = ("return_num_input_tokens", "return_num_output_tokens")

if TYPE_CHECKING:  # the state module imports this one's neighbours; only the annotations need it
    from tritonforge.gateway.state import Gateway, Target

LOG = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------- generation


def turns_of(messages: list[Message]) -> list[dict[str, str]]:
    """The request's messages as the llm ensemble's chat_messages turns (the clients' chat_turns: ``developer`` as
    ``system``); a content part that is not text is a 400 naming it (Message.text)."""
    return chat_turns([{"role": m.role, "content": m.text(i)} for i, m in enumerate(messages)])


def flatten_messages(messages: list[Message]) -> str:
    """The conversation as one text (see the module docstring): what an ensemble without chat_messages renders,
    and the prompt the limits count."""
    return flattened(turns_of(messages))


REPLACEMENT = "\ufffd"  # what a decoder makes of a character whose bytes are not all there


class StopScanner:
    """OpenAI's stop sequences over streamed text: the text ends before the first one, which is not sent.

    The runtimes differ here: the LLM API ends its text before a stop string (nothing is left to cut), while
    TensorRT-LLM's engine contract matches stop words by token ids and keeps the one it matched at the end of the
    output (and misses a stop string spelled by other tokens). Text that could be the start of a stop string is
    held back until the next piece tells (at most the longest stop string's length less one character)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.hold = max((len(stop) for stop in self.stops), default=1) - 1
        self.text, self.sent, self.hit = "", 0, False

    def feed(self, piece: str) -> str:
        """The text that can be sent now that ``piece`` has come; ``hit`` once a stop string was found."""
        self.text += piece
        # a stop string cannot start in text already sent: that text was followed by `hold` more characters
        found = [i for i in (self.text.find(stop, self.sent) for stop in self.stops) if i >= 0]
        end = min(found) if found else max(self.sent, len(self.text) - self.hold)
        self.hit = bool(found)
        out, self.sent = self.text[self.sent:end], end
        return out

    def rest(self) -> str:
        """What was held back, once the text has ended without a stop string."""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


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
        stops: Sequence[str] = (),
    ) -> None:
        self.client, self.model, self.inputs, self.timeout = client, model, inputs, timeout
        self.engine_model, self.version, self.stops = engine_model, version, stops
        self.stopped = False  # the text reached a stop string (and was cut before it)
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
        # U+FFFD at the end of what has come so far is held back until more text follows: at the end of the
        # generation it is a character max_tokens cut in the middle of its bytes, which vLLM does not send either
        # (the runtimes hold such characters back within a stream, but send the last one as decoded)
        held = ""
        async with contextlib.aclosing(stream) as pieces:
            scanner = StopScanner(self.stops) if self.stops else None
            async for piece in pieces:
                text = held + (scanner.feed(piece) if scanner is not None else piece)
                sent = text.rstrip(REPLACEMENT)
                held = text[len(sent):]
                if sent:
                    yield sent
                if scanner is not None and scanner.hit:  # leaving closes the stream: the engine is stopped
                    self.stopped = True
                    return
            text = held + (scanner.rest() if scanner is not None else "")
            if text.rstrip(REPLACEMENT):
                yield text.rstrip(REPLACEMENT)


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


OPENAI_TEMPERATURE = 1.0  # OpenAI's (and vLLM's) default temperature


def temperature_of(body: Sampled) -> float | None:
    """The temperature the request is served at: the client's; else OpenAI's 1.0 when it asks for several choices
    (``n`` > 1) or sends a ``seed`` but none of temperature, top_p and top_k. Greedy by default, those requests got
    ``n`` copies of one answer (paid ``n`` times) and a seed that changed nothing, where OpenAI and vLLM sample at
    1.0: asking for several answers, or for a seed, asks for sampling."""
    if body.temperature is None and body.top_p is None and body.top_k is None and (
        (body.n or 1) > 1 or body.seed is not None
    ):
        return OPENAI_TEMPERATURE
    return body.temperature


def samples(body: Sampled) -> bool:
    """Whether the request asks for sampling, by the LLM API's rule (TensorRT-LLM's SamplingParams, cited in
    python_backends/cpu_llm/cpu_llm_llmapi.py) applied to its temperature as served (temperature_of): greedy when
    none of temperature, top_p and top_k is given, or top_k is 1, top_p 0 or temperature 0."""
    t, p, k = temperature_of(body), body.top_p, body.top_k
    return not ((t is None and p is None and k is None) or k == 1 or p == 0 or t == 0)


def sampling(
    limits: GatewayLimits, body: Sampled, max_tokens: int | None, default_tokens: int, *, chat: bool,
    adapter: str | None = None,
) -> Sampling:
    """The request's generation controls, the same decoding on every runtime behind the ``llm`` ensemble.

    A sampled request is sent with a top_p (1.0 when the client sent none): TensorRT-LLM's engine contract (the
    ``tensorrt_llm`` tensors, and the cpu engine serving them) decodes greedily unless top_k > 1 or top_p is set,
    so a ``temperature`` alone, which the LLM API and OpenAI sample with, would come back greedy there. And it is
    sent with a seed (a fresh random one when the client sent none): every TensorRT-LLM runtime seeds an unseeded
    request with 0, so the same prompt would draw the same "sample" every time, where OpenAI's API varies it."""
    limits.check(body.n or 1, limits.generations, "choices (n)", "n")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    limits.check(len(stop), limits.stop_strings, "stop strings", "stop")
    for i, word in enumerate(stop):
        limits.check(len(word), limits.stop_chars, f"characters in stop[{i}]", "stop")
    sampled = samples(body)
    return Sampling(
        max_tokens=max_tokens or default_tokens,
        temperature=temperature_of(body),
        top_k=body.top_k,
        top_p=1.0 if sampled and body.top_p is None else body.top_p,
        seed=secrets.randbits(64) if sampled and body.seed is None else body.seed,
        presence_penalty=body.presence_penalty or None,  # 0 (what many SDKs send) is no penalty: nothing to send
        frequency_penalty=body.frequency_penalty or None,
        stop_words=stop,
        chat=chat,
        adapter=adapter,
    )


def _choice_seeds(params: Sampling, n: int) -> list[int | None]:
    """Choice i of a sampled request draws with seed + i (mod 2**64): n different samples, reproducible when the
    client sent the seed. Greedy choices carry no seed: the client asked for greedy decoding (temperature 0, top_k 1
    or top_p 0; ``n`` > 1 without any of them samples, temperature_of), and gets that one answer n times."""
    if params.seed is None:
        return [None] * n
    return [(params.seed + i) % (UINT64_MAX + 1) for i in range(n)]


class _Choice:
    """One of the request's ``n`` answers: its generation, its stream of pieces, and the first piece (awaited before
    the response starts, so that a request Triton rejects gets a proper status, not a broken stream)."""

    def __init__(self, index: int, gen: _Generation) -> None:
        self.index, self.gen = index, gen
        self.pieces = gen.pieces()
        self.first: str | None = None
        self.ended = False

    async def start(self) -> None:
        try:
            self.first = await self.pieces.__anext__()
        except StopAsyncIteration:
            self.ended = True

    async def text(self) -> str:
        parts = [] if self.first is None else [self.first]
        if not self.ended:
            parts.extend([p async for p in self.pieces])
        return "".join(parts)

    async def close(self) -> None:
        await self.pieces.aclose()  # type: ignore[attr-defined]


async def _merged(choices: list[_Choice]) -> AsyncIterator[tuple[int, str | None]]:
    """(choice index, piece) as the choices produce them, then (index, None) when that choice has ended; the first
    failure is raised. One choice is read directly: the common case pays for no task or queue."""
    for c in choices:
        if c.first is not None:
            yield c.index, c.first
    if len(choices) == 1:
        (c,) = choices
        if not c.ended:
            async for piece in c.pieces:
                yield c.index, piece
        yield c.index, None
        return
    queue: asyncio.Queue[tuple[int, str | None, BaseException | None]] = asyncio.Queue()

    async def pump(c: _Choice) -> None:
        try:
            if not c.ended:
                async for piece in c.pieces:
                    queue.put_nowait((c.index, piece, None))
            queue.put_nowait((c.index, None, None))
        except Exception as err:
            queue.put_nowait((c.index, None, err))

    tasks = [asyncio.create_task(pump(c)) for c in choices]
    try:
        running = len(choices)
        while running:
            index, next_piece, err = await queue.get()
            if err is not None:
                raise err
            running -= next_piece is None
            yield index, next_piece
    finally:
        for task in tasks:  # a choice still running is cancelled: its stream's close stops its generation
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result, unless the client goes away first: then ``work`` is cancelled (its streams close, which
    sends the engine its stop) and the request ends with 499. Starlette cancels a streamed response's generator when
    the client leaves, but not a handler still awaiting a whole answer: the engine went on to max_tokens for nobody."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if not task.done() or task.cancelled():
        raise APIError(CLIENT_CLOSED_REQUEST, "the client closed the request before the answer was ready",
                       code="client_closed")
    return task.result()


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone: the body is read, so the next ASGI message is http.disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def generate(
    gw: Gateway, request: Request, body: Sampled, prompts: list[str], params: Sampling, *,
    kind: Literal["chat", "text"], target: Target, messages: list[dict[str, str]] | None = None,
) -> Any:
    """The completion as one JSON response, or (``stream: true``) as server-sent events ending with [DONE]. Every
    prompt gets ``n`` choices, all generated at once: choice ``p * n + i`` is prompt p's i-th (OpenAI's order).
    ``messages``: a chat's turns, sent as the clients send them (chat_inputs: as chat_messages where the ensemble
    declares them, with their flattened text, the one prompt, as text_input)."""
    n = body.n or 1
    engine_model = gw.models.engine_model(target.model_id)
    await gw.discover_adapters()  # also learns which ensembles report token counts (at most every 30 s)
    counts = gw.counts_tokens.get(target.triton_model)  # the engine reports exact token counts for `usage`
    choices: list[_Choice] = []
    for prompt in prompts:
        try:
            if messages is None:
                inputs = generation_inputs(prompt, params, stream=True)
            else:
                takes = bool(gw.takes_messages.get(target.triton_model))
                inputs = chat_inputs(messages, params, stream=True, with_messages=takes)
        except InvalidInputError as err:
            raise APIError(400, str(err), code="invalid_value") from None
        if counts:
            inputs = {**inputs, **{name: np.array([[True]]) for name in TOKEN_COUNT_INPUTS}}
        for seed in _choice_seeds(params, n):
            choice_inputs = inputs if seed is None else {**inputs, "seed": np.array([[seed]], dtype=np.uint64)}
            gen = _Generation(gw.client, target.triton_model, choice_inputs, timeout=gw.timeout,
                              engine_model=engine_model, version=target.version, stops=params.stop_words)
            choices.append(_Choice(len(choices), gen))
    created, rid = int(time.time()), ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    completion_tokens = getattr(body, "max_completion_tokens", None)  # chat's newer name for max_tokens
    asked = AskedFor("messages" if kind == "chat" else "prompt",
                     "max_completion_tokens" if completion_tokens else "max_tokens",
                     tokens_sent=bool(completion_tokens or body.max_tokens))
    request.state.gw_asked = asked  # the error handler's, for a failure before the response starts

    async def close_all() -> None:
        for c in choices:
            await c.close()

    try:
        # all at once; the first failure cancels the others and waits for them, so that no stream is still being
        # read when close_all closes it
        await unless_disconnected(request, gather_bounded([c.start for c in choices], len(choices)))
    except BaseException:
        await close_all()
        raise

    def finish_reason(c: _Choice) -> str:
        return "length" if c.gen.completion_tokens >= params.max_tokens and not c.gen.stopped else "stop"

    def prompt_tokens(index: int) -> int:
        first = index - index % n  # a prompt's choices are together: the engine counted its tokens for each
        return max(c.gen.prompt_tokens for c in choices[first:first + n])

    def usage() -> dict[str, int]:
        done = sum(c.gen.completion_tokens for c in choices)
        prompt = sum(prompt_tokens(p) for p in range(0, len(choices), n))  # each prompt once, not once per choice
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    if not body.stream:
        try:
            texts = await unless_disconnected(request, gather_bounded([c.text for c in choices], len(choices)))
        finally:
            await close_all()
        if kind == "chat":
            answers = [{
                "index": c.index, "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None, "finish_reason": finish_reason(c),
            } for c, text in zip(choices, texts, strict=True)]
            obj = "chat.completion"
        else:
            answers = [{"index": c.index, "text": text, "logprobs": None, "finish_reason": finish_reason(c)}
                       for c, text in zip(choices, texts, strict=True)]
            obj = "text_completion"
        return JSONResponse({
            "id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": None,
            "choices": answers, "usage": usage(),
        })

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    # vLLM's continuous_usage_stats (with include_usage; schemas.check_sampled): every chunk carries its choice's
    # usage so far, its prompt's tokens and the tokens generated, as vLLM counts them (the role chunk: 0 generated)
    continuous = include_usage and bool(body.stream_options and body.stream_options.continuous_usage_stats)
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def choice_usage(index: int, *, role: bool) -> dict[str, int]:
        prompt, done = prompt_tokens(index), 0 if role else choices[index].gen.completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def chunk(index: int, piece: str | None, *, role: bool = False, reason: str | None = None) -> dict[str, Any]:
        if kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if piece is not None:
                delta["content"] = piece
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": index, "text": piece or "", "logprobs": None, "finish_reason": reason}
        payload = {
            "id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": None,
            "choices": [choice],
        }
        if include_usage:
            payload["usage"] = choice_usage(index, role=role) if continuous else None
        return payload

    async def events() -> AsyncIterator[str]:
        merged = _merged(choices)
        gw.open_streams.add(stream)
        try:
            if kind == "chat":
                for c in choices:
                    yield _sse(chunk(c.index, None, role=True))
            try:
                async for index, piece in merged:
                    if piece is None:
                        yield _sse(chunk(index, None, reason=finish_reason(choices[index])))
                    else:
                        yield _sse(chunk(index, piece))
            except ClientError as err:
                failure = from_client_error(err, asked)
                request.state.gw_upstream_error = True
                request.state.gw_upstream_status = failure.status  # the stream's 200 is on the wire already
                yield _sse(failure.body())
                yield "data: [DONE]\n\n"
                return
            if include_usage:
                yield _sse({
                    "id": rid, "object": obj, "created": created, "model": body.model,
                    "system_fingerprint": None, "choices": [], "usage": usage(),
                })
            yield "data: [DONE]\n\n"
        finally:
            try:
                await merged.aclose()  # type: ignore[attr-defined]
                await close_all()
            finally:
                gw.open_streams.discard(stream)  # last: the gateway's shutdown waits for this

    stream = events()
    return StreamingResponse(
        stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
