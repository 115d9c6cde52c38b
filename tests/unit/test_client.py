"""tritonforge.clients without a server: tensors, validation, the retry policy, transport options."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonforge.clients import AsyncClient, Client, ClientOptions, KeepAliveOptions, RetryPolicy, TLSOptions
from tritonforge.clients.client import _check_texts
from tritonforge.errors import (
    BatchTooLargeError,
    ClientError,
    ContextLengthError,
    DeadlineExceededError,
    InternalServerError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    OverloadedError,
    PermissionDeniedError,
    TransientError,
)
from tritonforge.triton.errors import acall_with_retry, call_with_retry, classify_error, classify_reply
from tritonforge.triton.options import grpc_client_kwargs
from tritonforge.triton.options import split_url as _split_url
from tritonforge.triton.tensors import as_tensor as _as_tensor
from tritonforge.triton.tensors import triton_dtype

# ------------------------------------------------------------------------------------------------------- tensors


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.bool_, "BOOL"),
        (np.int8, "INT8"),
        (np.int16, "INT16"),
        (np.int32, "INT32"),
        (np.int64, "INT64"),
        (np.uint8, "UINT8"),
        (np.uint16, "UINT16"),
        (np.uint32, "UINT32"),
        (np.uint64, "UINT64"),
        (np.float16, "FP16"),
        (np.float32, "FP32"),
        (np.float64, "FP64"),
        (np.dtype(">f4"), "FP32"),  # byte order does not change the datatype
        (np.object_, "BYTES"),
        (np.bytes_, "BYTES"),
        (np.str_, "BYTES"),
    ],
)
def test_numpy_dtype_to_triton(dtype, expected: str) -> None:
    assert triton_dtype(np.zeros((2, 1), dtype=dtype)) == expected


def test_unsupported_dtype_lists_the_allowed_ones() -> None:
    with pytest.raises(ClientError, match=r"complex128 has no Triton datatype \(allowed: .*float32"):
        triton_dtype(np.zeros(2, dtype=np.complex128))
    with pytest.raises(ClientError, match="input 'X': numpy dtype complex64"):
        _as_tensor("X", np.zeros(2, dtype=np.complex64))


def test_string_arrays_become_utf8_bytes_objects() -> None:
    array, datatype = _as_tensor("TEXT", np.array([["héllo"], ["a"]]))
    assert datatype == "BYTES" and array.dtype == object and array.shape == (2, 1)
    assert array.tolist() == [["héllo".encode()], [b"a"]]
    array, datatype = _as_tensor("TEXT", np.array([b"x", b"yz"]))
    assert datatype == "BYTES" and array.dtype == object and array.tolist() == [b"x", b"yz"]


def test_big_endian_input_is_made_native() -> None:
    array, datatype = _as_tensor("X", np.arange(3, dtype=">f4"))
    assert datatype == "FP32" and array.dtype.isnative and array.tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("X", None, "input 'X' is None"),
        ("", np.zeros(1), "input names must be non-empty strings"),
        ("T", np.array([b"ok", 3], dtype=object), "input 'T' element 1 is int: a BYTES tensor holds bytes or str"),
    ],
)
def test_bad_inputs(name: str, value, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        _as_tensor(name, value)


# ---------------------------------------------------------------------------------------------- embed validation


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("hello", r"not a single str: embed\(\[text\]\)"),
        (b"hello", "not a single bytes"),
        ([], "texts is empty"),
        (["a", 3], r"texts\[1\] is int, not str"),
        (["a", None], r"texts\[1\] is NoneType, not str"),
        (42, "must be a list of strings, got int"),
    ],
)
def test_embed_rejects_bad_texts(texts, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        _check_texts(texts)


def test_embed_validates_before_any_connection() -> None:
    client = Client(f"127.0.0.1:{_closed_port()}", retries=0)
    with pytest.raises(ClientError, match="list of strings"):
        client.embed("one string")
    with pytest.raises(ClientError, match="cannot be encoded as UTF-8"):
        client.embed(["\ud800"])
    client.close()


def test_embed_accepts_tuples_and_generators() -> None:
    assert _check_texts(("a", "b")) == ["a", "b"]
    assert _check_texts(t for t in ["x"]) == ["x"]


# -------------------------------------------------------------------------------------------- urls and options


@pytest.mark.parametrize(
    ("url", "protocol", "expected"),
    [
        ("127.0.0.1:8001", "grpc", ("127.0.0.1:8001", False)),
        ("localhost", "grpc", ("localhost:8001", False)),
        ("localhost", "http", ("localhost:8000", False)),
        ("http://127.0.0.1:9000/", "http", ("127.0.0.1:9000", False)),
        ("grpc://h:1", "grpc", ("h:1", False)),
        ("https://h:443", "http", ("h:443", True)),
        ("grpcs://h", "grpc", ("h:8001", True)),
        ("[::1]:8001", "grpc", ("[::1]:8001", False)),
        ("[::1]", "http", ("[::1]:8000", False)),
        ("dns:///triton-grpc-pods:8001", "grpc", ("dns:///triton-grpc-pods:8001", False)),  # every pod in turn
        ("dns:///h", "grpc", ("dns:///h:8001", False)),
    ],
)
def test_urls(url: str, protocol: str, expected: tuple[str, bool]) -> None:
    assert _split_url(url, protocol) == expected


def test_dns_urls_are_grpc_only_and_balanced_over_every_address() -> None:
    """dns:///name:port is gRPC's resolver: every address of the name (a headless Service's pods), a request each
    in turn (round_robin); HTTP has no such resolver."""
    from tritonforge.triton.options import ClientOptions, grpc_client_kwargs

    with pytest.raises(InvalidInputError, match=r"scheme 'dns' is not one of grpc, grpcs, http, https$"):
        _split_url("dns:///h:1", "http")
    balanced = dict(grpc_client_kwargs("dns:///h:8001", ClientOptions())["channel_args"])
    assert balanced["grpc.lb_policy_name"] == "round_robin"
    assert "grpc.lb_policy_name" not in dict(grpc_client_kwargs("h:8001", ClientOptions())["channel_args"])


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", r"url '' is not a server address: give 'host:port', .*grpc, grpcs, http or https"),
        (None, r"url None is not a server address: give 'host:port'"),
        ("ftp://h:1", r"url 'ftp://h:1': scheme 'ftp' is not one of grpc, grpcs, http, https"),
        ("grpc://h:1/v2", r"url 'grpc://h:1/v2' must be host:port without a path: give 'host:port'"),
        ("http://h:8000", r"url 'http://h:8000' is an HTTP address but protocol is 'grpc': pass protocol='http', "
                          r"or a grpc:// address"),
        (":8001", r"url ':8001' has no host: give 'host:port'"),
        ("h:http", r"url 'h:http': port 'http' is not a TCP port \(1\.\.65535\)"),
        ("h:0", r"port '0' is not a TCP port"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    # an argument refused before anything is sent: InvalidInputError, still caught by `except ClientError`
    for make in (Client, AsyncClient):
        with pytest.raises(InvalidInputError, match=message) as info:
            make(url)  # type: ignore[arg-type]
        assert isinstance(info.value, ClientError) and isinstance(info.value, ValueError)


def test_a_scheme_of_the_other_transport_is_refused_not_spoken_to() -> None:
    # gRPC frames sent to an HTTP port fail later as an opaque "unavailable": the contradiction is named up front
    for make in (Client, AsyncClient):
        with pytest.raises(InvalidInputError, match=r"'grpcs://h:1' is a gRPC address but protocol is 'http': "
                                                    r"pass protocol='grpc', or a http:// address"):
            make("grpcs://h:1", protocol="http")


def test_an_unknown_protocol_names_the_allowed_ones() -> None:
    for make in (Client, AsyncClient):
        with pytest.raises(InvalidInputError, match=r"protocol='websocket' is not one of 'grpc', 'http'"):
            make("127.0.0.1:8001", "websocket")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "websocket"}, "protocol='websocket'"),
        ({"timeout": 0}, "timeout=0 must be > 0"),
        ({"retries": -1}, "retries=-1 must be >= 0"),
        ({"backoff": -0.1}, "backoff=-0.1"),
        ({"compression": "brotli"}, "compression='brotli'"),
    ],
)
def test_bad_client_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ClientError, match=message):
        Client("127.0.0.1:1", **kwargs)


def test_https_url_turns_tls_on_and_options_round_trip() -> None:
    client = Client("https://example.invalid:8443", "http", timeout=5, retries=1, headers={"x-k": "v"})
    assert client.options.tls == TLSOptions() and client.url == "example.invalid:8443"
    again = Client.from_options(client.url, "http", client.options)
    assert again.options == client.options


def test_per_call_timeout_must_be_positive() -> None:
    client = Client("127.0.0.1:1")
    with pytest.raises(ClientError, match="timeout=-1 must be > 0"):
        client.infer("m", {"X": np.zeros(1)}, timeout=-1)


# --------------------------------------------------------------------------------------------------- retry policy


def _unavailable() -> InferenceServerException:
    return InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=8, backoff=0.1, max_backoff=2.0, jitter=0.5)
    assert [policy.delay(i, rng=lambda: 0.0) for i in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    # jitter scales each wait into [base * (1 - jitter), base]
    assert [policy.delay(i, rng=lambda: 1.0) for i in range(3)] == pytest.approx([0.05, 0.1, 0.2])
    assert policy.attempts == 9
    with pytest.raises(ClientError, match="jitter"):
        RetryPolicy(jitter=1.5)


def _flaky(errors: list[BaseException], result: str = "ok"):
    calls = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return result

    return fn, calls


def _classify(timeout: float | None = 2.5):
    return lambda err: classify_error(err, model="m", url="127.0.0.1:1", timeout=timeout)


def test_unavailable_is_retried_until_it_succeeds() -> None:
    fn, calls = _flaky([_unavailable(), _unavailable()])
    sleeps: list[float] = []
    policy = RetryPolicy(retries=3, backoff=0.1, jitter=0.0)
    assert call_with_retry(fn, policy=policy, classify=_classify(), sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and sleeps == pytest.approx([0.1, 0.2])


def test_a_request_over_max_batch_size_is_its_own_error_and_not_retried() -> None:
    refused = InferenceServerException(
        "[request id: <id_unknown>] inference request batch-size must be <= 16 for 'm'", status="StatusCode.INVALID_ARGUMENT"
    )
    fn, calls = _flaky([refused])
    with pytest.raises(BatchTooLargeError, match=r"model 'm'.*batch-size must be <= 16") as info:
        call_with_retry(fn, policy=RetryPolicy(retries=3, backoff=0.1, jitter=0.0), classify=_classify(), sleep=print)
    assert len(calls) == 1 and isinstance(info.value, ClientError) and not isinstance(info.value, TransientError)


def test_retries_run_out_into_a_transient_error() -> None:
    fn, calls = _flaky([_unavailable() for _ in range(10)])
    sleeps: list[float] = []
    policy = RetryPolicy(retries=3, backoff=0.1, jitter=0.0)
    with pytest.raises(TransientError, match=r"unavailable.*gave up after 4 attempts") as info:
        call_with_retry(fn, policy=policy, classify=_classify(), sleep=sleeps.append)
    assert len(calls) == 4 and sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert info.value.model == "m" and info.value.status == "StatusCode.UNAVAILABLE"


def test_retries_stay_within_the_call_s_timeout() -> None:
    """A 0.2 s call against a stopped Triton took ~10 s of back-off (retries=5, backoff=1; client audit): a wait
    that would end past the call's timeout is not taken, sync and async."""
    import asyncio
    import time

    policy = RetryPolicy(retries=5, backoff=0.05, jitter=0.0)  # waits 0.05, 0.1, 0.2, 0.4...
    fn, calls = _flaky([_unavailable() for _ in range(10)])
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"gave up after 3 attempts: the call's timeout of 0.3s leaves no time"):
        call_with_retry(fn, policy=policy, classify=_classify(0.3), budget=0.3)
    assert len(calls) == 3 and time.monotonic() - started < 0.3  # slept 0.05 + 0.1; 0.2 more would pass 0.3

    async def failing() -> str:
        raise _unavailable()

    started = time.monotonic()
    with pytest.raises(TransientError, match="leaves no time for another"):
        asyncio.run(acall_with_retry(failing, policy=policy, classify=_classify(0.3), budget=0.3))
    assert time.monotonic() - started < 0.3
    fn, calls = _flaky([_unavailable(), _unavailable()])
    assert call_with_retry(fn, policy=policy, classify=_classify(None), budget=None, sleep=lambda s: None) == "ok"


@pytest.mark.parametrize(
    ("error", "message", "kind"),
    [
        (
            InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"),
            "deadline of 2.5s", DeadlineExceededError,
        ),
        (
            InferenceServerException("expected 1 inputs", status="StatusCode.INVALID_ARGUMENT"),
            "model 'm': expected", ClientError,
        ),
        (
            InferenceServerException("Request for unknown model: 'm' is not found", status="StatusCode.NOT_FOUND"),
            "unknown model 'm'", ModelNotFoundError,
        ),
        (
            InferenceServerException("RuntimeError: boom", status="StatusCode.INTERNAL"),
            "RuntimeError: boom", InternalServerError,
        ),
        (
            InferenceServerException("RuntimeError: boom", status="500"),
            "model 'm': RuntimeError: boom", InternalServerError,
        ),
        (
            InferenceServerException("Request for unknown model: 'm'", status="404"),
            "unknown model 'm'", ModelNotFoundError,
        ),
        (  # what Triton answers while tritonforge's watchdog restarts a dead python stub
            InferenceServerException("Stub process 'm_0_0' is not healthy.", status="StatusCode.INTERNAL"),
            "cannot serve right now: Stub process", ModelNotReadyError,
        ),
        (
            InferenceServerException("Failed for execute the inference request. Model 'm' is not ready.", status="500"),
            "cannot serve right now", ModelNotReadyError,
        ),
        (TimeoutError("timed out"), "deadline of 2.5s exceeded", DeadlineExceededError),
        (asyncio.TimeoutError(), "deadline of 2.5s exceeded", DeadlineExceededError),
        (ValueError("odd"), "model 'm': ValueError: odd", ClientError),
    ],
)
def test_other_errors_are_not_retried(error: BaseException, message: str, kind: type[ClientError]) -> None:
    fn, calls = _flaky([error])
    with pytest.raises(ClientError, match=message) as info:
        call_with_retry(fn, policy=RetryPolicy(retries=5), classify=_classify(), sleep=lambda s: None)
    assert type(info.value) is kind
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        ("503", "Exceeds maximum queue size", OverloadedError),  # HTTP's words for a shed request: not transient
        ("StatusCode.UNAVAILABLE", "Exceeds maximum queue size", OverloadedError),
        ("503", "Server is not ready", TransientError),
        ("UNAVAILABLE", "connection reset", TransientError),
        ("400", "inference request batch-size must be <= 4 for 'm'", BatchTooLargeError),
        ("400", "Request for unknown model: 'm' is not found", ModelNotFoundError),
        ("504", "timeout", DeadlineExceededError),
        ("400", "max_tokens must be >= 1", ClientError),
        (  # Triton 2.51 answers a restricted API without the key with gRPC UNAVAILABLE: it must not be retried
            "StatusCode.UNAVAILABLE",
            "This protocol is restricted, expecting header 'triton-grpc-protocol-tritonforge-admin-key'",
            PermissionDeniedError,
        ),
        ("403", "This API is restricted, expecting header 'tritonforge-admin-key'", PermissionDeniedError),
        (  # the cpu engine's words (python_backends/cpu_llm) for a prompt over its context, as a BLS relays them
            "StatusCode.INTERNAL",
            "in ensemble 'llm', prompt (31 tokens) + request_output_len (600) = 631 exceeds max_seq_len=512",
            ContextLengthError,
        ),
        ("400", "the prompt has 5031 tokens, more than max_input_len=256", ContextLengthError),
        (  # the LLM API's PyTorch backend on the gpu target (its words, from upstream source: no GPU here)
            "StatusCode.INTERNAL",
            "in ensemble 'llm', The sum of prompt length (5031.0), query length (0) should not exceed max_num_tokens "
            "(4096)",
            ContextLengthError,
        ),
    ],
)
def test_triton_replies_are_classified_once_for_every_transport(status: str, text: str, kind: type) -> None:
    err = classify_reply(status, text, model="m", url="127.0.0.1:1", timeout=2.0, protocol="http")
    assert type(err) is kind
    assert err.status == status and err.reason == text and err.model == "m"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("in ensemble 'llm', prompt (31 tokens) + request_output_len (600) = 631 exceeds max_seq_len=512",
         (31, 600, 512, "max_seq_len")),
        ("the prompt has 5031 tokens, more than max_input_len=256", (5031, None, 256, "max_input_len")),
        ("max_tokens=600 leaves no room for a prompt in max_seq_len=512", (None, 600, 512, "max_seq_len")),
        ("The sum of prompt length (5031.0), query length (0) should not exceed max_num_tokens (4096)",
         (5031, None, 4096, "max_num_tokens")),
        ("the prompt does not fit max_seq_len", (None, None, None, None)),  # no counts in the words: none made up
    ],
)
def test_a_context_length_error_carries_the_engines_counts(text: str, counts: tuple[object, ...]) -> None:
    err = classify_reply("StatusCode.INTERNAL", text, model="llm", url="127.0.0.1:1", timeout=2.0)
    assert isinstance(err, ContextLengthError)
    assert (err.prompt_tokens, err.output_tokens, err.limit, err.limit_name) == counts


def test_argument_checks_are_invalid_input_and_value_errors() -> None:
    client = Client(f"127.0.0.1:{_closed_port()}", retries=0)
    try:
        for call in (lambda: client.embed([]), lambda: client.rerank("", ["a"]),
                     lambda: client.generate("hi", max_tokens=0), lambda: client.embed(["a"], timeout=0)):
            with pytest.raises(InvalidInputError) as info:
                call()
            assert isinstance(info.value, ValueError) and isinstance(info.value, ClientError)
    finally:
        client.close()


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        BrokenPipeError(32, "Broken pipe"),
        OSError(111, "Connection refused"),
        _unavailable(),
    ],
)
def test_transport_failures_are_transient(error: BaseException) -> None:
    assert isinstance(_classify()(error), TransientError)


def test_async_retry_policy() -> None:
    fn_errors = [_unavailable(), ConnectionRefusedError(111, "refused")]
    calls = []
    sleeps: list[float] = []

    async def fn() -> str:
        calls.append(1)
        if fn_errors:
            raise fn_errors.pop(0)
        return "ok"

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    policy = RetryPolicy(retries=2, backoff=0.5, jitter=0.0)
    result = asyncio.run(acall_with_retry(fn, policy=policy, classify=_classify(), sleep=fake_sleep))
    assert result == "ok" and len(calls) == 3 and sleeps == [0.5, 1.0]

    async def deadline() -> str:
        raise InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")

    with pytest.raises(ClientError, match=r"deadline of 2\.5s") as info:
        asyncio.run(acall_with_retry(deadline, policy=policy, classify=_classify(), sleep=fake_sleep))
    assert not isinstance(info.value, TransientError)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_no_server_means_transient_error_after_retries(protocol: str) -> None:
    with Client(f"127.0.0.1:{_closed_port()}", protocol, retries=2, backoff=0.01, timeout=5) as client:
        assert client.is_live() is False and client.is_ready() is False
        with pytest.raises(TransientError, match=r"(unavailable|unreachable).*gave up after 3 attempts"):
            client.embed(["x"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_that_never_answers_is_not_live_sync_and_async(protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A socket that accepts and never answers: HTTP's is_live() raised DeadlineExceededError (and, with no
    timeout, never returned), gRPC's answered False (client audit). Both answer False within the bound."""
    import time

    from tritonforge.triton import connection

    monkeypatch.setattr(connection, "HEALTH_TIMEOUT_S", 0.5)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with Client(url, protocol, timeout=None) as client:
            assert client.is_live() is False
        assert time.monotonic() - started < 5

        async def run() -> None:
            async with AsyncClient(url, protocol, timeout=0.3) as client:
                assert await client.is_ready() is False

        asyncio.run(run())


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_no_server_means_transient_error(protocol: str) -> None:
    async def run() -> None:
        async with AsyncClient(f"127.0.0.1:{_closed_port()}", protocol, retries=1, backoff=0.01) as client:
            assert await client.is_live() is False
            with pytest.raises(TransientError, match="gave up after 2 attempts"):
                await client.embed(["x"])

    asyncio.run(run())


def test_closed_client_refuses_calls() -> None:
    client = Client("127.0.0.1:1")
    client.close()
    client.close()  # idempotent
    with pytest.raises(ClientError, match="is closed"):
        client.infer("m", {"X": np.zeros(1, np.float32)})


# ------------------------------------------------------------------------------------- tritonclient arguments


def test_grpc_defaults_keep_tritonclient_limits() -> None:
    kwargs = grpc_client_kwargs("h:1", ClientOptions())
    assert "ssl" not in kwargs
    args = dict(kwargs["channel_args"])
    assert args["grpc.max_send_message_length"] == args["grpc.max_receive_message_length"] == 2**31 - 1
    assert args["grpc.keepalive_time_ms"] == 2**31 - 1 and args["grpc.keepalive_timeout_ms"] == 20_000
    # gRPC's own reconnect backoff follows the retry policy
    assert args["grpc.initial_reconnect_backoff_ms"] == 100 and args["grpc.max_reconnect_backoff_ms"] == 2000


def test_grpc_tls_and_keepalive_mapping() -> None:
    tls = TLSOptions(root_certificates="ca.pem", certificate_chain="client.pem", private_key="client.key",
                     server_name="triton.internal")
    keepalive = KeepAliveOptions(time_ms=10_000, timeout_ms=3_000, permit_without_calls=True, max_pings_without_data=0)
    kwargs = grpc_client_kwargs("h:1", ClientOptions(tls=tls, keepalive=keepalive))
    assert kwargs["ssl"] is True
    assert kwargs["root_certificates"] == "ca.pem"
    assert kwargs["certificate_chain"] == "client.pem" and kwargs["private_key"] == "client.key"
    args = dict(kwargs["channel_args"])
    assert args["grpc.keepalive_time_ms"] == 10_000
    assert args["grpc.keepalive_timeout_ms"] == 3_000
    assert args["grpc.keepalive_permit_without_calls"] == 1
    assert args["grpc.http2.max_pings_without_data"] == 0
    assert args["grpc.ssl_target_name_override"] == "triton.internal"


def test_grpc_kwargs_build_a_real_tritonclient() -> None:
    import tritonclient.grpc as grpcclient

    kwargs = grpc_client_kwargs("127.0.0.1:1", ClientOptions(keepalive=KeepAliveOptions(time_ms=5000)))
    grpcclient.InferenceServerClient(**kwargs).close()


def test_grpc_cannot_skip_verification() -> None:
    with pytest.raises(ClientError, match="insecure is not supported over gRPC"):
        grpc_client_kwargs("h:1", ClientOptions(tls=TLSOptions(insecure=True)))


def test_http_tls_reaches_the_blocking_transport() -> None:
    import certifi

    from tritonforge.triton.blocking_http import BlockingHttpTransport

    tls = TLSOptions(root_certificates=certifi.where(), server_name="triton.internal")
    with Client("https://h:8443", "http", tls=tls) as client:
        transport = client._run(lambda t: t)
        assert isinstance(transport, BlockingHttpTransport) and (transport.host, transport.port) == ("h", 8443)
        assert transport._context is not None and transport._context.verify_mode == ssl.CERT_REQUIRED
        assert transport._server_name == "triton.internal"
    with Client("h:1", "http") as plain:
        assert plain._run(lambda t: t)._context is None


def test_async_http_tls_reaches_its_transport_server_name_too() -> None:
    """The aiohttp client it used before could not check a certificate against TLSOptions.server_name (refused)."""
    import certifi

    from tritonforge.triton.keepalive_http import AsyncHttpTransport

    tls = TLSOptions(root_certificates=certifi.where(), server_name="triton.internal")

    async def transport() -> AsyncHttpTransport:
        async with AsyncClient("https://h:8443", "http", tls=tls) as client:
            return client._get()  # type: ignore[no-any-return]

    made = asyncio.run(transport())
    assert isinstance(made, AsyncHttpTransport) and (made.host, made.port) == ("h", 8443)
    assert made._context is not None and made._context.verify_mode == ssl.CERT_REQUIRED
    assert made._server_name == "triton.internal"


def test_tls_options_are_checked() -> None:
    with pytest.raises(ClientError, match="both certificate_chain and private_key"):
        TLSOptions(certificate_chain="c.pem")
    with pytest.raises(ClientError, match=r"TLSOptions.root_certificates: .*missing.pem is not a file"):
        Client("h:1", tls=TLSOptions(root_certificates="/nonexistent/missing.pem"))


def test_compression_headers_and_deadline_reach_the_call() -> None:
    grpc = Client("h:1", compression="gzip", headers={"authorization": "Bearer t"})
    kwargs = grpc._infer_kwargs(1.5, {"priority_hint": 1}, "2")
    assert re.fullmatch(r"[0-9a-f]{32}", kwargs.pop("request_id"))  # Triton's log and traces tie it to the client
    assert kwargs == {
        "model_version": "2",
        "headers": {"authorization": "Bearer t"},
        "parameters": {"priority_hint": 1},
        "client_timeout": 1.5,
        "compression_algorithm": "gzip",
    }
    http = Client("h:1", "http", compression="deflate")
    kwargs = http._infer_kwargs(1.5, None, "")
    assert kwargs["request_compression_algorithm"] == kwargs["response_compression_algorithm"] == "deflate"
    assert kwargs["client_timeout"] == 1.5 and kwargs["headers"] is None  # the blocking transport's deadline
    assert "client_timeout" not in AsyncClient("h:1", "http")._infer_kwargs(1.5, None, "")  # asyncio.timeout's
    from tritonforge.triton.streams import REQUEST_LABEL

    token = REQUEST_LABEL.set("gw-1234")  # the gateway's request id, while it answers that request
    try:
        assert http._infer_kwargs(None, None, "")["request_id"].startswith("gw-1234-")
    finally:
        REQUEST_LABEL.reset(token)


def test_importing_the_clients_stays_cheap() -> None:
    code = (
        "import sys, tritonforge, tritonforge.clients; "
        "heavy = [m for m in ('grpc', 'tritonclient.grpc', 'tritonclient.http', 'gevent', 'aiohttp') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_http_is_one_transport_for_every_thread_and_deadline() -> None:
    """tritonclient's HTTP client (gevent) needed a transport per thread and per deadline, and left every thread a
    hub it never freed; the blocking transport is one pool for all of them, closed with the client."""
    with Client("127.0.0.1:1", "http", timeout=30.0) as client:
        mine = client._run(lambda transport: transport)
        other: list[object] = []
        worker = threading.Thread(target=lambda: other.append(client._run(lambda transport: transport)))
        worker.start()
        worker.join()
        assert other == [mine]
    assert client._closed and mine._closed
    with pytest.raises(ClientError, match="is closed"):
        client._run(lambda transport: transport)


@pytest.mark.parametrize(
    ("prompt", "sampling", "message"),
    [
        ("hi", {"max_tokens": 2**40}, "max_tokens must be <= 2147483647"),
        ("hi", {"top_k": 2**33}, "top_k must be <= 2147483647"),
        ("hi", {"seed": 2**70}, "seed must be in \\[0, 18446744073709551615\\]"),
        ("hi", {"temperature": float("nan")}, "temperature must be a number"),
        ("hi", {"presence_penalty": float("nan")}, "presence_penalty must be a finite number"),
        ("hi", {"frequency_penalty": "1"}, "frequency_penalty must be a finite number"),
        ("a\ud800", {}, "prompt is not valid Unicode"),
        ("hi", {"stop_words": ["\udfff"]}, "stop_words is not valid Unicode"),
    ],
)
def test_generation_inputs_refuse_what_would_wrap_or_not_encode(prompt: str, sampling: dict, message: str) -> None:
    from tritonforge.clients.generation import Sampling, generation_inputs

    with pytest.raises(ClientError, match=message):
        generation_inputs(prompt, Sampling(**sampling), stream=False)


def test_penalties_become_float32_inputs_and_the_rag_ensemble_refuses_them() -> None:
    import numpy as np

    from tritonforge.clients.generation import Sampling, generation_inputs, rag_inputs

    inputs = generation_inputs("hi", Sampling(presence_penalty=np.float64(0.5), frequency_penalty=-1), stream=False)
    assert inputs["presence_penalty"].dtype == np.float32 and inputs["presence_penalty"].tolist() == [[0.5]]
    assert inputs["frequency_penalty"].tolist() == [[-1.0]]
    assert "presence_penalty" not in generation_inputs("hi", Sampling(), stream=False)
    with pytest.raises(ClientError, match="presence_penalty is not supported by the rag ensemble"):
        rag_inputs("q", top_k=None, top_n=None, max_tokens=None, sampling={"presence_penalty": 1.0}, stream=False)


def test_a_conversation_becomes_chat_messages_and_its_flattened_text() -> None:
    import json

    from tritonforge.clients.generation import Sampling, chat_inputs

    messages = [{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi ☃"}]
    inputs = chat_inputs(messages, Sampling(max_tokens=4), stream=True)
    assert json.loads(inputs["chat_messages"][0, 0].decode()) == [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi ☃"}]
    assert inputs["text_input"][0, 0].decode() == "System: Be terse.\n\nUser: Hi ☃"
    assert inputs["apply_chat_template"].tolist() == [[True]]
    one = chat_inputs([{"role": "user", "content": "Hi"}], Sampling(), stream=False)
    assert one["text_input"][0, 0] == b"Hi"
    for bad, message in (([], "non-empty list"), ("hi", "non-empty list"),
                         ([{"role": "robot", "content": "x"}], "messages\\[0\\] must have a role"),
                         ([{"role": "user", "content": 5}], "messages\\[0\\]")):
        with pytest.raises(ClientError, match=message):
            chat_inputs(bad, Sampling(), stream=False)


def test_chat_reads_whether_the_model_takes_chat_messages_once_and_flattens_for_one_that_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An llm ensemble built before chat_messages existed gets the conversation as one flattened user turn (what
    the gateway sends it), not Triton's unknown-input error; the model's config is read once per client."""
    reads: list[str] = []
    sent: list[dict] = []
    declared = {"old": [{"name": "text_input"}], "new": [{"name": "text_input"}, {"name": "chat_messages"}]}

    def model_config(self: object, model: str, version: str = "", *, timeout: object = None) -> dict:
        reads.append(model)
        return {"input": declared[model]}

    def stream_text(self: object, model: str, inputs: dict, **kwargs: object) -> Iterator[str]:
        sent.append(inputs)
        return iter(["ok"])

    monkeypatch.setattr(Client, "model_config", model_config)
    monkeypatch.setattr(Client, "stream_text", stream_text)
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}]
    with Client("127.0.0.1:1") as client:
        assert client.chat(messages, model="old") == "ok"
        assert "".join(client.chat_stream(messages, model="old")) == "ok"
        assert client.chat(messages, model="new") == "ok"
    assert reads == ["old", "new"]
    assert "chat_messages" not in sent[0] and "chat_messages" not in sent[1] and "chat_messages" in sent[2]
    assert sent[0]["text_input"][0, 0] == b"System: Be terse.\n\nUser: Hi"
    assert sent[0]["apply_chat_template"].tolist() == [[True]]


def test_the_http_generate_endpoint_is_classified_like_every_other_call() -> None:
    """POST /v2/models/<m>/generate goes through the blocking transport, not tritonclient: its errors take the same
    classes."""
    import contextlib
    import http.server
    import json
    import threading
    import time

    from tritonforge.triton.blocking_http import BlockingHttpTransport
    from tritonforge.triton.streams import http_generate

    replies = {
        "shed": (503, {"error": "Exceeds maximum queue size"}),
        "gone": (400, {"error": "Request for unknown model: 'gone' is not found"}),
        "down": (503, {"error": "Server is not ready"}),
        "proxy": (502, ["not", "triton's", "body"]),  # a proxy between: no {"error"} object: Triton not reached
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            model = self.path.split("/")[3]
            self.rfile.read(int(self.headers["Content-Length"]))
            if model == "slow":
                time.sleep(1.0)
            status, body = replies.get(model, (200, {"text_output": "ok"}))
            data = json.dumps(body).encode()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # "slow": the client has left
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = BlockingHttpTransport("127.0.0.1", server.server_address[1])
    try:
        expected = {"shed": OverloadedError, "gone": ModelNotFoundError, "down": TransientError, "proxy": TransientError}
        for model, kind in expected.items():
            with pytest.raises(ClientError) as info:
                http_generate(base, model, {"text_input": "hi"}, timeout=5)
            assert type(info.value) is kind, (model, info.value)
            assert info.value.model == model  # type: ignore[attr-defined]
            assert info.value.status == str(replies[model][0])  # type: ignore[attr-defined]
        with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.3s exceeded"):
            http_generate(base, "slow", {"text_input": "hi"}, timeout=0.3)
        assert http_generate(base, "fine", {"text_input": "hi"}, timeout=5) == "ok"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad", ["not a url::", "a b:8001", "ho$t:8001", "http://exa mple:80"])
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_host_that_is_no_host_name_or_address_is_refused_before_anything_is_sent(bad: str, protocol: str) -> None:
    """HTTP failed half-way in tritonclient's constructor (a plain ClientError and a __del__ traceback), gRPC after
    its retries, as an unreachable server (API audit)."""
    if bad.startswith("http://") and protocol == "grpc":
        bad = bad.replace("http://", "grpc://")
    with pytest.raises(InvalidInputError, match="is not a host name or an IP address"):
        Client(bad, protocol).is_live()


def test_a_stream_s_retries_before_its_first_piece_stay_within_its_timeout() -> None:
    """As call_with_retry's: a generation stream sent again while the server is unavailable waits no longer than
    its timeout allows."""
    from tritonforge.triton.streams import _Attempts

    unavailable = TransientError("model 'llm': unavailable")
    attempts = _Attempts({"text_input": "hi"}, RetryPolicy(retries=5, backoff=0.05, jitter=0.0), timeout=0.08)
    assert attempts.again(unavailable) == pytest.approx(0.05)
    with pytest.raises(TransientError, match=r"gave up after 2 attempts: the call's timeout of 0.08s leaves no time"):
        attempts.again(unavailable)  # 0.1 more would end past 0.08 (the first wait was not slept here)
    unbounded = _Attempts({"text_input": "hi"}, RetryPolicy(retries=2, backoff=0.05, jitter=0.0), timeout=None)
    assert [unbounded.again(unavailable), unbounded.again(unavailable)] == pytest.approx([0.05, 0.1])
