"""The gateway's state for its lifetime: one pooled Triton connection, the models it serves, the LoRA adapters it
discovered, the splits, the keys and limits, and where each request goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request

from tritonforge.clients.client import AsyncClient
from tritonforge.clients.generation import declares_messages
from tritonforge.errors import ClientError, ModelNotFoundError
from tritonforge.gateway.auth import KeyChecker
from tritonforge.gateway.errors import APIError, clip
from tritonforge.gateway.generation import TOKEN_COUNT_INPUTS
from tritonforge.gateway.metrics import Metrics
from tritonforge.gateway.models import GatewayModels, split_problems
from tritonforge.gateway.schemas import GatewayLimits
from tritonforge.gateway.splits import SplitRouter, SplitsConfig

LOG = logging.getLogger(__name__)

ADAPTER_NAMES_PARAMETER = "lora_adapters"  # the chat ensemble's parameter naming its adapters (builders/llm.py)
ADAPTER_REFRESH_SECONDS = 30.0  # /v1/models re-reads the adapters at most this often
UNKNOWN_MODEL_REFRESH_SECONDS = 5.0  # a request for an unknown id re-reads them at most this often
# a dns:/// Triton address (every pod of a headless Service) is resolved again this often: gRPC resolves a name only
# when its channel starts or loses a connection, so pods an autoscaler added would get no gateway traffic
RESOLVE_SECONDS = 30.0


@dataclass(frozen=True)
class Target:
    """Where one request goes: a gateway model id, its Triton model, and the version/adapter of a split arm."""

    model_id: str
    triton_model: str
    version: str = ""
    adapter: str | None = None


class Gateway:
    """Everything a route needs (``request.app.state.gateway``)."""

    def __init__(
        self,
        triton_url: str,
        *,
        api_keys: Collection[str] | KeyChecker | None,
        models: GatewayModels | None,
        timeout: float | None,
        retries: int,
        splits: SplitRouter | SplitsConfig | str | Path | None,
        admin_keys: Collection[str] | KeyChecker | None,
        limits: GatewayLimits | None,
        triton_http_url: str | None = None,
    ) -> None:
        self.triton_url, self.timeout, self.retries = triton_url, timeout, retries
        # Triton's HTTP endpoint, if given: embeddings and rerank infer calls go there (tritonforge/triton/
        # keepalive_http.py: a third of the gRPC aio client's CPU per call); everything else stays on gRPC
        self.triton_http_url = triton_http_url
        self._http_client: AsyncClient | None = None
        self.models = models or GatewayModels()
        self.limits = limits or GatewayLimits()
        # a KeyChecker given (one watching a key file) is used as is
        self.checker = api_keys if isinstance(api_keys, KeyChecker) else KeyChecker(api_keys)
        self.admin_checker = admin_keys if isinstance(admin_keys, KeyChecker) else KeyChecker(admin_keys)
        self.metrics = Metrics()
        self.model_ids = {i for i, _, _ in self.models.ids()}
        # chat model id -> every adapter name its ensemble declares (listed or not): what splits are checked against
        self.adapter_names: dict[str, frozenset[str]] = {}
        self.router = self._router(splits)
        self.metrics.watch(self.router)
        self._client: AsyncClient | None = None
        self._opened = 0.0  # when _client was made
        self._retired: set[AsyncClient] = set()  # replaced clients, closed once their calls can have ended
        self._closing: set[asyncio.Task[None]] = set()  # their closing tasks (held: a loop keeps weak references)
        # LoRA adapters as models of their own (as vLLM lists them): adapter id -> (chat model id, adapter name),
        # discovered from each chat ensemble's `lora_adapters` config parameter through Triton's model-config API
        self.adapters: dict[str, tuple[str, str]] = {}
        self._adapters_seen = float("-inf")
        # chat ensembles that take return_num_input_tokens/return_num_output_tokens (upstream's newer templates)
        self.counts_tokens: dict[str, bool] = {}
        # chat ensembles that take chat_messages (a whole conversation for the chat template; tritonforge's addition)
        self.takes_messages: dict[str, bool] = {}
        self._members: dict[str, list[str]] = {}
        self.open_streams: set[AsyncIterator[str]] = set()  # SSE streams being sent (closed at shutdown)
        # (ensemble, version) -> (embedding width or None if unknown, when last read or seen): a wrong `dimensions`
        # is refused before the texts are embedded (gateway/embeddings.py)
        self.embedding_widths: dict[tuple[str, str], tuple[int | None, float]] = {}

    def _router(self, splits: SplitRouter | SplitsConfig | str | Path | None) -> SplitRouter:
        def check(config: SplitsConfig) -> list[str]:
            return split_problems(self.models, config, self.adapter_names)

        if isinstance(splits, SplitRouter):
            splits.validate = check
            splits.replace(splits.config, source=splits.source)  # checked against these models
            return splits
        if isinstance(splits, (str, Path)):
            return SplitRouter(path=splits, validate=check)
        return SplitRouter(splits, validate=check)

    # the Triton connection ---------------------------------------------------------------------------------------
    async def open(self) -> None:
        self._client = self._new_client()
        if self.triton_http_url:
            self._http_client = AsyncClient(self.triton_http_url, "http", timeout=self.timeout, retries=self.retries)
        await self.discover_adapters()

    def _new_client(self) -> AsyncClient:
        self._opened = time.monotonic()
        return AsyncClient(self.triton_url, "grpc", timeout=self.timeout, retries=self.retries)

    def _resolve_again(self) -> None:
        """A new channel (a new resolution of the dns:/// name) for the calls to come; the old one closes once every
        call on it has had its whole timeout to end (a generation is one call)."""
        old, self._client = self._client, self._new_client()
        if old is None:
            return
        self._retired.add(old)

        async def close_old() -> None:
            await asyncio.sleep((self.timeout or 300.0) + 5.0)
            if old in self._retired:
                self._retired.discard(old)
                await old.close()

        task = asyncio.get_running_loop().create_task(close_old())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close_streams(self, timeout: float = 5.0) -> None:
        """Close the SSE streams still open when the server stops, before the Triton client closes: closing a
        stream closes its generations, which sends each engine its stop. uvicorn cancels their tasks at its
        graceful-shutdown timeout and goes on to this shutdown while they unwind; one suspended at a chunk is
        closed here, one still unwinding is waited for (each leaves ``open_streams`` when it is done)."""
        for stream in list(self.open_streams):
            with contextlib.suppress(Exception):  # running (its task unwinding): waited for below
                await stream.aclose()  # type: ignore[attr-defined]
        deadline = time.monotonic() + timeout
        while self.open_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        client, self._client = self._client, None
        http_client, self._http_client = self._http_client, None
        retired, self._retired = self._retired, set()
        for task in list(self._closing):
            task.cancel()
        for each in [*retired, *(c for c in (client, http_client) if c is not None)]:
            await each.close()

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise APIError(503, "the gateway is starting", type="server_error", code="service_unavailable")
        if self.triton_url.startswith("dns:") and time.monotonic() - self._opened > RESOLVE_SECONDS:
            self._resolve_again()
        assert self._client is not None
        return self._client

    @property
    def infer_client(self) -> AsyncClient:
        """The client of plain infer calls (embeddings, rerank): over Triton's HTTP endpoint when one was given."""
        client = self.client  # 503 while starting, as every route
        return self._http_client if self._http_client is not None else client

    async def http_endpoint_live(self) -> bool | None:
        """Whether Triton's HTTP endpoint (``--triton-http``) answers; None when the gateway has none."""
        if self._http_client is None:
            return None
        with contextlib.suppress(ClientError):
            return await self._http_client.is_live()
        return False

    def knows(self, model_id: str) -> bool:
        return model_id in self.model_ids or model_id in self.adapters or self.router.get(model_id) is not None

    async def discover_adapters(self, max_age: float = ADAPTER_REFRESH_SECONDS) -> None:
        if time.monotonic() - self._adapters_seen < max_age or self._client is None:
            return
        self._adapters_seen = time.monotonic()
        found: dict[str, tuple[str, str]] = {}
        for chat_id, ensemble in self.models.chat.items():
            try:
                config = await self._client.model_config(ensemble)
            except ClientError as err:  # Triton not up yet, or the model is not loaded: try again later
                LOG.debug("adapters of %s: %s", ensemble, err)
                # the adapters last seen stay: a model being restarted (a heal's reload) answers 503 with
                # Retry-After through its adapters too, where their ids were unknown (404) until the next read
                found.update({a: owner for a, owner in self.adapters.items() if owner[0] == chat_id})
                continue
            inputs = {i.get("name") for i in config.get("input", [])}
            self.counts_tokens[ensemble] = set(TOKEN_COUNT_INPUTS) <= inputs
            self.takes_messages[ensemble] = declares_messages(config)
            text = config.get("parameters", {}).get(ADAPTER_NAMES_PARAMETER, {}).get("string_value", "")
            names = [name for name in text.split(",") if name]
            self.adapter_names[chat_id] = frozenset(names)
            for name in names:
                if name in self.model_ids or self.router.get(name) is not None or name in found:
                    LOG.warning("adapter %r of %s is not listed: the id is taken by another model", name, chat_id)
                    continue
                found[name] = (chat_id, name)
        self.adapters.clear()
        self.adapters.update(found)

    async def members(self, ensemble: str) -> list[str]:
        """The models an ensemble runs (itself when it is not one), read once through the model-config API."""
        if ensemble not in self._members:
            config = await self.client.model_config(ensemble)
            steps = config.get("ensemble_scheduling", {}).get("step", [])
            self._members[ensemble] = [str(s.get("model_name")) for s in steps] or [ensemble]
        return self._members[ensemble]

    def members_known(self, ensemble: str) -> bool:
        return ensemble in self._members

    async def lists(self, ensemble: str) -> bool:
        """Whether /v1/models lists a configured model: not when Triton says it has no such model (a repository
        without it: `serve --gateway` on an embeddings-only build has no `llm`); when Triton cannot be asked, yes."""
        try:
            await self.members(ensemble)
        except ModelNotFoundError:
            return False
        except ClientError:
            pass
        return True

    # access ------------------------------------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if not self.checker.check_header(header):
            # OpenAI's two answers: no key at all (its words), and a key it does not accept
            missing = KeyChecker.bearer(header) is None
            raise APIError(
                401,
                "You didn't provide an API key: send it as 'Authorization: Bearer <key>'." if missing else
                "Incorrect API key provided. Send 'Authorization: Bearer <key>' with a key this gateway accepts.",
                type="invalid_request_error",
                code="invalid_api_key",
            )

    def authorize_admin(self, request: Request) -> None:
        header = request.headers.get("authorization")
        if self.admin_checker.enabled:
            if self.admin_checker.check_header(header):
                return
        elif not self.checker.enabled:
            return  # an open gateway (no keys at all): the admin endpoints are open too
        else:
            raise APIError(
                403, "The admin endpoints are disabled: this gateway has API keys but no admin keys "
                "(give admin_keys / --admin-keys-file).", type="permission_error", code="admin_disabled",
            )
        if KeyChecker.bearer(header) is None:  # no header, another scheme, or no token after "Bearer"
            raise APIError(401, "No admin key provided: send it as 'Authorization: Bearer <admin key>'.",
                           code="invalid_api_key")
        raise APIError(401, "Incorrect admin key provided. Send 'Authorization: Bearer <admin key>'.",
                       code="invalid_api_key")

    # routing -----------------------------------------------------------------------------------------------------
    def split_kind(self, state: Any) -> str:
        return self.models.kind_of(state.spec.control.model) or "chat"

    def resolve(self, model_id: str, kind: str) -> str:
        """The Triton model serving ``model_id`` on an endpoint of ``kind``; 404 unknown, 400 wrong endpoint."""
        table: Mapping[str, str] = getattr(self.models, kind)
        if model_id not in self.model_ids and model_id in self.adapters:
            if kind == "chat":
                return self.models.chat[self.adapters[model_id][0]]
            raise APIError(
                400, f"The model `{model_id}` is a chat model and cannot serve this endpoint",
                param="model", code="model_not_supported",
            )
        if model_id not in table:
            other = next((k for i, k, _ in self.models.ids() if i == model_id), None)
            split = self.router.get(model_id) if other is None else None
            if split is not None:
                other = self.split_kind(split)
            if other is not None:
                article = "an" if other[0] in "aeiou" else "a"
                raise APIError(
                    400, f"The model `{model_id}` is {article} {other} model and cannot serve this endpoint",
                    param="model", code="model_not_supported",
                )
            raise APIError(
                404, f"The model `{clip(model_id)}` does not exist or you do not have access to it (served for "
                f"{kind}: {self.models.served_names(kind)}).",
                param="model", code="model_not_found",
            )
        return table[model_id]

    def resolve_or_split(self, model_id: str, kind: str) -> None:
        """Raise the model error (unknown, wrong endpoint) before the body is checked further."""
        state = self.router.get(model_id) if model_id not in self.model_ids else None
        if state is None or self.split_kind(state) != kind:
            self.resolve(model_id, kind)

    def route(self, request: Request, body: BaseModel, kind: str) -> Target:
        """Where this request goes: the model itself, or one arm of the split it names (recorded on the request
        for the headers and the arm's counters)."""
        model_id: str = body.model  # type: ignore[attr-defined]
        if model_id not in self.model_ids and model_id in self.adapters:
            chat_id, adapter = self.adapters[model_id]
            return Target(chat_id, self.resolve(model_id, kind), "", adapter)
        state = self.router.get(model_id) if model_id not in self.model_ids else None
        if state is None:
            return Target(model_id, self.resolve(model_id, kind))
        if self.split_kind(state) != kind:
            self.resolve(model_id, kind)  # raises the wrong-endpoint error
        user = getattr(body, "user", None)  # a str or None (schemas.Body)
        identity = user if isinstance(user, str) and user else KeyChecker.bearer(request.headers.get("authorization"))
        choice = state.choose(identity, self.router.rng)
        arm = choice.arm
        request.state.gw_choice = choice
        return Target(arm.model, self.resolve(arm.model, kind), arm.triton_version, arm.adapter)

    # /v1/models cards --------------------------------------------------------------------------------------------
    @staticmethod
    def model_card(model_id: str, kind: str, ensemble: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "tritonforge",
                "kind": kind, "triton_model": ensemble}

    def adapter_card(self, adapter_id: str) -> dict[str, Any]:
        chat_id, name = self.adapters[adapter_id]
        return {**self.model_card(adapter_id, "chat", self.models.chat[chat_id]), "parent": chat_id,
                "root": chat_id, "adapter": name}

    def split_card(self, state: Any) -> dict[str, Any]:
        return {"id": state.name, "object": "model", "created": 0, "owned_by": "tritonforge",
                "kind": self.split_kind(state), "triton_model": None, "split": True,
                "arms": [a.name for a in state.spec.arms]}
