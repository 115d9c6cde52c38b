"""Typed Triton clients: numpy in, numpy out, one error tree, bounded retries.

    from tritonforge.clients import Client

    with Client("127.0.0.1:8001") as client:                 # gRPC; protocol="http" for the HTTP endpoint
        vectors = client.embed(["hello", "world"])           # float32 [2, dim]
        out = client.infer("add_one", {"INPUT": np.ones((1, 4), np.float32)})

    async with AsyncClient("127.0.0.1:8001") as client:      # the same surface, awaitable
        vectors = await client.embed(["hello"])

The transport (health, infer, metadata, the repository API, retries, the error mapping, generation streams) is the
access layer's :class:`~tritonforge.triton.Connection`; this module adds the pipelines' typed calls on top.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from tritonforge.clients.generation import (
    AsyncRagStream,
    RagAnswer,
    RagStream,
    Sampling,
    chat_inputs,
    declares_messages,
    generation_inputs,
    rag_inputs,
)
from tritonforge.clients.pipelines import Hit, rerank_request, rerank_scores, search_request, search_results
from tritonforge.errors import BatchTooLargeError, ClientError, InvalidInputError
from tritonforge.triton.bounded import chunked, gather_bounded
from tritonforge.triton.connection import AsyncConnection, Connection
from tritonforge.triton.engines import ENGINE_AUTO
from tritonforge.triton.options import (
    ClientOptions,
    KeepAliveOptions,
    Protocol,
    RetryPolicy,
    TLSOptions,
)
from tritonforge.values import is_whole

__all__ = [
    "AsyncClient",
    "Client",
    "ClientOptions",
    "KeepAliveOptions",
    "RetryPolicy",
    "TLSOptions",
]


def _check_texts(texts: Any) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise InvalidInputError(f"texts must be a list of strings, not a single {type(texts).__name__}: embed([text])")
    if not isinstance(texts, Iterable):
        raise InvalidInputError(f"texts must be a list of strings, got {type(texts).__name__}")
    items = list(texts)
    if not items:
        raise InvalidInputError("texts is empty: give at least one string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(f"texts[{i}] is {type(item).__name__}, not str")
    return items


def _text_tensor(texts: list[str]) -> np.ndarray:
    encoded = []
    for i, text in enumerate(texts):
        try:
            encoded.append([text.encode("utf-8")])
        except UnicodeEncodeError as err:
            raise InvalidInputError(f"texts[{i}] cannot be encoded as UTF-8: {err.reason}") from None
    return np.array(encoded, dtype=object).reshape(len(texts), 1)


def _check_chunking(batch_size: int | None, requests_in_flight: int) -> None:
    def whole(value: object) -> bool:
        return is_whole(value) and int(value) >= 1

    if not whole(requests_in_flight):
        raise InvalidInputError(f"requests_in_flight={requests_in_flight!r} must be an integer >= 1")
    if batch_size is not None and not whole(batch_size):
        raise InvalidInputError(f"batch_size={batch_size!r} must be an integer >= 1 (or None: the model's max)")


def _needs_max_batch_size(batch_size: int | None, items: list[str]) -> bool:
    return batch_size is None and len(items) > 1  # one text fits any max_batch_size: no config read for it


def _limit_key(model: str, version: str) -> str:
    return f"{model}\0{version}"  # the clients' cache of max_batch_size, per model and version


def _check_embedding(out: np.ndarray | None, n: int, model: str) -> np.ndarray:
    if out is None:
        raise ClientError(f"model '{model}' returned no EMBEDDING output")
    if out.ndim == 3 and out.shape[1] == 1:
        out = out[:, 0, :]
    if out.ndim != 2 or out.shape[0] != n:
        raise ClientError(f"model '{model}' returned EMBEDDING of shape {list(out.shape)}, expected [{n}, dim]")
    return np.ascontiguousarray(out, dtype=np.float32)



class Client(Connection):
    """A synchronous Triton client over ``tritonclient.grpc`` or HTTP (keep-alive connections of its own).

    ``url`` is ``host:port`` (a ``grpc://``/``http://`` scheme is accepted, ``https://``/``grpcs://`` turn TLS on;
    a scheme of the other transport than ``protocol`` is refused).
    ``timeout`` is the default per-call deadline in seconds (None: no deadline; a stream's covers the whole
    stream). Thread-safe: gRPC calls run concurrently on one channel, HTTP calls on one pool of keep-alive
    connections shared by every thread (:mod:`tritonforge.triton.blocking_http`). Health checks (``is_live``...)
    are not retried and answer False when the server cannot be reached.

    Keyword arguments: ``timeout`` (30 s), ``retries`` (3: attempts after the first while the server cannot take a
    request, with ``backoff`` 0.1 s doubling up to ``max_backoff`` 2 s), ``tls`` (:class:`TLSOptions`),
    ``keepalive`` (:class:`KeepAliveOptions`, gRPC), ``compression`` ("gzip", "deflate"), ``headers`` (sent with
    every call, generation streams included), ``admin_key`` (the model-control API's), ``verbose``; or all of them
    as one :class:`ClientOptions` with :meth:`from_options`.
    """

    def __init__(self, url: str, protocol: Protocol = "grpc", **kwargs: Any) -> None:
        super().__init__(url, protocol, **kwargs)
        self._max_batch_sizes: dict[str, int] = {}  # per model, read once (embed without batch_size)
        self._takes_messages: dict[str, bool] = {}  # per model, read once (chat)

    def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = "embed",
        timeout: float | None = None,
        batch_size: int | None = None,
        requests_in_flight: int = 2,
    ) -> np.ndarray:
        """Embed ``texts`` with ``model`` (``TEXT`` BYTES [n, 1] -> ``EMBEDDING`` FP32 [n, dim]); float32 [n, dim].

        A list longer than ``batch_size`` goes as several requests, at most ``requests_in_flight`` at a time (threads),
        the rows in the order of ``texts``; the first failure is raised
        and the requests not yet sent are not. ``batch_size`` None: the model's ``max_batch_size`` (read from its
        config once per model and client, only for more than one text; read again, and the call made once more, when
        Triton refuses a request as larger than it: the model was reloaded with a smaller one).
        """
        items = _check_texts(texts)
        _check_chunking(batch_size, requests_in_flight)
        if not _needs_max_batch_size(batch_size, items):
            return self._embed(items, model, timeout, batch_size or len(items), requests_in_flight)
        cached = _limit_key(model, "") in self._max_batch_sizes
        try:
            return self._embed(items, model, timeout, self.max_batch_size(model, timeout=timeout), requests_in_flight)
        except BatchTooLargeError:
            if not cached:
                raise
            # the model was reloaded with a smaller max_batch_size since this client read it: read it again
            limit = self.max_batch_size(model, timeout=timeout, refresh=True)
            return self._embed(items, model, timeout, limit, requests_in_flight)

    def max_batch_size(
        self, model: str, *, version: str = "", timeout: float | None = None, refresh: bool = False
    ) -> int:
        """``model``'s ``max_batch_size`` (0: it does not batch), read from its config (``version``'s; "" the
        server's choice) once per model, version and client; ``refresh``: read it again (after a reload)."""
        key = _limit_key(model, version)
        if refresh or key not in self._max_batch_sizes:
            config = self.model_config(model, version, timeout=timeout)
            self._max_batch_sizes[key] = int(config.get("max_batch_size", 0))
        return self._max_batch_sizes[key]

    def _embed(
        self, items: list[str], model: str, timeout: float | None, size: int, requests_in_flight: int
    ) -> np.ndarray:
        chunks = chunked(items, size or len(items))  # max_batch_size 0: no batching, all in one

        def one(chunk: list[str]) -> np.ndarray:
            out = self.infer(model, {"TEXT": _text_tensor(chunk)}, ["EMBEDDING"], timeout=timeout)
            return _check_embedding(out.get("EMBEDDING"), len(chunk), model)

        if len(chunks) == 1 or requests_in_flight == 1:
            parts = [one(chunk) for chunk in chunks]
        else:
            pool = ThreadPoolExecutor(min(requests_in_flight, len(chunks)), thread_name_prefix="tritonforge-embed")
            try:
                parts = list(pool.map(one, chunks))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # after a failure: the chunks not started never are
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def search(
        self,
        queries: Sequence[str],
        top_k: int | None = None,
        *,
        rerank: bool = False,
        top_n: int | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> list[list[Hit]]:
        """Nearest passages per query, best first (``search``); with ``rerank=True`` the ``search_rerank``
        pipeline retrieves ``top_k`` candidates, scores them with the cross-encoder and keeps ``top_n``. More queries
        than the pipeline's ``max_batch_size`` go as several requests, in order (65 were refused as one)."""
        name = model or ("search_rerank" if rerank else "search")
        inputs, outputs = search_request(queries, top_k, top_n, rerank=rerank)
        rows = len(inputs["QUERY"])
        limit = self.max_batch_size(name, timeout=timeout) if rows > 1 else 0
        hits: list[list[Hit]] = []
        for start in range(0, rows, limit if 0 < limit < rows else rows):
            part = {k: v[start : start + (limit or rows)] for k, v in inputs.items()}
            out = self.infer(name, part, outputs, timeout=timeout)
            hits += search_results(out, len(part["QUERY"]), name)
        return hits

    def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        model: str = "rerank",
        timeout: float | None = None,
        version: str = "",
    ) -> np.ndarray:
        """Cross-encoder scores of (query, passage) pairs, in the order of ``passages`` (higher = more relevant).
        ``version``: a Triton model version ("" = the model's version policy decides)."""
        inputs, outputs = rerank_request(query, passages)
        out = self.infer(model, inputs, outputs, timeout=timeout, version=version)
        return rerank_scores(out, len(passages), model)

    def generate(
        self, prompt: str, *, model: str = "llm", timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO, **sampling: Any,
    ) -> str:
        """The whole completion of ``prompt`` (``max_tokens``, ``temperature``, ``top_k``, ``top_p``, ``seed``,
        ``stop_words``, ``bad_words``, ``end_id``, ``pad_id``, ``chat``, ``adapter``: see :class:`Sampling`). A
        deadline passing stops generation on the server (gRPC), as leaving :meth:`stream` early does."""
        inputs = generation_inputs(prompt, Sampling.of(sampling), stream=False)
        if self.protocol == "http":
            return self.generate_http(model, inputs, timeout=timeout)
        return "".join(self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model))

    def stream(
        self,
        prompt: str,
        *,
        model: str = "llm",
        timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO,
        **sampling: Any,
    ) -> Iterator[str]:
        """Text pieces as they are generated (gRPC). Leaving the loop early stops generation on the server:
        upstream's ``stop`` signal goes to ``engine_model`` and the stream is read to its end (cancelled if it has
        not ended within 2 s, or at once without ``engine_model``)."""
        if self.protocol != "grpc":
            raise InvalidInputError("streaming needs gRPC: create the client with protocol='grpc'")
        inputs = generation_inputs(prompt, Sampling.of(sampling), stream=True)
        return self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model)

    def chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str = "llm", timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO, **sampling: Any,
    ) -> str:
        """The answer to a conversation (``[{"role": "system" | "user" | "assistant" | ..., "content": str}]``),
        rendered turn by turn by the checkpoint's chat template (the llm ensemble's ``chat_messages``, which
        ensembles built by tritonforge declare; an older ensemble gets the conversation flattened into one user turn,
        as the gateway sends it); ``sampling`` as :meth:`generate`."""
        inputs = self._chat_inputs(messages, sampling, model, timeout, stream=False)
        if self.protocol == "http":
            return self.generate_http(model, inputs, timeout=timeout)
        return "".join(self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model))

    def chat_stream(
        self, messages: Sequence[Mapping[str, Any]], *, model: str = "llm", timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO, **sampling: Any,
    ) -> Iterator[str]:
        """:meth:`chat` as text pieces while they are generated (gRPC; leaving early stops generation, as
        :meth:`stream`)."""
        if self.protocol != "grpc":
            raise InvalidInputError("streaming needs gRPC: create the client with protocol='grpc'")
        inputs = self._chat_inputs(messages, sampling, model, timeout, stream=True)
        return self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model)

    def _chat_inputs(
        self, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any], model: str,
        timeout: float | None, *, stream: bool,
    ) -> dict[str, np.ndarray]:
        if model not in self._takes_messages:  # its config, read once per model and client
            self._takes_messages[model] = declares_messages(self.model_config(model, timeout=timeout))
        return chat_inputs(messages, Sampling.of(sampling), stream=stream, with_messages=self._takes_messages[model])

    def rag(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        min_score: float | None = None,
        engine_model: str | None = ENGINE_AUTO,
        **sampling: Any,
    ) -> RagAnswer:
        """Retrieve, rerank and answer ``query`` in one call of the ``rag`` ensemble (gRPC): the answer, the
        passages it was given (ids and scores, best first: the reranker's, or the retriever's without one), the
        prompt, and how many were left out (scored below ``min_score``, or dropped to fit).
        ``top_k``/``top_n``/``max_tokens``/``min_score`` None: the server's defaults; ``sampling``: see
        :class:`Sampling`."""
        limits = {"top_k": top_k, "top_n": top_n, "max_tokens": max_tokens, "min_score": min_score}
        return self._rag(query, limits, model, timeout, engine_model, sampling, stream=False).answer()

    def rag_stream(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO,
        min_score: float | None = None,
        **sampling: Any,
    ) -> RagStream:
        """The answer's text pieces as generated (iterate); ``.sources`` (and ``.prompt``, ``.dropped``) are there
        as soon as the first response arrives (with the first piece). Leaving early stops generation as ``stream``."""
        limits = {"top_k": top_k, "top_n": top_n, "max_tokens": max_tokens, "min_score": min_score}
        return self._rag(query, limits, model, timeout, engine_model, sampling, stream=True)

    def _rag(
        self, query: str, limits: dict[str, Any], model: str, timeout: float | None, engine_model: str | None,
        sampling: Mapping[str, Any], *, stream: bool,
    ) -> RagStream:
        if self.protocol != "grpc":
            raise InvalidInputError("rag needs gRPC (the rag ensemble answers several responses): use protocol='grpc'")
        inputs = rag_inputs(query, **limits, sampling=sampling, stream=stream)
        deadline = self._timeout(timeout)
        return RagStream(
            lambda on_result: self.stream_text(
                model, inputs, timeout=deadline, engine_model=engine_model, on_result=on_result
            )
        )



class AsyncClient(AsyncConnection):
    """The asynchronous :class:`Client`, over ``tritonclient.grpc.aio`` or HTTP (keep-alive connections of its own).

    Use it in one event loop at a time (a new one after the first ended, e.g. a second ``asyncio.run``, is fine);
    ``async with AsyncClient(...) as client``.
    """

    def __init__(self, url: str, protocol: Protocol = "grpc", **kwargs: Any) -> None:
        super().__init__(url, protocol, **kwargs)
        self._max_batch_sizes: dict[str, int] = {}  # per model, read once (embed without batch_size)
        self._takes_messages: dict[str, bool] = {}  # per model, read once (chat)

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = "embed",
        timeout: float | None = None,
        batch_size: int | None = None,
        requests_in_flight: int = 2,
    ) -> np.ndarray:
        """Embed ``texts`` (see :meth:`Client.embed`): a long list's requests at most ``requests_in_flight`` at a time
        (2: enough to keep two model instances busy without filling the server's queue; ``docs/serving.md``)."""
        items = _check_texts(texts)
        _check_chunking(batch_size, requests_in_flight)
        if not _needs_max_batch_size(batch_size, items):
            return await self._embed(items, model, timeout, batch_size or len(items), requests_in_flight)
        cached = _limit_key(model, "") in self._max_batch_sizes
        try:
            limit = await self.max_batch_size(model, timeout=timeout)
            return await self._embed(items, model, timeout, limit, requests_in_flight)
        except BatchTooLargeError:
            if not cached:
                raise
            limit = await self.max_batch_size(model, timeout=timeout, refresh=True)  # reloaded with a smaller one
            return await self._embed(items, model, timeout, limit, requests_in_flight)

    async def max_batch_size(
        self, model: str, *, version: str = "", timeout: float | None = None, refresh: bool = False
    ) -> int:
        """See :meth:`Client.max_batch_size`."""
        key = _limit_key(model, version)
        if refresh or key not in self._max_batch_sizes:
            config = await self.model_config(model, version, timeout=timeout)
            self._max_batch_sizes[key] = int(config.get("max_batch_size", 0))
        return self._max_batch_sizes[key]

    async def _embed(
        self, items: list[str], model: str, timeout: float | None, size: int, requests_in_flight: int
    ) -> np.ndarray:
        chunks = chunked(items, size or len(items))

        async def one(chunk: list[str]) -> np.ndarray:
            out = await self.infer(model, {"TEXT": _text_tensor(chunk)}, ["EMBEDDING"], timeout=timeout)
            return _check_embedding(out.get("EMBEDDING"), len(chunk), model)

        parts = await gather_bounded([functools.partial(one, chunk) for chunk in chunks], requests_in_flight)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    async def search(
        self,
        queries: Sequence[str],
        top_k: int | None = None,
        *,
        rerank: bool = False,
        top_n: int | None = None,
        model: str | None = None,
        timeout: float | None = None,
    ) -> list[list[Hit]]:
        """Nearest passages per query (see :meth:`Client.search`)."""
        name = model or ("search_rerank" if rerank else "search")
        inputs, outputs = search_request(queries, top_k, top_n, rerank=rerank)
        rows = len(inputs["QUERY"])
        limit = await self.max_batch_size(name, timeout=timeout) if rows > 1 else 0
        hits: list[list[Hit]] = []
        for start in range(0, rows, limit if 0 < limit < rows else rows):
            part = {k: v[start : start + (limit or rows)] for k, v in inputs.items()}
            out = await self.infer(name, part, outputs, timeout=timeout)
            hits += search_results(out, len(part["QUERY"]), name)
        return hits

    async def rerank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        model: str = "rerank",
        timeout: float | None = None,
        version: str = "",
    ) -> np.ndarray:
        """Cross-encoder scores (see :meth:`Client.rerank`)."""
        inputs, outputs = rerank_request(query, passages)
        out = await self.infer(model, inputs, outputs, timeout=timeout, version=version)
        return rerank_scores(out, len(passages), model)

    async def generate(
        self, prompt: str, *, model: str = "llm", timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO, **sampling: Any,
    ) -> str:
        """The whole completion of ``prompt`` (see :meth:`Client.generate`; over gRPC a deadline or a cancelled task
        stops generation on the server)."""
        inputs = generation_inputs(prompt, Sampling.of(sampling), stream=False)
        if self.protocol == "http":
            return await self.generate_http(model, inputs, timeout=timeout)
        return await _joined(self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model))

    def stream(
        self,
        prompt: str,
        *,
        model: str = "llm",
        timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO,
        **sampling: Any,
    ) -> AsyncGenerator[str, None]:
        """Text pieces as they are generated (gRPC): ``async for piece in client.stream(...)``. Leaving the loop
        early (``aclose()``, or the task is cancelled) stops generation: upstream's ``stop`` goes to ``engine_model``
        as in :meth:`Client.stream`."""
        if self.protocol != "grpc":
            raise InvalidInputError("streaming needs gRPC: create the client with protocol='grpc'")
        inputs = generation_inputs(prompt, Sampling.of(sampling), stream=True)
        return self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model)

    async def chat(
        self, messages: Sequence[Mapping[str, Any]], *, model: str = "llm", timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO, **sampling: Any,
    ) -> str:
        """The answer to a conversation (see :meth:`Client.chat`)."""
        inputs = await self._chat_inputs(messages, sampling, model, timeout, stream=False)
        if self.protocol == "http":
            return await self.generate_http(model, inputs, timeout=timeout)
        return await _joined(self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model))

    def chat_stream(
        self, messages: Sequence[Mapping[str, Any]], *, model: str = "llm", timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO, **sampling: Any,
    ) -> AsyncGenerator[str, None]:
        """:meth:`chat` as text pieces (``async for``), as :meth:`stream`."""
        if self.protocol != "grpc":
            raise InvalidInputError("streaming needs gRPC: create the client with protocol='grpc'")
        return self._chat_stream(messages, sampling, model, timeout, engine_model)

    async def _chat_stream(
        self, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any], model: str,
        timeout: float | None, engine_model: str | None,
    ) -> AsyncGenerator[str, None]:
        inputs = await self._chat_inputs(messages, sampling, model, timeout, stream=True)
        stream = self.stream_text(model, inputs, timeout=timeout, engine_model=engine_model)
        async with contextlib.aclosing(stream) as pieces:
            async for piece in pieces:
                yield piece

    async def _chat_inputs(
        self, messages: Sequence[Mapping[str, Any]], sampling: Mapping[str, Any], model: str,
        timeout: float | None, *, stream: bool,
    ) -> dict[str, np.ndarray]:
        if model not in self._takes_messages:  # its config, read once per model and client (see Client.chat)
            self._takes_messages[model] = declares_messages(await self.model_config(model, timeout=timeout))
        return chat_inputs(messages, Sampling.of(sampling), stream=stream, with_messages=self._takes_messages[model])

    async def rag(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        min_score: float | None = None,
        engine_model: str | None = ENGINE_AUTO,
        **sampling: Any,
    ) -> RagAnswer:
        """The answer and its sources (see :meth:`Client.rag`)."""
        stream = self._rag(query, top_k, top_n, max_tokens, model, timeout, sampling, stream=False, min_score=min_score,
                           engine_model=engine_model)
        return await stream.answer()

    def rag_stream(
        self,
        query: str,
        *,
        top_k: int | None = None,
        top_n: int | None = None,
        max_tokens: int | None = None,
        model: str = "rag",
        timeout: float | None = None,
        engine_model: str | None = ENGINE_AUTO,
        min_score: float | None = None,
        **sampling: Any,
    ) -> AsyncRagStream:
        """``async for piece in stream``; ``await stream.wait_sources()`` (see :meth:`Client.rag_stream`). Leaving
        early (``aclose()``, or the task is cancelled) stops generation: upstream's ``stop`` goes to
        ``engine_model``."""
        return self._rag(query, top_k, top_n, max_tokens, model, timeout, sampling, stream=True, min_score=min_score,
                         engine_model=engine_model)

    def _rag(
        self,
        query: str,
        top_k: int | None,
        top_n: int | None,
        max_tokens: int | None,
        model: str,
        timeout: float | None,
        sampling: Mapping[str, Any],
        *,
        stream: bool,
        min_score: float | None = None,
        engine_model: str | None = None,
    ) -> AsyncRagStream:
        if self.protocol != "grpc":
            raise InvalidInputError("rag needs gRPC (the rag ensemble answers several responses): use protocol='grpc'")
        limits = {"top_k": top_k, "top_n": top_n, "max_tokens": max_tokens, "min_score": min_score}
        inputs = rag_inputs(query, **limits, sampling=sampling, stream=stream)
        deadline = self._timeout(timeout)
        return AsyncRagStream(
            lambda on_result: self.stream_text(
                model, inputs, timeout=deadline, engine_model=engine_model, on_result=on_result
            )
        )


async def _joined(pieces: AsyncGenerator[str, None]) -> str:
    """A whole completion from its stream, closed however the wait ends: a cancelled task's stream then sends the
    engine its stop (an async generator left to the garbage collector is closed late, or never)."""
    async with contextlib.aclosing(pieces) as stream:
        return "".join([piece async for piece in stream])
