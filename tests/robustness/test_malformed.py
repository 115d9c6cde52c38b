"""Malformed requests against the real `embed` ensemble (MiniLM built by tritonforge): each is refused quickly with a
clear message to that caller only, and a good request succeeds right after.

Transport limits in Triton 2.51 (what the huge-payload cases rely on): its gRPC server accepts messages up to
INT32_MAX (2 GiB), and its HTTP server has no input size limit (``--http-max-input-size`` came later), so a 20 MB
request is *not* refused by either transport: it reaches the model. A 20 MB payload of the wrong type or shape is
refused by Triton's own checks in milliseconds; a 20 MB valid text goes to the tokenizer.
"""

from __future__ import annotations

import json
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.errors import ClientError, TransientError

pytestmark = pytest.mark.integration

HUGE = 20 * 1024 * 1024
SHAPE_MESSAGE = "unexpected shape for input 'TEXT' for model 'embed'. Expected [-1,1], got "


def _mod(protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as mod
    else:
        import tritonclient.http as mod
    return mod


def _tensor(protocol: str, name: str, shape: list[int], datatype: str, data: np.ndarray | None = None) -> Any:
    tensor = _mod(protocol).InferInput(name, shape, datatype)
    if data is not None:
        if protocol == "http":
            tensor.set_data_from_numpy(data, binary_data=True)
        else:
            tensor.set_data_from_numpy(data)
    return tensor


def _text(protocol: str, *items: bytes, shape: list[int] | None = None) -> Any:
    data = np.array([[i] for i in items], dtype=object)
    if shape is not None:
        data = data.reshape(shape)
    return _tensor(protocol, "TEXT", list(data.shape), "BYTES", data)


def _raw_bytes(protocol: str, raw: bytes) -> Any:
    """TEXT [1, 1] whose serialized BYTES content is ``raw`` as given (bypassing tritonclient's serializer)."""
    tensor = _tensor(protocol, "TEXT", [1, 1], "BYTES")
    if protocol == "grpc":
        tensor._raw_content = raw
    else:
        tensor._raw_data = raw
        tensor._parameters["binary_data_size"] = len(raw)
    return tensor


def _shape_lie(protocol: str) -> Any:
    tensor = _text(protocol, b"only one item")
    tensor.set_shape([2, 1])  # declares two items, carries one
    return tensor


# name -> (build inputs for a protocol, model, version, expected status per protocol, message fragments)
Build = Callable[[str], list[Any]]
CASES: dict[str, tuple[Build, str, str, str, list[str]]] = {
    "wrong dtype FP32": (
        lambda p: [_tensor(p, "TEXT", [1, 1], "FP32", np.zeros((1, 1), np.float32))],
        "embed", "", "invalid",
        ["inference input 'TEXT' data-type is 'FP32', but model 'embed' expects 'BYTES'"],
    ),
    "wrong dtype INT64": (
        lambda p: [_tensor(p, "TEXT", [1, 1], "INT64", np.ones((1, 1), np.int64))],
        "embed", "", "invalid",
        ["inference input 'TEXT' data-type is 'INT64', but model 'embed' expects 'BYTES'"],
    ),
    "wrong shape [1,2]": (lambda p: [_text(p, b"a", b"b", shape=[1, 2])], "embed", "", "invalid",
                          [SHAPE_MESSAGE + "[1,2]"]),
    "wrong rank [1]": (
        lambda p: [_tensor(p, "TEXT", [1], "BYTES", np.array([b"a"], dtype=object))],
        "embed", "", "invalid", [SHAPE_MESSAGE + "[1]"],
    ),
    "batch over max_batch_size": (
        lambda p: [_text(p, *[b"x"] * 65)], "embed", "", "invalid",
        ["inference request batch-size must be <= 64 for 'embed'"],
    ),
    "shape says 2 items, data has 1": (
        lambda p: [_shape_lie(p)], "embed", "", "invalid",
        ["expected 2 string elements for inference input 'TEXT' for model 'embed', got 1"],
    ),
    "BYTES length prefix beyond the data": (
        lambda p: [_raw_bytes(p, struct.pack("<I", 1000) + b"short")], "embed", "", "invalid",
        ["incomplete string data for inference input 'TEXT', expecting string of length 1000 but only 5 bytes"],
    ),
    "non-UTF-8 text": (
        lambda p: [_text(p, b"caf\xe9 \xff\xfe")], "embed", "", "invalid",
        ["in ensemble 'embed', TEXT[0] is not valid UTF-8 (invalid continuation byte at byte 3)"],
    ),
    "empty text": (lambda p: [_text(p, b"")], "embed", "", "invalid", ["TEXT[0] is an empty string"]),
    "no inputs": (
        lambda p: [], "embed", "", "invalid",
        ["expected 1 inputs but got 0 inputs for model 'embed'", "missing required input(s) ['TEXT']"],
    ),
    "misspelt input": (
        lambda p: [_tensor(p, "TEXTS", [1, 1], "BYTES", np.array([[b"a"]], dtype=object))], "embed", "", "invalid",
        ["unexpected inference input 'TEXTS' for model 'embed'"],
    ),
    "extra input": (
        lambda p: [_text(p, b"a"), _tensor(p, "EXTRA", [1, 1], "BYTES", np.array([[b"a"]], dtype=object))],
        "embed", "", "invalid", ["expected 1 inputs but got 2 inputs for model 'embed'"],
    ),
    "unknown model": (lambda p: [_text(p, b"a")], "no_such_model", "", "missing",
                      ["Request for unknown model: 'no_such_model' is not found"]),
    "unknown version": (lambda p: [_text(p, b"a")], "embed", "7", "missing",
                        ["Request for unknown model: 'embed' version 7 is not found"]),
    "20 MB of FP32 as TEXT": (
        lambda p: [_tensor(p, "TEXT", [1, HUGE // 4], "FP32", np.zeros((1, HUGE // 4), np.float32))],
        "embed", "", "invalid",
        ["inference input 'TEXT' data-type is 'FP32', but model 'embed' expects 'BYTES'"],
    ),
    "20 MB text in the wrong shape": (
        lambda p: [_text(p, b"x" * (HUGE // 2), b"y" * (HUGE // 2), shape=[1, 2])], "embed", "", "invalid",
        [SHAPE_MESSAGE + "[1,2]"],
    ),
}
STATUS = {
    ("grpc", "invalid"): "StatusCode.INVALID_ARGUMENT",
    ("grpc", "missing"): "StatusCode.NOT_FOUND",
    ("http", "invalid"): "400",
    ("http", "missing"): "404",
}


def assert_serves(url: str, protocol: str = "grpc") -> None:
    """A good request right after a bad one: a unit-norm 384-d embedding, quickly."""
    began = time.perf_counter()
    with Client(url, protocol, timeout=10, retries=0) as client:
        vectors = client.embed(["a good request right after a bad one"])
    assert vectors.shape == (1, 384)
    assert abs(float(np.linalg.norm(vectors[0])) - 1.0) < 1e-4
    assert time.perf_counter() - began < 5


def _url(server, protocol: str) -> str:  # type: ignore[no-untyped-def]
    return server.endpoints.grpc if protocol == "grpc" else server.endpoints.http


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_is_refused_clearly(embed_server, case: str, protocol: str) -> None:
    build, model, version, kind, fragments = CASES[case]
    inputs = build(protocol)
    mod = _mod(protocol)
    url = _url(embed_server, protocol)
    client = mod.InferenceServerClient(url, network_timeout=30) if protocol == "http" else mod.InferenceServerClient(url)
    began = time.perf_counter()
    try:
        with pytest.raises(mod.InferenceServerException) as caught:
            if protocol == "grpc":
                client.infer(model, inputs, model_version=version, client_timeout=30)
            else:
                client.infer(model, inputs, model_version=version)
    finally:
        client.close()
    elapsed = time.perf_counter() - began
    err = caught.value
    assert str(err.status()) == STATUS[(protocol, kind)], err
    for fragment in fragments:
        assert fragment in err.message(), err.message()
    assert elapsed < (3 if "20 MB" in case else 1), f"{case}: refused after {elapsed:.2f}s"
    assert embed_server.is_running()
    assert_serves(url, protocol)


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        # Triton 2.51 answers a body it cannot parse with 500, not 400
        (b"{not json", {}, 500, "failed to parse the request JSON buffer"),
        (
            json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [5]}]}).encode(),
            {},
            500,
            "Unable to parse JSON bytes array",
        ),
        (
            json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES"}]}).encode(),
            {},
            400,
            "Input must set only one of the following fields",
        ),
        (b'{"inputs":[]}', {"Inference-Header-Content-Length": "5000"}, 400, "inference header size should be in range"),
    ],
    ids=["not JSON", "number as BYTES", "no data", "header length beyond the body"],
)
def test_malformed_http_body_is_refused(embed_server, body: bytes, headers: dict, status: int, message: str) -> None:
    url = f"http://{embed_server.endpoints.http}/v2/models/embed/infer"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == status
    assert message in json.loads(caught.value.read())["error"]
    assert_serves(embed_server.endpoints.http, "http")


def test_bad_items_fail_alone_in_a_shared_batch(embed_server) -> None:
    """Good and bad requests arriving together (the tokenizer batches them): only the bad ones fail."""
    import tritonclient.grpc as grpcclient

    texts = [f"good request number {i}".encode() if i % 2 == 0 else b"bad \xff\xfe bytes" for i in range(12)]

    def one(text: bytes) -> str:
        with grpcclient.InferenceServerClient(embed_server.endpoints.grpc) as c:
            try:
                out = c.infer("embed", [_text("grpc", text)], client_timeout=30).as_numpy("EMBEDDING")
            except grpcclient.InferenceServerException as err:
                return err.message()
            return "ok" if out.shape == (1, 384) else f"shape {out.shape}"

    with ThreadPoolExecutor(len(texts)) as pool:
        results = list(pool.map(one, texts))
    assert results[0::2] == ["ok"] * 6
    assert all("TEXT[0] is not valid UTF-8" in r for r in results[1::2]), results


def test_client_errors_are_clear_and_not_retried(embed_server) -> None:
    url = embed_server.endpoints.grpc
    with Client(url, timeout=10, retries=5) as client:
        began = time.perf_counter()
        with pytest.raises(ClientError, match=r"unknown model 'no_such_model'") as unknown:
            client.embed(["hello"], model="no_such_model")
        assert not isinstance(unknown.value, TransientError)
        with pytest.raises(ClientError, match=r"model 'embed': .*TEXT\[0\] is not valid UTF-8") as bad:
            client.infer("embed", {"TEXT": np.array([[b"\xff"]], dtype=object)})
        assert not isinstance(bad.value, TransientError)
        assert time.perf_counter() - began < 2  # refused once, not retried five times
        with pytest.raises(ClientError, match=r"texts\[0\] cannot be encoded as UTF-8"):
            client.embed(["lone surrogate \udcff"])  # caught before sending
    assert_serves(url)


# ------------------------------------------------------------------------------------------ a huge valid text


@pytest.fixture()
def own_embed_server(embed_repo) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """A separate embed server for a request that may keep the tokenizer busy: stopped (killed if need be) after."""
    from tritonforge.server import TritonServer

    server = TritonServer(embed_repo, startup_timeout=120, exit_timeout=1)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=5)


def test_huge_payload_of_the_wrong_type_is_refused_before_the_model(embed_server) -> None:
    """20 MB passes both transports (no gRPC limit below 2 GiB in 2.51) and Triton's checks refuse it at once."""
    with Client(embed_server.endpoints.grpc, timeout=30, retries=0) as client:
        began = time.perf_counter()
        with pytest.raises(ClientError, match="data-type is 'FP32', but model 'embed' expects 'BYTES'"):
            client.infer("embed", {"TEXT": np.zeros((1, HUGE // 4), np.float32)})
        assert time.perf_counter() - began < 3
    assert_serves(embed_server.endpoints.grpc)


def test_huge_valid_text_is_answered_quickly(own_embed_server) -> None:
    """A 20 MB TEXT is truncated (TRUNCATED=true) or refused with a clear error within seconds; the service serves."""
    text = ("lorem ipsum dolor sit amet " * (HUGE // 27 + 1))[:HUGE]
    with Client(own_embed_server.endpoints.grpc, timeout=5, retries=0) as client:
        try:
            out = client.infer("embed", {"TEXT": np.array([[text.encode()]], dtype=object)})
        except ClientError as err:
            assert "deadline" not in str(err), f"a 20 MB text was not answered within 5 s: {err}"
            assert "TEXT" in str(err)  # refused, naming the input
        else:
            assert bool(out["TRUNCATED"][0, 0]) and int(out["NUM_TOKENS"][0, 0]) <= 256
    assert_serves(own_embed_server.endpoints.grpc)
