"""Generation over Triton's streams: one request's text pieces until its final response, sync and async, with the
three things a caller leaving early or an evicted adapter needs.

- Cancel: leaving the loop cancels the gRPC stream.
- Stop: Triton 2.51 does not pass an ensemble's cancellation on to its steps, so the engine model would generate to
  ``max_tokens``; upstream's ``stop`` signal (same request id) goes to ``engine_model``, in the tensors of whichever
  runtime it is (the engine path's or the LLM API model's).
- LoRA resend: TensorRT-LLM answers "LoRA task N not found in cache" before any token when it evicted an adapter;
  the request is sent once more asking preprocessing to attach the adapter's weights.

Over HTTP, non-streamed generation uses Triton's generate extension (``POST /v2/models/<model>/generate``: Triton's
HTTP infer endpoint refuses decoupled models).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Iterator, Mapping
from typing import Any

import numpy as np

from tritonforge.errors import ClientError, DeadlineExceededError, ModelNotReadyError, TransientError
from tritonforge.triton.blocking_http import BlockingHttpTransport
from tritonforge.triton.errors import exhausted, map_errors, out_of_time, past_budget
from tritonforge.triton.options import RetryPolicy
from tritonforge.triton.tensors import build_inputs, is_final, text_of


def _one(value: Any, dtype: Any) -> np.ndarray:
    return np.array([[value]], dtype=dtype)


def _read(result: Any, on_result: Any) -> tuple[str, bool]:
    """One streamed response: hand it to ``on_result`` (sources of a rag answer, ...), then its text and whether
    it is the last one."""
    if on_result is not None:
        on_result(result)
    return text_of({"text_output": result.as_numpy("text_output")}), is_final(result)


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
    headers: Mapping[str, str] | None = None,
    compression: str | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield text_output pieces of one request over a dedicated gRPC stream until the final response; ``timeout``
    is the whole stream's deadline, as on :func:`grpc_stream_async`.

    Before any piece arrived, the request is sent again when it can only have failed to start: the server was
    unreachable or unavailable (a TransientError, ``retry``'s attempts with its back-off), or TensorRT-LLM had
    evicted its LoRA adapter (once, with the adapter's weights: see :func:`resend_lora_weights`)."""
    once = {"timeout": timeout, "engine_model": engine_model, "classify": classify, "on_result": on_result,
            "headers": _header_dict(headers), "compression": compression}
    attempts = _Attempts(inputs, retry, timeout)
    while True:
        yielded = False
        try:
            # closing: a consumer leaving early closes the inner generator now (its end stops the engine), not
            # whenever this frame is collected
            with contextlib.closing(_grpc_stream_once(client_kwargs, model, attempts.inputs, **once)) as pieces:
                for piece in pieces:
                    yielded = True
                    yield piece
            return
        except ClientError as err:
            wait = None if yielded else attempts.again(err)
            if wait is None:
                raise
            sleep(wait)


class _Attempts:
    """What to send after a stream failed before its first piece, or None: the same request when the server could
    not take it (by ``retry``'s policy, no wait past the stream's ``timeout``), the request with its LoRA weights
    when the adapter was evicted (once)."""

    def __init__(self, inputs: Mapping[str, Any], retry: RetryPolicy | None, timeout: float | None = None) -> None:
        self.inputs, self.policy, self.retries, self.resent = inputs, retry or RetryPolicy(retries=0), 0, False
        self.timeout, self.started = timeout, time.monotonic()

    def again(self, err: ClientError) -> float | None:
        """Seconds to wait before sending ``self.inputs`` again; raises the error that ends the attempts."""
        resend = None if self.resent else resend_lora_weights(self.inputs, err)
        if resend is not None:
            self.inputs, self.resent = resend, True
            return 0.0
        if not isinstance(err, TransientError):
            return None
        if self.retries == self.policy.retries:
            if self.policy.retries:
                raise exhausted(err, self.policy) from err
            return None
        wait = self.policy.delay(self.retries)
        if past_budget(self.timeout, self.started, wait):  # as call_with_retry's (client audit)
            raise out_of_time(err, self.retries + 1, self.timeout) from err
        self.retries += 1
        return wait


def _grpc_stream_once(
    client_kwargs: dict[str, Any],
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    engine_model: str | None,
    classify: Any,
    on_result: Any = None,
    headers: dict[str, str] | None = None,
    compression: str | None = None,
) -> Generator[str, None, None]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(**client_kwargs)
    responses: queue.Queue[tuple[Any, Any]] = queue.Queue()
    request_id = new_request_id()
    finished = stopped = False
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        try:
            client.start_stream(
                callback=lambda result, error: responses.put((result, error)), stream_timeout=timeout,
                headers=headers, compression_algorithm=compression,
            )
            client.async_stream_infer(
                model, build_inputs(grpcclient, inputs), request_id=request_id, enable_empty_final_response=True
            )
        except ClientError:
            raise
        except Exception as err:  # the stream failed at once (server unreachable): the reason is in the callback's
            finished = True
            raise classify(_reported_error(responses, err)) from None
        watch = _EngineWatch(model, engine_model) if engine_model else None
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                wait = left if watch is None else (WATCH_S if left is None else min(left, WATCH_S))
                result, error = responses.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise classify(TimeoutError(f"no final response within {timeout} s")) from None
                ready = None if watch is None else _asked(lambda: client.is_model_ready(watch.engine, headers=headers))
                if watch is not None and watch.reloaded(ready):
                    raise watch.error() from None
                continue
            if error is not None:
                failure = classify(error)
                finished = _server_ended(failure)
                raise failure
            piece, finished = _read(result, on_result)
            if piece:
                yield piece
            if finished:
                return
    except GeneratorExit:  # the consumer left early: its engine is stopped and the stream read to its end
        if engine_model:
            finished = _stop_and_drain(client_kwargs, responses, engine_model, request_id, headers)
            stopped = True
        raise
    finally:
        try:
            stream = getattr(client, "_stream", None)
            client.stop_stream(cancel_requests=not finished)
            if not finished and stream is not None:
                # tritonclient's cancel never ends the request iterator its gRPC thread reads, so that thread
                # waited forever: one leaked per stream left early or cut by a deadline (API audit). Its private
                # queue: guarded, so a tritonclient that renamed it cannot replace the caller's own error here
                with contextlib.suppress(Exception):
                    stream._request_queue.put(None)
            if not finished and engine_model and not stopped:
                _send_stop(client, engine_model, request_id, headers)
        finally:
            client.close()


DRAIN_S = 2.0  # how long a stream left early is read for its end after its engine's stop, before it is cancelled


def _stop_and_drain(
    client_kwargs: dict[str, Any], responses: queue.Queue[tuple[Any, Any]], engine_model: str, request_id: str,
    headers: dict[str, str] | None,
) -> bool:
    """Stop a stream's engine, then read the stream until the server ends it (True), for at most DRAIN_S.

    Why not cancel at once: a stopped engine ends within a step, the steps above it end with it, and then nothing
    is cancelled. Cancelled gRPC streams are what Triton 2.51's front end races on (upstream server#7368 and #8034:
    an abort or a SIGSEGV, seen here with a synthetic decoupled model; docs/serving.md). The stop goes on a second
    connection: tritonclient holds one stream a client, and this one is still open."""
    import tritonclient.grpc as grpcclient

    stopper = grpcclient.InferenceServerClient(**client_kwargs)
    try:
        _send_stop(stopper, engine_model, request_id, headers)
    finally:
        stopper.close()
    deadline = time.monotonic() + DRAIN_S
    while True:
        try:
            result, error = responses.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if error is not None or is_final(result):  # the server ended it (an error is no one's now: the consumer left)
            return True


WATCH_S = 1.0  # while a stream waits this long for its next response, its engine's readiness is asked


class _EngineWatch:
    """Whether a stream's engine model was reloaded while the stream waited on it. Triton 2.51 never answers the
    requests a dead python stub held, and `tritonforge serve`'s watchdog heals the model by reloading it: a
    change in the engine's readiness seen while waiting (ready, then not, or the other way) means that reload, and
    nothing more will come. An engine never seen ready (not in this repository under that name) is not judged."""

    def __init__(self, model: str, engine_model: str) -> None:
        self.model, self.engine = model, engine_model
        self.seen: bool | None = None

    def reloaded(self, ready: bool | None) -> bool:
        if ready is None:  # could not ask: the stream's own errors tell
            return False
        before, self.seen = self.seen, ready
        return before is not None and before != ready

    def error(self) -> ModelNotReadyError:
        return ModelNotReadyError(
            f"model '{self.model}': its engine '{self.engine}' was reloaded while this request waited for it (a "
            "python stub died?): no more responses will come; send the request again"
        )


def _asked(ask: Callable[[], bool]) -> bool | None:
    try:
        return bool(ask())
    except Exception:
        return None


async def _asked_async(transport: Any, engine_model: str, headers: dict[str, str] | None) -> bool | None:
    try:
        return bool(await transport.is_model_ready(engine_model, headers=headers))
    except Exception:
        return None


def _header_dict(headers: Mapping[str, str] | None) -> dict[str, str] | None:
    """The client's headers as tritonclient's gRPC calls take them (a dict, or None for none)."""
    return dict(headers) if headers else None


def _server_ended(error: ClientError) -> bool:
    """Whether the server ended the request with ``error``: not when it is the caller's deadline passing (gRPC
    cancels the call then, and Triton 2.51 does not pass an ensemble's cancellation on to its steps: the stop must
    still be sent)."""
    return not isinstance(error, DeadlineExceededError)


def _reported_error(responses: queue.Queue[tuple[Any, Any]], raised: BaseException, wait: float = 2.0) -> Any:
    """The error a failed stream reported to its callback. tritonclient marks the stream inactive before it calls
    the callback with the reason (e.g. UNAVAILABLE), so a request sent in between raises only "The stream is no
    longer in valid state"; that reason is what the caller needs (a TransientError, not tritonclient's exception)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            _result, error = responses.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return raised
        if error is not None:
            return error


# what a caller (the gateway: its X-Request-Id) puts before the ids of the Triton requests it streams, so Triton's
# log and the engines' stop lines can be traced back to it; a fresh uuid follows it, as the stop finds a request by
# its id and a caller's label need not be unique
REQUEST_LABEL: contextvars.ContextVar[str] = contextvars.ContextVar("tritonforge_request_label", default="")


def new_request_id() -> str:
    label = REQUEST_LABEL.get()
    return f"{label}-{uuid.uuid4().hex}" if label else uuid.uuid4().hex


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


def _send_stop(client: Any, engine_model: str, request_id: str, headers: dict[str, str] | None = None) -> None:
    """Upstream's stop signal: a request to the engine with the running request's id and `stop` true, in the
    tensors of whichever runtime (engine or LLM API) the engine model is."""
    import tritonclient.grpc as grpcclient

    for contract in range(len(STOP_SIGNALS)):
        done: queue.Queue[Any] = queue.Queue()
        try:
            client.start_stream(callback=lambda result, error, done=done: done.put(error),
                                headers=headers)
            # the empty final response is asked for: a stop is answered by the final flag alone, which tritonclient
            # drops otherwise, and every stop then waited out the 5 s below (a stream left early, or a deadline of
            # 0.2 s, returned to its caller after 5 s)
            client.async_stream_infer(
                engine_model, build_inputs(grpcclient, stop_signal_arrays(contract)), request_id=request_id,
                enable_empty_final_response=True,
            )
            error = done.get(timeout=5)
        except Exception:  # best effort: the stream was closed anyway
            return
        finally:
            client.stop_stream()
        if error is None or not wrong_contract(error):
            return


async def send_stop_async(
    transport: Any, engine_model: str, request_id: str, headers: dict[str, str] | None = None
) -> None:
    """Upstream's stop signal over ``tritonclient.grpc.aio``: a request to the engine with the running request's id
    and ``stop`` true, in the engine path's tensors, else (the model declares other inputs) the LLM API model's.
    Best effort: the stream was cancelled anyway."""
    import tritonclient.grpc.aio as aio

    for contract in range(len(STOP_SIGNALS)):
        request = {
            "model_name": engine_model,
            "inputs": build_inputs(aio, stop_signal_arrays(contract)),
            "request_id": request_id,
        }

        async def requests(request: dict[str, Any] = request) -> Any:
            yield request

        stream = None
        try:
            stream = transport.stream_infer(inputs_iterator=requests(), stream_timeout=5,
                                            headers=headers)
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


_PENDING_STOPS: set[asyncio.Future[None]] = set()


async def drain_stops(timeout: float = 5.0) -> None:
    """Wait (at most ``timeout`` seconds) for the stop signals still being sent, before closing their channel."""
    pending = [task for task in _PENDING_STOPS if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout)


async def grpc_stream_async(
    transport: Any,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    classify: Any,
    on_result: Any = None,
    engine_model: str | None = None,
    version: str = "",
    headers: Mapping[str, str] | None = None,
    compression: str | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[str, None]:
    """Async generator of text_output pieces over ``tritonclient.grpc.aio``'s bidirectional stream, sent again
    before its first piece as :func:`grpc_stream` does (server unavailable, evicted LoRA adapter). Leaving early
    sends ``engine_model`` upstream's stop and reads the stream to its end (cancelled only if it does not end within
    DRAIN_S; without ``engine_model``, at once): Triton 2.51 does not pass an ensemble's cancellation on to its steps,
    so the engine would otherwise generate to max_tokens."""
    once = {
        "timeout": timeout, "classify": classify, "on_result": on_result, "engine_model": engine_model,
        "version": version, "headers": _header_dict(headers), "compression": compression,
    }
    attempts = _Attempts(inputs, retry, timeout)
    while True:
        yielded = False
        # aclosing: a consumer leaving early must close the inner generator now (its finally sends the stop), not
        # whenever the event loop finalizes it, by which time the transport may be closed
        try:
            async with contextlib.aclosing(_grpc_stream_async_once(transport, model, attempts.inputs, **once)) as it:
                async for piece in it:
                    yielded = True
                    yield piece
            return
        except ClientError as err:
            wait = None if yielded else attempts.again(err)
            if wait is None:
                raise
            await sleep(wait)


async def _grpc_stream_async_once(
    transport: Any,
    model: str,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout: float | None,
    classify: Any,
    on_result: Any = None,
    engine_model: str | None = None,
    version: str = "",
    headers: dict[str, str] | None = None,
    compression: str | None = None,
) -> Any:
    import tritonclient.grpc.aio as aio

    request_id = new_request_id()
    request = {
        "model_name": model,
        "model_version": version,
        "inputs": build_inputs(aio, inputs),
        "request_id": request_id,  # (aio's stream_infer has no enable_empty_final_response: see the end below)
    }

    async def requests() -> Any:
        yield request

    try:
        stream = transport.stream_infer(
            inputs_iterator=requests(), stream_timeout=timeout, headers=headers,
            compression_algorithm=compression,
        )
    except Exception as err:
        raise classify(err) from err
    finished = left = False
    responses, pending = stream.__aiter__(), None
    watch = _EngineWatch(model, engine_model) if engine_model else None
    try:
        while True:
            pending = pending or asyncio.ensure_future(responses.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=None if watch is None else WATCH_S)
            if not done:  # nothing for a while: was the engine reloaded meanwhile (its stub died)?
                if watch is not None and watch.reloaded(await _asked_async(transport, watch.engine, headers)):
                    raise watch.error()
                continue
            answered, pending = pending, None
            try:
                result, error = answered.result()
            except StopAsyncIteration:
                # Triton ended the stream: every response was sent. The last one is never marked final here
                # (tritonclient's aio stream_infer cannot ask for the empty final response), so this is the end:
                # a stop sent now reached the engine as a second request after every completed generation
                finished = True
                return
            if error is not None:
                failure = classify(error)
                finished = _server_ended(failure)
                raise failure
            piece, finished = _read(result, on_result)
            if piece:
                yield piece
            if finished:
                return
    except (asyncio.CancelledError, GeneratorExit):  # the consumer left (closed the generator, or went away)
        left = True
        raise
    except ClientError:
        raise
    except Exception as err:  # grpc.aio raises its own errors (UNAVAILABLE, DEADLINE_EXCEEDED) from the stream
        failure = classify(err)
        finished = _server_ended(failure)
        raise failure from err
    finally:
        ending: Coroutine[Any, Any, None] | None
        if not finished and engine_model and left:  # stopped, then read to its end (see _stop_and_drain)
            ending = _stop_and_drain_async(transport, stream, responses, pending, engine_model, request_id, headers)
        else:
            if pending is not None:
                pending.cancel()
            with contextlib.suppress(Exception):
                stream.cancel()
            ending = send_stop_async(transport, engine_model, request_id, headers) if not finished and engine_model \
                else None
        if ending is not None:
            # shielded: this runs while the consumer's task may be cancelled (it left the loop or went away)
            task = asyncio.ensure_future(ending)
            _PENDING_STOPS.add(task)  # a strong reference until it is done, and what drain_stops() waits for
            task.add_done_callback(_PENDING_STOPS.discard)
            with contextlib.suppress(BaseException):
                await asyncio.shield(task)


async def _stop_and_drain_async(
    transport: Any, stream: Any, responses: Any, pending: asyncio.Future[Any] | None, engine_model: str,
    request_id: str, headers: dict[str, str] | None,
) -> None:
    """:func:`_stop_and_drain` over ``tritonclient.grpc.aio``: the engine's stop on the same channel (aio streams are
    independent calls), then the stream read until Triton ends it, for at most DRAIN_S; cancelled only then."""
    ended = False
    try:
        await send_stop_async(transport, engine_model, request_id, headers)
        deadline = asyncio.get_running_loop().time() + DRAIN_S
        while not ended:
            answered = pending or asyncio.ensure_future(responses.__anext__())
            pending = None
            left = deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait({answered}, timeout=max(0.0, left))
            if not done:
                answered.cancel()
                return
            try:
                result, error = answered.result()
            except BaseException:  # StopAsyncIteration: Triton ended it; or the stream failed: nothing to read
                ended = True
            else:
                ended = error is not None or is_final(result)
    finally:
        if not ended:
            with contextlib.suppress(Exception):
                stream.cancel()


def generate_payload(inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The JSON body of Triton's generate extension: one value per input (lists for the word lists)."""
    body: dict[str, Any] = {}
    for name, array in inputs.items():
        values = [v.decode("utf-8") if isinstance(v, bytes) else v.item() for v in array.reshape(-1)]
        body[name] = values if name in ("stop_words", "bad_words") else values[0]
    return body


def http_generate(
    transport: BlockingHttpTransport, model: str, body: Mapping[str, Any], *, timeout: float | None,
    headers: Mapping[str, str] | None = None,
) -> str:
    """POST to /v2/models/<model>/generate on ``transport``'s keep-alive connections with the client's ``headers``;
    a ClientError carries Triton's error message and status (an evicted LoRA adapter is sent once more with its
    weights, as in :func:`grpc_stream`)."""
    try:
        return _http_generate_once(transport, model, body, timeout=timeout, headers=headers)
    except ClientError as err:
        retry = resend_lora_weights(body, err)
        if retry is None:
            raise
        return _http_generate_once(transport, model, retry, timeout=timeout, headers=headers)


def _http_generate_once(
    transport: BlockingHttpTransport, model: str, body: Mapping[str, Any], *, timeout: float | None,
    headers: Mapping[str, str] | None,
) -> str:
    # a refusal is read as every HTTP call's (http_api.refusal: Triton's {"error": ...}) and classified by the one
    # mapping, so the generate endpoint's errors take the same classes as infer's
    with map_errors(model=model, url=f"{transport.host}:{transport.port}", timeout=timeout, protocol="http"):
        reply = transport.generate(model, body, headers=headers, client_timeout=timeout)
    return str(reply.get("text_output", ""))


# ---------------------------------------------------------------------------------------------- the rag ensemble

