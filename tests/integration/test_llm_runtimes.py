"""One `llm` contract over both runtimes, on a real Triton: the LLM API model set (runtime llmapi, the default)
and the engine model set (runtime engine) answer the same requests with the same text.

The cpu target serves both with tritonforge's CPU engine: in the LLM API's tensors (text in, text out, model.yaml)
and in the TensorRT engine backend's (token ids, behind upstream's preprocessing/postprocessing). The decoder is a
tiny random one (no decoder can be downloaded here): its text is gibberish, and the point is that both paths give
the same gibberish token for token.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tritonforge.build import build
    from tritonforge.builders.tiny_models import make_tiny_decoder
    from tritonforge.server import TritonServer
    from tritonforge.spec import parse_spec

    root = tmp_path_factory.mktemp("runtimes")
    # room for long generations: a stop sent after two pieces must reach the engine while it is still generating
    decoder = make_tiny_decoder(root / "decoder", max_position=2048)
    common = {"kind": "llm", "checkpoint": str(decoder), "max_input_len": 64, "max_seq_len": 2048,
              "serving": {"triton_max_batch_size": 4}, "tensorrt_llm": {"decoupled_mode": True,
                                                                       "exclude_input_in_output": True}}
    spec = parse_spec({"name": "t", "target": "cpu", "models": {
        "chat": {**common},
        "chat_e": {**common, "runtime": "engine", "model_names": "prefixed", "ensemble": "llm_engine"},
    }})
    repo = build(spec, root / "repo").repo
    server = TritonServer(repo)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_both_runtimes_give_the_same_text(both: object) -> None:
    from tritonforge.clients import Client

    with Client(both.endpoints.grpc) as client:  # type: ignore[attr-defined]
        for kwargs in ({}, {"chat": True}, {"temperature": 0.8, "top_k": 5, "seed": 7}):
            a = client.generate("hello world", max_tokens=12, model="llm", **kwargs)
            b = client.generate("hello world", max_tokens=12, model="llm_engine", **kwargs)
            assert a == b and a, kwargs
        streamed = "".join(client.stream("hello world", max_tokens=12, model="llm"))
        assert streamed == client.generate("hello world", max_tokens=12, model="llm_engine")
    with Client(both.endpoints.http, protocol="http") as client:  # type: ignore[attr-defined]
        assert client.generate("hello world", max_tokens=8, model="llm") == client.generate(
            "hello world", max_tokens=8, model="llm_engine")


def test_a_stream_left_early_stops_the_engine_of_its_own_pipeline(both: object) -> None:
    """The clients sent the stop to `tensorrt_llm` whatever the pipeline: under `model_names: prefixed` the
    engine is `chat_e_tensorrt_llm`, so the stop reached another model (here the llmapi one, which had no such
    request) and the engine generated on for nobody. engine_model="auto" finds it from the configs."""
    import asyncio
    import time

    from tritonforge.clients import AsyncClient, Client

    server: Any = both
    stopped = "was stopped (stop=true) after"

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while server.log_text().count(stopped) < count:
            assert time.monotonic() < deadline, "the engine was not told to stop: it generates on for nobody"
            time.sleep(0.2)

    with Client(server.endpoints.grpc) as client:
        assert client.engine_of("llm_engine") == "chat_e_tensorrt_llm"
        assert client.engine_of("llm") == "tensorrt_llm"
        assert client.engine_of("chat_e_tensorrt_llm") == "chat_e_tensorrt_llm"  # the engine called directly
        # nothing readable (a hiccup, a model still loading): upstream's name, as before, and not kept
        assert client.engine_of("no_such_model") == "tensorrt_llm" and "no_such_model" not in client._engines
        assert client.engine_of("preprocessing") is None  # every config read, no engine: none, and kept
        assert client._engines["preprocessing"] is None
        before = server.log_text().count(stopped)
        stream = client.stream("hello world", max_tokens=1500, model="llm_engine")
        assert next(stream) and next(stream)
        stream.close()
        wait_for(before + 1)

    async def run() -> None:
        async with AsyncClient(server.endpoints.grpc) as client:
            stream = client.stream("hello world", max_tokens=1500, model="llm_engine")
            assert await stream.__anext__()
            await stream.aclose()
            assert await client.engine_of("llm_engine") == "chat_e_tensorrt_llm"

    asyncio.run(run())
    wait_for(before + 2)


@pytest.fixture(scope="module")
def gateway_sdk(both: object) -> Iterator[object]:
    """The gateway in front of both runtimes (model ids `chat`: llmapi, `chat_e`: engine) and an openai client."""
    import openai

    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.gateway.listen import GatewayServer, bind
    from tritonforge.server import free_port

    models = GatewayModels(chat={"chat": "llm", "chat_e": "llm_engine"}, embeddings={}, rerank={},
                           engine_models={"chat_e": "chat_e_tensorrt_llm"})
    port = free_port()
    web = GatewayServer(create_app(both.endpoints.grpc, api_keys=None, models=models),  # type: ignore[attr-defined]
                        bind("127.0.0.1", port))
    web.start()
    try:
        yield openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
    finally:
        web.stop()


def test_a_temperature_alone_samples_by_each_runtimes_rule_and_through_the_gateway(
    both: object, gateway_sdk: object
) -> None:
    """The two contracts differ on a temperature alone: the LLM API samples (every token), the engine contract
    decodes greedily (upstream's defaults, kept by the clients, which send what they are given). The gateway sends
    a sampled request with top_p 1 and a seed, so through it both runtimes sample, reproducibly per seed."""
    from tritonforge.clients import Client

    with Client(both.endpoints.grpc) as client:  # type: ignore[attr-defined]
        greedy = client.generate("hello world", max_tokens=12, model="llm")
        assert greedy == client.generate("hello world", max_tokens=12, model="llm_engine")
        llmapi = {client.generate("hello world", max_tokens=12, model="llm", temperature=1.5, seed=s) for s in (1, 2)}
        engine = {client.generate("hello world", max_tokens=12, model="llm_engine", temperature=1.5, seed=s)
                  for s in (1, 2)}
    assert llmapi - {greedy} and engine == {greedy}

    for model in ("chat", "chat_e"):
        def ask(model: str = model, **sampling: object) -> str:
            reply = gateway_sdk.completions.create(  # type: ignore[attr-defined]
                model=model, prompt="hello world", max_tokens=12, **sampling)
            return str(reply.choices[0].text)

        assert ask() == greedy, model
        sampled = {ask(temperature=1.5) for _ in range(3)}
        assert len(sampled) > 1 and sampled != {greedy}, model
        assert ask(temperature=1.5, seed=3) == ask(temperature=1.5, seed=3), model


def test_stop_strings_end_the_text_before_them_through_the_gateway_on_both_runtimes(gateway_sdk: object) -> None:
    """OpenAI's stop: the text ends before the stop string, on either runtime (the engine contract keeps the stop
    word it matched at the end of its output; the gateway cuts it), streamed or not, with finish_reason stop."""
    sdk: Any = gateway_sdk
    for model in ("chat", "chat_e"):
        full = sdk.completions.create(model=model, prompt="hello world", max_tokens=16).choices[0].text
        word = full.strip()[3:6]
        assert word and word in full, full
        reply = sdk.completions.create(model=model, prompt="hello world", max_tokens=16, stop=[word])
        assert reply.choices[0].text == full[: full.index(word)], model
        assert reply.choices[0].finish_reason == "stop"
        chunks = list(sdk.completions.create(model=model, prompt="hello world", max_tokens=16, stop=[word],
                                             stream=True))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == reply.choices[0].text, model
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_llm_api_tensors_straight_to_the_engine_model(both: object) -> None:
    """A client of upstream's llmapi model: text_input + sampling_param_* -> text_output and the reasons."""
    import tritonclient.grpc as grpcclient

    from tritonforge.clients import Client

    with Client(both.endpoints.grpc) as client:  # type: ignore[attr-defined]
        expected = client.generate("hello world", max_tokens=6, model="llm")
    c = grpcclient.InferenceServerClient(both.endpoints.grpc)  # type: ignore[attr-defined]
    arrays = {
        "text_input": np.array([[b"hello world"]], dtype=object),
        "sampling_param_max_tokens": np.array([[6]], np.int32),
        "return_finish_reason": np.array([[True]]),
        "return_stop_reason": np.array([[True]]),
        "return_cumulative_logprob": np.array([[True]]),
    }
    results: list[object] = []
    c.start_stream(callback=lambda result, error: results.append(error or result))
    inputs = []
    for name, array in arrays.items():
        dtype = "BYTES" if array.dtype == object else ("BOOL" if array.dtype == bool else "INT32")
        tensor = grpcclient.InferInput(name, list(array.shape), dtype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    c.async_stream_infer("tensorrt_llm", inputs, request_id="x1")
    c.stop_stream()
    c_metadata = c.get_model_metadata("tensorrt_llm", as_json=True)
    c.close()
    (result,) = results
    assert not isinstance(result, Exception), result
    text = result.as_numpy("text_output").reshape(-1)[0].decode()  # type: ignore[attr-defined]
    assert text == expected
    assert result.as_numpy("finish_reason").reshape(-1)[0] == b"length"  # type: ignore[attr-defined]
    assert result.as_numpy("stop_reason").reshape(-1)[0] == b"None"  # type: ignore[attr-defined]
    # FP32 as the model's metadata says (it came as text: robustness audit); greedy, so a sum of log-probs <= 0
    logprob = result.as_numpy("cumulative_logprob")  # type: ignore[attr-defined]
    assert logprob.dtype == np.float32 and float(logprob.reshape(-1)[0]) <= 0.0
    (output,) = [o for o in c_metadata["outputs"] if o["name"] == "cumulative_logprob"]
    assert output["datatype"] == "FP32"


def test_stop_strings_end_the_text_before_them(both: object) -> None:
    from tritonforge.clients import Client

    with Client(both.endpoints.grpc) as client:  # type: ignore[attr-defined]
        full = client.generate("hello world", max_tokens=12, model="llm")
        word = full.strip()[2:5]
        assert word
        cut = client.generate("hello world", max_tokens=12, model="llm", stop_words=[word])
        assert cut == full[: full.index(word)]
        streamed = "".join(client.stream("hello world", max_tokens=12, model="llm", stop_words=[word]))
        assert streamed == cut


def test_the_stop_signal_reaches_the_llm_api_model(both: object) -> None:
    """Leaving a stream early sends upstream's stop in the engine model's own tensors; the server keeps serving."""
    from tritonforge.clients import Client

    with Client(both.endpoints.grpc) as client:  # type: ignore[attr-defined]
        stream = client.stream("hello world", max_tokens=60, model="llm")
        first = next(iter(stream))
        assert first
        del stream
        assert client.generate("hello world", max_tokens=4, model="llm")


def test_leaving_an_async_stream_early_stops_the_engine(both: object) -> None:
    """AsyncClient.stream, left after two pieces, sends upstream's stop (in the LLM API model's tensors) as the
    sync Client does: the engine ends the request instead of generating to max_tokens (1900 tokens take the tiny
    decoder seconds, so the stop cannot lose a race against the end of generation as it could at 100)."""
    import asyncio
    import time

    from tritonforge.clients import AsyncClient

    async def leave_early() -> None:
        async with AsyncClient(both.endpoints.grpc) as client:  # type: ignore[attr-defined]
            stream = client.stream("hello world", max_tokens=1900, model="llm")
            pieces = [await stream.__anext__(), await stream.__anext__()]
            assert all(pieces)
            await stream.aclose()

    marker = "was stopped (stop=true) after "
    before = both.log_text().count(marker)  # type: ignore[attr-defined]
    asyncio.run(leave_early())
    deadline = time.monotonic() + 20
    while both.log_text().count(marker) <= before:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the engine was not told to stop"
        time.sleep(0.2)
    stopped = both.log_text().split(marker)[-1].split()[0]  # type: ignore[attr-defined]
    assert int(stopped) < 1900
