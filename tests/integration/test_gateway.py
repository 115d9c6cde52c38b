"""The OpenAI-compatible gateway (the gateway package, gateway/) on a real Triton, called with the official `openai` SDK.

Triton serves the demo repository (embed, rerank, llm: a tiny random decoder, so the text is gibberish but greedy
decoding is deterministic); the gateway runs in uvicorn on a free loopback port in a thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")
openai = pytest.importorskip("openai", reason="the gateway tests use the openai SDK (`test` extra)")
httpx = pytest.importorskip("httpx")

from tritonforge.clients import Client  # noqa: E402

pytestmark = pytest.mark.integration
KEYS = ["sk-gateway-test-1", "sk-gateway-test-2"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _reduced_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/rag.yaml without the retriever and rag entries (only what the gateway serves)."""
    import yaml

    from tritonforge.build import build
    from tritonforge.demo import demo_spec

    data = yaml.safe_load((EXAMPLES / "rag.yaml").read_text())
    keep = {k: m for k, m in data["models"].items() if m.get("kind") in ("embedding", "reranker", "llm")}
    for m in keep.values():
        if "checkpoint" in m and not str(m["checkpoint"]).startswith("pypi:"):
            m["checkpoint"] = str(EXAMPLES / m["checkpoint"])
    data["models"] = keep
    folder = tmp_path_factory.mktemp("gateway-spec")
    (folder / "spec.yaml").write_text(yaml.safe_dump(data))
    repo = tmp_path_factory.mktemp("gateway") / "model_repository"
    build(demo_spec(folder / "spec.yaml", stand_in_decoder=True)[0], repo, target="cpu")
    return repo


@pytest.fixture(scope="module")
def gateway_triton(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tritonforge.server import TritonServer

    try:
        repo = request.getfixturevalue("demo_repo")
    except Exception:  # the full demo build is broken (e.g. another part being edited): build what we need
        repo = _reduced_repo(tmp_path_factory)
    with TritonServer(repo) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(gateway_triton) -> Iterator[str]:
    """The gateway (API keys KEYS) on a free loopback port; yields its base URL."""
    from tritonforge.gateway import GatewayModels, create_app

    with _served(create_app(gateway_triton.endpoints.grpc, api_keys=KEYS, models=GatewayModels())) as url:
        yield url


@contextlib.contextmanager
def _served(app: object) -> Iterator[str]:
    """``app`` served as `tritonforge gateway` serves it (GatewayServer: uvicorn with the header guard) on a free
    loopback port, always stopped; yields its base URL."""
    from tritonforge.gateway.listen import GatewayServer, bind

    sock = bind("127.0.0.1", 0)
    server = GatewayServer(app, sock)
    server.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.stop()
        assert not server.is_alive(), "the gateway did not stop"


@pytest.fixture()
def sdk(gateway: str) -> object:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEYS[1], max_retries=0, timeout=120)


@pytest.fixture()
def http(gateway: str) -> Iterator[object]:
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {KEYS[0]}"}, timeout=120) as client:
        yield client


PROMPT = "Tell me about inference servers."
MESSAGES = [{"role": "user", "content": PROMPT}]


def test_models_are_listed(sdk) -> None:
    ids = {m.id for m in sdk.models.list()}
    assert ids == {"chat", "minilm", "reranker", "legal", "support"}  # each LoRA adapter is a model, as in vLLM
    assert sdk.models.retrieve("chat").id == "chat"
    support = sdk.models.retrieve("support")
    assert support.parent == "chat" and support.adapter == "support"  # type: ignore[attr-defined]


def test_an_adapter_is_called_by_its_model_id(sdk, gateway_triton) -> None:
    from tritonforge.clients import Client

    with Client(gateway_triton.endpoints.grpc) as client:
        want = {a: client.generate(PROMPT, adapter=a, chat=True, max_tokens=8, temperature=0) for a in ("support", "legal")}
    assert want["support"] != want["legal"]
    for adapter, text in want.items():
        reply = sdk.chat.completions.create(model=adapter, messages=MESSAGES, max_tokens=8, temperature=0)
        assert reply.choices[0].message.content == text and reply.model == adapter
    with pytest.raises(openai.BadRequestError, match="is a chat model"):
        sdk.embeddings.create(model="support", input=["x"])


def test_chat_streamed_chunks_concatenate_to_the_whole_answer(sdk, gateway_triton) -> None:
    from transformers import AutoTokenizer

    whole = sdk.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].message.role == "assistant"
    assert whole.object == "chat.completion" and whole.model == "chat"
    assert whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage is not None and 0 < whole.usage.completion_tokens <= 12
    # the engine's own counts: the prompt is the chat template around the message
    tokenizer = AutoTokenizer.from_pretrained(str(gateway_triton.repo / "preprocessing" / "1" / "tokenizer"))
    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer.encode(rendered, add_special_tokens=False)  # the template holds the special tokens
    assert whole.usage.prompt_tokens == len(prompt_ids)
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    assert whole.usage.completion_tokens == len(tokenizer.encode(text, add_special_tokens=False)) or (
        whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 12
    )

    stream = sdk.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) >= 2
    assert "".join(pieces) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]


def test_a_multi_turn_conversation_is_rendered_whole_by_the_chat_template(sdk, gateway_triton) -> None:
    """The conversation goes to the llm ensemble as chat_messages: the checkpoint's chat template renders every turn
    in its role (the prompt is exactly transformers' apply_chat_template of the messages), not one flattened turn."""
    from transformers import AutoTokenizer

    messages = [
        {"role": "developer", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "What is Triton?"}]},
    ]
    reply = sdk.chat.completions.create(model="chat", messages=messages, max_tokens=6, temperature=0)
    assert reply.choices[0].message.content
    tokenizer = AutoTokenizer.from_pretrained(str(gateway_triton.repo / "preprocessing" / "1" / "tokenizer"))
    as_template = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                   {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is Triton?"}]
    rendered = tokenizer.apply_chat_template(as_template, add_generation_prompt=True, tokenize=False)
    assert reply.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))


def test_the_clients_chat_a_conversation_as_the_gateway_does(sdk, gateway_triton) -> None:
    """Client.chat / chat_stream (gRPC and HTTP) and AsyncClient.chat send the conversation as chat_messages:
    the same answer as the gateway's for the same messages."""
    import asyncio

    from tritonforge.clients import AsyncClient

    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is Triton?"}]
    reply = sdk.chat.completions.create(model="chat", messages=messages, max_tokens=8, temperature=0)
    want = reply.choices[0].message.content
    with Client(gateway_triton.endpoints.grpc) as client:
        assert client.chat(messages, max_tokens=8, temperature=0.0) == want
        assert "".join(client.chat_stream(messages, max_tokens=8, temperature=0.0)) == want
        assert client.chat(messages[1:2], max_tokens=8) == client.generate("Hi", max_tokens=8, chat=True)
    with Client(gateway_triton.endpoints.http, protocol="http") as client:
        assert client.chat(messages, max_tokens=8, temperature=0.0) == want

    async def main() -> tuple[str, str]:
        async with AsyncClient(gateway_triton.endpoints.grpc) as client:
            whole = await client.chat(messages, max_tokens=8, temperature=0.0)
            pieces = [p async for p in client.chat_stream(messages, max_tokens=8, temperature=0.0)]
            return whole, "".join(pieces)

    assert asyncio.run(main()) == (want, want)


def test_completions_equal_the_triton_client(sdk, gateway_triton) -> None:
    with Client(gateway_triton.endpoints.grpc) as client:
        want = client.generate(PROMPT, max_tokens=10, temperature=0.0)
    got = sdk.completions.create(model="chat", prompt=PROMPT, max_tokens=10, temperature=0)
    assert got.choices[0].text == want
    streamed = sdk.completions.create(model="chat", prompt=PROMPT, max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == want


def test_n_choices_are_each_the_answer_of_their_own_seed(sdk) -> None:
    """n > 1 runs n generations at once; choice i draws with seed + i, so each equals a request of its own with
    that seed; usage counts the prompt once and every choice's tokens. Streamed, each index's pieces join into its
    choice and each ends with its own finish chunk."""
    sampled = {"model": "chat", "messages": MESSAGES, "max_tokens": 8, "temperature": 1.5}
    whole = sdk.chat.completions.create(**sampled, n=3, seed=7)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    singles = [sdk.chat.completions.create(**sampled, seed=7 + i) for i in range(3)]
    assert [c.message.content for c in whole.choices] == [s.choices[0].message.content for s in singles]
    assert len({c.message.content for c in whole.choices}) > 1, "three seeds drew the same answer"
    assert whole.usage.prompt_tokens == singles[0].usage.prompt_tokens
    assert whole.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)

    stream = sdk.chat.completions.create(**sampled, n=3, seed=7, stream=True, stream_options={"include_usage": True})
    texts, finals = ["", "", ""], [[], [], []]
    chunks = list(stream)
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finals[choice.index].append(choice.finish_reason)
    assert texts == [c.message.content for c in whole.choices]
    assert finals == [[c.finish_reason] for c in whole.choices]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    text = sdk.completions.create(model="chat", prompt=PROMPT, max_tokens=6, temperature=0, n=2)
    assert len(text.choices) == 2 and text.choices[0].text == text.choices[1].text  # greedy: the same answer twice


def test_n_choices_or_a_seed_without_a_sampling_parameter_sample_at_openais_temperature(sdk) -> None:
    """Audit: n=3 without temperature gave three copies of the greedy answer (paid three times) and a seed alone
    changed nothing; OpenAI and vLLM sample at temperature 1.0 by default, and so does the gateway for them."""
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 8}
    greedy = sdk.chat.completions.create(**body).choices[0].message.content
    three = [c.message.content for c in sdk.chat.completions.create(**body, n=3).choices]
    assert len(set(three)) > 1, f"n=3 without temperature drew the same answer three times: {three}"
    # served as an explicit temperature of 1.0 is: the same choices for the same seed
    seeded = [c.message.content for c in sdk.chat.completions.create(**body, n=3, seed=21).choices]
    explicit = sdk.chat.completions.create(**body, n=3, seed=21, temperature=1.0).choices
    assert seeded == [c.message.content for c in explicit]
    # a seed alone samples, and reproduces its answer
    once = [sdk.chat.completions.create(**body, seed=5).choices[0].message.content for _ in range(2)]
    assert once[0] == once[1]
    assert {once[0], *seeded} != {greedy}
    # completions too; temperature 0 still asks for greedy copies
    text = sdk.completions.create(model="chat", prompt=PROMPT, max_tokens=8, n=3).choices
    assert len({c.text for c in text}) > 1
    copies = sdk.chat.completions.create(**body, n=2, temperature=0).choices
    assert [c.message.content for c in copies] == [greedy, greedy]


@pytest.mark.parametrize("kind", ["chat", "text"])
def test_continuous_usage_stats_put_each_choices_usage_so_far_on_every_chunk(sdk, kind: str) -> None:
    """vLLM's stream_options.continuous_usage_stats (it was ignored): every chunk carries the usage of its choice so
    far (the role chunk 0 generated), rising to that choice's share of the final usage chunk's totals."""
    options = {"include_usage": True, "continuous_usage_stats": True}
    if kind == "chat":
        stream = sdk.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=3,
                                             n=2, stream=True, stream_options=options)
    else:
        stream = sdk.completions.create(model="chat", prompt=PROMPT, max_tokens=8, temperature=1.0, seed=3, n=2,
                                        stream=True, stream_options=options)
    chunks = list(stream)
    *pieces, last = chunks
    assert last.choices == [] and last.usage is not None
    seen: dict[int, list[int]] = {0: [], 1: []}
    for chunk in pieces:
        assert chunk.usage is not None, chunk
        (choice,) = chunk.choices
        assert chunk.usage.prompt_tokens == last.usage.prompt_tokens
        assert chunk.usage.total_tokens == chunk.usage.prompt_tokens + chunk.usage.completion_tokens
        seen[choice.index].append(chunk.usage.completion_tokens)
    for counts in seen.values():
        assert counts == sorted(counts) and counts[-1] > 0, counts
    assert seen[0][-1] + seen[1][-1] == last.usage.completion_tokens
    if kind == "chat":
        assert seen[0][0] == seen[1][0] == 0  # the role chunks


def test_a_list_of_prompts_gets_each_prompts_choices_in_order(sdk, gateway_triton) -> None:
    prompts = [PROMPT, "Write one word.", "Name a colour."]
    with Client(gateway_triton.endpoints.grpc) as client:
        want = [client.generate(p, max_tokens=6, temperature=0.0) for p in prompts]
    reply = sdk.completions.create(model="chat", prompt=prompts, max_tokens=6, temperature=0, n=2)
    assert [c.index for c in reply.choices] == list(range(6))
    assert [c.text for c in reply.choices] == [w for w in want for _ in range(2)]
    singles = [sdk.completions.create(model="chat", prompt=p, max_tokens=6, temperature=0) for p in prompts]
    assert reply.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert reply.usage.completion_tokens == 2 * sum(s.usage.completion_tokens for s in singles)
    streamed = ["" for _ in range(6)]
    for chunk in sdk.completions.create(model="chat", prompt=prompts, max_tokens=6, temperature=0, n=2, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert streamed == [c.text for c in reply.choices]


def test_the_default_max_tokens_is_the_gateways_setting(gateway_triton) -> None:
    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.gateway.listen import GatewayServer, bind
    from tritonforge.server import free_port

    port = free_port()
    app = create_app(gateway_triton.endpoints.grpc, api_keys=None, models=GatewayModels(chat_max_tokens=3))
    web = GatewayServer(app, bind("127.0.0.1", port))
    web.start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0)
        assert reply.usage.completion_tokens <= 3 and reply.choices[0].finish_reason == "length"
        longer = client.chat.completions.create(model="chat", messages=MESSAGES, temperature=0, max_tokens=6)
        assert longer.usage.completion_tokens > 3
    finally:
        web.stop()


def test_stopping_the_gateway_with_streams_open_stops_their_generation_within_its_grace(gateway_triton) -> None:
    """uvicorn waited for open streams, then the gateway forced its exit: streams cut with no stop sent to the
    engine (it generated on for nobody) and the app's shutdown skipped. Now the grace ends with the streams
    cancelled (their close sends the stop) and the shutdown run."""
    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.gateway.listen import GatewayServer, bind
    from tritonforge.server import free_port

    def ended_early() -> int:
        log = gateway_triton.log_text()
        return log.count("was cancelled after") + log.count("was stopped (stop=true) after")

    port = free_port()
    web = GatewayServer(create_app(gateway_triton.endpoints.grpc, api_keys=None, models=GatewayModels()),
                        bind("127.0.0.1", port), grace=0.3)
    web.start()
    before = ended_early()
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": 450, "stream": True}
    with (httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
          client.stream("POST", "/v1/completions", json=body) as reply):
        lines = reply.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        began = time.perf_counter()
        stopper = threading.Thread(target=web.stop)
        stopper.start()
        with contextlib.suppress(httpx.HTTPError):
            for _ in lines:
                pass
        stopper.join(30)
    assert not stopper.is_alive() and not web.is_alive()
    assert time.perf_counter() - began < 10
    deadline = time.monotonic() + 10
    while ended_early() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended_early() == before + 1, "the engine was not told to stop"


def test_a_whole_answer_cut_by_the_stop_is_a_503_to_send_again(gateway_triton) -> None:
    """A request not streamed and still running at the end of the grace got uvicorn's plain-text 500 (no JSON, no
    Retry-After) and two log lines (operations audit)."""
    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.gateway.listen import GatewayServer, bind
    from tritonforge.server import free_port

    port = free_port()
    web = GatewayServer(create_app(gateway_triton.endpoints.grpc, api_keys=None, models=GatewayModels()),
                        bind("127.0.0.1", port), grace=0.3)
    web.start()
    answers: list[httpx.Response] = []
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": 450}

    def ask() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            answers.append(client.post("/v1/completions", json=body))

    asking = threading.Thread(target=ask)
    asking.start()
    time.sleep(0.5)  # generating
    web.stop()
    asking.join(30)
    assert answers, "no answer"
    reply = answers[0]
    assert reply.status_code == 503 and reply.headers["retry-after"] == "1", reply.text
    assert "the gateway is stopping" in reply.json()["error"]["message"]


def test_sampling_without_a_seed_varies_and_a_temperature_alone_samples(sdk) -> None:
    """TensorRT-LLM seeds an unseeded request with 0 and its engine contract decodes a temperature alone greedily;
    through the gateway a temperature alone samples, with a fresh seed unless the client sends one."""
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": 12}
    greedy = sdk.completions.create(**body, temperature=0).choices[0].text
    unseeded = {sdk.completions.create(**body, temperature=1.5).choices[0].text for _ in range(4)}
    assert len(unseeded) > 1, "four unseeded samples were the same text"
    seeded = [sdk.completions.create(**body, temperature=1.5, seed=11).choices[0].text for _ in range(2)]
    assert seeded[0] == seeded[1]
    assert unseeded | set(seeded) != {greedy}
    assert sdk.completions.create(**body).choices[0].text == greedy  # no sampling parameter: greedy, as upstream


def test_presence_and_frequency_penalties_reach_the_engine(sdk, gateway_triton) -> None:
    """OpenAI's penalties go to the llm ensemble's presence_penalty / frequency_penalty: the gateway's answer equals
    the Triton client's with the same penalty, and differs from the answer without it."""
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    plain = sdk.completions.create(**body).choices[0].text
    with Client(gateway_triton.endpoints.grpc) as client:
        for name in ("presence_penalty", "frequency_penalty"):
            want = client.generate(PROMPT, max_tokens=16, temperature=0.0, **{name: 2.0})
            got = sdk.completions.create(**body, **{name: 2.0}).choices[0].text
            assert got == want and got != plain, name
    assert sdk.completions.create(**body, presence_penalty=0).choices[0].text == plain


def test_async_sdk_chat_completions_and_embeddings(gateway: str) -> None:
    async def main() -> tuple[str, str, list[float], str]:
        client = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key=KEYS[0], max_retries=0, timeout=120)
        try:
            whole = await client.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=8, temperature=0)
            stream = await client.chat.completions.create(
                model="chat", messages=MESSAGES, max_tokens=8, temperature=0, stream=True
            )
            streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            emb = await client.embeddings.create(model="minilm", input="hello world")
            comp = await client.completions.create(model="chat", prompt="Hi", max_tokens=4, temperature=0)
            return whole.choices[0].message.content, streamed, emb.data[0].embedding, comp.choices[0].text
        finally:
            await client.close()

    whole, streamed, vector, completion = asyncio.run(main())
    assert whole and whole == streamed
    assert len(vector) == 384 and completion


def test_embeddings_equal_client_embed(sdk, gateway_triton) -> None:
    texts = ["hello world", "bonjour le monde", "Triton serves models."]
    with Client(gateway_triton.endpoints.grpc) as client:
        want = client.embed(texts)
    reply = sdk.embeddings.create(model="minilm", input=texts, encoding_format="float")
    got = np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)], dtype=np.float32)
    np.testing.assert_array_equal(got, want)  # each float is written as the shortest text of the same float32
    assert reply.usage.prompt_tokens > len(texts)  # NUM_TOKENS includes [CLS]/[SEP]
    # without encoding_format the SDK asks for base64 and decodes it itself
    default = sdk.embeddings.create(model="minilm", input=texts)
    np.testing.assert_allclose(np.array([d.embedding for d in default.data], np.float32), want, atol=1e-6)
    # an explicit base64 request gets little-endian float32 bytes
    raw = sdk.embeddings.create(model="minilm", input=texts[0], encoding_format="base64").data[0].embedding
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(raw), "<f4"), want[0], atol=1e-6)


def test_an_input_over_the_models_length_is_a_400_unless_the_cut_is_asked_for(sdk, gateway_triton) -> None:
    """The ensemble cut a long input to the model's length and the gateway answered 200: an indexing job written for
    OpenAI relies on the 400 to split long documents, and everything past ~1,000 characters was never embedded."""
    long_text = "word " * 5000
    with pytest.raises(openai.BadRequestError) as info:
        sdk.embeddings.create(model="minilm", input=["short one", long_text, "another", long_text])
    error = info.value.body
    assert info.value.status_code == 400 and error["code"] == "context_length_exceeded" and error["param"] == "input"
    assert "maximum context length is 256 tokens, and input[1], input[3] are longer" in error["message"]
    cut = sdk.embeddings.create(model="minilm", input=["short one", long_text],
                                extra_body={"truncate_prompt_tokens": -1})
    assert len(cut.data) == 2 and cut.usage.prompt_tokens > 256  # the cut text counts its 256 tokens
    with Client(gateway_triton.endpoints.grpc) as client:
        np.testing.assert_allclose(np.array(cut.data[1].embedding, np.float32), client.embed([long_text])[0],
                                   atol=1e-5)
    with pytest.raises(openai.BadRequestError, match="'truncate_prompt_tokens' must be -1"):
        sdk.embeddings.create(model="minilm", input="x", extra_body={"truncate_prompt_tokens": 64})
    # `tritonforge gateway --auto-truncate` (TEI's flag): the cut without asking, as earlier tritonforge did
    from tritonforge.gateway import GatewayModels, create_app

    app = create_app(gateway_triton.endpoints.grpc, api_keys=KEYS, models=GatewayModels(auto_truncate=True))
    with _served(app) as url:
        lenient = openai.OpenAI(base_url=f"{url}/v1", api_key=KEYS[0], max_retries=0, timeout=120)
        assert len(lenient.embeddings.create(model="minilm", input=["short one", long_text]).data) == 2


def test_a_large_embeddings_request_keeps_its_order_across_chunks_in_flight(sdk, gateway_triton) -> None:
    # 150 texts: 5 Triton requests of 32, two in flight at a time, answered in whatever order Triton finishes them
    texts = [f"passage {i}: {' '.join(['word'] * (i % 23))} end" for i in range(150)]
    with Client(gateway_triton.endpoints.grpc) as client:
        want = client.embed(texts, batch_size=32)
    reply = sdk.embeddings.create(model="minilm", input=texts)
    assert [d.index for d in reply.data] == list(range(150))
    got = np.array([d.embedding for d in reply.data], dtype=np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)  # joined executions may pad a row to another width
    assert (np.argmax(got @ want.T, axis=1) == np.arange(150)).all()


def test_rerank_orders_documents_by_the_cross_encoder(http, gateway_triton) -> None:
    docs = ["Triton is an inference server.", "Bananas are yellow.", "GPUs run models fast."]
    with Client(gateway_triton.endpoints.grpc) as client:
        scores = client.rerank("what is triton", docs)
    reply = http.post(
        "/v1/rerank",
        json={"model": "reranker", "query": "what is triton", "documents": docs, "top_n": 2, "return_documents": True},
    )
    assert reply.status_code == 200, reply.text
    results = reply.json()["results"]
    assert [r["index"] for r in results] == list(np.argsort(-scores)[:2])
    for r in results:
        assert abs(r["relevance_score"] - float(scores[r["index"]])) < 1e-6
        assert r["document"]["text"] == docs[r["index"]]
    # usage counts every (query, document) pair's tokens as the checkpoint's tokenizer makes them (it was always 0)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(gateway_triton.repo / "reranker_pair_tokenizer" / "1" / "tokenizer" /
                                        "tokenizer.json"))
    want = sum(len(tokenizer.encode("what is triton", d).ids) for d in docs)
    assert reply.json()["usage"] == {"total_tokens": want}, reply.json()["usage"]


def test_a_rerank_of_long_documents_within_the_limits_stays_small(http, gateway_triton) -> None:
    """Found by a gateway audit: a query and documents of the documented 32,768 characters made the pair tokenizer
    keep every overflowing piece of both texts, combined pairwise (~7 GB for one pair; 512 of 8k characters got
    the stub OOM-killed). Long parts are now cut past what longest_first keeps: the stub stays small and the scores
    are those of the texts as sent."""
    words = "inference servers batch requests on accelerators while queues hold the rest of the work "
    query, docs = (words * 400)[:32_768], [(words[::-1] * 400)[:32_768], (words * 400)[:20_000], "Bananas."]
    started = time.monotonic()
    reply = http.post("/v1/rerank", json={"model": "reranker", "query": query, "documents": docs})
    assert reply.status_code == 200, reply.text
    assert time.monotonic() - started < 30
    with Client(gateway_triton.endpoints.grpc) as client:
        want = client.rerank(query, docs)
    got = {r["index"]: r["relevance_score"] for r in reply.json()["results"]}
    assert all(abs(got[i] - float(want[i])) < 1e-5 for i in range(len(docs)))
    script = str(gateway_triton.repo / "reranker_pair_tokenizer" / "1" / "model.py")
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if len(argv) > 1 and argv[1].decode(errors="replace") == script:
            peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
            assert peak_kb < 1_000_000, f"the pair tokenizer's stub peaked at {peak_kb // 1024} MB"


def _assert_error(reply: object, status: int) -> dict:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def _still_serving(http) -> None:
    reply = http.post("/v1/embeddings", json={"model": "minilm", "input": "still here", "encoding_format": "float"})
    assert reply.status_code == 200, reply.text


def test_errors_are_openai_style_and_the_gateway_keeps_serving(http, gateway: str) -> None:
    chat = {"model": "chat", "messages": MESSAGES, "max_tokens": 4}
    error = _assert_error(http.post("/v1/chat/completions", json={**chat, "model": "gpt-4o"}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    _still_serving(http)
    error = _assert_error(http.post("/v1/chat/completions", json={**chat, "n": 17}), 400)
    assert error["message"] == "choices (n): 17 is more than this server's limit of 16" and error["param"] == "n"
    error = _assert_error(http.post("/v1/completions", json={"model": "chat", "prompt": ["a"] * 4, "n": 5}), 400)
    assert error["message"] == "generations (prompts x n): 20 is more than this server's limit of 16"
    error = _assert_error(http.post("/v1/completions", json={"model": "chat", "prompt": ["a", " "]}), 400)
    assert error["message"] == "'prompt[1]' must not be empty (or only whitespace)"
    _assert_error(http.post("/v1/completions", json={"model": "chat", "prompt": []}), 400)
    _still_serving(http)
    reply = http.post("/v1/chat/completions", content=b'{"model": "chat", "messages": [', headers={"Content-Type": "application/json"})
    assert _assert_error(reply, 400)["code"] == "invalid_json"
    _still_serving(http)
    _assert_error(http.post("/v1/chat/completions", json={**chat, "max_tokens": "four"}), 400)
    _assert_error(http.post("/v1/chat/completions", json={**chat, "messages": "hello"}), 400)
    _assert_error(http.post("/v1/embeddings", json={"model": "minilm", "input": [1, 2, 3]}), 400)
    _assert_error(http.post("/v1/chat/completions", json={**chat, "tools": [{"type": "function"}]}), 400)
    _assert_error(http.post("/v1/chat/completions", json={**chat, "no_such_field": 1}), 400)
    _assert_error(http.post("/v1/chat/completions", json=[1, 2]), 400)
    _still_serving(http)
    # a request Triton itself rejects (max_seq_len 512) is a 400 with OpenAI's code for it, streamed or not
    for stream in (False, True):
        over = {"model": "chat", "prompt": "hi", "max_tokens": 5000, "stream": stream}
        error = _assert_error(http.post("/v1/completions", json=over), 400)
        # in the request's terms (the engine's words name TensorRT-LLM's request_output_len)
        assert (error["code"], error["param"]) == ("context_length_exceeded", "max_tokens"), error
        assert re.fullmatch(r"'max_tokens' is too large: 5000\. This model's maximum context length is 512 tokens "
                            r"and your request has (\d+) input tokens \(5000 > 512 - \1\)\.", error["message"]), error
    chat_over = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5000}
    error = _assert_error(http.post("/v1/chat/completions", json=chat_over), 400)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "max_completion_tokens"), error
    for stream in (False, True):  # every choice refused: one 400, the others' streams closed
        too_long = {"model": "chat", "prompt": "hi", "max_tokens": 5000, "stream": stream, "n": 3, "temperature": 1}
        assert _assert_error(http.post("/v1/completions", json=too_long), 400)["code"] == "context_length_exceeded"
    _still_serving(http)
    with httpx.Client(base_url=gateway, timeout=30) as anonymous:
        error = _assert_error(anonymous.get("/v1/models"), 401)
        assert error["code"] == "invalid_api_key"
        _assert_error(anonymous.post("/v1/embeddings", json={"model": "minilm", "input": "x"}), 401)
        _assert_error(anonymous.get("/v1/models", headers={"Authorization": "Bearer sk-wrong"}), 401)
        _assert_error(anonymous.get("/v1/models", headers={"Authorization": f"Basic {KEYS[0]}"}), 401)
        assert anonymous.get("/health").status_code == 200  # health needs no key
    _still_serving(http)


def test_the_sdk_raises_its_own_error_types(sdk, gateway: str) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError, match="limit of 16"):
        sdk.chat.completions.create(model="chat", messages=MESSAGES, n=17)
    bad = openai.OpenAI(base_url=f"{gateway}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert sdk.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=3).choices[0].message.content


@pytest.mark.parametrize("n", [1, 3])
def test_leaving_a_stream_early_stops_generation(http, n: int) -> None:
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": 400, "stream": True, "n": n, "temperature": 1.0}
    with http.stream("POST", "/v1/completions", json=body) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()
        events: list[dict] = []
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            if len(events) >= 2:
                break
    assert all(e["object"] == "text_completion" for e in events)
    t0 = time.perf_counter()
    reply = http.post("/v1/completions", json={"model": "chat", "prompt": "next", "max_tokens": 8})
    assert reply.status_code == 200, reply.text
    # a 400-token generation left running would hold the engine; the next request must not wait for it
    assert time.perf_counter() - t0 < 5


def test_a_client_that_leaves_a_whole_answer_early_stops_its_generation(gateway: str, gateway_triton) -> None:
    """Not streamed: the handler awaited the whole answer and the engine generated to max_tokens for nobody (six
    such requests slowed every other chat for ~80 s)."""
    def ended_early() -> int:
        log = gateway_triton.log_text()
        return log.count("was cancelled after") + log.count("was stopped (stop=true) after")

    before = ended_early()
    body = {"model": "chat", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 450}
    headers = {"Authorization": f"Bearer {KEYS[0]}", "X-Request-Id": "trace-left-early"}
    with (httpx.Client(base_url=gateway, headers=headers, timeout=0.5) as gone, pytest.raises(httpx.ReadTimeout)):
        gone.post("/v1/chat/completions", json=body)
    deadline = time.monotonic() + 10
    while ended_early() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ended_early() == before + 1, "the engine was not told to stop"
    # the engine's line names the client's X-Request-Id: a complaint can be traced into Triton's log
    assert "request 'trace-left-early-" in gateway_triton.log_text()


def test_health_and_metrics(http) -> None:
    assert http.get("/health").json()["triton_ready"] is True
    http.post("/v1/embeddings", json={"model": "minilm", "input": "count me", "encoding_format": "float"})
    text = http.get("/metrics").text
    assert 'tritonforge_gateway_requests_total{model="minilm",route="/v1/embeddings",status="200"}' in text
    assert "tritonforge_gateway_request_seconds_bucket" in text


HOSTILE = [  # (path, raw JSON body, expected status, words the message must hold)
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": '
     + str(2**63) + "}", 400, "max_tokens"),
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": '
     "4294967299}", 400, "max_tokens"),
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "top_k": '
     "4294967301}", 400, "top_k"),
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "seed": '
     + str(2**70) + "}", 400, "seed"),
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": '
     "NaN}", 400, "temperature"),
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "a\\ud800"}]}', 400,
     "not valid Unicode"),
    ("/v1/embeddings", '{"model": "minilm", "input": "\\ud800x"}', 400, "not valid Unicode"),
    ("/v1/embeddings", '{"model": "\\ud800", "input": "x"}', 400, "not valid Unicode"),
    ("/v1/embeddings", '{"model": "minilm", "input": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "nests deeper"),
    ("/v1/embeddings", '{"model": "minilm", "input": "' + "x" * (5 << 20) + '"}', 413, "limit"),
    ("/v1/embeddings", json.dumps({"model": "minilm", "input": ["x"] * 10_000}), 400, "limit of 512"),
    ("/v1/embeddings", json.dumps({"model": "minilm", "input": "x" * 100_000}), 400, "characters in input[0]"),
    ("/v1/rerank", json.dumps({"model": "reranker", "query": "q" * 100_000, "documents": ["d"]}), 400,
     "characters in the query"),
    ("/v1/chat/completions", json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}],
                                         "stop": ["s"] * 100_000}), 400, "stop strings"),
    ("/v1/chat/completions", json.dumps({"model": "chat", "messages": [{"role": "user", "content": "p" * 200_000}]}),
     400, "characters in the messages"),
    ("/v1/embeddings", '{"model": "minilm", "input": "x", "model": "chat"}', 400, "duplicate key 'model'"),
    ("/v1/embeddings", json.dumps({"model": "minilm", "input": "x", "dimensions": 3}), 400,
     "'dimensions' must be 384 for `minilm`"),
]


@pytest.mark.parametrize("case", range(len(HOSTILE)))
def test_hostile_requests_get_a_4xx_and_the_connection_keeps_serving(http, case: int) -> None:
    path, body, status, words = HOSTILE[case]
    response = http.post(path, content=body.encode("utf-8", "surrogatepass"),
                         headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text[:300]
    assert words in response.json()["error"]["message"], response.text[:300]
    good = http.post("/v1/embeddings", json={"model": "minilm", "input": "fine"})  # same keep-alive connection
    assert good.status_code == 200, good.text[:300]


def test_headers_over_the_limit_are_a_431_and_slow_ones_do_not_hold_the_gateway(http, gateway: str) -> None:
    """uvicorn kept every header byte until the headers ended, with no deadline: one connection's 300 MB header took
    the gateway to 366 MB (connection_guard.py). The served gateway refuses past 64 KiB and keeps serving, also while
    another connection trickles its headers."""
    import socket

    from tritonforge.gateway.connection_guard import HEADER_BYTES

    host, port = gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as slow:
        slow.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # and nothing more, for now
        big = http.post("/v1/embeddings", json={"model": "minilm", "input": "x"},
                        headers={"X-Padding": "p" * (HEADER_BYTES + 1)})
        assert big.status_code == 431, big.text
        assert f"the request's headers are over {HEADER_BYTES} bytes" in big.text
        fine = http.post("/v1/embeddings", json={"model": "minilm", "input": "x"}, headers={"X-Padding": "p" * 30_000})
        assert fine.status_code == 200, fine.text
        _still_serving(http)


def test_requests_in_flight_per_key_are_bounded_with_a_429(gateway_triton) -> None:
    """One API key could hold every slot, and an LLM burst waited minutes in the engine's own queue instead of
    being refused (operations audit): a key over its limit gets a 429 at once, other keys are served."""
    import socket
    from urllib.parse import urlsplit

    from tritonforge.gateway import GatewayLimits, GatewayModels, create_app

    app = create_app(gateway_triton.endpoints.grpc, api_keys=KEYS, models=GatewayModels(),
                     limits=GatewayLimits(requests_in_flight_per_key=1))
    with _served(app) as url:
        a, b = ({"Authorization": f"Bearer {key}"} for key in KEYS[:2])
        address = urlsplit(url)
        held = socket.create_connection((address.hostname, address.port))  # key a's one request, its body
        try:                                                              # still on its way: in flight
            held.sendall(f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEYS[0]}\r\n"
                         "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode())
            time.sleep(0.5)
            with httpx.Client(base_url=url, timeout=120) as client:
                refused = client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}, headers=a)
                assert refused.status_code == 429 and refused.headers["retry-after"] == "1", refused.text
                assert refused.json()["error"]["code"] == "rate_limit_exceeded"
                other = client.post("/v1/embeddings", json={"model": "minilm", "input": "x"}, headers=b)
                assert other.status_code == 200, other.text
                held.close()  # the client goes away: its slot comes back
                deadline = time.monotonic() + 10
                while (again := client.post("/v1/embeddings", json={"model": "minilm", "input": "x"},
                                            headers=a)).status_code == 429:
                    assert time.monotonic() < deadline, again.text
                    time.sleep(0.1)
                assert again.status_code == 200, again.text
        finally:
            held.close()


def test_health_names_a_member_model_that_is_down(http, gateway_triton) -> None:
    """Triton keeps the `embed` ensemble READY while its encoder is unloaded; the gateway's /health does not."""
    assert http.get("/health").status_code == 200
    gateway_triton.unload("minilm_encoder")
    try:
        reply = http.get("/health")
        assert reply.status_code == 503
        assert reply.json()["models_down"] == {"minilm": ["minilm_encoder"]}
        # the readiness probe: the other models still answer, so the pod stays in service (it was /health, and
        # one model down took every gateway pod out, with the models they still served)
        ready = http.get("/ready")
        assert ready.status_code == 200 and ready.json()["models_down"] == {"minilm": ["minilm_encoder"]}
        assert http.get("/live").status_code == 200
        failed = http.post("/v1/embeddings", json={"model": "minilm", "input": "x"})
        assert failed.status_code == 503, failed.text  # retryable, not the caller's fault
    finally:
        gateway_triton.load("minilm_encoder")
    assert http.get("/health").status_code == 200


def test_curl_and_the_sdk_send_json_and_a_body_of_another_content_type_is_a_415(sdk, gateway: str) -> None:
    """curl's -d without a Content-Type sends application/x-www-form-urlencoded (as a browser's cross-site form post
    does): refused, naming the type. With -H 'Content-Type: application/json', and from the openai SDK, served."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")

    def post(body: str, *headers: str) -> tuple[int, dict]:
        args = [curl, "-sS", "-w", "\n%{http_code}", f"{gateway}/v1/embeddings", "-H", f"Authorization: Bearer {KEYS[0]}"]
        for header in headers:
            args += ["-H", header]
        out = subprocess.run([*args, "-d", body], capture_output=True, text=True, timeout=120, check=True).stdout
        text, _, status = out.rpartition("\n")
        return int(status), json.loads(text)

    body = json.dumps({"model": "minilm", "input": "hello", "dimensions": 384, "encoding_format": "float"})
    status, reply = post(body, "Content-Type: application/json")
    assert status == 200 and len(reply["data"][0]["embedding"]) == 384, reply
    status, reply = post(body)
    assert status == 415 and "application/x-www-form-urlencoded" in reply["error"]["message"], reply
    status, reply = post(body, "Content-Type: text/plain")
    assert status == 415 and "'text/plain'" in reply["error"]["message"], reply
    assert len(sdk.embeddings.create(model="minilm", input="hello", dimensions=384).data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError, match="'dimensions' must be 384"):
        sdk.embeddings.create(model="minilm", input="hello", dimensions=256)


def test_json_declared_in_another_charset_is_a_415_and_utf8_json_is_served(http, sdk) -> None:
    """JSON is UTF-8 (RFC 8259): "café" sent in Latin-1 under its charset was read as UTF-8 (a 400 for its bytes, or
    other text than sent); now refused by its charset, while UTF-8 under any spelling of it is embedded."""
    body = {"model": "minilm", "input": "café au lait", "encoding_format": "float"}
    latin1 = json.dumps(body, ensure_ascii=False).encode("latin-1")
    reply = http.post("/v1/embeddings", content=latin1, headers={"Content-Type": "application/json; charset=ISO-8859-1"})
    error = _assert_error(reply, 415)
    assert error["code"] == "unsupported_media_type", error
    assert error["message"].startswith("Content-Type 'application/json; charset=ISO-8859-1' declares charset "
                                       "'ISO-8859-1': only UTF-8 JSON is accepted (RFC 8259)"), error
    want = sdk.embeddings.create(model="minilm", input="café au lait").data[0].embedding
    utf8 = json.dumps(body, ensure_ascii=False).encode("utf-8")
    for content_type in ("application/json; charset=utf-8", "application/json; charset=UTF8", "application/json"):
        reply = http.post("/v1/embeddings", content=utf8, headers={"Content-Type": content_type})
        assert reply.status_code == 200, (content_type, reply.text)
        assert np.allclose(reply.json()["data"][0]["embedding"], want, atol=1e-6), content_type
    _still_serving(http)


def test_adapter_ids_stay_known_while_their_chat_model_restarts(gateway_triton) -> None:
    """Found by a gateway audit: while `llm` was reloaded (a heal does this), reading its config failed and the
    gateway forgot its adapters: `model="support"` got a permanent-looking 404 until 5 s after the model was back,
    where `model="chat"` got a retryable 503. The adapters last seen now stay."""
    from tritonforge.gateway import GatewayModels
    from tritonforge.gateway.state import Gateway

    async def run() -> None:
        gw = Gateway(gateway_triton.endpoints.grpc, api_keys=None, models=GatewayModels(), timeout=60, retries=0,
                     splits=None, admin_keys=None, limits=None)
        await gw.open()
        try:
            assert {"legal", "support"} <= set(gw.adapters)
            with Client(gateway_triton.endpoints.grpc, admin_key=gateway_triton.admin_key) as admin:
                admin.unload_model("llm")
                try:
                    await gw.discover_adapters(max_age=0)
                    assert gw.adapters.get("support") == ("chat", "support") and gw.knows("support")
                finally:
                    admin.load_model("llm")
            await gw.discover_adapters(max_age=0)
            assert {"legal", "support"} <= set(gw.adapters)
        finally:
            await gw.close()

    asyncio.run(run())


def _answer_values(body: dict) -> np.ndarray:
    """An embeddings reply's rows (float or base64) in order, or a rerank reply's (index, score) pairs."""
    if "results" in body:
        return np.array([(r["index"], r["relevance_score"]) for r in body["results"]])
    rows = [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
    return np.array([np.frombuffer(base64.b64decode(r), "<f4") if isinstance(r, str) else r for r in rows])


def test_embeddings_and_rerank_over_tritons_http_endpoint_equal_the_grpc_gateways(gateway_triton, gateway) -> None:
    """`--triton-http` (serve --gateway sets it): embeddings and rerank go over Triton's HTTP endpoint on the
    gateway's own keep-alive connections (tritonforge/triton/keepalive_http.py). Same answers as the gateway on gRPC,
    the same errors for a refused call, and a 503 naming Triton's HTTP endpoint when it does not answer."""
    from tritonforge.gateway import GatewayModels, create_app
    from tritonforge.server import free_port

    models = GatewayModels(embeddings={"minilm": "embed", "ghost": "no_such_ensemble"})
    texts = [f"passage {i}: {' '.join(['word'] * (i % 23))} end" for i in range(70)]  # 3 Triton requests of 32
    rerank = {"model": "reranker", "query": "what is triton", "documents": ["Triton serves.", "Bananas."]}
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    app = create_app(gateway_triton.endpoints.grpc, api_keys=KEYS, models=models,
                     triton_http_url=gateway_triton.endpoints.http)
    with _served(app) as over_http, httpx.Client(headers=auth, timeout=120) as web:
        health = web.get(f"{over_http}/health").json()
        assert "models_down" not in health or "minilm" not in health["models_down"], health
        for _ in range(2):  # the second time on the connections the first left open
            for body in ({"model": "minilm", "input": texts, "encoding_format": "float"},
                         {"model": "minilm", "input": texts[0], "encoding_format": "base64"}, None):
                path, body = ("/v1/rerank", rerank) if body is None else ("/v1/embeddings", body)
                got, want = (web.post(f"{base}{path}", json=body) for base in (over_http, gateway))
                assert got.status_code == want.status_code == 200, got.text
                np.testing.assert_allclose(*(_answer_values(reply.json()) for reply in (got, want)), atol=1e-5)
        # Triton's refusal read by the one error mapping, as over gRPC: a model it does not serve is a 503 to retry
        refused = web.post(f"{over_http}/v1/embeddings", json={"model": "ghost", "input": "x"})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "model_not_ready", refused.text
        assert "unknown model 'no_such_ensemble'" in refused.json()["error"]["message"], refused.text
    nothing = f"127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app(gateway_triton.endpoints.grpc, api_keys=KEYS, models=models, retries=0, triton_http_url=nothing)
    with _served(app) as broken, httpx.Client(headers=auth, timeout=120) as web:
        reply = web.post(f"{broken}/v1/embeddings", json={"model": "minilm", "input": "x"})
        assert reply.status_code == 503 and "http server <triton> is unreachable" in reply.json()["error"]["message"]
        assert web.post(f"{broken}/v1/chat/completions", json={"model": "chat", "messages": MESSAGES,
                                                               "max_tokens": 2}).status_code == 200
        # the probes say so: /health names the models that go over it, /ready stays up for the chat that still serves
        from tritonforge.gateway.routes import HTTP_ENDPOINT_DOWN

        health = web.get(f"{broken}/health")
        assert health.status_code == 503, health.text
        down = health.json()["models_down"]
        assert down["minilm"] == down["reranker"] == [HTTP_ENDPOINT_DOWN] and "chat" not in down, down
        assert web.get(f"{broken}/ready").status_code == 200


def test_health_stays_ok_when_triton_is_not_ready_over_a_model_the_gateway_does_not_serve(
    http, gateway_triton, toy_models
) -> None:
    """Triton's strict readiness counts every model and version in its repository: after a version failed to load
    (a refused release promote) it stayed false until a restart, and /health was a 503 naming nothing (operations
    audit). /health answers for the gateway's models, and says why Triton is not ready."""
    repo = gateway_triton.repo
    toy_models.broken(repo, "broken_extra")
    try:
        with pytest.raises(Exception, match="broken_extra"):
            gateway_triton.load("broken_extra", timeout=60)
        with Client(gateway_triton.endpoints.grpc) as client:
            assert client.is_live() and not client.is_ready()
        reply = http.get("/health")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["triton_ready"] is False and "models_down" not in body
        assert "strict readiness counts every model" in body["note"]
    finally:
        import shutil

        with contextlib.suppress(Exception):
            gateway_triton.unload("broken_extra")
        shutil.rmtree(repo / "broken_extra", ignore_errors=True)
    # measured here: Triton 2.51 stays not ready even after the failed model's unload (until it restarts)
