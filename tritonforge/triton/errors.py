"""The one error mapping: every failure of a call to Triton becomes a :class:`~tritonforge.errors.ClientError`
(or a subclass) naming the model and carrying the server's message and status; retries only for what cannot have
reached the server.

Modelled on httpx's ``map_exceptions``: transport code runs inside :func:`map_errors` (or hands its exception to
:func:`classify_error`), so tritonclient's, grpc's and the sockets' exception types never leave this package.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from tritonforge.errors import (
    BatchTooLargeError,
    ClientError,
    ContextLengthError,
    DeadlineExceededError,
    InternalServerError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    PermissionDeniedError,
    TransientError,
)
from tritonforge.triton.http_api import NOT_TRITON
from tritonforge.triton.options import RetryPolicy

LOG = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED}


def _status(err: BaseException) -> str:
    status = getattr(err, "status", None)
    value = status() if callable(status) else status
    return "" if value is None else str(value)


def server_message(err: BaseException) -> str:
    message = getattr(err, "message", None)
    value = message() if callable(message) else None
    return str(value or err).strip()


def short_message(err: BaseException, limit: int = 200) -> str:
    """One line for a report: ``CODE: message`` (gRPC status when there is one), without Triton's unknown id."""
    code = _status(err).removeprefix("StatusCode.")
    if not code:
        code = _aio_code(err)
    text = " ".join(server_message(err).split()) or type(err).__name__
    text = text.replace("[request id: <id_unknown>] ", "")
    prefix = f"{code}: " if code and not code.isdigit() else ""
    return (prefix + text)[:limit]


def _aio_code(err: BaseException) -> str:
    """The status name of an error raised by grpc.aio itself (not wrapped by tritonclient), else ""."""
    code = getattr(err, "code", None)
    if type(err).__name__ != "AioRpcError" or not callable(code):
        return ""
    return str(getattr(code(), "name", ""))


def classify_error(
    err: BaseException, *, model: str | None, url: str, timeout: float | None, protocol: str = "grpc"
) -> ClientError:
    """The ClientError for a failed call; a :class:`TransientError` when retrying may succeed.

    The result carries ``model``, ``status`` (gRPC code or HTTP status as tritonclient gives it) and ``url``.
    """
    where = f"model '{model}'" if model else f"{protocol} server {url}"
    status = _status(err)
    text = server_message(err)
    result: ClientError
    if type(err).__name__ == "InferenceServerException":
        result = classify_reply(status, text, model=model, url=url, timeout=timeout, protocol=protocol)
    elif _aio_code(err) == "UNAVAILABLE":  # grpc.aio raises these itself (a stream, not wrapped by tritonclient)
        details = err.details() if hasattr(err, "details") else err  # type: ignore[union-attr]
        result = TransientError(f"{where}: {protocol} server {url} is unavailable: {details}")
    elif _aio_code(err) == "DEADLINE_EXCEEDED" or _timed_out(err):
        result = DeadlineExceededError(f"{where}: deadline of {_seconds(timeout)} exceeded ({protocol} {url})")
    elif _unreachable(err):
        result = TransientError(f"{where}: {protocol} server {url} is unreachable: {err}")
    else:
        result = ClientError(f"{where}: {type(err).__name__}: {text}")
    return _annotated(result, text=text, model=model, status=status, url=url)


def classify_reply(
    status: str, text: str, *, model: str | None, url: str, timeout: float | None, protocol: str = "grpc"
) -> ClientError:
    """The ClientError for an error Triton answered: ``status`` its gRPC code (``StatusCode.X`` or ``X``) or HTTP
    status, ``text`` its message. Every rule that reads Triton's words lives here, once."""
    where = f"model '{model}'" if model else f"{protocol} server {url}"
    code = status.removeprefix("StatusCode.")
    result: ClientError
    if "maximum queue size" in text:  # Triton sheds load (UNAVAILABLE / 503): retrying at once adds to it
        result = OverloadedError(f"{where}: server overloaded, request rejected: {text}")
    elif "batch-size must be <=" in text:  # Triton's words for more rows than the model's max_batch_size
        result = BatchTooLargeError(f"{where}: {text}")
    elif "max_input_len" in text or "max_seq_len" in text or ("prompt length" in text and "max_num_tokens" in text):
        # the LLM's context: the cpu engine and rag_prompt name the limit they hit by its TensorRT-LLM name; the LLM
        # API's PyTorch backend says "The sum of prompt length (N), query length (0) should not exceed
        # max_num_tokens (M)" (NVIDIA/TensorRT-LLM tensorrt_llm/llmapi/llm.py _check_arguments
        # @ 4c05a74891e4df8066f08ed4ce14b0972abe4e25; its TensorRT backend's words name max_seq_len)
        result = _with_counts(ContextLengthError(f"{where}: the prompt does not fit the model's context: {text}"), text)
    elif "is restricted, expecting header" in text:  # over gRPC with status UNAVAILABLE: not a transport failure
        result = PermissionDeniedError(f"{where}: the API is restricted: send the admin key ({text})")
    elif code in ("UNAVAILABLE", "503"):
        result = TransientError(f"{where}: {protocol} server {url} is unavailable: {text}")
    elif code in ("DEADLINE_EXCEEDED", "504"):
        result = DeadlineExceededError(f"{where}: deadline of {_seconds(timeout)} exceeded ({protocol} {url})")
    elif NOT_TRITON in text and code in ("404", "502"):
        # a proxy's or ingress's answer (a path routed nowhere, a bad gateway), not Triton's: unreachable, not an
        # unknown model (the gateway answered that 503 model_not_ready; client audit)
        result = TransientError(f"{where}: {protocol} server {url} answered {code} without Triton's error body "
                                f"({text}): is it Triton's HTTP endpoint, and is Triton up behind it?")
    elif "unknown model" in text.lower() or code in ("NOT_FOUND", "404"):
        result = ModelNotFoundError(f"unknown model '{model}' at {protocol} server {url}: {text}")
    elif "is not healthy" in text or "is not ready" in text:
        # "Stub process '<instance>' is not healthy.": a python stub died (tritonforge's watchdog restarts it);
        # "Model '<name>' is not ready": a BLS call to a model being reloaded
        result = ModelNotReadyError(f"{where}: the model cannot serve right now: {text}")
    elif code in ("INTERNAL", "UNKNOWN", "500"):
        # a step failed on its own (an exception in a python model, an engine fault): the steps answer bad input
        # with INVALID_ARG, so the gateway need not call a server fault the request's (gateway audit)
        result = InternalServerError(f"{where}: {text}")
    else:
        result = ClientError(f"{where}: {text}")
    return _annotated(result, text=text, model=model, status=status, url=url)


# The counts in the words of an engine that refused a prompt over its context (the texts classify_reply's rule
# matches), read here once so that callers can say it in their own terms (the gateway: OpenAI's max_tokens)
_CONTEXT_COUNTS = (
    # the cpu engine (python_backends/cpu_llm): "prompt (31 tokens) + request_output_len (600) = 631 exceeds
    # max_seq_len=512" and "the prompt has 5031 tokens, more than max_input_len=256"
    re.compile(r"prompt \((?P<prompt>\d+) tokens\) \+ request_output_len \((?P<output>\d+)\) = \d+ exceeds "
               r"(?P<name>max_seq_len)=(?P<limit>\d+)"),
    re.compile(r"the prompt has (?P<prompt>\d+) tokens, more than (?P<name>max_input_len)=(?P<limit>\d+)"),
    # rag_prompt: "max_tokens=600 leaves no room for a prompt in max_seq_len=512"
    re.compile(r"max_tokens=(?P<output>\d+) leaves no room for a prompt in (?P<name>max_seq_len)=(?P<limit>\d+)"),
    # the LLM API (the classify rule's commit): "The sum of prompt length (5031.0), query length (0) should not
    # exceed max_num_tokens (4096)"
    re.compile(r"prompt length \((?P<prompt>\d+)(?:\.0)?\), query length \(\d+(?:\.0)?\) should not exceed "
               r"(?P<name>max_num_tokens) \((?P<limit>\d+)\)"),
)


def _with_counts(err: ContextLengthError, text: str) -> ContextLengthError:
    for words in _CONTEXT_COUNTS:
        found = words.search(text)
        if found:
            counts = found.groupdict()
            err.prompt_tokens = int(counts["prompt"]) if counts.get("prompt") else None
            err.output_tokens = int(counts["output"]) if counts.get("output") else None
            err.limit, err.limit_name = int(counts["limit"]), counts["name"]
            break
    return err


def _annotated(result: ClientError, *, text: str, model: str | None, status: str, url: str) -> ClientError:
    result.reason = text  # the server's own words, for callers that add their own
    result.model = model
    result.status = status
    result.url = url
    return result


def _timed_out(err: BaseException) -> bool:
    return isinstance(err, (asyncio.TimeoutError, TimeoutError)) or type(err).__name__ == "Timeout"


def _unreachable(err: BaseException) -> bool:
    """A connection that was refused, reset or dropped: the request did not run (or may be re-sent)."""
    if isinstance(err, (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return True
    return isinstance(err, OSError) and err.errno in _TRANSIENT_ERRNOS


def _seconds(timeout: float | None) -> str:
    return "none" if timeout is None else f"{timeout:g}s"


def past_budget(budget: float | None, started: float, wait: float) -> bool:
    """Whether waiting ``wait`` more seconds would end past the call's ``budget`` (None: no deadline)."""
    return budget is not None and time.monotonic() - started + wait >= budget


def out_of_time(last: TransientError, attempts: int, budget: float | None) -> TransientError:
    """``last`` saying that the call's deadline left no time for another attempt."""
    err = TransientError(f"{last} (gave up after {attempts} attempt{'s' * (attempts != 1)}: the call's timeout of "
                         f"{_seconds(budget)} leaves no time for another)")
    err.__dict__.update(last.__dict__)
    return err


def exhausted(last: TransientError, policy: RetryPolicy) -> TransientError:
    """``last`` saying that every attempt of ``policy`` was made."""
    tries = f"{policy.attempts} attempt{'s' * (policy.attempts != 1)}"
    err = TransientError(f"{last} (gave up after {tries})")
    err.__dict__.update(last.__dict__)
    return err



@contextlib.contextmanager
def map_errors(
    *, model: str | None, url: str, timeout: float | None = None, protocol: str = "grpc"
) -> Iterator[None]:
    """Run a block of transport calls; any exception other than a ClientError leaves as :func:`classify_error`'s."""
    try:
        yield
    except ClientError:
        raise
    except Exception as raw:
        raise classify_error(raw, model=model, url=url, timeout=timeout, protocol=protocol) from raw


def _wait_before_retry(
    raw: Exception, retry: int, policy: RetryPolicy, classify: Callable[[BaseException], ClientError],
    rng: Callable[[], float], budget: float | None, started: float,
) -> float:
    """The wait before attempt ``retry + 2`` after ``raw`` failed attempt ``retry + 1``, or the error that ends the
    call: ``raw`` classified, unless transient with attempts and time left (the rule of both retry loops below)."""
    # a ClientError is classified already (e.g. the generate endpoint's own): retried when transient too
    err = raw if isinstance(raw, ClientError) else classify(raw)
    if not isinstance(err, TransientError):
        if err is raw:
            raise raw
        raise err from raw
    if retry == policy.retries:
        raise exhausted(err, policy) from raw
    wait = policy.delay(retry, rng)
    if past_budget(budget, started, wait):
        raise out_of_time(err, retry + 1, budget) from raw
    LOG.debug("retry %d/%d in %.3fs: %s", retry + 1, policy.retries, wait, err)
    return wait


def call_with_retry(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], ClientError],
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
    budget: float | None = None,
) -> T:
    """Run ``fn``; retry only what ``classify`` calls transient, then raise TransientError. ``budget``: the call's
    timeout, which the retries stay within (no wait that would end past it: a 0.2 s call against a stopped Triton
    took 10 s of back-off before; client audit)."""
    started = time.monotonic()
    for retry in range(policy.attempts):
        try:
            return fn()
        except Exception as raw:
            wait = _wait_before_retry(raw, retry, policy, classify, rng, budget, started)
            sleep(wait)
    raise AssertionError("unreachable")


async def acall_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    classify: Callable[[BaseException], ClientError],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
    budget: float | None = None,
) -> T:
    """The awaitable :func:`call_with_retry`."""
    started = time.monotonic()
    for retry in range(policy.attempts):
        try:
            return await fn()
        except Exception as raw:
            wait = _wait_before_retry(raw, retry, policy, classify, rng, budget, started)
            await sleep(wait)
    raise AssertionError("unreachable")
