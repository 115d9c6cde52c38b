"""An OpenAI-compatible HTTP gateway (FastAPI) in front of Triton, with optional API keys.

    from tritonforge.clients.gateway import GatewayModels, create_app

    app = create_app("127.0.0.1:8001", api_keys=["sk-local"], models=GatewayModels())
    # uvicorn.run(app, host="127.0.0.1", port=9000)   or:  tritonforge gateway --triton 127.0.0.1:8001 --port 9000

Routes (OpenAI's request and response shapes; errors are ``{"error": {"message", "type", "param", "code"}}``):

  POST /v1/chat/completions   messages -> the ``llm`` ensemble; ``stream: true`` -> server-sent events ending with
                              ``data: [DONE]``. A conversation that is one user message is sent as that text with
                              ``apply_chat_template`` (the checkpoint's chat template renders it as one user turn).
                              Any other conversation (system prompt, earlier turns) is flattened into ONE user
                              message, each turn on its own paragraph as ``"<Role>: <text>"`` (System, User,
                              Assistant, Tool), ending with the last message, and that is rendered the same way:
                              the preprocessing model renders a single user turn only.
  POST /v1/completions        a raw prompt (no chat template) -> the ``llm`` ensemble; ``stream`` as above.
  POST /v1/embeddings         input (string or list of strings) -> the ``embed`` ensemble; ``encoding_format``
                              float or base64; usage.prompt_tokens is the sum of the ensemble's NUM_TOKENS output
                              (0 when the ensemble has none).
  POST /v1/rerank             Cohere/Jina-style ``{model, query, documents, top_n, return_documents}`` -> the
                              ``rerank`` ensemble; results sorted by relevance_score, each with its ``index``.
  GET  /v1/models[/{id}]      the configured model ids, every LoRA adapter of a chat model as a model of its own
                              (``"parent"``: the chat id; as vLLM lists them — call it by that id to use the adapter;
                              read from the ensemble's ``lora_adapters`` config parameter), and the split names
                              (``"kind"``, ``"split": true``).
  GET  /health                200 when Triton is ready, else 503 (no key needed).
  GET  /metrics               Prometheus text: requests and latency per route, model and status; per split arm
                              requests, errors and latency; each split's tripped state and current shares.
  GET  /admin/splits          the splits, their arms' counters and guard state (admin key).
  PUT  /admin/splits          replace the split configuration (``{"splits": {...}}``, admin key); refused with
                              400 and every problem when it is invalid (the previous one keeps serving).
  POST /admin/splits/{name}/reset   clear a split's tripped guard (admin key).

A/B and canary splits (:mod:`tritonforge.clients.traffic_split`): a split name is a model id; each request to it
goes to one arm (a configured model id, optionally a Triton version and a LoRA adapter) and the response carries
``x-tritonforge-split`` and ``x-tritonforge-arm``; the body's ``model`` stays the name the client sent. Sticky
splits hash the request's OpenAI ``user`` field, else the caller's API key. Admin endpoints need a key from
``admin_keys``; with no admin keys they are open only when the gateway itself has no API keys (else 403).

Generation: ``max_tokens`` (or ``max_completion_tokens``) defaults to 64 for chat and 16 for completions (OpenAI's
completions default); ``temperature``, ``top_p``, ``seed``, ``stop`` and the extension ``top_k`` are passed on;
without ``temperature``/``top_p``/``top_k`` the engine decodes greedily (TensorRT-LLM's default). ``n`` > 1,
``logprobs``, ``echo``, tools and penalties are refused with 400. Token counts: ``usage`` carries the engine's own
``num_input_tokens`` / ``num_output_tokens`` (the ensemble's ``return_num_*_tokens`` inputs, when its config has them);
with an older ensemble, ``completion_tokens`` counts the streamed engine responses and ``prompt_tokens`` is 0.

Stopping: when an HTTP client goes away during a stream, the gRPC stream to Triton is cancelled and, because Triton
2.51 does not pass an ensemble's cancellation on to its steps, upstream's ``stop`` signal (same request id) is sent
to the engine model, as the sync client's ``stream()`` does.

Errors: unknown model 404, bad JSON / wrong types / unsupported parameters 400, missing or wrong key 401, Triton
unavailable or overloaded 503, deadline 504; a request Triton rejects (prompt too long, ...) 400.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tritonforge.clients.client import AsyncClient
from tritonforge.clients.gateway_auth import KeyChecker
from tritonforge.clients.generation import Sampling, generation_inputs
from tritonforge.clients.traffic_split import Choice, SplitConfigError, SplitRouter, SplitsConfig, parse_splits
from tritonforge.errors import ClientError, OverloadedError, TransientError, TritonForgeError
from tritonforge.triton.streams import drain_stops
from tritonforge.triton.tensors import is_final, text_of

__all__ = ["APIError", "GatewayModels", "create_app", "split_problems"]

LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class GatewayModels:
    """OpenAI model ids -> Triton ensembles, per kind. The defaults are the ``examples/rag.yaml`` spec keys.

    ``engine_models`` names the engine step of each chat ensemble (where the ``stop`` signal goes); a chat id not
    listed uses ``tensorrt_llm`` (upstream's name, and tritonforge's for an LLM served as ``llm``).
    """

    chat: Mapping[str, str] = field(default_factory=lambda: {"chat": "llm"})
    embeddings: Mapping[str, str] = field(default_factory=lambda: {"minilm": "embed"})
    rerank: Mapping[str, str] = field(default_factory=lambda: {"reranker": "rerank"})
    engine_models: Mapping[str, str | None] = field(default_factory=dict)
    embed_batch_size: int = 32  # texts per Triton request (keep <= the embed ensemble's max_batch_size)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for kind in ("chat", "embeddings", "rerank"):
            for model_id, ensemble in getattr(self, kind).items():
                if not model_id or not ensemble:
                    raise ValueError(f"GatewayModels.{kind}: ids and ensembles must be non-empty ({model_id!r})")
                if model_id in seen:
                    raise ValueError(f"model id {model_id!r} is both {seen[model_id]} and {kind}")
                seen[model_id] = kind
        if self.embed_batch_size < 1:
            raise ValueError(f"embed_batch_size={self.embed_batch_size} must be >= 1")

    def ids(self) -> list[tuple[str, str, str]]:
        """(id, kind, ensemble) of every configured model."""
        return [(i, kind, e) for kind in ("chat", "embeddings", "rerank") for i, e in getattr(self, kind).items()]

    def engine_model(self, model_id: str) -> str | None:
        return self.engine_models.get(model_id, "tensorrt_llm")

    def kind_of(self, model_id: str) -> str | None:
        return next((kind for i, kind, _ in self.ids() if i == model_id), None)

    @classmethod
    def parse(cls, entries: Collection[str]) -> GatewayModels:
        """From ``kind:id=ensemble`` strings (kind: chat, embeddings, rerank), e.g. ``chat:chat=llm``."""
        maps: dict[str, dict[str, str]] = {"chat": {}, "embeddings": {}, "rerank": {}}
        for entry in entries:
            kind, _, rest = entry.partition(":")
            model_id, _, ensemble = rest.partition("=")
            if kind not in maps or not model_id or not ensemble:
                raise ValueError(f"{entry!r} is not kind:id=ensemble with kind chat, embeddings or rerank")
            maps[kind][model_id] = ensemble
        return cls(chat=maps["chat"], embeddings=maps["embeddings"], rerank=maps["rerank"])


def split_problems(models: GatewayModels, config: SplitsConfig) -> list[str]:
    """What makes ``config`` unusable with these models: unknown arm models, arms of different kinds, adapters on
    non-chat arms, split names that shadow model ids (``splits.<name>...: message`` lines)."""
    problems = []
    kinds = {"chat": "chat", "embeddings": "embeddings", "rerank": "rerank"}
    known = ", ".join(sorted(i for i, _, _ in models.ids()))
    for name, spec in config.splits.items():
        if models.kind_of(name) is not None:
            problems.append(f"splits.{name}: the split name is already a model id ({models.kind_of(name)}); choose "
                            "another name")
        seen: set[str] = set()
        arms = [("control", spec.control)] + [(f"treatments[{i}]", a) for i, a in enumerate(spec.treatments)]
        for where, arm in arms:
            kind = models.kind_of(arm.model)
            if kind is None:
                problems.append(f"splits.{name}.{where}.model: {arm.model!r} is not a model id of this gateway "
                                f"(known: {known})")
                continue
            seen.add(kinds[kind])
            if arm.adapter is not None and kind != "chat":
                problems.append(f"splits.{name}.{where}.adapter: {arm.adapter!r}: adapters apply to chat models "
                                f"only, {arm.model!r} is a {kind} model")
        if len(seen) > 1:
            problems.append(f"splits.{name}: every arm must be the same kind of model, got {', '.join(sorted(seen))}")
    return problems


# ------------------------------------------------------------------------------------------------------- errors


class APIError(TritonForgeError):
    """An OpenAI-style error response (the gateway's branch of the one error tree)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",  # OpenAI's field name
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after = retry_after  # seconds, sent as Retry-After: the failure is the server's, and passes

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _from_client_error(err: ClientError) -> APIError:
    text = str(err)
    if isinstance(err, OverloadedError):  # the model's queue is full: shed now, rather than queue without bound
        return APIError(429, f"the model is overloaded, retry later: {text}", type="server_error",
                        code="overloaded", retry_after=1)
    if isinstance(err, TransientError):
        return APIError(503, text, type="server_error", code="service_unavailable", retry_after=1)
    if "deadline of" in text:
        return APIError(504, text, type="server_error", code="timeout")
    if "unknown model" in text:
        return APIError(503, f"the model is not loaded on Triton: {text}", type="server_error", code="model_not_ready",
                        retry_after=5)
    if "is not healthy" in text or "is not ready" in text:  # a dead python stub (being healed), a model reloading
        return APIError(503, f"the model cannot serve right now, retry: {text}", type="server_error",
                        code="model_unavailable", retry_after=5)
    return APIError(400, text, type="invalid_request_error", code="invalid_request")


# -------------------------------------------------------------------------------------------------- request bodies

_IGNORED = frozenset({"user", "store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key"})


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: str


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    type: str
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None
    name: str | None = None

    def text(self, index: int) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for j, part in enumerate(self.content):
            if part.type != "text" or part.text is None:
                raise APIError(
                    400, f"content part type '{part.type}' is not supported (text only)",
                    param=f"messages[{index}].content[{j}]", code="unsupported_content",
                )
            parts.append(part.text)
        return "".join(parts)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    include_usage: bool | None = None


# integers become Triton tensors of these types: a larger value would wrap silently, so it is refused instead
INT32_MAX, UINT64_MAX = 2**31 - 1, 2**64 - 1


class _Sampled(_Body):
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=0, le=INT32_MAX)
    n: int | None = Field(default=None, ge=1, le=INT32_MAX)
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=0, le=UINT64_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2, allow_inf_nan=False)
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    top_logprobs: int | None = None


class _ChatBody(_Sampled):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    response_format: dict[str, Any] | None = None


class _CompletionBody(_Sampled):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


class _EmbeddingBody(_Body):
    input: str | list[str]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = None


class _Document(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    text: str


class _RerankBody(_Body):
    query: str
    documents: list[str | _Document] = Field(min_length=1)
    top_n: int | None = Field(default=None, ge=1, le=INT32_MAX)
    return_documents: bool | None = None


_UNSUPPORTED_IF_SET = {
    "tools", "tool_choice", "functions", "function_call", "audio", "modalities", "prediction",
    "reasoning_effort", "web_search_options", "logit_bias", "top_logprobs", "suffix",
}


def _check_extras(body: BaseModel) -> None:
    for name, value in (body.model_extra or {}).items():
        if name in _IGNORED or value is None:
            continue
        if name in _UNSUPPORTED_IF_SET:
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
        raise APIError(400, f"Unrecognized request argument supplied: {name}", param=name, code="unknown_parameter")


def _check_sampled(body: _Sampled) -> None:
    _check_extras(body)
    if body.n is not None and body.n > 1:
        raise APIError(400, "n > 1 is not supported", param="n", code="unsupported_parameter")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value not in (None, 0, 0.0):
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")
    if body.logprobs not in (None, False, 0):
        raise APIError(
            400, "'logprobs' is not supported by this server", param="logprobs", code="unsupported_parameter"
        )
    for name in ("logit_bias", "top_logprobs"):
        if getattr(body, name):
            raise APIError(400, f"'{name}' is not supported by this server", param=name, code="unsupported_parameter")


def _validation_error(err: PydanticValidationError) -> APIError:
    first = err.errors()[0]
    loc = [str(p) for p in first.get("loc", ()) if not str(p).startswith(("function-", "list[", "str", "int"))]
    param = ".".join(loc) or None
    what = f"'{param}'" if param else "the request body"
    return APIError(400, f"Invalid value for {what}: {first.get('msg', 'invalid')}", param=param, code="invalid_value")


@dataclass(frozen=True)
class GatewayLimits:
    """What one request may cost, checked before any work is done (413 for the body, 400 naming the limit
    otherwise). The defaults keep a request to seconds of CPU on a small server; raise them with the hardware."""

    body_bytes: int = 4 << 20
    embedding_inputs: int = 512  # texts in one /v1/embeddings request
    rerank_documents: int = 512
    text_chars: int = 32_768  # one embedding input, rerank query or document
    prompt_chars: int = 131_072  # a completion prompt, or a chat's messages together (checked before tokenizing)
    stop_strings: int = 16
    stop_chars: int = 256  # one stop string

    def check(self, count: int, limit: int, what: str, param: str) -> None:
        if count > limit:
            raise APIError(400, f"{what}: {count} is more than this server's limit of {limit}", param=param,
                           code="limit_exceeded")


MAX_BODY_BYTES = GatewayLimits().body_bytes
MAX_JSON_DEPTH = 32  # OpenAI bodies nest a few levels; deeper is refused rather than recursed into


def _check_json(data: Any) -> None:
    """Refuse what would fail later as an unhandled error: nesting too deep, and text that is not valid Unicode
    (a lone surrogate such as "\\ud800" is valid JSON but cannot be encoded as UTF-8 for Triton)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise APIError(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise APIError(400, f"Invalid value for '{path or 'body'}': the text is not valid Unicode (a lone "
                               "surrogate); send UTF-8 text", param=path or None, code="invalid_value") from None
        elif isinstance(value, dict):
            for key, item in value.items():
                stack.append((key, path, depth + 1))
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


async def _parse(request: Any, cls: type[BaseModel], max_bytes: int = MAX_BODY_BYTES) -> Any:
    raw = await request.body()
    if len(raw) > max_bytes:
        raise APIError(413, f"the request body is {len(raw)} bytes, more than the limit of {max_bytes}",
                       code="request_too_large")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise APIError(400, f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise APIError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON (Content-Type: "
            "application/json).",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    _check_json(data)
    if isinstance(data.get("model"), str):
        request.state.gw_model_requested = data["model"]
    try:
        return cls.model_validate(data)
    except PydanticValidationError as err:
        raise _validation_error(err) from None


# --------------------------------------------------------------------------------------------------- generation


def flatten_messages(messages: list[_Message]) -> str:
    """The text sent as one user turn (see the module docstring)."""
    texts = [(m.role, m.text(i)) for i, m in enumerate(messages)]
    if len(texts) == 1 and texts[0][0] == "user":
        return texts[0][1]
    labels = {"system": "System", "developer": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
    return "\n\n".join(f"{labels[role]}: {text}" for role, text in texts)


class _Generation:
    """One generation over Triton's gRPC stream; iterate for text pieces, ``steps`` counts engine responses."""

    def __init__(
        self,
        client: AsyncClient,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None,
        engine_model: str | None,
        version: str = "",
    ) -> None:
        self.client, self.model, self.inputs, self.timeout = client, model, inputs, timeout
        self.engine_model, self.version = engine_model, version
        self.steps = 0
        self.prompt_tokens = 0  # from the engine's num_input_tokens, when the request asked for it
        self.output_tokens: int | None = None  # the sum of num_output_tokens over the responses, likewise

    @property
    def completion_tokens(self) -> int:
        """Exact when the engine reports num_output_tokens; otherwise the number of streamed engine responses."""
        return self.steps if self.output_tokens is None else self.output_tokens

    def _count(self, result: Any) -> None:
        prompt, output = result.as_numpy("num_input_tokens"), result.as_numpy("num_output_tokens")
        if prompt is not None and prompt.size:
            self.prompt_tokens = int(prompt.reshape(-1)[0])
        if output is not None and output.size:
            self.output_tokens = (self.output_tokens or 0) + int(output.reshape(-1)[0])

    def _on_result(self, result: Any) -> None:
        piece = text_of({"text_output": result.as_numpy("text_output")})
        if piece or not is_final(result):
            self.steps += 1
        self._count(result)

    async def pieces(self) -> AsyncIterator[str]:
        """Text pieces over the access layer's stream: leaving early cancels it and sends upstream's stop to the
        engine; an adapter TensorRT-LLM evicted from its LoRA cache is sent once more with its weights."""
        stream = self.client.stream_text(
            self.model,
            self.inputs,
            timeout=self.timeout,
            engine_model=self.engine_model,
            on_result=self._on_result,
            version=self.version,
        )
        async with contextlib.aclosing(stream) as pieces:
            async for piece in pieces:
                yield piece


# ------------------------------------------------------------------------------------------------------ metrics


_ROUTES = (
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/models", "/health", "/metrics",
)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tritonforge_gateway_requests", "HTTP requests by route, model and status",
            ["route", "model", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "tritonforge_gateway_request_seconds", "Request latency (to the last byte) by route and model",
            ["route", "model"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.arm_requests = Counter(
            "tritonforge_gateway_split_requests", "Requests per split arm", ["split", "arm"], registry=self.registry
        )
        self.arm_errors = Counter(
            "tritonforge_gateway_split_errors", "Failed requests per split arm (5xx, or Triton failed the call)",
            ["split", "arm"], registry=self.registry,
        )
        self.arm_latency = Histogram(
            "tritonforge_gateway_split_request_seconds", "Latency (to the last byte) per split arm",
            ["split", "arm"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.trips = Counter(
            "tritonforge_gateway_split_trips", "Times a split's guard tripped", ["split"], registry=self.registry
        )

    def watch(self, router: SplitRouter) -> None:
        """Export the router's live state (tripped, shares, window error rates) at every scrape."""
        self.registry.register(_SplitCollector(router))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _SplitCollector:
    """Gauges computed from the router's state when Prometheus scrapes."""

    def __init__(self, router: SplitRouter) -> None:
        self.router = router

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        tripped = GaugeMetricFamily(
            "tritonforge_gateway_split_tripped", "1 when the split's guard tripped (all traffic to control)",
            labels=["split"],
        )
        tripped_at = GaugeMetricFamily(
            "tritonforge_gateway_split_tripped_timestamp_seconds", "When the split's guard tripped (unix time)",
            labels=["split", "reason"],
        )
        share = GaugeMetricFamily(
            "tritonforge_gateway_split_share", "Share of new traffic each arm receives now", labels=["split", "arm"]
        )
        rate = GaugeMetricFamily(
            "tritonforge_gateway_split_window_error_rate", "Error rate over the guard window (treatment arms)",
            labels=["split", "arm"],
        )
        ok = GaugeMetricFamily(
            "tritonforge_gateway_splits_config_ok", "0 when the last split configuration offered was refused"
        )
        for state in self.router.states():
            status = state.status()
            tripped.add_metric([state.name], float(status["tripped"]))
            if status["tripped"]:
                tripped_at.add_metric([state.name, status["tripped_reason"] or ""], status["tripped_at"] or 0.0)
            for arm, info in status["arms"].items():
                share.add_metric([state.name, arm], info["share"])
                if info["window_error_rate"] is not None:
                    rate.add_metric([state.name, arm], info["window_error_rate"])
        ok.add_metric([], float(self.router.last_error is None))
        yield from (tripped, tripped_at, share, rate, ok)


class _MetricsMiddleware:
    """Raw ASGI middleware: counts and times every request until its last byte (streams included).

    For a request routed through a split (``state.gw_choice``), it adds the ``x-tritonforge-split``/``-arm``
    response headers and records the arm's outcome (an error: status >= 500, or ``state.gw_upstream_error``).
    """

    def __init__(self, app: Any, metrics: _Metrics, known: Callable[[str], bool], router: SplitRouter) -> None:
        self.app, self.metrics, self.known, self.router = app, metrics, known, router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                choice: Choice | None = scope.get("state", {}).get("gw_choice")
                if choice is not None:
                    message = {**message, "headers": [
                        *message.get("headers", []),
                        (b"x-tritonforge-split", choice.split.name.encode()),
                        (b"x-tritonforge-arm", choice.arm.name.encode()),
                    ]}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            path = scope.get("path", "")
            route = path if path in _ROUTES else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
            state = scope.get("state", {})
            requested = state.get("gw_model_requested", "")
            model = requested if requested and self.known(requested) else ("" if not requested else "unknown")
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(route, model, str(status[0])).inc()
            self.metrics.latency.labels(route, model).observe(seconds)
            picked: Choice | None = state.get("gw_choice")
            if picked is not None:
                failed = status[0] >= 500 or bool(state.get("gw_upstream_error"))
                labels = (picked.split.name, picked.arm.name)
                self.metrics.arm_requests.labels(*labels).inc()
                self.metrics.arm_latency.labels(*labels).observe(seconds)
                if failed:
                    self.metrics.arm_errors.labels(*labels).inc()
                if picked.split.record(picked.arm.name, failed):
                    self.metrics.trips.labels(picked.split.name).inc()


# ---------------------------------------------------------------------------------------------------------- app


ADAPTER_NAMES_PARAMETER = "lora_adapters"  # the chat ensemble's parameter naming its adapters (builders/llm.py)
TOKEN_COUNT_INPUTS = ("return_num_input_tokens", "return_num_output_tokens")
ADAPTER_REFRESH_SECONDS = 30.0  # /v1/models re-reads the adapters at most this often
UNKNOWN_MODEL_REFRESH_SECONDS = 5.0  # a request for an unknown id re-reads them at most this often


@dataclass(frozen=True)
class _Target:
    """Where one request goes: a gateway model id, its Triton model, and the version/adapter of a split arm."""

    model_id: str
    triton_model: str
    version: str = ""
    adapter: str | None = None


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def create_app(
    triton_url: str,
    *,
    api_keys: Collection[str] | None,
    models: GatewayModels | None = None,
    timeout: float | None = 300.0,
    retries: int = 2,
    splits: SplitRouter | SplitsConfig | str | Path | None = None,
    admin_keys: Collection[str] | None = None,
    limits: GatewayLimits | None = None,
) -> FastAPI:
    """The gateway as a FastAPI app: one pooled gRPC :class:`AsyncClient` to ``triton_url`` for its lifetime.

    ``api_keys``: the accepted bearer keys (None or empty: no access control). ``timeout``: per Triton call,
    seconds (a whole generation counts as one call). ``splits``: A/B and canary splits: a file (YAML/JSON, re-read
    when it changes), a configuration, or a ready :class:`SplitRouter`; checked against ``models`` (a
    :class:`~tritonforge.clients.traffic_split.SplitConfigError` lists every problem). ``admin_keys``: the keys of
    the ``/admin`` endpoints (none: open only when ``api_keys`` is empty too).
    """
    models = models or GatewayModels()
    limits = limits or GatewayLimits()
    checker = KeyChecker(api_keys)
    admin_checker = KeyChecker(admin_keys)
    metrics = _Metrics()

    def check_splits(config: SplitsConfig) -> list[str]:
        return split_problems(models, config)

    if isinstance(splits, SplitRouter):
        router = splits
        router.validate = check_splits
        router.replace(router.config, source=router.source)  # checked against these models
    elif isinstance(splits, (str, Path)):
        router = SplitRouter(path=splits, validate=check_splits)
    else:
        router = SplitRouter(splits, validate=check_splits)
    metrics.watch(router)
    state: dict[str, AsyncClient] = {}

    # LoRA adapters as models of their own (as vLLM lists them): adapter id -> (chat model id, adapter name),
    # discovered from each chat ensemble's `lora_adapters` config parameter through Triton's model-config API
    adapters: dict[str, tuple[str, str]] = {}
    adapters_seen = [float("-inf")]

    async def discover_adapters(max_age: float = ADAPTER_REFRESH_SECONDS) -> None:
        if time.monotonic() - adapters_seen[0] < max_age or "client" not in state:
            return
        adapters_seen[0] = time.monotonic()
        found: dict[str, tuple[str, str]] = {}
        transport = state["client"]._get()
        for chat_id, ensemble in models.chat.items():
            try:
                config = (await transport.get_model_config(ensemble, as_json=True)).get("config", {})
            except Exception as err:  # Triton not up yet, or the model is not loaded: try again later
                LOG.debug("adapters of %s: %s", ensemble, err)
                continue
            counts_tokens[ensemble] = set(TOKEN_COUNT_INPUTS) <= {i.get("name") for i in config.get("input", [])}
            names = config.get("parameters", {}).get(ADAPTER_NAMES_PARAMETER, {}).get("string_value", "")
            for name in filter(None, names.split(",")):
                if name in model_ids or router.get(name) is not None or name in found:
                    LOG.warning("adapter %r of %s is not listed: the id is taken by another model", name, chat_id)
                    continue
                found[name] = (chat_id, name)
        adapters.clear()
        adapters.update(found)

    # chat ensembles that take return_num_input_tokens/return_num_output_tokens (upstream's newer templates)
    counts_tokens: dict[str, bool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        client = AsyncClient(triton_url, "grpc", timeout=timeout, retries=retries)
        state["client"] = client
        await discover_adapters()
        try:
            yield
        finally:
            await drain_stops()
            await client.close()

    app = FastAPI(title="tritonforge gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.models = models
    app.state.metrics = metrics
    app.state.splits = router
    model_ids = {i for i, _, _ in models.ids()}
    app.add_middleware(
        _MetricsMiddleware, metrics=metrics, router=router,
        known=lambda m: m in model_ids or m in adapters or router.get(m) is not None,
    )

    def client() -> AsyncClient:
        if "client" not in state:
            raise APIError(503, "the gateway is starting", type="server_error", code="service_unavailable")
        return state["client"]

    # errors ------------------------------------------------------------------------------------------------------
    def error_response(err: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
        if err.retry_after is not None:
            headers["Retry-After"] = str(err.retry_after)
        return JSONResponse(err.body(), status_code=err.status, headers=headers or None)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, err: APIError) -> JSONResponse:
        return error_response(err)

    @app.exception_handler(ClientError)
    async def _client_error(request: Request, err: ClientError) -> JSONResponse:
        request.state.gw_upstream_error = True  # a Triton call failed: counts against a split arm
        return error_response(_from_client_error(err))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(APIError(400, f"Invalid request: {err.errors()[:1]}", code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return error_response(APIError(err.status_code, str(err.detail), type=kind, code=None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        LOG.exception("gateway: unexpected error")
        return error_response(APIError(500, f"internal error: {type(err).__name__}", type="server_error"))

    @app.middleware("http")
    async def _contain(request: Request, call_next: Any) -> Any:
        """A bug must cost one clean 500, not the connection: Starlette re-raises what reaches its outermost
        handler, and uvicorn then drops the keep-alive connection the client would reuse for its next request."""
        try:
            return await call_next(request)
        except Exception as err:
            request_id = uuid.uuid4().hex[:12]
            LOG.exception("gateway: unexpected error (request %s)", request_id)
            return error_response(
                APIError(500, f"internal error: {type(err).__name__} (request {request_id})", type="server_error")
            )

    # access ------------------------------------------------------------------------------------------------------
    def authorize(request: Request) -> None:
        if not checker.check_header(request.headers.get("authorization")):
            raise APIError(
                401,
                "Incorrect API key provided. Send 'Authorization: Bearer <key>' with a key this gateway accepts.",
                type="invalid_request_error",
                code="invalid_api_key",
            )

    def authorize_admin(request: Request) -> None:
        header = request.headers.get("authorization")
        if admin_checker.enabled:
            if admin_checker.check_header(header):
                return
        elif not checker.enabled:
            return  # an open gateway (no keys at all): the admin endpoints are open too
        else:
            raise APIError(
                403, "The admin endpoints are disabled: this gateway has API keys but no admin keys "
                "(give admin_keys / --admin-keys-file).", type="permission_error", code="admin_disabled",
            )
        raise APIError(401, "Incorrect admin key provided. Send 'Authorization: Bearer <admin key>'.",
                       code="invalid_api_key")

    def split_kind(state: Any) -> str:
        return models.kind_of(state.spec.control.model) or "chat"

    def resolve(model_id: str, kind: str) -> str:
        table: Mapping[str, str] = getattr(models, kind)
        if model_id not in model_ids and model_id in adapters:
            if kind == "chat":
                return models.chat[adapters[model_id][0]]
            raise APIError(
                400, f"The model `{model_id}` is a chat model and cannot serve this endpoint",
                param="model", code="model_not_supported",
            )
        if model_id not in table:
            other = next((k for i, k, _ in models.ids() if i == model_id), None)
            split = router.get(model_id) if other is None else None
            if split is not None:
                other = split_kind(split)
            if other is not None:
                raise APIError(
                    400, f"The model `{model_id}` is a {other} model and cannot serve this endpoint",
                    param="model", code="model_not_supported",
                )
            raise APIError(
                404, f"The model `{model_id}` does not exist or you do not have access to it.",
                param="model", code="model_not_found",
            )
        return table[model_id]

    def resolve_or_split(model_id: str, kind: str) -> None:
        """Raise the model error (unknown, wrong endpoint) before the body is checked further."""
        state = router.get(model_id) if model_id not in model_ids else None
        if state is None or split_kind(state) != kind:
            resolve(model_id, kind)

    def route(request: Request, body: BaseModel, kind: str) -> _Target:
        """Where this request goes: the model itself, or one arm of the split it names (recorded on the request
        for the headers and the arm's counters)."""
        model_id: str = body.model  # type: ignore[attr-defined]
        if model_id not in model_ids and model_id in adapters:
            chat_id, adapter = adapters[model_id]
            return _Target(chat_id, resolve(model_id, kind), "", adapter)
        state = router.get(model_id) if model_id not in model_ids else None
        if state is None:
            return _Target(model_id, resolve(model_id, kind))
        if split_kind(state) != kind:
            resolve(model_id, kind)  # raises the wrong-endpoint error
        user = (body.model_extra or {}).get("user")
        identity = user if isinstance(user, str) and user else KeyChecker.bearer(request.headers.get("authorization"))
        choice = state.choose(identity, router.rng)
        arm = choice.arm
        request.state.gw_choice = choice
        return _Target(arm.model, resolve(arm.model, kind), arm.triton_version, arm.adapter)

    # generation --------------------------------------------------------------------------------------------------
    def sampling(
        body: _Sampled, max_tokens: int | None, default_tokens: int, *, chat: bool, adapter: str | None = None
    ) -> Sampling:
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        limits.check(len(stop), limits.stop_strings, "stop strings", "stop")
        for i, word in enumerate(stop):
            limits.check(len(word), limits.stop_chars, f"characters in stop[{i}]", "stop")
        return Sampling(
            max_tokens=max_tokens or default_tokens,
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            seed=body.seed,
            stop_words=stop,
            chat=chat,
            adapter=adapter,
        )

    async def generate(
        request: Request, body: _Sampled, prompt: str, params: Sampling, *, kind: Literal["chat", "text"],
        target: _Target,
    ) -> Any:
        try:
            inputs = generation_inputs(prompt, params, stream=True)
        except ClientError as err:
            raise APIError(400, str(err), code="invalid_value") from None
        await discover_adapters()  # also learns which ensembles report token counts (at most every 30 s)
        if counts_tokens.get(target.triton_model):  # the engine reports exact token counts for `usage`
            inputs = {**inputs, **{name: np.array([[True]]) for name in TOKEN_COUNT_INPUTS}}
        gen = _Generation(
            client(), target.triton_model, inputs, timeout=timeout, engine_model=models.engine_model(target.model_id),
            version=target.version,
        )
        pieces = gen.pieces()
        created, rid = int(time.time()), ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        # the first piece before the first byte: a request Triton rejects gets a proper status, not a broken stream
        first: str | None
        try:
            first = await pieces.__anext__()
        except StopAsyncIteration:
            first = None
        except BaseException:
            await pieces.aclose()  # type: ignore[attr-defined]
            raise

        def finish_reason() -> str:
            return "length" if gen.completion_tokens >= params.max_tokens else "stop"

        def usage() -> dict[str, int]:
            done, prompt_tokens = gen.completion_tokens, gen.prompt_tokens
            return {"prompt_tokens": prompt_tokens, "completion_tokens": done, "total_tokens": prompt_tokens + done}

        if not body.stream:
            parts = [] if first is None else [first]
            try:
                parts.extend([p async for p in pieces])
            finally:
                await pieces.aclose()  # type: ignore[attr-defined]
            text = "".join(parts)
            if kind == "chat":
                choice = {
                    "index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None, "finish_reason": finish_reason(),
                }
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason()}
                obj = "text_completion"
            return JSONResponse({
                "id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": None,
                "choices": [choice], "usage": usage(),
            })

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(piece: str | None, *, role: bool = False, reason: str | None = None) -> dict[str, Any]:
            if kind == "chat":
                delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
                if piece is not None:
                    delta["content"] = piece
                choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": reason}
            payload = {
                "id": rid, "object": obj, "created": created, "model": body.model, "system_fingerprint": None,
                "choices": [choice],
            }
            if include_usage:
                payload["usage"] = None
            return payload

        async def events() -> AsyncIterator[str]:
            try:
                if kind == "chat":
                    yield _sse(chunk(None, role=True))
                if first is not None:
                    yield _sse(chunk(first))
                    try:
                        async for piece in pieces:
                            yield _sse(chunk(piece))
                    except ClientError as err:
                        request.state.gw_upstream_error = True
                        yield _sse(_from_client_error(err).body())
                        yield "data: [DONE]\n\n"
                        return
                yield _sse(chunk(None, reason=finish_reason()))
                if include_usage:
                    yield _sse({
                        "id": rid, "object": obj, "created": created, "model": body.model,
                        "system_fingerprint": None, "choices": [], "usage": usage(),
                    })
                yield "data: [DONE]\n\n"
            finally:
                await pieces.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    # routes ------------------------------------------------------------------------------------------------------
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        authorize(request)
        body: _ChatBody = await _parse(request, _ChatBody, limits.body_bytes)
        _check_sampled(body)
        if body.response_format and body.response_format.get("type") not in (None, "text"):
            raise APIError(400, "'response_format' other than text is not supported", param="response_format",
                           code="unsupported_parameter")
        if body.model not in model_ids and body.model not in adapters:
            await discover_adapters(max_age=UNKNOWN_MODEL_REFRESH_SECONDS)
        resolve_or_split(body.model, "chat")
        resolve_chat = route(request, body, "chat")
        prompt = flatten_messages(body.messages)
        limits.check(len(prompt), limits.prompt_chars, "characters in the messages", "messages")
        params = sampling(
            body, body.max_completion_tokens or body.max_tokens, 64, chat=True, adapter=resolve_chat.adapter
        )
        return await generate(request, body, prompt, params, kind="chat", target=resolve_chat)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        authorize(request)
        body: _CompletionBody = await _parse(request, _CompletionBody, limits.body_bytes)
        _check_sampled(body)
        if body.echo:
            raise APIError(400, "'echo' is not supported by this server", param="echo", code="unsupported_parameter")
        if body.best_of not in (None, 1):
            raise APIError(400, "best_of > 1 is not supported", param="best_of", code="unsupported_parameter")
        if body.model not in model_ids and body.model not in adapters:
            await discover_adapters(max_age=UNKNOWN_MODEL_REFRESH_SECONDS)
        resolve_or_split(body.model, "chat")
        prompt = body.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise APIError(400, "exactly one prompt per request is supported", param="prompt",
                               code="unsupported_parameter")
            prompt = prompt[0]
        limits.check(len(prompt), limits.prompt_chars, "characters in the prompt", "prompt")
        target = route(request, body, "chat")
        params = sampling(body, body.max_tokens, 16, chat=False, adapter=target.adapter)
        return await generate(request, body, prompt, params, kind="text", target=target)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        authorize(request)
        body: _EmbeddingBody = await _parse(request, _EmbeddingBody, limits.body_bytes)
        _check_extras(body)
        resolve_or_split(body.model, "embeddings")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        if not texts:
            raise APIError(400, "'input' must not be empty", param="input", code="invalid_value")
        limits.check(len(texts), limits.embedding_inputs, "inputs", "input")
        for i, text in enumerate(texts):
            limits.check(len(text), limits.text_chars, f"characters in input[{i}]", "input")
            if not text:
                raise APIError(400, f"'input[{i}]' must not be an empty string", param="input", code="invalid_value")
        target = route(request, body, "embeddings")
        ensemble = target.triton_model
        vectors, tokens = [], 0
        step = models.embed_batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            tensor = np.array([[t.encode("utf-8")] for t in chunk], dtype=object).reshape(len(chunk), 1)
            out = await client().infer(ensemble, {"TEXT": tensor}, timeout=timeout, version=target.version)
            emb = out.get("EMBEDDING")
            if emb is None:
                raise APIError(502, f"ensemble '{ensemble}' returned no EMBEDDING", type="server_error")
            vectors.append(np.asarray(emb, np.float32).reshape(len(chunk), -1))
            if out.get("NUM_TOKENS") is not None:
                tokens += int(np.asarray(out["NUM_TOKENS"]).sum())
        matrix = np.concatenate(vectors) if len(vectors) > 1 else vectors[0]
        if body.dimensions is not None and body.dimensions != matrix.shape[1]:
            raise APIError(400, f"'dimensions' must be {matrix.shape[1]} for `{body.model}` (no truncation)",
                           param="dimensions", code="unsupported_parameter")
        as_base64 = body.encoding_format == "base64"
        data = []
        for i, row in enumerate(matrix):
            value: Any = (
                base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") if as_base64 else row.tolist()
            )
            data.append({"object": "embedding", "index": i, "embedding": value})
        return {
            "object": "list", "data": data, "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    @app.post("/v1/rerank")
    async def rerank(request: Request) -> Any:
        authorize(request)
        body: _RerankBody = await _parse(request, _RerankBody, limits.body_bytes)
        _check_extras(body)
        resolve_or_split(body.model, "rerank")
        docs = [d if isinstance(d, str) else d.text for d in body.documents]
        limits.check(len(docs), limits.rerank_documents, "documents", "documents")
        limits.check(len(body.query), limits.text_chars, "characters in the query", "query")
        for i, doc in enumerate(docs):
            limits.check(len(doc), limits.text_chars, f"characters in documents[{i}]", "documents")
        target = route(request, body, "rerank")
        try:
            scores = await client().rerank(
                body.query, docs, model=target.triton_model, timeout=timeout, version=target.version
            )
        except ClientError as err:
            if getattr(err, "status", None) is None and "must" in str(err):  # checked before sending
                raise APIError(400, str(err), code="invalid_value") from None
            raise
        order = sorted(range(len(docs)), key=lambda i: -float(scores[i]))[: body.top_n or len(docs)]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if body.return_documents:
                item["document"] = {"text": docs[i]}
            results.append(item)
        return {
            "id": uuid.uuid4().hex, "object": "list", "model": body.model, "results": results,
            "usage": {"total_tokens": 0},
        }

    def model_card(model_id: str, kind: str, ensemble: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "tritonforge",
                "kind": kind, "triton_model": ensemble}

    def adapter_card(adapter_id: str) -> dict[str, Any]:
        chat_id, name = adapters[adapter_id]
        return {**model_card(adapter_id, "chat", models.chat[chat_id]), "parent": chat_id, "root": chat_id,
                "adapter": name}

    def split_card(state: Any) -> dict[str, Any]:
        return {"id": state.name, "object": "model", "created": 0, "owned_by": "tritonforge",
                "kind": split_kind(state), "triton_model": None, "split": True,
                "arms": [a.name for a in state.spec.arms]}

    @app.get("/v1/models")
    async def list_models(request: Request) -> Any:
        authorize(request)
        await discover_adapters()
        cards = [model_card(*m) for m in models.ids()]
        cards += [adapter_card(a) for a in sorted(adapters)]
        cards += [split_card(s) for s in router.states()]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model_id}")
    async def get_model(request: Request, model_id: str) -> Any:
        authorize(request)
        for m in models.ids():
            if m[0] == model_id:
                return model_card(*m)
        await discover_adapters(max_age=UNKNOWN_MODEL_REFRESH_SECONDS)
        if model_id in adapters:
            return adapter_card(model_id)
        state = router.get(model_id)
        if state is not None:
            return split_card(state)
        raise APIError(404, f"The model `{model_id}` does not exist or you do not have access to it.",
                       param="model", code="model_not_found")

    async def members(ensemble: str) -> list[str]:
        """The models an ensemble runs (itself when it is not one), read once through the model-config API."""
        if ensemble not in member_cache:
            config = (await client()._get().get_model_config(ensemble, as_json=True)).get("config", {})
            steps = config.get("ensemble_scheduling", {}).get("step", [])
            member_cache[ensemble] = [str(s.get("model_name")) for s in steps] or [ensemble]
        return member_cache[ensemble]

    member_cache: dict[str, list[str]] = {}

    @app.get("/health")
    async def health() -> Any:
        """Ready only when Triton is and every model the gateway serves can answer: Triton keeps an ensemble READY
        while a member is down (reloading after its python stub died, or failed), so the members are asked too.
        A configured model Triton has never served here (its config never readable) is not counted."""
        ready = False
        with contextlib.suppress(ClientError):
            ready = await client().is_ready()
        down: dict[str, list[str]] = {}
        # also when Triton is not ready (strict readiness: some model is down): say which
        for model_id, _kind, ensemble in models.ids():
            seen = ensemble in member_cache
            try:
                names = await members(ensemble)
                states = [await client().is_model_ready(n) for n in names]
            except Exception:  # gone since it served (down), or never served here (not this gateway's concern)
                if not seen:
                    continue
                names, states = [ensemble], [False]
            missing = [n for n, ok in zip(names, states, strict=True) if not ok]
            if missing:
                down[model_id] = missing
        ok = ready and not down
        body: dict[str, Any] = {"status": "ok" if ok else "unavailable", "triton_ready": ready}
        if down:
            body["models_down"] = down
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Any:
        authorize(request)
        router.maybe_reload()
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    # admin -------------------------------------------------------------------------------------------------------
    @app.get("/admin/splits")
    async def get_splits(request: Request) -> Any:
        authorize_admin(request)
        return router.status()

    @app.put("/admin/splits")
    async def put_splits(request: Request) -> Any:
        authorize_admin(request)
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise APIError(400, "the body must be a JSON split configuration: {\"splits\": {name: {...}}}",
                           code="invalid_json") from None
        try:
            started = router.replace(parse_splits(data, "PUT /admin/splits"), source="PUT /admin/splits")
        except SplitConfigError as err:
            raise APIError(400, str(err), param="splits", code="invalid_splits") from None
        return {**router.status(), "started": started}

    @app.post("/admin/splits/{name}/reset")
    async def reset_split(request: Request, name: str) -> Any:
        authorize_admin(request)
        if not router.reset(name):
            raise APIError(404, f"there is no split `{name}` (splits: {', '.join(router.names()) or 'none'})",
                           param="name", code="split_not_found")
        return router.status()["splits"][name]

    return app
