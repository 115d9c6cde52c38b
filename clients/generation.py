"""Text generation against the `llm` ensemble (upstream TensorRT-LLM tensor names), shared by both clients.

The ensemble is decoupled (it streams), so gRPC requests go through Triton's bidirectional stream API even when
one response is wanted; over HTTP, non-streamed generation uses Triton's generate extension
(`POST /v2/models/<model>/generate`: Triton's HTTP infer endpoint refuses decoupled models).

Stopping early: leaving a `stream()` loop cancels the gRPC stream and, because Triton 2.51 does not pass an
ensemble's cancellation on to its steps, also sends upstream's `stop` signal (same request id) to the engine
model so it stops generating for that request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tritonforge.errors import ClientError, TransientError


@dataclass(frozen=True)
class Sampling:
    """Generation controls; None leaves the server's (upstream's) default."""

    max_tokens: int = 64
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_words: Sequence[str] = ()
    bad_words: Sequence[str] = ()
    end_id: int | None = None
    pad_id: int | None = None
    chat: bool = False  # render the checkpoint's chat template around the prompt (tritonforge addition)
    adapter: str | None = None  # LoRA adapter name (served models that register adapters)

    def check(self) -> None:
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ClientError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if self.temperature is not None and self.temperature < 0:
            raise ClientError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ClientError(f"top_k must be >= 0, got {self.top_k}")
        if self.top_p is not None and not 0 <= self.top_p <= 1:
            raise ClientError(f"top_p must be in [0, 1], got {self.top_p}")
        # the tensors these become: a larger value would wrap silently (or fail deep in numpy)
        if self.max_tokens > INT32_MAX:
            raise ClientError(f"max_tokens must be <= {INT32_MAX}, got {self.max_tokens}")
        if self.top_k is not None and self.top_k > INT32_MAX:
            raise ClientError(f"top_k must be <= {INT32_MAX}, got {self.top_k}")
        if self.seed is not None and not 0 <= self.seed <= UINT64_MAX:
            raise ClientError(f"seed must be in [0, {UINT64_MAX}], got {self.seed}")
        if self.temperature is not None and self.temperature != self.temperature:
            raise ClientError("temperature must be a number, got NaN")


INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1


def _utf8(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ClientError(f"{field} is not valid Unicode ({err.reason} at {err.start}): send UTF-8 text") from None


def _one(value: Any, dtype: Any) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def generation_inputs(prompt: str, sampling: Sampling, *, stream: bool) -> dict[str, np.ndarray]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ClientError(f"prompt must be a non-empty string, got {prompt!r}")
    sampling.check()
    inputs: dict[str, np.ndarray] = {
        "text_input": _one(_utf8(prompt, "prompt"), object),
        "max_tokens": _one(sampling.max_tokens, np.int32),
        "stream": _one(stream, bool),
    }
    optional = {
        "temperature": (sampling.temperature, np.float32),
        "top_k": (sampling.top_k, np.int32),
        "top_p": (sampling.top_p, np.float32),
        "seed": (sampling.seed, np.uint64),
        "end_id": (sampling.end_id, np.int32),
        "pad_id": (sampling.pad_id, np.int32),
    }
    for name, (value, dtype) in optional.items():
        if value is not None:
            inputs[name] = _one(value, dtype)
    for name, words in (("stop_words", sampling.stop_words), ("bad_words", sampling.bad_words)):
        if words:
            inputs[name] = np.array([[_utf8(w, name) for w in words]], dtype=object)
    if sampling.chat:
        inputs["apply_chat_template"] = _one(True, bool)
    if sampling.adapter is not None:
        inputs["lora_name"] = _one(_utf8(sampling.adapter, "adapter"), object)
    return inputs


def text_of(outputs: Mapping[str, np.ndarray | None]) -> str:
    out = outputs.get("text_output")
    if out is None:
        return ""
    return "".join(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(out).reshape(-1))


def _grpc_inputs(mod: Any, inputs: Mapping[str, np.ndarray]) -> list[Any]:
    from tritonforge.clients.client import triton_dtype

    built = []
    for name, array in inputs.items():
        tensor = mod.InferInput(name, list(array.shape), triton_dtype(array))
        tensor.set_data_from_numpy(array)
        built.append(tensor)
    return built


def _read(result: Any, on_result: Any) -> tuple[str, bool]:
    """One streamed response: hand it to ``on_result`` (sources of a rag answer, ...), then its text and whether
    it is the last one."""
    if on_result is not None:
        on_result(result)
    return text_of({"text_output": result.as_numpy("text_output")}), _final(result)


def _final(result: Any) -> bool:
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


LORA_EVICTED = "not found in cache"  # TensorRT-LLM: "LoRA task N not found in cache. Please send LoRA weights ..."
LORA_SEND_INPUT = "lora_send_weights"


def resend_lora_weights(inputs: Mapping[str, Any], err: BaseException) -> dict[str, Any] | None:
    """The same request asking preprocessing to attach the adapter's weights, when TensorRT-LLM answered that it
    evicted the adapter from its LoRA cache (the known gap of upstream's flow); None when that does not apply.

    Works on tensors (gRPC) and on generate-extension JSON bodies alike."""
    if "lora_name" not in inputs or LORA_SEND_INPUT in inputs or LORA_EVICTED not in str(err):
        return None
    flag: Any = _one(True, bool) if isinstance(inputs["lora_name"], np.ndarray) else True
    return {**inputs, LORA_SEND_INPUT: flag}


def grpc_stream(
    client_kwargs: dict[str, Any],
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    engine_model: str | None,
    classify: Any,
    on_result: Any = None,
) -> Iterator[str]:
    """Yield text_output pieces of one request over a dedicated gRPC stream until the final response.

    An adapter evicted from TensorRT-LLM's LoRA cache fails before any token: the request is sent once more with
    its weights (see :func:`resend_lora_weights`)."""
    yielded = False
    kwargs = {"timeout": timeout, "engine_model": engine_model, "classify": classify, "on_result": on_result}
    try:
        for piece in _grpc_stream_once(client_kwargs, model, inputs, **kwargs):
            yielded = True
            yield piece
    except ClientError as err:
        retry = None if yielded else resend_lora_weights(inputs, err)
        if retry is None:
            raise
        yield from _grpc_stream_once(client_kwargs, model, retry, **kwargs)


def _grpc_stream_once(
    client_kwargs: dict[str, Any],
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    engine_model: str | None,
    classify: Any,
    on_result: Any = None,
) -> Iterator[str]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(**client_kwargs)
    responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
    request_id = uuid.uuid4().hex
    finished = False
    try:
        client.start_stream(callback=lambda result, error: responses.put((result, error)))
        client.async_stream_infer(
            model, _grpc_inputs(grpcclient, inputs), request_id=request_id, enable_empty_final_response=True
        )
        while True:
            try:
                result, error = responses.get(timeout=timeout)
            except queue.Empty:
                raise ClientError(f"model '{model}': no response within {timeout} s") from None
            if error is not None:
                finished = True  # the server ended the request
                raise classify(error)
            piece, finished = _read(result, on_result)
            if piece:
                yield piece
            if finished:
                return
    finally:
        try:
            client.stop_stream(cancel_requests=not finished)
            if not finished and engine_model:
                _send_stop(client, engine_model, request_id)
        finally:
            client.close()


STOP_SIGNALS = (  # upstream's stop request, in the engine path's tensors, then in the LLM API model's
    {
        "input_ids": ((1, 1), np.int32),
        "input_lengths": ((1, 1), np.int32),
        "request_output_len": ((1, 1), np.int32),
        "stop": ((1, 1), bool),
        "streaming": ((1, 1), bool),
    },
    {"text_input": ((1, 1), object), "stop": ((1, 1), bool), "streaming": ((1, 1), bool)},
)


def stop_signal_arrays(contract: int) -> dict[str, np.ndarray]:
    """The stop request's tensors for the engine path (0) or the LLM API model (1): `stop` true, one token or an
    empty prompt, not streamed."""
    arrays: dict[str, np.ndarray] = {}
    for name, (shape, dtype) in STOP_SIGNALS[contract].items():
        if dtype is object:
            arrays[name] = np.full(shape, b"", dtype=object)
        elif name == "stop":
            arrays[name] = np.ones(shape, dtype)
        elif dtype is bool:
            arrays[name] = np.zeros(shape, dtype)
        else:
            arrays[name] = np.ones(shape, dtype) if name != "input_ids" else np.zeros(shape, dtype)
    return arrays


def wrong_contract(error: Any) -> bool:
    """Triton's answer to tensors the model does not declare (the other runtime's stop request)."""
    text = str(error)
    return "unexpected inference input" in text or "expected number of inputs" in text or "is missing" in text


def _send_stop(client: Any, engine_model: str, request_id: str) -> None:
    """Upstream's stop signal: a request to the engine with the running request's id and `stop` true, in the
    tensors of whichever runtime (engine or LLM API) the engine model is."""
    import tritonclient.grpc as grpcclient

    for contract in range(len(STOP_SIGNALS)):
        done: queue.Queue[Any] = queue.Queue()
        try:
            client.start_stream(callback=lambda result, error, done=done: done.put(error))
            client.async_stream_infer(
                engine_model, _grpc_inputs(grpcclient, stop_signal_arrays(contract)), request_id=request_id
            )
            error = done.get(timeout=5)
        except Exception:  # best effort: the stream was closed anyway
            return
        finally:
            client.stop_stream()
        if error is None or not wrong_contract(error):
            return


async def send_stop_async(transport: Any, engine_model: str, request_id: str) -> None:
    """Upstream's stop signal over ``tritonclient.grpc.aio``: a request to the engine with the running request's id
    and ``stop`` true, in the engine path's tensors, else (the model declares other inputs) the LLM API model's.
    Best effort: the stream was cancelled anyway."""
    import tritonclient.grpc.aio as aio

    for contract in range(len(STOP_SIGNALS)):
        request = {
            "model_name": engine_model,
            "inputs": _grpc_inputs(aio, stop_signal_arrays(contract)),
            "request_id": request_id,
        }

        async def requests(request: dict[str, Any] = request) -> Any:
            yield request

        stream = None
        try:
            stream = transport.stream_infer(inputs_iterator=requests(), stream_timeout=5)
            _result, error = await asyncio.wait_for(stream.__anext__(), 5)  # aio streams yield errors, not raise
            if error is None or not wrong_contract(error):
                return
        except Exception as err:
            if not wrong_contract(err):
                return
        finally:
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.cancel()


async def grpc_stream_async(
    transport: Any,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    classify: Any,
    on_result: Any = None,
    engine_model: str | None = None,
) -> Any:
    """Async generator of text_output pieces over ``tritonclient.grpc.aio``'s bidirectional stream (an evicted
    LoRA adapter is sent once more with its weights, as in :func:`grpc_stream`). Leaving early cancels the stream
    and, with ``engine_model``, sends upstream's stop to it: Triton 2.51 does not pass an ensemble's cancellation
    on to its steps, so the engine would otherwise generate to max_tokens."""
    yielded = False
    kwargs = {"timeout": timeout, "classify": classify, "on_result": on_result, "engine_model": engine_model}
    # aclosing: a consumer leaving early must close the inner generator now (its finally sends the stop), not
    # whenever the event loop finalizes it, by which time the transport may be closed
    try:
        async with contextlib.aclosing(_grpc_stream_async_once(transport, model, inputs, **kwargs)) as pieces:
            async for piece in pieces:
                yielded = True
                yield piece
    except ClientError as err:
        retry = None if yielded else resend_lora_weights(inputs, err)
        if retry is None:
            raise
        async with contextlib.aclosing(_grpc_stream_async_once(transport, model, retry, **kwargs)) as pieces:
            async for piece in pieces:
                yield piece


async def _grpc_stream_async_once(
    transport: Any,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    classify: Any,
    on_result: Any = None,
    engine_model: str | None = None,
) -> Any:
    import tritonclient.grpc.aio as aio

    request_id = uuid.uuid4().hex
    request = {
        "model_name": model,
        "inputs": _grpc_inputs(aio, inputs),
        "request_id": request_id,
        "enable_empty_final_response": True,
    }

    async def requests() -> Any:
        yield request

    stream = transport.stream_infer(inputs_iterator=requests(), stream_timeout=timeout)
    finished = False
    try:
        async for result, error in stream:
            if error is not None:
                finished = True  # the server ended the request
                raise classify(error)
            piece, finished = _read(result, on_result)
            if piece:
                yield piece
            if finished:
                return
    finally:
        stream.cancel()
        if not finished and engine_model:
            # shielded: this runs while the consumer's task may be cancelled (it left the loop or went away)
            with contextlib.suppress(BaseException):
                await asyncio.shield(send_stop_async(transport, engine_model, request_id))


def generate_payload(inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The JSON body of Triton's generate extension: one value per input (lists for the word lists)."""
    body: dict[str, Any] = {}
    for name, array in inputs.items():
        values = [v.decode("utf-8") if isinstance(v, bytes) else v.item() for v in array.reshape(-1)]
        body[name] = values if name in ("stop_words", "bad_words") else values[0]
    return body


def http_generate(base_url: str, model: str, body: Mapping[str, Any], *, timeout: float | None, context: Any) -> str:
    """POST to /v2/models/<model>/generate; a ClientError carries Triton's error message and status (an evicted
    LoRA adapter is sent once more with its weights, as in :func:`grpc_stream`)."""
    try:
        return _http_generate_once(base_url, model, body, timeout=timeout, context=context)
    except ClientError as err:
        retry = resend_lora_weights(body, err)
        if retry is None:
            raise
        return _http_generate_once(base_url, model, retry, timeout=timeout, context=context)


def _http_generate_once(
    base_url: str, model: str, body: Mapping[str, Any], *, timeout: float | None, context: Any
) -> str:
    import json
    import urllib.error
    import urllib.request

    url = f"{base_url.rstrip('/')}/v2/models/{model}/generate"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            reply = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError):
            detail = json.loads(detail).get("error", detail)
        err_cls = TransientError if err.code == 503 and "queue size" not in detail else ClientError
        raise err_cls(f"model '{model}': {detail} (HTTP {err.code})") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
        raise TransientError(f"model '{model}': HTTP server {base_url} is unreachable: {err}") from None
    return str(reply.get("text_output", ""))


# ---------------------------------------------------------------------------------------------- the rag ensemble


@dataclass(frozen=True)
class Source:
    """A passage the answer was given: its id and reranker score (best first)."""

    id: str
    score: float


@dataclass(frozen=True)
class RagAnswer:
    text: str
    sources: list[Source]
    prompt: str
    dropped: int  # reranked passages left out so the prompt fits the LLM's max_input_len (lowest-ranked first)


def rag_inputs(
    query: str,
    *,
    top_k: int | None,
    top_n: int | None,
    max_tokens: int | None,
    sampling: Mapping[str, Any],
    stream: bool,
    min_score: float | None = None,
) -> dict[str, np.ndarray]:
    """Inputs of the `rag` ensemble: QUERY, optional TOP_K/TOP_N/MIN_SCORE, and the llm ensemble's generation
    controls."""
    if not isinstance(query, str) or not query.strip():
        raise ClientError(f"query must be a non-empty string, got {query!r}")
    for name in ("chat", "adapter"):
        if sampling.get(name):
            raise ClientError(f"{name} is not supported by the rag ensemble")
    inputs = generation_inputs(query, Sampling(max_tokens=max_tokens or 1, **sampling), stream=stream)
    del inputs["text_input"]
    if max_tokens is None:
        del inputs["max_tokens"]  # the rag model's default
    inputs["QUERY"] = _one(query.encode("utf-8"), object)
    for name, value in (("TOP_K", top_k), ("TOP_N", top_n)):
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ClientError(f"{name.lower()} must be an integer >= 1, got {value!r}")
            inputs[name] = _one(value, np.int32)
    if min_score is not None:
        if isinstance(min_score, bool) or not isinstance(min_score, int | float) or not math.isfinite(min_score):
            raise ClientError(f"min_score must be a finite number, got {min_score!r}")
        inputs["MIN_SCORE"] = _one(float(min_score), np.float32)
    return inputs


class _RagParts:
    """Collects the sources wherever they come (the rag ensemble sends them in its first response)."""

    def __init__(self) -> None:
        self.sources: list[Source] | None = None
        self.prompt = ""
        self.dropped = 0

    def collect(self, result: Any) -> None:
        ids = result.as_numpy("SOURCE_IDS")
        if ids is None:
            return
        scores = result.as_numpy("SOURCE_SCORES")
        ids = np.asarray(ids).reshape(-1)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1) if scores is not None else np.full(len(ids), np.nan)
        self.sources = [
            Source(i.decode("utf-8") if isinstance(i, bytes) else str(i), float(score))
            for i, score in zip(ids, scores, strict=True)
            if i not in (b"", "")
        ]
        prompt, dropped = result.as_numpy("PROMPT"), result.as_numpy("PASSAGES_DROPPED")
        if prompt is not None:
            self.prompt = text_of({"text_output": prompt})
        if dropped is not None:
            self.dropped = int(np.asarray(dropped).reshape(-1)[0])


class RagStream:
    """Text pieces of a rag answer (iterate), with ``sources``, ``prompt`` and ``dropped`` filled as soon as they
    arrive: reading ``sources`` before iterating waits for the first response only (sent before generation)."""

    def __init__(self, start: Any) -> None:
        self._parts = _RagParts()
        self._pieces: Iterator[str] = start(self._parts.collect)
        self._buffer: list[str] = []

    def __iter__(self) -> RagStream:
        return self

    def __next__(self) -> str:
        if self._buffer:
            return self._buffer.pop(0)
        return next(self._pieces)

    def _wait(self) -> _RagParts:
        while self._parts.sources is None:
            try:
                self._buffer.append(next(self._pieces))
            except StopIteration:
                break
        return self._parts

    @property
    def sources(self) -> list[Source]:
        return self._wait().sources or []

    @property
    def prompt(self) -> str:
        return self._wait().prompt

    @property
    def dropped(self) -> int:
        return self._wait().dropped

    def close(self) -> None:
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def answer(self) -> RagAnswer:
        """Read the rest of the stream: the whole answer."""
        text = "".join(self)
        parts = self._wait()
        return RagAnswer(text, parts.sources or [], parts.prompt, parts.dropped)


class AsyncRagStream:
    """The async :class:`RagStream`: ``async for piece in stream``; ``await stream.wait_sources()``."""

    def __init__(self, start: Any) -> None:
        self._parts = _RagParts()
        self._pieces = start(self._parts.collect)
        self._buffer: list[str] = []

    def __aiter__(self) -> AsyncRagStream:
        return self

    async def __anext__(self) -> str:
        if self._buffer:
            return self._buffer.pop(0)
        return await self._pieces.__anext__()

    async def wait_sources(self) -> list[Source]:
        while self._parts.sources is None:
            try:
                self._buffer.append(await self._pieces.__anext__())
            except StopAsyncIteration:
                break
        return self._parts.sources or []

    @property
    def sources(self) -> list[Source] | None:
        return self._parts.sources

    @property
    def prompt(self) -> str:
        return self._parts.prompt

    @property
    def dropped(self) -> int:
        return self._parts.dropped

    async def aclose(self) -> None:
        await self._pieces.aclose()

    async def answer(self) -> RagAnswer:
        text = "".join([p async for p in self])
        await self.wait_sources()
        return RagAnswer(text, self._parts.sources or [], self._parts.prompt, self._parts.dropped)
