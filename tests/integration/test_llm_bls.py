"""`tensorrt_llm_bls` (python_backends/llm_bls) on a real Triton, against the `llm` ensemble of the same set.

cpu target: a tiny random Llama with two LoRA adapters, `bls: true`, decoupled. Greedy text through the BLS model
must equal the ensemble's (whole and streamed), with and without an adapter; bad requests get clear errors and the
model keeps serving; a cancelled stream stops the engine.

gpu target: the set as shipped, with `tensorrt_llm` replaced by tests/integration/test_gpu_lora_flow.py's LoRA-cache
TEST DOUBLE (non-decoupled): an evicted adapter is resent by the BLS model itself, so a raw client never sees it.
"""

from __future__ import annotations

import json
import queue
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tritonforge.clients import Client
from tritonforge.errors import ClientError, ContextLengthError

pytestmark = pytest.mark.integration
BLS = "tensorrt_llm_bls"
PROMPTS = ["Tell me about inference servers.", "Hi"]


def raw_stream(url: str, model: str, values: dict[str, Any]) -> tuple[list[str], str | None]:
    """One request over tritonclient's gRPC stream, as a client written for upstream would send it: the text
    pieces and the error message (None when it succeeded)."""
    import tritonclient.grpc as grpcclient

    inputs = []
    for name, value in values.items():
        array = np.array([[value]], dtype=object if isinstance(value, bytes) else type(value))
        tensor = grpcclient.InferInput(name, list(array.shape), "BYTES" if isinstance(value, bytes) else {
            bool: "BOOL", np.int32: "INT32"}[type(value)])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    got: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(url)
    pieces: list[str] = []
    try:
        client.start_stream(callback=lambda result, error: got.put((result, error)))
        client.async_stream_infer(model, inputs, request_id="raw-1", enable_empty_final_response=True)
        while True:
            result, error = got.get(timeout=60)
            if error is not None:
                return pieces, str(error)
            text = result.as_numpy("text_output")
            if text is not None:
                pieces += [t.decode("utf-8") for t in text.reshape(-1)]
            if result.get_response().parameters["triton_final_response"].bool_param:
                return pieces, None
    finally:
        client.stop_stream()
        client.close()


# ------------------------------------------------------------------------------------------------ cpu target


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tritonforge.build import build
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora
    from tritonforge.server import TritonServer

    root = tmp_path_factory.mktemp("llm-bls")
    make_tiny_decoder(root / "decoder")
    for seed, name in enumerate(("alpha", "beta"), start=1):
        make_tiny_lora(root / "decoder", root / "adapters" / name, seed)
    (root / "spec.yaml").write_text(
        """\
name: bls-test
target: cpu
models:
  chat:
    kind: llm
    checkpoint: decoder
    runtime: engine                 # tensorrt_llm_bls wraps the engine path's steps
    bls: true
    max_input_len: 128
    max_seq_len: 512
    serving: {triton_max_batch_size: 8, max_queue_delay_microseconds: 0}
    cpu: {max_active: 8}
    tensorrt_llm: {decoupled_mode: true, exclude_input_in_output: true}
    adapters:
      alpha: {path: adapters/alpha}
      beta: {path: adapters/beta}
""",
        encoding="utf-8",
    )
    repo = root / "model_repository"
    build(root / "spec.yaml", repo, target="cpu")
    assert (repo / BLS / "1" / "model.py").is_file()
    with TritonServer(repo) as server:
        yield server


def test_greedy_text_equals_the_ensembles_whole_and_streamed(cpu_server: Any) -> None:
    with Client(cpu_server.endpoints.grpc) as client:
        for prompt in PROMPTS:
            want = client.generate(prompt, max_tokens=16)
            assert want
            assert client.generate(prompt, max_tokens=16, model=BLS) == want
            pieces = list(client.stream(prompt, max_tokens=16, model=BLS))
            assert len(pieces) > 1 and "".join(pieces) == want
    with Client(cpu_server.endpoints.http, protocol="http") as client:
        assert client.generate(PROMPTS[0], max_tokens=16, model=BLS) == client.generate(PROMPTS[0], max_tokens=16)


def test_an_upstream_style_raw_request_works(cpu_server: Any) -> None:
    with Client(cpu_server.endpoints.grpc) as client:
        want = client.generate("What is ML?", max_tokens=6)
    body = {"text_input": "What is ML?", "max_tokens": 6, "bad_words": "", "stop_words": ""}
    request = urllib.request.Request(
        f"http://{cpu_server.endpoints.http}/v2/models/{BLS}/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        reply = json.loads(response.read())
    assert reply["text_output"] == want
    pieces, error = raw_stream(cpu_server.endpoints.grpc, BLS, {
        "text_input": b"What is ML?", "max_tokens": np.int32(6), "stream": True})
    assert error is None and "".join(pieces) == want


def test_an_adapter_chosen_by_name_gives_the_ensembles_text(cpu_server: Any) -> None:
    with Client(cpu_server.endpoints.grpc) as client:
        base = client.generate(PROMPTS[0], max_tokens=12)
        for adapter in ("alpha", "beta"):
            want = client.generate(PROMPTS[0], max_tokens=12, adapter=adapter)
            assert want != base
            assert client.generate(PROMPTS[0], max_tokens=12, adapter=adapter, model=BLS) == want
            assert "".join(client.stream(PROMPTS[0], max_tokens=12, adapter=adapter, model=BLS)) == want


def test_bad_requests_get_clear_errors_and_the_model_keeps_serving(cpu_server: Any) -> None:
    with Client(cpu_server.endpoints.grpc, retries=0) as client:
        with pytest.raises(ContextLengthError, match=r"request_output_len \(5000\) = \d+ exceeds max_seq_len=512"):
            client.generate("hi", max_tokens=5000, model=BLS)
        with pytest.raises(ClientError, match="unknown adapter 'gamma'"):
            client.generate("hi", max_tokens=4, adapter="gamma", model=BLS)
        with pytest.raises(ContextLengthError, match=r"the prompt has \d+ tokens, more than max_input_len=128"):
            client.generate("word " * 400, max_tokens=4, model=BLS)
        assert client.generate("still serving", max_tokens=4, model=BLS)
    _, error = raw_stream(cpu_server.endpoints.grpc, BLS, {"max_tokens": np.int32(4)})
    assert error is not None and "text_input" in error


def test_a_cancelled_stream_stops_the_engine(cpu_server: Any) -> None:
    with Client(cpu_server.endpoints.grpc) as client:
        # engine_model=None: the client sends no stop of its own, only the gRPC cancellation reaches the BLS
        stream = client.stream(PROMPTS[0], max_tokens=450, model=BLS, engine_model=None)
        first = [next(stream), next(stream)]
        stream.close()
        assert all(first)
        t0 = time.perf_counter()
        assert client.generate("next request", max_tokens=8, model=BLS)
        # a 450-token generation left running would hold the engine; the next request must not wait for it
        assert time.perf_counter() - t0 < 5
    deadline = time.monotonic() + 5
    while "was cancelled: stopping its generation" not in cpu_server.log_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "was cancelled: stopping its generation" in cpu_server.log_text()


# ------------------------------------------------------------------------------------------------ gpu target


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    from integration.test_gpu_lora_flow import with_double
    from transformers import AutoTokenizer

    from tritonforge.builders.llm import llm_model_set
    from tritonforge.builders.tiny_models import make_tiny_decoder, make_tiny_lora
    from tritonforge.repository import materialize
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec
    from tritonforge.validator import check_repository

    root = tmp_path_factory.mktemp("gpu-bls")
    make_tiny_decoder(root / "decoder")
    adapters = {}
    for seed, name in enumerate(("alpha", "beta", "gamma"), start=1):
        make_tiny_lora(root / "decoder", root / "adapters" / name, seed)
        adapters[name] = {"path": f"adapters/{name}"}
    spec = parse_spec(
        {"name": "gpu-bls", "target": "gpu", "models": {"chat": {
            "kind": "llm", "checkpoint": "decoder", "max_input_len": 64, "max_seq_len": 128, "adapters": adapters,
            "bls": True, "runtime": "engine", "tensorrt_llm": {"decoupled_mode": True},
            "engine": {"lora": {"enabled": True, "max_rank": 8}}}}},
        source_dir=root,
    )
    out = llm_model_set("chat", spec.models["chat"], "gpu", root / "decoder")
    assert "lora_send_weights" in {i.name for i in out.configs[BLS].input}
    repo = root / "repo"
    repo.mkdir()
    materialize(with_double(out), repo)
    check_repository(repo)
    with TritonServer(repo) as server:
        yield server, AutoTokenizer.from_pretrained(str(root / "decoder"))


def test_an_evicted_adapter_is_resent_by_the_bls_model(gpu_server: tuple[Any, Any]) -> None:
    from integration.test_gpu_lora_flow import ADAPTER, BASE, WITH_WEIGHTS, evicted

    server, tok = gpu_server
    url = server.endpoints.grpc

    def text(*ids: int) -> str:
        return tok.decode(list(ids), skip_special_tokens=True)

    def ask(adapter: str | None) -> tuple[list[str], str | None]:
        values: dict[str, Any] = {"text_input": b"hi", "max_tokens": np.int32(4)}
        if adapter:
            values["lora_name"] = adapter.encode()
        return raw_stream(url, BLS, values)

    assert ask("alpha") == ([text(ADAPTER + 1, WITH_WEIGHTS)], None)  # first use: the weights go along
    assert ask("alpha") == ([text(ADAPTER + 1)], None)  # cached
    assert ask("beta")[1] is None and ask("gamma")[1] is None  # a 2-slot cache: alpha is evicted
    # through the ensemble a raw client sees TensorRT-LLM's failure ...
    _, error = raw_stream(url, "llm", {"text_input": b"hi", "max_tokens": np.int32(4), "lora_name": b"alpha"})
    assert error is not None and evicted("alpha") in error
    # ... through the BLS model it does not: the weights are resent and the request succeeds
    assert ask("alpha") == ([text(ADAPTER + 1, WITH_WEIGHTS)], None)
    assert ask(None) == ([text(BASE)], None)
