"""Request bodies (OpenAI's shapes), their checks, and the limits on what one request may cost."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from tritonforge.errors import OptionError
from tritonforge.gateway.errors import APIError, clip
from tritonforge.values import is_whole

LOG = logging.getLogger(__name__)
T = TypeVar("T")
BODY_SECONDS = 60.0  # the longest a request body may take to arrive
OFF_LOOP_BYTES = 64 << 10  # bodies larger than this are parsed, checked and validated in a worker thread


# -------------------------------------------------------------------------------------------------- request bodies

_IGNORED = frozenset({"store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key"})


class Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: str
    # OpenAI's end-user id, a string (every endpoint takes it): the identity a traffic split keeps a user's arm by
    user: str | None = None
    # fields OpenAI also takes as token ids ([1, 2] or [[1, 2], [3]]), which this server refuses by name
    text_only: ClassVar[tuple[str, ...]] = ()


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class Message(BaseModel):
    # extra fields are kept to be refused by name (check_messages), not dropped
    model_config = ConfigDict(extra="allow", strict=True)
    # tool and function are parsed only to be refused by name (check_messages)
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for j, part in enumerate(self.content):
            if part.type != "text":
                raise APIError(
                    400, f"content part type '{clip(part.type)}' is not supported (text only)",
                    param=f"messages[{index}].content[{j}]", code="unsupported_content",
                )
            if part.text is None:
                raise APIError(
                    400, "a content part of type 'text' needs a 'text' string",
                    param=f"messages[{index}].content[{j}].text", code="invalid_value",
                )
            parts.append(part.text)
        return "".join(parts)


def unknown_field(where: str, key: str, hint: str = "") -> APIError:
    """The 400 for a field a nested object (``messages[2]``, ``stream_options``...) does not take: refused by name,
    never dropped."""
    return APIError(400, f"Unrecognized argument in {where}: {clip(key)}{hint}", param=f"{where}.{clip(key)}",
                    code="unknown_parameter")


# OpenAI's message fields that carry tool calling, which this server does not serve (top-level tools are refused)
_TOOL_FIELDS = frozenset({"tool_calls", "function_call", "tool_call_id"})
# OpenAI's other message fields that only role and content could carry to the model: the llm ensemble's
# chat_messages hold {"role", "content"} (python_backends/llm_preprocessing), so any of them would be dropped
_DROPPED_FIELDS = frozenset({"refusal", "audio"})


def check_messages(messages: list[Message]) -> None:
    """Refuse, naming it, what a message holds that would not reach the model: vLLM renders a message's tool calls
    and tool results through the chat template, and the answer depends on them; here they were dropped
    silently and the model answered another conversation. A null or empty value (``refusal: null``, ``tool_calls:
    []``, as SDKs replay an answer) holds nothing and is accepted."""
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if message.role in ("tool", "function"):
            raise APIError(400, f"'{where}.role' '{message.role}' is not supported by this server: tools are not "
                           "(a tool's result cannot be sent back)", param=f"{where}.role", code="unsupported_parameter")
        for key, value in (message.model_extra or {}).items():
            if value is None or value == []:
                continue
            if key in _TOOL_FIELDS:
                raise APIError(400, f"'{where}.{key}' is not supported by this server: tools are not",
                               param=f"{where}.{key}", code="unsupported_parameter")
            if key in _DROPPED_FIELDS:
                raise APIError(400, f"'{where}.{key}' is not supported by this server: the model is given each "
                               "message's role and content only", param=f"{where}.{key}",
                               code="unsupported_parameter")
            raise unknown_field(where, key)
        # a message's `name` is accepted and not rendered: vLLM hands it to the chat template, and the templates
        # served (builders/tiny_models.py's, SmolLM2's ChatML, Llama's, Qwen's) render none, so the answer is the
        # one vLLM gives; refusing it broke multi-agent clients that name every participant (AutoGen, CrewAI)


class StreamOptions(BaseModel):
    # extra fields are kept to be refused by name (check_sampled): an option ignored changes what the stream holds
    model_config = ConfigDict(extra="allow", strict=True)
    include_usage: bool | None = None
    # vLLM's: with include_usage, every chunk carries the usage of its choice so far
    continuous_usage_stats: bool | None = None


# integers become Triton tensors of these types: a larger value would wrap silently, so it is refused instead
INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1


class Sampled(Body):
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(default=None, le=INT32_MAX)
    n: int | None = Field(default=None, ge=1, le=INT32_MAX)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=UINT64_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    top_logprobs: int | None = None

    @field_validator("top_k")
    @classmethod
    def _top_k(cls, value: int | None) -> int | None:
        """vLLM's clients send top_k -1 for "no top-k limit" (its default): that is the engine's 0, and was a 400."""
        if value is not None and value < -1:
            raise ValueError("top_k must be -1 or 0 (no top-k limit), or a positive integer")
        return 0 if value == -1 else value


class ChatBody(Sampled):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    response_format: dict[str, Any] | None = None


class CompletionBody(Sampled):
    text_only: ClassVar[tuple[str, ...]] = ("prompt",)
    prompt: str | list[str]
    echo: bool | None = None
    best_of: int | None = None


class EmbeddingBody(Body):
    text_only: ClassVar[tuple[str, ...]] = ("input",)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None
    truncate_prompt_tokens: int | None = None  # vLLM's opt-in to a cut at the model's length (-1): else a 400


class Document(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    text: str


class RerankBody(Body):
    query: str
    documents: list[str | Document] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1, le=INT32_MAX)
    return_documents: bool | None = None


_UNSUPPORTED_IF_SET = {
    "tools", "tool_choice", "functions", "function_call", "audio", "modalities", "prediction",
    "reasoning_effort", "web_search_options", "logit_bias", "top_logprobs", "suffix",
}


def check_extras(body: BaseModel) -> None:
    for name, value in (body.model_extra or {}).items():
        if name in _IGNORED or value is None:
            continue
        if name in _UNSUPPORTED_IF_SET:
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
        raise APIError(400, f"Unrecognized request argument supplied: {clip(name)}", param=clip(name),
                       code="unknown_parameter")


def check_sampled(body: Sampled) -> None:
    check_extras(body)
    # chat's logprobs is a boolean (false and 0 ask for nothing); the legacy completions' is the number of top
    # alternatives besides the sampled token, so 0 there still asks for the sampled tokens' logprobs: any value is
    # refused (logprobs 0 was answered with "logprobs": null)
    completions = isinstance(body, CompletionBody)
    asked = body.logprobs is not None if completions else body.logprobs not in (None, False, 0)
    if asked:
        what = " (on /v1/completions any value, 0 too, asks for the tokens' log probabilities)" if completions else ""
        raise APIError(
            400, f"'logprobs' is not supported by this server{what}", param="logprobs", code="unsupported_parameter"
        )
    for name in ("logit_bias", "top_logprobs"):
        if getattr(body, name):
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    options = body.stream_options
    if options is None:
        return
    if not body.stream:  # as OpenAI and vLLM answer it
        raise APIError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options",
                       code="invalid_value")
    for key, value in (options.model_extra or {}).items():
        if value is not None:
            raise unknown_field("stream_options", key, " (it takes include_usage and continuous_usage_stats)")
    if options.continuous_usage_stats and not options.include_usage:
        # vLLM sends no usage at all then, silently: the client asked for usage it would not get
        raise APIError(400, "'stream_options.continuous_usage_stats' needs 'include_usage': true (usage on every "
                       "chunk is usage included)", param="stream_options.continuous_usage_stats",
                       code="invalid_value")


_RESPONSE_FORMATS = ("text", "json_object", "json_schema")  # OpenAI's response_format types


def check_response_format(value: dict[str, Any] | None) -> None:
    """``response_format`` as OpenAI takes it, of type ``text`` (the one served): a format without a ``type`` (``{}``,
    ``{"foo": "bar"}``) was accepted and ignored, and a JSON format must not be answered with free text."""
    if value is None:
        return
    kind = value.get("type")
    if kind is None:
        raise APIError(400, "'response_format' needs a 'type': 'text' is the one this server supports",
                       param="response_format.type", code="invalid_value")
    if kind in _RESPONSE_FORMATS[1:]:
        raise APIError(400, f"'response_format' of type '{kind}' is not supported by this server (only 'text')",
                       param="response_format", code="unsupported_parameter")
    if kind != "text":
        raise APIError(400, f"Invalid value for 'response_format.type': {clip(json.dumps(kind))}; it must be one of "
                       f"{', '.join(repr(k) for k in _RESPONSE_FORMATS)}, and this server supports 'text'",
                       param="response_format.type", code="invalid_value")
    for key, item in value.items():
        if key != "type" and item is not None:  # a json_schema beside type text would be ignored
            raise unknown_field("response_format", key, " (type 'text' takes no other field)")


# the steps pydantic adds to an error's location for a union's members (``str | list[str]``) and nested models:
# not part of the request's field path
_UNION_TAGS = frozenset({"str", "int", "float", "bool", "none", "ContentPart", "Document", "StreamOptions", "Message"})


def _is_tag(step: Any) -> bool:
    text = str(step)
    return text in _UNION_TAGS or text.startswith(("function-", "list[", "dict["))


def _token_ids(value: Any) -> bool:
    """OpenAI's token-id forms: a list of integers, or a list of such lists."""
    def ints(items: Any) -> bool:
        # the types first, in C: a per-element is_whole over a 4 MiB list of ids held the event loop 0.7 s
        return isinstance(items, list) and bool(items) and (
            set(map(type, items)) <= {int} or all(is_whole(i) for i in items)
        )

    return ints(value) or (isinstance(value, list) and bool(value) and all(ints(v) for v in value))


def validation_error(err: PydanticValidationError) -> APIError:
    """400 naming the field's path. Of a union's failed members, the deepest error is the one the value's shape
    chose (``stop: ["a", 5]`` -> ``stop.1``, not "stop: Input should be a valid string")."""
    errors = err.errors()
    first = max(errors, key=lambda e: len(e["loc"])) if errors else None
    loc = [str(p) for p in (first["loc"] if first else ()) if not _is_tag(p)]
    param = ".".join(loc) or None
    what = f"'{param}'" if param else "the request body"
    msg = first["msg"] if first else "invalid"
    return APIError(400, f"Invalid value for {what}: {msg}", param=param, code="invalid_value")


@dataclass(frozen=True)
class GatewayLimits:
    """What one request may cost, checked before any work is done (413 for the body, 400 naming the limit
    otherwise), and what the gateway takes on at once (requests in flight, per API key, the bytes of their bodies:
    429 with Retry-After over any; gateway/admission.py). The defaults keep a request to seconds of CPU on a small
    server; raise them with the hardware."""

    body_bytes: int = 4 << 20
    # at once (gateway/admission.py): requests running models, per API key (0: no limit per key), and the bytes of
    # their bodies together; over any of them a 429 with Retry-After
    requests_in_flight: int = 1024
    requests_in_flight_per_key: int = 0
    body_bytes_in_flight: int = 64 << 20
    embedding_inputs: int = 512  # texts in one /v1/embeddings request
    rerank_documents: int = 512
    text_chars: int = 32_768  # one embedding input, rerank query or document
    prompt_chars: int = 131_072  # a completion prompt, or a chat's messages together (checked before tokenizing)
    stop_strings: int = 16
    generations: int = 16  # one request runs at once: `n` of a chat, prompts x `n` of a completions request
    stop_chars: int = 256  # one stop string

    def __post_init__(self) -> None:
        if self.body_bytes > self.body_bytes_in_flight:  # such a body would get "retry shortly" for ever
            raise OptionError(f"body_bytes={self.body_bytes} is more than body_bytes_in_flight="
                              f"{self.body_bytes_in_flight}: one body must fit in what all may hold at once")

    def check(self, count: int, limit: int, what: str, param: str) -> None:
        if count > limit:
            raise APIError(400, f"{what}: {count} is more than this server's limit of {limit}", param=param,
                           code="limit_exceeded")


MAX_BODY_BYTES = GatewayLimits().body_bytes
TICKET = "gw_admission"  # an admitted request's ticket in its scope's state (gateway/admission.py's Ticket)
MAX_JSON_DEPTH = 32  # OpenAI bodies nest a few levels; deeper is refused rather than recursed into


def check_json(data: Any) -> None:
    """Refuse what would fail later as an unhandled error: nesting too deep, and text that is not valid Unicode
    (a lone surrogate such as "\\ud800" is valid JSON but cannot be encoded as UTF-8 for Triton).

    Runs on the event loop for every request: a path is built only for containers and for the one error, never
    per number (a 4 MiB list of numbers took 1 s here, and eight such bodies held /health for 12 s)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(value, str):
            _check_text(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, path)
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(value, list) and value:
            if depth + 1 > MAX_JSON_DEPTH:
                raise _too_deep()
            for i, item in enumerate(value):
                if isinstance(item, str):
                    if not item.isascii():
                        _check_text(item, f"{path}[{i}]")
                elif isinstance(item, (dict, list)):
                    stack.append((item, f"{path}[{i}]", depth + 1))


def _too_deep() -> APIError:
    return APIError(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")


def _check_text(value: str, path: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise APIError(400, f"Invalid value for '{path or 'body'}': the text is not valid Unicode (a lone "
                       "surrogate); send UTF-8 text", param=path or None, code="invalid_value") from None


def _too_large(size: int | str, max_bytes: int) -> APIError:
    return APIError(413, f"the request body is {size} bytes, more than the limit of {max_bytes}",
                    code="request_too_large")


async def read_body(request: Any, max_bytes: int = MAX_BODY_BYTES) -> bytes:
    """The body, refused with 413 as soon as it is known to be over ``max_bytes``: by its Content-Length before
    any of it is read, else while it streams in (chunked), so a huge body is never held in memory."""
    declared = request.headers.get("content-length")
    known = int(declared) if declared is not None and declared.strip().isdigit() else None
    if known is not None and known > max_bytes:
        raise _too_large(known, max_bytes)
    # the bodies in flight have a budget (429 over it), counted as their bytes arrive: a declared length taken up
    # front let a few clients that declared 4 MiB and sent nothing hold all of it for the body's 60 s
    ticket = getattr(request.state, TICKET, None)
    chunks: list[bytes] = []

    async def read() -> None:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(f"at least {size}", max_bytes)  # read so far: the rest is never read
            if ticket is not None:
                ticket.take_body(len(chunk))
            chunks.append(chunk)

    try:  # a byte every 20 s held a connection and its coroutine for as long as the client liked
        await asyncio.wait_for(read(), BODY_SECONDS)
    except asyncio.TimeoutError:  # TimeoutError from 3.11; another class on 3.10
        raise APIError(408, f"the request body took more than {BODY_SECONDS:g} s to arrive",
                       code="request_timeout") from None
    return b"".join(chunks)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json's object_pairs_hook: the object, refused when it repeats a key (json.loads would keep the last value
    silently, so ``{"model": "a", "model": "b"}`` served ``b`` while a proxy or log that reads the first saw ``a``).
    The common case costs one dict() and a length check; the duplicate is looked for only once one is known."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise APIError(400, f"duplicate key '{clip(key)}' in the request body: each key may appear once in "
                               "a JSON object", code="invalid_json")
            seen.add(key)
    return obj


# built once: json.loads(raw, object_pairs_hook=...) builds a decoder per call, measured at +1.5 us a body
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _loads(raw: bytes) -> Any:
    """The body as JSON, objects with a repeated key refused (the one parser of every request body). Decoded as
    json.loads decodes bytes: UTF-8/16/32 detected, lone surrogates passed on (check_json refuses them by name)."""
    return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))


# JSON is UTF-8 (RFC 8259 section 8.1); "utf8" is no registered name, but only a mistyping of this one
_UTF8 = ("utf-8", "utf8")


def _charsets(parameters: str) -> list[str]:
    """Every charset a Content-Type's parameters (what follows its first ';') declare, unquoted."""
    found = []
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip()
            found.append(value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value)
    return found


def check_content_type(request: Any) -> None:
    """415 unless a Content-Type the request declares is JSON (application/json or application/*+json, parameters
    allowed) in UTF-8: a declared charset other than utf-8 (any case; utf8 too) is refused by name, as the body would
    be read as other characters than the client meant. None at all is read as JSON, as FastAPI (and so vLLM's server)
    reads it.

    FastAPI refuses a JSON body sent under another type (since 0.65.2) as a CSRF defence: a browser sends a cross-site
    form POST as text/plain or a form type without a CORS preflight, and the gateway reads its bodies itself, so the
    check is made here. An empty header counts as none, as FastAPI counts it."""
    declared = request.headers.get("content-type")
    if not declared:
        return
    media, _, parameters = declared.partition(";")
    main, _, sub = media.strip().lower().partition("/")
    if not (main == "application" and (sub == "json" or sub.endswith("+json"))):
        raise APIError(415, f"Content-Type '{clip(declared)}' is not supported: the request body must be JSON, sent "
                       "with 'Content-Type: application/json'", code="unsupported_media_type")
    for charset in _charsets(parameters) if parameters else ():
        if charset.lower() not in _UTF8:
            raise APIError(415, f"Content-Type '{clip(declared)}' declares charset '{clip(charset)}': only UTF-8 "
                           "JSON is accepted (RFC 8259); send the body in UTF-8 with 'Content-Type: application/json' "
                           "(or charset=utf-8)", code="unsupported_media_type")


async def read_json(request: Any, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The body as parsed, checked JSON (type, size, syntax, repeated keys, nesting, Unicode): an APIError
    (415/413/400) otherwise. Every request body is read here."""
    check_content_type(request)  # before reading the body: a refused one is not worth reading
    raw = await read_body(request, max_bytes)
    request.state.gw_body_bytes = len(raw)
    return await _off_loop_if_large(len(raw), _parsed, raw)


# One thread for every large body, one body at a time. Parsing holds the GIL from start to end (json's C loop),
# so with a thread per body the event loop, after one parse, often lost the GIL to the next body's thread and waited
# out several parses in a row: four 3.5 MB bodies at once stalled it 0.33-0.51 s with a thread each, 0.05-0.08 s
# with this one (tests/unit/test_gateway_bad_requests.py). Large bodies queue behind each other instead.
_LARGE_BODIES = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-large-body")


async def _off_loop_if_large(size: int, work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` in the large-body thread for a large body, inline for a small one: the event loop serves every
    connection, and a few 4 MiB bodies parsed and checked on it held /health for seconds."""
    if size > OFF_LOOP_BYTES:
        return await asyncio.get_running_loop().run_in_executor(_LARGE_BODIES, functools.partial(work, *args))
    return work(*args)


def _parsed(raw: bytes) -> Any:
    try:
        data = _loads(raw)
    except RecursionError:
        raise APIError(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise APIError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON (Content-Type: "
            "application/json).",
            code="invalid_json",
        ) from None
    check_json(data)
    return data


async def parse_body(request: Any, cls: type[BaseModel], max_bytes: int = MAX_BODY_BYTES) -> Any:
    data = await read_json(request, max_bytes)
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    if isinstance(data.get("model"), str):
        request.state.gw_model_requested = data["model"]
    return await _off_loop_if_large(getattr(request.state, "gw_body_bytes", 0), _validated, data, cls)


def _validated(data: dict[str, Any], cls: type[BaseModel]) -> Any:
    for name in getattr(cls, "text_only", ()):
        if _token_ids(data.get(name)):
            raise APIError(400, f"'{name}' as token ids is not supported by this server: send text (a string or a "
                           "list of strings)", param=name, code="unsupported_parameter")
    try:
        return cls.model_validate(data)
    except PydanticValidationError as err:
        raise validation_error(err) from None
