"""The `rag` ensemble on a real Triton: encode → retrieve → prompt → generate in one streamed call.

The demo build (examples/rag.yaml, `rerank: false`: its cross-encoder is a random stand-in) serves it here with a
tiny random decoder: the answer is gibberish, but its sources, its prompt and its tokens are checked against the
search and llm ensembles of the same server. (tests/unit/test_rag.py renders the reranking variant, and
test_rag_reranked below serves it.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tritonforge.clients import AsyncClient, Client
from tritonforge.clients.generation import rag_inputs
from tritonforge.errors import ClientError
from tritonforge.spec import load_spec

pytestmark = pytest.mark.integration
QUERIES = ["how do I speed up inference on a GPU", "what makes thunder"]
MAX_INPUT_LEN = 256  # examples/rag.yaml, models.chat.max_input_len
CHAT_TEMPLATE = load_spec(Path(__file__).resolve().parents[2] / "examples" / "rag.yaml").models["answer"].chat_template


@pytest.fixture(scope="module")
def rag_server(demo_repo: Path) -> Iterator[object]:
    from tritonforge.server import TritonServer

    with TritonServer(demo_repo) as server:
        yield server


@pytest.fixture(scope="module")
def count_tokens(demo_repo: Path) -> object:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_repo / "answer_prompt" / "1" / "tokenizer")
    return lambda text: len(tok.encode(text, add_special_tokens=True))


@pytest.mark.parametrize("query", QUERIES)
def test_rag_streams_an_answer_with_the_retrievers_best_sources(rag_server, query: str) -> None:
    with Client(rag_server.endpoints.grpc) as client:
        stream = client.rag_stream(query, top_k=10, top_n=1, max_tokens=16)
        sources = stream.sources  # available before any text
        pieces = list(stream)
        best = client.search([query], top_k=1)[0]
    assert stream.dropped == 0
    assert [(s.id, pytest.approx(s.score, abs=1e-5)) for s in sources] == [(h.id, h.score) for h in best]
    assert len(pieces) >= 4
    prompt = stream.prompt
    assert query in prompt and best[0].text in prompt and f"[{best[0].id}]" in prompt


def test_greedy_answer_equals_generating_from_the_same_prompt(rag_server) -> None:
    with Client(rag_server.endpoints.grpc) as client:
        answer = client.rag(QUERIES[0], top_n=1, max_tokens=20)
        assert answer.text and answer.prompt
        # the rag's chat_template decides how its prompt reaches the LLM (examples/rag.yaml: false, plain text)
        assert answer.text == client.generate(answer.prompt, max_tokens=20, chat=CHAT_TEMPLATE)
        streamed = client.rag_stream(QUERIES[0], top_n=1, max_tokens=20)
        assert "".join(streamed) == answer.text and streamed.sources == answer.sources


def test_passages_that_do_not_fit_are_dropped_lowest_ranked_first(rag_server, count_tokens) -> None:
    """max_input_len is 256 tokens: five passages do not fit; the prompt keeps the best ones that do."""
    with Client(rag_server.endpoints.grpc) as client:
        answer = client.rag(QUERIES[0], top_k=10, top_n=5, max_tokens=8)
        ranked = client.search([QUERIES[0]], top_k=5)[0]
    kept = len(answer.sources)
    assert answer.dropped == 5 - kept > 0
    assert [s.id for s in answer.sources] == [h.id for h in ranked[:kept]]  # a prefix: lowest-ranked dropped first
    positions = [answer.prompt.index(f"[{h.id}]") for h in ranked[:kept]]
    assert positions == sorted(positions)  # in rank order
    assert all(f"[{h.id}]" not in answer.prompt for h in ranked[kept:])
    assert count_tokens(answer.prompt) <= MAX_INPUT_LEN
    assert answer.text  # and the trimmed prompt is served


def test_a_score_floor_keeps_only_passages_above_it_and_can_leave_none(rag_server) -> None:
    """MIN_SCORE (Client.rag(min_score=...)): passages scored below it never reach the LLM; a query
    whose passages all fall below it gets the template's no-passage prompt, is still answered, and the server
    stays healthy."""
    with Client(rag_server.endpoints.grpc, retries=0) as client:
        ranked = client.search([QUERIES[1]], top_k=3)[0]
        floor = (ranked[1].score + ranked[2].score) / 2  # between the 2nd and 3rd best
        answer = client.rag(QUERIES[1], top_k=10, top_n=3, max_tokens=8, min_score=floor)
        assert 1 <= len(answer.sources) <= 2  # the best two pass the floor (fewer if the prompt cannot hold both)
        assert [s.id for s in answer.sources] == [h.id for h in ranked[: len(answer.sources)]]
        assert all(s.score >= floor for s in answer.sources) and answer.dropped == 3 - len(answer.sources)
        assert f"[{ranked[2].id}]" not in answer.prompt

        nothing = client.rag_stream(QUERIES[1], top_k=10, top_n=3, max_tokens=8, min_score=ranked[0].score + 1.0)
        assert nothing.sources == [] and nothing.dropped == 3
        assert "No passage was found" in nothing.prompt and QUERIES[1] in nothing.prompt
        assert "".join(nothing)  # generated from the no-passage prompt
        with pytest.raises(ClientError, match="min_score must be a finite number"):
            client.rag("hi", min_score=float("nan"))
        assert client.rag(QUERIES[0], top_n=1, max_tokens=4).sources  # healthy, and no floor by default


def test_defaults_and_bad_requests(rag_server) -> None:
    with Client(rag_server.endpoints.grpc, retries=0) as client:
        answer = client.rag(QUERIES[1])  # the retriever's default top_k/top_n, the rag model's max_tokens
        assert answer.sources and answer.text
        # examples/rag.yaml: answer.top_n 1; without a reranker only the prompt step can apply it (it kept all 10
        # candidates the prompt could hold before)
        assert (len(answer.sources), answer.dropped) == (1, 0), (answer.sources, answer.dropped)
        (best,) = client.search([QUERIES[1]], top_k=1)
        assert [s.id for s in answer.sources] == [h.id for h in best[: len(answer.sources)]]
        with pytest.raises(ClientError, match="query must be a non-empty string"):
            client.rag("  ")
        with pytest.raises(ClientError, match=r"top_n must be an integer in \[1, 2147483647\], got 0"):
            client.rag("hi", top_n=0)
        with pytest.raises(ClientError, match=r"max_tokens=600 leaves no room for a prompt in max_seq_len=512"):
            client.rag_stream("hi", max_tokens=600).answer()
        with pytest.raises(ClientError, match=r"top_k must be an integer in \[1, 2147483647\], got 0"):
            client.rag("hi", top_k=0)
        assert client.rag("still serving", top_n=1, max_tokens=4).sources  # an error reached only its caller
    with Client(rag_server.endpoints.http, protocol="http") as client, pytest.raises(ClientError, match="gRPC"):
        client.rag("hi")


def test_the_rag_over_triton_http_generate_answers_whole_and_generate_stream_streams(rag_server) -> None:
    """docs/rag.md: the plain generate endpoint takes a request the rag answers in one response (stream false, the
    default; a new-user audit found the doc saying only generate_stream worked); "stream": true needs
    generate_stream."""
    import httpx

    base = f"http://{rag_server.endpoints.http}/v2/models/rag"
    request = {"QUERY": QUERIES[1], "TOP_N": 1, "max_tokens": 8}
    with Client(rag_server.endpoints.grpc) as client:
        expected = client.rag(QUERIES[1], top_n=1, max_tokens=8)
    whole = httpx.post(f"{base}/generate", json=request, timeout=120)
    assert whole.status_code == 200, whole.text
    assert whole.json()["text_output"] == expected.text
    streamed = httpx.post(f"{base}/generate", json={**request, "stream": True}, timeout=120)
    # Triton's words, with status 200 (the client's HTTP transport reads that as a refusal: test_blocking_http.py)
    assert "exactly 1 response" in streamed.json()["error"] and "text_output" not in streamed.json()
    with httpx.stream("POST", f"{base}/generate_stream", json={**request, "stream": True}, timeout=120) as events:
        assert events.status_code == 200
        pieces = [json.loads(line[len("data: "):]) for line in events.iter_lines() if line.startswith("data: ")]
    assert "".join(p.get("text_output", "") for p in pieces) == expected.text


def test_a_request_the_llm_refuses_gets_its_error_and_no_sources(rag_server) -> None:
    # a raw request (the clients refuse a negative temperature themselves): the engine's refusal is the first
    # response, not sources followed by an error a reader must tell apart from an answer cut short
    inputs = rag_inputs(QUERIES[0], top_k=None, top_n=1, max_tokens=8, sampling={}, stream=True)
    seen: list[list[str]] = []

    def record(result: Any) -> None:
        seen.append([name for name in ("SOURCE_IDS", "text_output") if result.as_numpy(name) is not None])

    with Client(rag_server.endpoints.grpc, retries=0) as client:
        bad = {**inputs, "temperature": np.array([[-1.0]], dtype=np.float32)}
        with pytest.raises(ClientError, match=r"temperature=-1\.0 must be a finite number >= 0"):
            list(client.stream_text("rag", bad, on_result=record))
        assert seen == []
        pieces = list(client.stream_text("rag", inputs, on_result=record))  # the next good request is served
    assert pieces and seen[0] == ["SOURCE_IDS", "text_output"]  # the sources come with the first piece
    assert all("SOURCE_IDS" not in names for names in seen[1:]), seen


def test_a_batch_of_queries_is_refused_before_retrieval_runs(rag_server) -> None:
    """The generate step answers one query per request, so the ensemble declares max_batch_size 1: Triton refuses
    two queries in one request up front, and the retriever never sees them."""
    import numpy as np

    from tritonforge.triton.connection import Connection

    def retriever_requests(conn: Connection) -> int:
        (stats,) = conn.statistics("passages_retriever")["model_stats"]
        return int(stats["inference_stats"]["success"]["count"])

    with Connection(rag_server.endpoints.grpc) as conn:
        assert conn.model_config("rag")["max_batch_size"] == 1
        before = retriever_requests(conn)
        queries = np.array([[b"what makes thunder"], [b"why is the sky blue"]], dtype=object)
        with pytest.raises(ClientError, match=r"batch-size must be <= 1"):
            list(conn.stream_text("rag", {"QUERY": queries}))
        assert retriever_requests(conn) == before
    with Client(rag_server.endpoints.grpc) as client:
        assert client.rag(QUERIES[1], max_tokens=4).sources  # the next good request is served


def test_async_rag(rag_server) -> None:
    async def run() -> tuple[object, list[str], object]:
        async with AsyncClient(rag_server.endpoints.grpc) as client:
            answer = await client.rag(QUERIES[0], top_n=1, max_tokens=12)
            stream = client.rag_stream(QUERIES[0], top_n=1, max_tokens=12)
            sources = await stream.wait_sources()
            pieces = [p async for p in stream]
            return answer, pieces, sources

    answer, pieces, sources = asyncio.run(run())
    assert "".join(pieces) == answer.text and sources == answer.sources


def test_rag_reranked(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`rerank: true`: the passages the LLM gets are the cross-encoder's best, as search_rerank ranks them."""
    import yaml

    from tritonforge.build import build
    from tritonforge.demo import demo_spec
    from tritonforge.server import TritonServer

    examples = Path(__file__).resolve().parents[2] / "examples"
    data = yaml.safe_load((examples / "rag.yaml").read_text())
    data["models"]["answer"]["rerank"] = True
    data["models"]["answer"]["chat_template"] = True  # and the prompt as a chat turn (the demo's rag sends plain text)
    data["models"]["passages"]["corpus"] = str(examples / data["models"]["passages"]["corpus"])
    folder = tmp_path_factory.mktemp("reranked")
    (folder / "rag.yaml").write_text(yaml.safe_dump(data))
    repo = build(demo_spec(folder / "rag.yaml", stand_in_decoder=True)[0], folder / "repo", target="cpu").repo
    with TritonServer(repo) as server, Client(server.endpoints.grpc) as client:
        answer = client.rag(QUERIES[1], top_k=10, top_n=2, max_tokens=4)
        best = client.search([QUERIES[1]], top_k=10, rerank=True, top_n=2)[0]
        plain = client.search([QUERIES[1]], top_k=2)[0]
        assert answer.text == client.generate(answer.prompt, max_tokens=4, chat=True)
    assert [s.id for s in answer.sources] == [h.id for h in best][: len(answer.sources)] and answer.sources
    assert [h.id for h in best] != [h.id for h in plain]  # the random cross-encoder reorders: reranking happened


def test_leaving_an_async_rag_stream_early_stops_generation(rag_server) -> None:
    """AsyncClient.rag_stream sent no stop to the engine, so a 28 s answer ran on after its reader left (the sync
    client's did stop it)."""
    import time

    def stops() -> int:
        log = rag_server.log_text()  # the engine's words for either way of ending a request early
        return log.count("was cancelled after") + log.count("was stopped (stop=true) after")

    before = stops()

    async def run() -> str:
        async with AsyncClient(rag_server.endpoints.grpc) as client:
            stream = client.rag_stream(QUERIES[0], top_n=1, max_tokens=200)
            first = await stream.__anext__()
            await stream.aclose()
            return first

    assert asyncio.run(run())
    deadline = time.monotonic() + 10
    while stops() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stops() > before, "the engine was not told to stop"


def test_a_stream_past_its_deadline_is_stopped_on_the_engine_sync_and_async(rag_server) -> None:
    """gRPC cancels a call past its deadline, and Triton 2.51 does not pass that on to the ensemble's steps: the
    client must still send the engine its stop, or the engine generates to max_tokens for nobody (the async
    client treated the deadline's error as the server ending the request and sent none)."""
    import time

    from tritonforge.errors import DeadlineExceededError

    def ended_early() -> int:
        log = rag_server.log_text()
        return log.count("was cancelled after") + log.count("was stopped (stop=true) after")

    prompt = "Tell me a long story about the sea"  # 450 tokens take ~1.2 s here; the deadline is 0.4 s

    async def run_async() -> None:
        async with AsyncClient(rag_server.endpoints.grpc) as client:
            with pytest.raises(DeadlineExceededError):
                [p async for p in client.stream(prompt, max_tokens=450, timeout=0.4)]

    def sync() -> None:
        with Client(rag_server.endpoints.grpc) as client, pytest.raises(DeadlineExceededError):
            list(client.stream(prompt, max_tokens=450, timeout=0.4))

    for run in (sync, lambda: asyncio.run(run_async())):
        before = ended_early()
        run()
        deadline = time.monotonic() + 10
        while ended_early() == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ended_early() == before + 1, "the engine was not told to stop"



def test_a_stream_left_early_is_ended_by_its_engines_stop_not_cancelled(demo_repo: Path, tmp_path: Path) -> None:
    """A stream left early was cancelled, then its engine stopped; cancelled gRPC streams are what Triton 2.51's
    front end races on (docs/serving.md). The client now stops the engine first and reads the stream to its end:
    Triton's gRPC front end is never asked to cancel (its verbose log says "Issuing cancellation" when it is), and the
    engine says it was stopped, once for each stream."""
    import time

    from tritonforge.server import TritonServer

    prompt = "Tell me a long story about the sea"  # 300 tokens take ~0.6 s here: the stop lands mid-answer
    log = tmp_path / "triton.log"

    def counts() -> tuple[int, int]:
        text = log.read_text(encoding="utf-8", errors="replace")
        return text.count("was stopped (stop=true) after"), text.count("Issuing cancellation")

    with TritonServer(demo_repo, log_verbose=1, log_file=log) as server:

        def pieces(client: Any, rag: bool) -> Any:
            return client.rag_stream(prompt, top_n=1, max_tokens=300) if rag else client.stream(prompt, max_tokens=300)

        async def leave_async(rag: bool) -> float:
            async with AsyncClient(server.endpoints.grpc) as client:
                stream = pieces(client, rag)
                assert await stream.__anext__() is not None
                began = time.monotonic()
                await stream.aclose()
                return time.monotonic() - began

        async def cancel_task(rag: bool) -> float:  # the gateway's case: its client went away, its task is cancelled
            async with AsyncClient(server.endpoints.grpc) as client:
                first = asyncio.Event()

                async def read() -> None:
                    async for _piece in pieces(client, rag):
                        first.set()

                task = asyncio.ensure_future(read())
                await asyncio.wait_for(first.wait(), 30)
                began = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                return time.monotonic() - began

        def leave_sync(rag: bool) -> float:
            with Client(server.endpoints.grpc) as client:
                stream = pieces(client, rag)
                assert next(iter(stream)) is not None
                began = time.monotonic()
                stream.close()
                return time.monotonic() - began

        for rag in (True, False):
            for leave in (leave_sync, lambda rag: asyncio.run(leave_async(rag)),
                          lambda rag: asyncio.run(cancel_task(rag))):
                stopped, cancelled = counts()
                assert leave(rag) < 2.5  # the stop's round trip and the engine's last step, not the whole answer
                deadline = time.monotonic() + 10
                while counts()[0] == stopped and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert counts() == (stopped + 1, cancelled), (rag, leave, "stopped once and never cancelled")
        with Client(server.endpoints.grpc) as client:
            assert client.rag(QUERIES[0], top_n=1, max_tokens=4).text is not None  # serving on
