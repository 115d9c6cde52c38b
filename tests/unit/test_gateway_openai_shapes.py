"""What an OpenAI SDK user sends that the gateway must answer as OpenAI and vLLM do (no Triton needed: each is
answered before any call). Found by an audit with the openai SDK against a served repository."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the gateway needs the `gateway` extra")

from starlette.testclient import TestClient

from tritonforge.errors import ClientError, ContextLengthError, InvalidInputError
from tritonforge.gateway import GatewayLimits, GatewayModels, create_app, split_problems
from tritonforge.gateway.errors import AskedFor, from_client_error
from tritonforge.gateway.splits import parse_splits
from tritonforge.server import free_port
from tritonforge.triton.errors import classify_reply

KEY = {"Authorization": "Bearer sk-user"}
HF_CHAT = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    models = GatewayModels(chat={HF_CHAT: "llm"}, embeddings={"sentence-transformers/all-MiniLM-L6-v2": "embed"})
    app = create_app(f"127.0.0.1:{free_port()}", api_keys=["sk-user"], retries=0, timeout=5, models=models,
                     limits=GatewayLimits(body_bytes=4096))
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


def _error(reply: Any, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    return dict(reply.json()["error"])


def test_a_model_id_with_slashes_is_retrieved_as_it_is_listed(client: TestClient) -> None:
    """openai's ``models.retrieve("HuggingFaceTB/SmolLM2-...")`` sends the slashes unescaped: it was a bare 404."""
    listed = {m["id"] for m in client.get("/v1/models", headers=KEY).json()["data"]}
    assert HF_CHAT in listed
    card = client.get(f"/v1/models/{HF_CHAT}", headers=KEY)
    assert card.status_code == 200 and card.json()["id"] == HF_CHAT, card.text
    assert _error(client.get("/v1/models/no/such/model", headers=KEY), 404)["code"] == "model_not_found"


def test_suffix_is_refused_by_name_not_ignored(client: TestClient) -> None:
    body = {"model": HF_CHAT, "prompt": "def f(x):", "suffix": "    return y", "max_tokens": 5}
    error = _error(client.post("/v1/completions", headers=KEY, json=body), 400)
    assert (error["param"], error["code"]) == ("suffix", "unsupported_parameter"), error


def test_stream_options_without_streaming_is_refused(client: TestClient) -> None:
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": True}}
    error = _error(client.post("/v1/chat/completions", headers=KEY, json=body), 400)
    assert error["param"] == "stream_options" and "only allowed when 'stream' is true" in error["message"]


@pytest.mark.parametrize("part", [{"type": "text"}, {"type": "text", "text": None}])
def test_a_text_part_without_text_says_the_text_is_missing(client: TestClient, part: dict[str, Any]) -> None:
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": [part]}]}
    error = _error(client.post("/v1/chat/completions", headers=KEY, json=body), 400)
    assert error["param"] == "messages[0].content[0].text" and "needs a 'text' string" in error["message"], error


@pytest.mark.parametrize(("path", "field", "value"), [
    ("/v1/embeddings", "input", [101, 2023, 102]),
    ("/v1/embeddings", "input", [[101, 2023], [101]]),
    ("/v1/completions", "prompt", [1, 2, 3]),
])
def test_token_ids_are_refused_by_name(client: TestClient, path: str, field: str, value: Any) -> None:
    model = HF_CHAT if path == "/v1/completions" else "sentence-transformers/all-MiniLM-L6-v2"
    error = _error(client.post(path, headers=KEY, json={"model": model, field: value}), 400)
    assert error["param"] == field and error["code"] == "unsupported_parameter", error
    assert "token ids is not supported" in error["message"] and "send text" in error["message"]


def test_a_chunked_body_over_the_limit_reports_what_was_read(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(6):
            yield b" " * 1000

    error = _error(client.post("/v1/embeddings", headers={**KEY, "content-type": "application/json"},
                               content=chunks()), 413)
    read = re.search(r"is at least (\d+) bytes, more than the limit of 4096$", error["message"])
    assert read and 4096 < int(read[1]) <= 6000, error  # was "over 4036465 bytes, more than the limit of 4194304"


def test_a_405_says_which_methods_the_path_takes(client: TestClient) -> None:
    reply = client.post("/v1/models", headers=KEY)
    # a GET route answers HEAD too (RFC 9110: HEAD is GET without the body), as Starlette's routes do
    assert reply.status_code == 405 and reply.headers.get("allow") == "GET, HEAD", (reply.status_code, reply.headers)
    head = client.head("/v1/models", headers=KEY)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0


def test_a_prompt_over_the_context_is_openais_context_length_exceeded() -> None:
    error = from_client_error(ContextLengthError("model 'llm': the prompt has 5031 tokens, more than max_input_len=256"))
    assert (error.status, error.code) == (400, "context_length_exceeded")
    assert "maximum context length" in error.message and "5031 tokens" in error.message


def _context_error(text: str) -> ContextLengthError:
    err = classify_reply("StatusCode.INTERNAL", text, model="llm", url="127.0.0.1:8001", timeout=2.0)
    assert isinstance(err, ContextLengthError)
    return err


def test_a_context_length_error_names_the_requests_own_fields() -> None:
    # the engine names TensorRT-LLM's request_output_len; the client sent max_tokens (a 5000 that cannot fit)
    over = _context_error("prompt (31 tokens) + request_output_len (5000) = 5031 exceeds max_seq_len=512")
    error = from_client_error(over, AskedFor("prompt"))
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "max_tokens")
    assert error.message == ("'max_tokens' is too large: 5000. This model's maximum context length is 512 tokens and "
                             "your request has 31 input tokens (5000 > 512 - 31).")
    newer = from_client_error(over, AskedFor("messages", "max_completion_tokens"))
    assert newer.param == "max_completion_tokens" and newer.message.startswith("'max_completion_tokens' is too large")
    default = from_client_error(over, AskedFor("messages", tokens_sent=False))
    assert "5000 (the default: the request sent none)" in default.message
    # a prompt over max_input_len: the prompt's field is what to shorten
    long = from_client_error(_context_error("the prompt has 5031 tokens, more than max_input_len=256"),
                             AskedFor("messages"))
    assert (long.param, long.code) == ("messages", "context_length_exceeded")
    assert "'messages' holds 5031 tokens, more than the 256 it takes for a prompt (max_input_len)" in long.message
    # words without counts: the engine's words, the prompt's field as param
    vague = from_client_error(_context_error("the prompt does not fit max_seq_len"), AskedFor("prompt"))
    assert vague.param == "prompt" and vague.message.endswith("the prompt does not fit max_seq_len")
    assert "127.0.0.1:8001" not in vague.message


def test_a_split_may_not_take_an_adapters_id_nor_name_an_adapter_its_model_lacks() -> None:
    models = GatewayModels(chat={"chat": "llm"})
    adapters = {"chat": frozenset({"support", "legal"})}
    taken = parse_splits({"splits": {"support": {"control": {"model": "chat", "weight": 1},
                                                 "treatment": {"model": "chat", "adapter": "legal", "weight": 1}}}},
                         "test")
    (problem,) = split_problems(models, taken, adapters)
    assert problem.startswith("splits.support: the split name is already a model id (a LoRA adapter of 'chat')")
    unknown = parse_splits({"splits": {"ab": {"control": {"model": "chat", "weight": 1},
                                              "treatment": {"model": "chat", "adapter": "zzz", "weight": 1}}}}, "test")
    (problem,) = split_problems(models, unknown, adapters)
    assert problem == "splits.ab.treatments[0].adapter: 'zzz' is not an adapter of 'chat' (its adapters: legal, support)"
    assert split_problems(models, unknown) == []  # adapters not read yet (Triton not up): not judged


@pytest.mark.parametrize(("status", "protocol"), [("StatusCode.INTERNAL", "grpc"), ("UNKNOWN", "grpc"),
                                                  ("500", "http")])
def test_a_steps_own_failure_is_a_500_the_sdk_retries_not_the_requests_400(status: str, protocol: str) -> None:
    """An exception in a python model (Triton's INTERNAL, HTTP 500) was a plain ClientError and the gateway's 400
    invalid_request: the OpenAI SDK does not retry a 4xx, and 5xx alerts never saw it (gateway audit)."""
    from tritonforge.errors import InternalServerError

    text = "Failed to process the request(s) for model 'embed_encoder', message: RuntimeError: boom"
    err = classify_reply(status, text, model="embed", url="127.0.0.1:8001", timeout=2.0, protocol=protocol)
    assert isinstance(err, InternalServerError) and not isinstance(err, InvalidInputError)
    error = from_client_error(err)
    assert (error.status, error.type, error.code) == (500, "server_error", "internal_error")
    assert "RuntimeError: boom" in error.message
    # the request's fault stays the request's
    refused = classify_reply("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'TEXT'", model="embed",
                             url="127.0.0.1:8001", timeout=2.0)
    assert type(refused) is ClientError and from_client_error(refused).status == 400


@pytest.mark.parametrize("logprobs", [0, 1, 5, False, True])
def test_any_logprobs_on_completions_is_refused_by_name(client: TestClient, logprobs: Any) -> None:
    """The legacy completions' logprobs counts alternatives besides the sampled token: 0 still asks for the sampled
    tokens' logprobs, and was answered 200 with "logprobs": null."""
    body = {"model": HF_CHAT, "prompt": "hi", "max_tokens": 2, "logprobs": logprobs}
    error = _error(client.post("/v1/completions", headers=KEY, json=body), 400)
    assert (error["param"], error["code"]) == ("logprobs", "unsupported_parameter"), error
    assert "0 too" in error["message"], error


@pytest.mark.parametrize(("logprobs", "refused"), [(None, False), (False, False), (0, False), (True, True), (1, True)])
def test_chat_logprobs_false_or_0_ask_for_nothing(client: TestClient, logprobs: Any, refused: bool) -> None:
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logprobs": logprobs}
    reply = client.post("/v1/chat/completions", headers=KEY, json=body)
    if refused:
        assert _error(reply, 400)["param"] == "logprobs"
    else:  # past the body's checks: Triton is not there
        assert reply.status_code == 503, reply.text


_CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}


@pytest.mark.parametrize(("message", "param"), [
    ({"role": "assistant", "content": None, "tool_calls": [_CALL]}, "messages[1].tool_calls"),
    ({"role": "assistant", "content": None, "function_call": _CALL["function"]}, "messages[1].function_call"),
    ({"role": "tool", "content": "12 C", "tool_call_id": "call_1"}, "messages[1].role"),
    ({"role": "function", "content": "12 C", "name": "weather"}, "messages[1].role"),
    ({"role": "user", "content": "hi", "tool_call_id": "call_1"}, "messages[1].tool_call_id"),
    ({"role": "assistant", "content": "no", "refusal": "I cannot"}, "messages[1].refusal"),
    ({"role": "assistant", "content": "hi", "audio": {"id": "audio_1"}}, "messages[1].audio"),
])
def test_message_fields_that_change_the_conversation_are_refused_by_name(
    client: TestClient, message: dict[str, Any], param: str
) -> None:
    """Audit: an assistant's tool_calls, a tool result's tool_call_id and a message's name were accepted and dropped
    (the model answered a conversation without them)."""
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "weather?"}, message], "max_tokens": 2}
    error = _error(client.post("/v1/chat/completions", headers=KEY, json=body), 400)
    assert (error["param"], error["code"]) == (param, "unsupported_parameter"), error
    assert f"'{param}'" in error["message"] and "not supported by this server" in error["message"], error


def test_a_participants_name_is_accepted_as_vllm_accepts_it(client: TestClient) -> None:
    """vLLM hands `name` to the chat template, and the templates served render none: the answer is the same, and a
    400 broke multi-agent clients that name every participant."""
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi", "name": "alice"}], "max_tokens": 2}
    reply = client.post("/v1/chat/completions", headers=KEY, json=body)
    assert reply.status_code == 503, reply.text  # past every check of the body: no Triton behind this app


def test_an_unknown_message_field_is_refused_and_empty_ones_are_accepted(client: TestClient) -> None:
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi", "mood": "happy"}], "max_tokens": 2}
    error = _error(client.post("/v1/chat/completions", headers=KEY, json=body), 400)
    assert (error["param"], error["code"]) == ("messages[0].mood", "unknown_parameter"), error
    # what an SDK replays of an answer: nothing in it reaches the model, nor changes the conversation
    replayed = {"role": "assistant", "content": "Hello.", "refusal": None, "tool_calls": [], "function_call": None,
                "audio": None, "name": None}
    body = {"model": HF_CHAT, "max_tokens": 2,
            "messages": [{"role": "user", "content": "hi"}, replayed, {"role": "user", "content": "more"}]}
    assert client.post("/v1/chat/completions", headers=KEY, json=body).status_code == 503  # on to Triton (not there)


@pytest.mark.parametrize(("response_format", "param", "code"), [
    ({"foo": "bar"}, "response_format.type", "invalid_value"),
    ({}, "response_format.type", "invalid_value"),
    ({"type": None}, "response_format.type", "invalid_value"),
    ({"type": "xml"}, "response_format.type", "invalid_value"),
    ({"type": 3}, "response_format.type", "invalid_value"),
    ({"type": "json_object"}, "response_format", "unsupported_parameter"),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, "response_format", "unsupported_parameter"),
    ({"type": "text", "json_schema": {"name": "x"}}, "response_format.json_schema", "unknown_parameter"),
])
def test_a_response_format_other_than_text_is_refused_naming_what_is_allowed(
    client: TestClient, response_format: dict[str, Any], param: str, code: str
) -> None:
    """Audit: {"foo": "bar"} (no type) was accepted and ignored."""
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi"}], "response_format": response_format}
    error = _error(client.post("/v1/chat/completions", headers=KEY, json=body), 400)
    assert (error["param"], error["code"]) == (param, code), error
    assert "'text'" in error["message"], error


@pytest.mark.parametrize("response_format", [None, {"type": "text"}])
def test_a_text_response_format_is_served(client: TestClient, response_format: Any) -> None:
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi"}], "response_format": response_format}
    assert client.post("/v1/chat/completions", headers=KEY, json=body).status_code == 503  # on to Triton (not there)


@pytest.mark.parametrize(("options", "param", "code"), [
    ({"include_usage": True, "foo": 1}, "stream_options.foo", "unknown_parameter"),
    ({"continuous_usage_stats": True}, "stream_options.continuous_usage_stats", "invalid_value"),
    ({"include_usage": False, "continuous_usage_stats": True}, "stream_options.continuous_usage_stats",
     "invalid_value"),
    ({"include_usage": True, "continuous_usage_stats": "yes"}, "stream_options.continuous_usage_stats",
     "invalid_value"),
])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_stream_options_that_would_be_ignored_are_refused(
    client: TestClient, path: str, options: dict[str, Any], param: str, code: str
) -> None:
    """Audit: stream_options' unknown keys (vLLM's continuous_usage_stats among them) were ignored."""
    body: dict[str, Any] = {"model": HF_CHAT, "stream": True, "stream_options": options}
    body.update({"messages": [{"role": "user", "content": "hi"}]} if "chat" in path else {"prompt": "hi"})
    error = _error(client.post(path, headers=KEY, json=body), 400)
    assert (error["param"], error["code"]) == (param, code), error


def test_continuous_usage_stats_with_include_usage_is_served(client: TestClient) -> None:
    body = {"model": HF_CHAT, "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True, "unknown_but_null": None}}
    assert client.post("/v1/chat/completions", headers=KEY, json=body).status_code == 503  # on to Triton (not there)
