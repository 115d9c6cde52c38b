"""Generation through the `llm` ensemble that tritonforge builds (cpu target) on a real Triton.

The decoder is a tiny random Llama (no real decoder can be downloaded here): the text is gibberish, but the
pipeline is real and its greedy output must equal transformers' generate() token for token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tritonforge.clients import AsyncClient, Client
from tritonforge.clients.generation import Sampling, generation_inputs
from tritonforge.errors import ClientError

pytestmark = pytest.mark.integration
PROMPTS = ["Tell me about inference servers.", "Hi", "A much longer prompt, with several words, to make the batch ragged."]


@pytest.fixture(scope="module")
def llm_server(demo_repo: Path) -> Iterator[object]:
    from tritonforge.server import TritonServer

    with TritonServer(demo_repo) as server:
        yield server


@pytest.fixture(scope="module")
def reference() -> object:
    """Greedy completions from transformers' generate() on the same checkpoint the demo build shipped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tritonforge.builders.checkpoints import default_cache_dir

    checkpoint = default_cache_dir() / "checkpoints" / "tiny-decoder"
    tok = AutoTokenizer.from_pretrained(checkpoint, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True).eval()

    def complete(prompt: str, max_tokens: int) -> str:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        return tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    return complete


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_equals_transformers(llm_server, reference, prompt: str) -> None:
    want = reference(prompt, 20)
    with Client(llm_server.endpoints.grpc) as client:
        assert client.generate(prompt, max_tokens=20) == want
        assert "".join(client.stream(prompt, max_tokens=20)) == want
    with Client(llm_server.endpoints.http, protocol="http") as client:
        assert client.generate(prompt, max_tokens=20) == want

    async def over_http() -> str:
        async with AsyncClient(llm_server.endpoints.http, protocol="http") as aclient:
            return await aclient.generate(prompt, max_tokens=20)

    assert asyncio.run(over_http()) == want  # the generate extension on keep-alive connections, from a worker thread


def test_a_stream_yields_several_pieces_before_the_end(llm_server) -> None:
    with Client(llm_server.endpoints.grpc) as client:
        pieces = list(client.stream(PROMPTS[0], max_tokens=16))
        assert len(pieces) >= 4
        assert "".join(pieces) == client.generate(PROMPTS[0], max_tokens=16)


def test_seeded_sampling_is_reproducible(llm_server) -> None:
    with Client(llm_server.endpoints.grpc) as client:
        a = client.generate(PROMPTS[0], max_tokens=12, temperature=1.0, top_k=50, seed=7)
        b = client.generate(PROMPTS[0], max_tokens=12, temperature=1.0, top_k=50, seed=7)
    assert a == b


def test_concurrent_requests_each_get_their_own_completion(llm_server, reference) -> None:
    import concurrent.futures as cf

    with Client(llm_server.endpoints.grpc) as client, cf.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda p: client.generate(p, max_tokens=12), PROMPTS * 3))
    assert got == [reference(p, 12) for p in PROMPTS * 3]


def test_bad_generation_requests_get_clear_errors(llm_server) -> None:
    with Client(llm_server.endpoints.grpc, retries=0) as client:
        with pytest.raises(ClientError, match="prompt must be a non-empty string"):
            client.generate("   ")
        with pytest.raises(ClientError, match="max_tokens must be an integer >= 1"):
            client.generate("hi", max_tokens=0)
        with pytest.raises(ClientError, match=r"request_output_len \(5000\) = \d+ exceeds max_seq_len=512"):
            client.generate("hi", max_tokens=5000)  # max_seq_len is 512
        with pytest.raises(ClientError, match=r"the prompt has \d+ tokens, more than max_input_len=256"):
            client.generate("word " * 2000, max_tokens=4)
        alone = {"text_input": np.array([[b"hi"]], dtype=object), "sampling_param_max_tokens": np.array([[4]], np.int32),
                 "lora_id": np.array([[99]], np.uint64)}  # was served by the base model without a word
        with pytest.raises(ClientError, match="lora_id, lora_name and lora_path must all be provided together"):
            "".join(client.stream_text("tensorrt_llm", alone, timeout=30))
        assert client.generate("still serving", max_tokens=4)


def test_leaving_a_stream_early_stops_generation_and_the_server_keeps_serving(llm_server) -> None:
    with Client(llm_server.endpoints.grpc) as client:
        stream = client.stream(PROMPTS[0], max_tokens=400)
        first = [next(stream), next(stream)]
        stream.close()  # the client goes away mid-stream
        assert all(first)
        t0 = time.perf_counter()
        assert client.generate("next request", max_tokens=8)
        # a 400-token generation left running would hold the engine's batch; the next request must not wait for it
        assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("call", ["generate", "chat", "async generate", "async cancelled"])
def test_a_whole_completion_cut_short_stops_generation_on_the_server(llm_server, call: str) -> None:
    """generate()/chat() past their deadline (or an asyncio task running them cancelled) left the engine
    generating for nobody: only streams sent upstream's stop (API audit). Triton 2.51 does not pass an ensemble's
    cancellation on to its steps, so the engine hears of it only through the stop."""
    import asyncio

    from tritonforge.clients import AsyncClient
    from tritonforge.errors import DeadlineExceededError

    stopped = "was stopped (stop=true) after"
    before = llm_server.log_text().count(stopped)
    long = {"max_tokens": 480, "timeout": 0.3}
    if call == "generate":
        with Client(llm_server.endpoints.grpc, retries=0) as client, pytest.raises(DeadlineExceededError):
            client.generate("Hi", **long)
    elif call == "chat":
        with Client(llm_server.endpoints.grpc, retries=0) as client, pytest.raises(DeadlineExceededError):
            client.chat([{"role": "user", "content": "Hi"}], **long)
    else:
        async def run() -> None:
            async with AsyncClient(llm_server.endpoints.grpc, retries=0) as client:
                if call == "async generate":
                    with pytest.raises(DeadlineExceededError):
                        await client.generate("Hi", **long)
                    return
                task = asyncio.ensure_future(client.generate("Hi", max_tokens=480))
                await asyncio.sleep(0.3)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                await asyncio.sleep(0.5)  # the stop is sent by a task of its own

        asyncio.run(run())
    deadline = time.monotonic() + 10
    while llm_server.log_text().count(stopped) == before:
        assert time.monotonic() < deadline, "the engine was not told to stop: it generates on for nobody"
        time.sleep(0.2)
    generated = int(llm_server.log_text().split(stopped)[-1].split()[0])
    assert generated < 480


def test_a_completed_async_generation_sends_no_stop(llm_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The asyncio stream never saw a response marked final (tritonclient's aio stream cannot ask for the empty
    final one), so every completed generation was followed by a stop to the engine: an extra request per chat
    (operations audit)."""
    import asyncio

    from tritonforge.clients import AsyncClient
    from tritonforge.triton import streams

    sent: list[str] = []
    real = streams.send_stop_async

    async def recording(transport, engine_model, request_id, headers=None):  # type: ignore[no-untyped-def]
        sent.append(request_id)
        await real(transport, engine_model, request_id, headers)

    monkeypatch.setattr(streams, "send_stop_async", recording)

    async def run() -> tuple[str, str]:
        async with AsyncClient(llm_server.endpoints.grpc) as client:
            text = await client.generate("Hi", max_tokens=4)
            text += "".join([piece async for piece in client.stream("Hi", max_tokens=4)])  # streamed to its end
            cut = client.stream("Hi", max_tokens=200)
            first = await cut.__anext__()
            await cut.aclose()  # left early: this one is stopped
            return text, first

    assert all(asyncio.run(run()))
    assert len(sent) == 1


def test_streams_left_early_leave_no_thread_behind(llm_server) -> None:
    """tritonclient's cancelled stream never ended the request iterator its gRPC thread reads: each stream left
    early, or cut by its deadline, left a thread blocked for good (API audit)."""
    import threading

    from tritonforge.errors import DeadlineExceededError

    with Client(llm_server.endpoints.grpc, retries=0) as client:
        client.generate("warm up", max_tokens=2)
        time.sleep(0.5)
        before = threading.active_count()
        for _ in range(6):
            stream = client.stream(PROMPTS[0], max_tokens=400)
            next(stream)
            began = time.monotonic()
            stream.close()
            # the stop's answer is the final flag alone, which tritonclient dropped: each close waited 5 s for it
            assert time.monotonic() - began < 2
        for _ in range(3):
            began = time.monotonic()
            with pytest.raises(DeadlineExceededError):
                client.generate(PROMPTS[0], max_tokens=480, timeout=0.2)
            assert time.monotonic() - began < 2  # it raised after 5.2 s
        deadline = time.monotonic() + 10
        while threading.active_count() > before:
            assert time.monotonic() < deadline, [t.name for t in threading.enumerate()]
            time.sleep(0.2)


def _engine_requests_metrics(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The CPU engine's nv_trt_llm_request_metrics on Triton's metrics port, by request_type."""
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://{server.endpoints.metrics}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("nv_trt_llm_request_metrics{") and 'model="tensorrt_llm"' in line:
            kind = re.search(r'request_type="([a-z]+)"', line)
            if kind:
                found[kind.group(1)] = float(line.rsplit(" ", 1)[1])
    return found


def test_the_engines_queue_is_on_tritons_metrics_port_as_tensorrt_llm_publishes_it(llm_server) -> None:
    """The engine takes every request into its own queue: Triton's queue time stayed near zero under an LLM burst,
    so an autoscaler reading it never saw the backlog (operations audit). The engine now publishes it in
    TensorRT-LLM's own family, so what reads a GPU deployment's reads this one."""
    with Client(llm_server.endpoints.grpc) as client:
        stream = client.stream(PROMPTS[0], max_tokens=400)
        next(stream)
        during = _engine_requests_metrics(llm_server)
        stream.close()
        deadline = time.monotonic() + 10
        while (after := _engine_requests_metrics(llm_server)).get("active", 1.0) != 0.0:
            assert time.monotonic() < deadline, after
            time.sleep(0.2)
    assert during["active"] >= 1.0 and during["scheduled"] >= 1.0 and during["max"] >= 1.0, during
    assert during["waiting"] == 0.0 and after["waiting"] == 0.0, (during, after)


def test_upstream_style_raw_request_to_the_ensemble(llm_server) -> None:
    """A client written for TensorRT-LLM's ensemble works unchanged: upstream's documented generate call."""
    import json
    import urllib.request

    body = {"text_input": "What is ML?", "max_tokens": 6, "bad_words": "", "stop_words": ""}
    request = urllib.request.Request(
        f"http://{llm_server.endpoints.http}/v2/models/llm/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = json.loads(response.read())
    assert reply["model_name"] == "llm" and reply["text_output"]


def test_oversized_or_malformed_prompts_are_refused_before_any_work(llm_server) -> None:
    """A 100 MB prompt was tokenized whole before its length was checked (the engine's stub reached 13 GB), a
    deeply nested chat_messages was an internal RecursionError, and extra prompts in one text_input row were
    dropped without a word (robustness audit). Each is now this request's INVALID_ARG, and the next request serves."""
    big = "word " * 300_000  # 1.5 MB
    with Client(llm_server.endpoints.grpc, retries=0) as client:
        for model in ("llm", "tensorrt_llm"):
            inputs = generation_inputs(big, Sampling.of({"max_tokens": 4}), stream=False)
            if model == "tensorrt_llm":
                inputs = {"text_input": inputs["text_input"], "sampling_param_max_tokens": np.array([[4]], np.int32)}
            with pytest.raises(ClientError, match=r"is 1500000 bytes; at most 1048576 are taken"):
                "".join(client.stream_text(model, inputs, timeout=30))
        nested = generation_inputs("hi", Sampling.of({"max_tokens": 4}), stream=False)
        nested["chat_messages"] = np.array([["[" * 100_000 + "]" * 100_000]], dtype=object)
        with pytest.raises(ClientError, match="chat_messages is nested too deeply"):
            "".join(client.stream_text("llm", nested, timeout=30))
        two = {"text_input": np.array([[b"a", b"b"]], dtype=object),
               "sampling_param_max_tokens": np.array([[4]], np.int32)}
        with pytest.raises(ClientError, match="text_input carries one prompt per batch item; got 2"):
            "".join(client.stream_text("tensorrt_llm", two, timeout=30))
        assert client.generate("still serving", max_tokens=4)
