"""The gateway's endpoints; each reads the gateway's state from ``request.app.state.gateway``."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tritonforge.clients.pipelines import counted_tokens, rerank_request, rerank_scores
from tritonforge.errors import ClientError
from tritonforge.gateway.embeddings import (
    dimensions_error,
    embed_texts,
    embedding_width,
    remember_width,
    truncation_error,
)
from tritonforge.gateway.errors import APIError, clip
from tritonforge.gateway.generation import flattened, generate, sampling, turns_of
from tritonforge.gateway.listen import on_port
from tritonforge.gateway.schemas import (
    ChatBody,
    CompletionBody,
    EmbeddingBody,
    RerankBody,
    check_extras,
    check_messages,
    check_response_format,
    check_sampled,
    parse_body,
    read_json,
)
from tritonforge.gateway.splits import SplitConfigError, parse_splits
from tritonforge.gateway.state import UNKNOWN_MODEL_REFRESH_SECONDS, Gateway

# The gateway's routes, on Starlette's router: every endpoint takes the request (and its path's parameters) and reads
# its body itself, so FastAPI's dependency injection, validation and response models had nothing to do, and its
# routing and middleware cost ~15% of the app's CPU on an embeddings request, uvicorn's excluded (docs/performance.md)
ROUTES: list[Route] = []
Endpoint = Callable[..., Awaitable[Any]]


def route(path: str, *methods: str) -> Callable[[Endpoint], Endpoint]:
    """Serve ``endpoint`` at ``path`` for ``methods`` (a GET answers HEAD too, as Starlette's routes do): it is called
    with the request and the path's parameters by name, and a dict or list it returns is the JSON body."""

    def register(endpoint: Endpoint) -> Endpoint:
        async def answer(request: Request) -> Response:
            result = await endpoint(request, **request.path_params)
            return result if isinstance(result, Response) else JSONResponse(result)

        ROUTES.append(Route(path, answer, methods=list(methods), name=endpoint.__name__))
        return endpoint

    return register


@route("/v1/chat/completions", "POST")
async def chat_completions(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request)
    body: ChatBody = await parse_body(request, ChatBody, gw.limits.body_bytes)
    check_sampled(body)
    check_messages(body.messages)
    check_response_format(body.response_format)
    if body.model not in gw.model_ids and body.model not in gw.adapters:
        await gw.discover_adapters(max_age=UNKNOWN_MODEL_REFRESH_SECONDS)
    gw.resolve_or_split(body.model, "chat")
    resolve_chat = gw.route(request, body, "chat")
    turns = turns_of(body.messages)
    prompt = flattened(turns)
    gw.limits.check(len(prompt), gw.limits.prompt_chars, "characters in the messages", "messages")
    if not prompt.strip():
        raise APIError(400, "the messages hold no text: send a message with content", param="messages",
                       code="invalid_value")
    params = sampling(
        gw.limits, body, body.max_completion_tokens or body.max_tokens, gw.models.chat_max_tokens, chat=True,
        adapter=resolve_chat.adapter,
    )
    return await generate(gw, request, body, [prompt], params, kind="chat", target=resolve_chat,
                          messages=turns)


@route("/v1/completions", "POST")
async def completions(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request)
    body: CompletionBody = await parse_body(request, CompletionBody, gw.limits.body_bytes)
    check_sampled(body)
    if body.echo:
        raise APIError(400, "'echo' is not supported by this server", param="echo", code="unsupported_parameter")
    if body.best_of not in (None, 1):
        raise APIError(400, "best_of > 1 is not supported", param="best_of", code="unsupported_parameter")
    if body.model not in gw.model_ids and body.model not in gw.adapters:
        await gw.discover_adapters(max_age=UNKNOWN_MODEL_REFRESH_SECONDS)
    gw.resolve_or_split(body.model, "chat")
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise APIError(400, "'prompt' must not be an empty list", param="prompt", code="invalid_value")
    gw.limits.check(len(prompts) * (body.n or 1), gw.limits.generations, "generations (prompts x n)", "prompt")
    for i, prompt in enumerate(prompts):
        where = "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]"
        gw.limits.check(len(prompt), gw.limits.prompt_chars, f"characters in {where}", "prompt")
        if not prompt.strip():
            raise APIError(400, f"'{where}' must not be empty (or only whitespace)", param="prompt",
                           code="invalid_value")
    target = gw.route(request, body, "chat")
    params = sampling(gw.limits, body, body.max_tokens, gw.models.completion_max_tokens, chat=False,
                      adapter=target.adapter)
    return await generate(gw, request, body, prompts, params, kind="text", target=target)


@route("/v1/embeddings", "POST")
async def embeddings(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request)
    body: EmbeddingBody = await parse_body(request, EmbeddingBody, gw.limits.body_bytes)
    check_extras(body)
    gw.resolve_or_split(body.model, "embeddings")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise APIError(400, "'input' must not be empty", param="input", code="invalid_value")
    gw.limits.check(len(texts), gw.limits.embedding_inputs, "inputs", "input")
    for i, text in enumerate(texts):
        gw.limits.check(len(text), gw.limits.text_chars, f"characters in input[{i}]", "input")
        if not text.strip():  # the tokenizer refuses blank text too, after the chunks before it ran
            raise APIError(400, f"'input[{i}]' must not be an empty string (or only whitespace)", param="input",
                           code="invalid_value")
    if body.truncate_prompt_tokens not in (None, -1):  # the ensemble cuts at the model's length, nowhere else
        raise APIError(400, f"'truncate_prompt_tokens' must be -1 (cut each input to the model's maximum length), "
                       f"got {body.truncate_prompt_tokens}", param="truncate_prompt_tokens", code="invalid_value")
    if body.dimensions is not None and body.dimensions < 1:  # refused before the texts are embedded
        raise APIError(400, f"'dimensions' must be a positive integer (the model's width), got {body.dimensions}",
                       param="dimensions", code="invalid_value")
    target = gw.route(request, body, "embeddings")
    if body.dimensions is not None:
        width = await embedding_width(gw, target.triton_model, target.version, body.dimensions)
        if width is not None and body.dimensions != width:
            raise dimensions_error(width, body.model)
    embedded = await embed_texts(gw, target.triton_model, texts, target.version)
    cut_asked = body.truncate_prompt_tokens is not None or gw.models.auto_truncate
    if not cut_asked and (cut := truncation_error(embedded, body.model)) is not None:
        raise cut
    matrix, tokens = embedded.rows, embedded.tokens
    remember_width(gw, target.triton_model, target.version, matrix.shape[1])
    if body.dimensions is not None and body.dimensions != matrix.shape[1]:  # the width was not known before
        raise dimensions_error(matrix.shape[1], body.model)
    return embeddings_response(matrix, body.model, tokens, as_base64=body.encoding_format == "base64")


def embeddings_response(matrix: np.ndarray, model: str, tokens: int, *, as_base64: bool) -> Response:
    """OpenAI's embeddings body, serialized by orjson straight from the float32 rows.

    Each float is written as the shortest text that reads back as the same float32 (``row.tolist()`` printed the
    float64 expansion instead): the body is ~45% smaller, and both this process and the client spend less CPU on
    it; measured, the gateway's cost under the issue #17 load.
    """
    rows = np.ascontiguousarray(matrix, dtype="<f4")
    data = [
        {"object": "embedding", "index": i,
         "embedding": base64.b64encode(row.tobytes()).decode("ascii") if as_base64 else row}
        for i, row in enumerate(rows)
    ]
    body = {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@route("/v1/rerank", "POST")
async def rerank(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request)
    body: RerankBody = await parse_body(request, RerankBody, gw.limits.body_bytes)
    check_extras(body)
    gw.resolve_or_split(body.model, "rerank")
    docs = [d if isinstance(d, str) else d.text for d in body.documents]
    gw.limits.check(len(docs), gw.limits.rerank_documents, "documents", "documents")
    gw.limits.check(len(body.query), gw.limits.text_chars, "characters in the query", "query")
    if not body.query.strip():
        raise APIError(400, "'query' must not be empty (or only whitespace)", param="query", code="invalid_value")
    for i, doc in enumerate(docs):
        gw.limits.check(len(doc), gw.limits.text_chars, f"characters in documents[{i}]", "documents")
    target = gw.route(request, body, "rerank")
    # every output (SCORES, and NUM_TOKENS where the ensemble counts each pair's tokens: usage)
    inputs, _ = rerank_request(body.query, docs)
    out = await gw.infer_client.infer(target.triton_model, inputs, timeout=gw.timeout, version=target.version)
    scores = rerank_scores(out, len(docs), target.triton_model)
    order = sorted(range(len(docs)), key=lambda i: -float(scores[i]))[: body.top_n or len(docs)]
    results = []
    for i in order:
        item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
        if body.return_documents:
            item["document"] = {"text": docs[i]}
        results.append(item)
    return {
        "id": uuid.uuid4().hex, "object": "list", "model": body.model, "results": results,
        "usage": {"total_tokens": counted_tokens(out)},  # 0: from an ensemble built before it counted them
    }


@route("/v1/models", "GET")
async def list_models(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request)
    await gw.discover_adapters()
    configured = gw.models.ids()
    listed = await asyncio.gather(*(gw.lists(ensemble) for _, _, ensemble in configured))
    cards = [gw.model_card(*m) for m, shown in zip(configured, listed, strict=True) if shown]
    cards += [gw.adapter_card(a) for a in sorted(gw.adapters)]
    cards += [gw.split_card(s) for s in gw.router.states()]
    return {"object": "list", "data": cards}


@route("/v1/models/{model_id:path}", "GET")  # path: ids such as HuggingFaceTB/SmolLM2 have slashes
async def get_model(request: Request, model_id: str) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize(request)
    for m in gw.models.ids():
        if m[0] == model_id and await gw.lists(m[2]):
            return gw.model_card(*m)
    await gw.discover_adapters(max_age=UNKNOWN_MODEL_REFRESH_SECONDS)
    if model_id in gw.adapters:
        return gw.adapter_card(model_id)
    state = gw.router.get(model_id)
    if state is not None:
        return gw.split_card(state)
    raise APIError(404, f"The model `{clip(model_id)}` does not exist or you do not have access to it.",
                   param="model", code="model_not_found")


HTTP_ENDPOINT_DOWN = "(Triton's HTTP endpoint, --triton-http)"  # in models_down, beside Triton's model names


NOT_LOADED = "(not loaded on Triton)"  # in models_down: a configured model Triton has never served here


async def _models_down(gw: Gateway, *, unseen_down: bool = False) -> tuple[dict[str, list[str]], int]:
    """The gateway's models that cannot answer, with the Triton models of each that are down, and how many of its
    models count. A configured model Triton has never served here (its config never readable) is not counted, unless
    ``unseen_down``: then it is down, NOT_LOADED (still loading, or failed to)."""
    down: dict[str, list[str]] = {}
    counted = 0
    # embeddings and rerank go over Triton's HTTP endpoint when the gateway has one: down with it, chat not
    http_live = await gw.http_endpoint_live()
    for model_id, kind, ensemble in gw.models.ids():
        seen = gw.members_known(ensemble)
        try:
            names = await gw.members(ensemble)
            states = [await gw.client.is_model_ready(n) for n in names]
        except Exception:  # gone since it served (down), or never served here (not this gateway's concern)
            if not seen:
                if unseen_down:
                    down[model_id] = [NOT_LOADED]
                continue
            names, states = [ensemble], [False]
        counted += 1
        missing = [n for n, ok in zip(names, states, strict=True) if not ok]
        if http_live is False and kind in ("embeddings", "rerank"):
            missing.append(HTTP_ENDPOINT_DOWN)
        if missing:
            down[model_id] = missing
    return down, counted


TRITON_NOT_READY = (
    "Triton reports not ready: its strict readiness counts every model and version in its repository, a version "
    "that failed to load (a refused release promote) included, until Triton restarts; every model this gateway "
    "serves answers"
)


@route("/health", "GET", "HEAD")  # HEAD: load balancers that probe without a body
async def health(request: Request) -> Any:
    """Healthy when every model the gateway serves can answer (for monitoring: an alert when anything is down).
    Triton keeps an ensemble READY while a member is down (reloading after its python stub died, or failed), so the
    members are asked too. Triton's own readiness is reported, and required only until one of the gateway's models
    has answered: it stays false after any version failed to load, which left /health a 503 naming nothing until
    Triton restarted (operations audit). Not a readiness probe: see /ready."""
    gw: Gateway = request.app.state.gateway
    ready = live = False
    with contextlib.suppress(ClientError):
        ready = await gw.client.is_ready()
        live = ready or await gw.client.is_live()
    # Triton not ready: a model never seen here may be loading, or have failed to; it counts as down (a chat engine
    # that never loaded, beside embeddings that answer, read "ok" otherwise: review)
    down, counted = await _models_down(gw, unseen_down=not ready) if live else ({}, 0)
    ok = live and not down and (ready or counted > 0)
    return _probe_answer(ok, "ok", {"triton_ready": ready}, down, TRITON_NOT_READY if ok and not ready else None)


@route("/ready", "GET", "HEAD")
async def ready(request: Request) -> Any:
    """Ready to take traffic: Triton answers and at least one of the gateway's models can (the readiness probe).
    /health's "every model" took every gateway pod out of service when one chat engine kept failing, and the
    embeddings it still served went down with it (operations audit); the model that is down answers 503 with
    Retry-After instead. The body names what is down, as /health's does."""
    gw: Gateway = request.app.state.gateway
    live = False
    with contextlib.suppress(ClientError):
        live = await gw.client.is_live()
    down, counted = await _models_down(gw) if live else ({}, 0)
    # none counted: Triton serves none of the gateway's models (all failed to load, or none loaded yet), which is
    # the pod a readiness probe must keep out; a gateway configured with no models at all only needs Triton
    configured = bool(gw.models.ids())
    return _probe_answer(live and (not configured or len(down) < counted), "ready", {"triton_live": live}, down)


def _probe_answer(
    ok: bool, word: str, triton: dict[str, bool], down: dict[str, list[str]], note: str | None = None
) -> JSONResponse:
    """/health's and /ready's answer: 200 with ``word``, else 503 "unavailable"; Triton's state, and the models
    that cannot answer."""
    body: dict[str, Any] = {"status": word if ok else "unavailable", **triton}
    if down:
        body["models_down"] = down
    if note:
        body["note"] = note
    return JSONResponse(body, status_code=200 if ok else 503)


@route("/live", "GET", "HEAD")
async def live(_: Request) -> Any:
    """The gateway process answers (the liveness probe: restarting it cannot bring Triton or a model back)."""
    return JSONResponse({"status": "live"})


@route("/metrics", "GET")
async def prometheus(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    if not on_port(request.scope, request.app.state.metrics_port):  # the metrics listener needs no key
        gw.authorize(request)
    gw.router.maybe_reload()
    payload, content_type = gw.metrics.render()
    return Response(payload, media_type=content_type)

# admin -------------------------------------------------------------------------------------------------------


@route("/admin/splits", "GET")
async def get_splits(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize_admin(request)
    return gw.router.status()


@route("/admin/splits", "PUT")
async def put_splits(request: Request) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize_admin(request)
    data = await read_json(request, gw.limits.body_bytes)
    if not isinstance(data, dict):  # null would read as "no splits" and drop every split
        got = "null" if data is None else type(data).__name__
        raise APIError(400, "the body must be a JSON split configuration: {\"splits\": {name: {...}}} (got "
                       f"{got}; send {{\"splits\": {{}}}} to remove every split)", code="invalid_json")
    await gw.discover_adapters()  # a split may not take an adapter's id nor name one its model lacks
    try:
        started = gw.router.replace(parse_splits(data, "PUT /admin/splits"), source="PUT /admin/splits")
    except SplitConfigError as err:
        raise APIError(400, str(err), param="splits", code="invalid_splits") from None
    return {**gw.router.status(), "started": started}


@route("/admin/splits/{name}/reset", "POST")
async def reset_split(request: Request, name: str) -> Any:
    gw: Gateway = request.app.state.gateway
    gw.authorize_admin(request)
    if not gw.router.reset(name):
        raise APIError(404, f"there is no split `{clip(name)}` (splits: {', '.join(gw.router.names()) or 'none'})",
                       param="name", code="split_not_found")
    return gw.router.status()["splits"][name]
