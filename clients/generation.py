"""Text generation against the `llm` ensemble (upstream TensorRT-LLM tensor names), shared by both clients.

The ensemble is decoupled (it streams), so gRPC requests go through Triton's bidirectional stream API even when
one response is wanted; over HTTP, non-streamed generation uses Triton's generate extension
(`POST /v2/models/<model>/generate`: Triton's HTTP infer endpoint refuses decoupled models).

Stopping early: leaving a `stream()` loop cancels the gRPC stream and, because Triton 2.51 does not pass an
ensemble's cancellation on to its steps, also sends upstream's `stop` signal (same request id) to the engine
model so it stops generating for that request.
"""

from __future__ import annotations

import contextlib
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


def _one(value: Any, dtype: Any) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def generation_inputs(prompt: str, sampling: Sampling, *, stream: bool) -> dict[str, np.ndarray]:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ClientError(f"prompt must be a non-empty string, got {prompt!r}")
    sampling.check()
    inputs: dict[str, np.ndarray] = {
        "text_input": _one(prompt.encode("utf-8"), object),
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
            inputs[name] = np.array([[w.encode("utf-8") for w in words]], dtype=object)
    if sampling.chat:
        inputs["apply_chat_template"] = _one(True, bool)
    if sampling.adapter is not None:
        inputs["lora_name"] = _one(sampling.adapter.encode("utf-8"), object)
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


def _final(result: Any) -> bool:
    params = result.get_response().parameters
    return "triton_final_response" in params and params["triton_final_response"].bool_param


def grpc_stream(
    client_kwargs: dict[str, Any],
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    engine_model: str | None,
    classify: Any,
) -> Iterator[str]:
    """Yield text_output pieces of one request over a dedicated gRPC stream until the final response."""
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
            piece = text_of({"text_output": result.as_numpy("text_output")})
            if piece:
                yield piece
            if _final(result):
                finished = True
                return
    finally:
        try:
            client.stop_stream(cancel_requests=not finished)
            if not finished and engine_model:
                _send_stop(client, engine_model, request_id)
        finally:
            client.close()


def _send_stop(client: Any, engine_model: str, request_id: str) -> None:
    """Upstream's stop signal: a request to the engine with the running request's id and `stop` true."""
    import tritonclient.grpc as grpcclient

    arrays = {
        "input_ids": np.zeros((1, 1), np.int32),
        "input_lengths": np.ones((1, 1), np.int32),
        "request_output_len": np.ones((1, 1), np.int32),
        "stop": np.ones((1, 1), bool),
        "streaming": np.zeros((1, 1), bool),
    }
    done: queue.Queue[Any] = queue.Queue()
    try:
        client.start_stream(callback=lambda result, error: done.put(error))
        client.async_stream_infer(engine_model, _grpc_inputs(grpcclient, arrays), request_id=request_id)
        done.get(timeout=5)
    except Exception:  # best effort: the stream was closed anyway
        pass
    finally:
        client.stop_stream()


async def grpc_stream_async(
    transport: Any, model: str, inputs: Mapping[str, np.ndarray], *, timeout: float | None, classify: Any
) -> Any:
    """Async generator of text_output pieces over ``tritonclient.grpc.aio``'s bidirectional stream."""
    import tritonclient.grpc.aio as aio

    request = {
        "model_name": model,
        "inputs": _grpc_inputs(aio, inputs),
        "request_id": uuid.uuid4().hex,
        "enable_empty_final_response": True,
    }

    async def requests() -> Any:
        yield request

    stream = transport.stream_infer(inputs_iterator=requests(), stream_timeout=timeout)
    try:
        async for result, error in stream:
            if error is not None:
                raise classify(error)
            piece = text_of({"text_output": result.as_numpy("text_output")})
            if piece:
                yield piece
            if _final(result):
                return
    finally:
        stream.cancel()


def generate_payload(inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The JSON body of Triton's generate extension: one value per input (lists for the word lists)."""
    body: dict[str, Any] = {}
    for name, array in inputs.items():
        values = [v.decode("utf-8") if isinstance(v, bytes) else v.item() for v in array.reshape(-1)]
        body[name] = values if name in ("stop_words", "bad_words") else values[0]
    return body


def http_generate(base_url: str, model: str, body: Mapping[str, Any], *, timeout: float | None, context: Any) -> str:
    """POST to /v2/models/<model>/generate; a ClientError carries Triton's error message and status."""
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
