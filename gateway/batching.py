"""Joining concurrent ``/v1/embeddings`` requests into fewer Triton requests.

Every Triton request costs the gateway about 1 ms of CPU (gRPC's aio client, its polling thread) and Triton a
dispatch through the ensemble and each of its steps, whatever its size: at 16 small requests in flight that fixed
cost is what put the gateway at 0.91-0.94 of plain gRPC (docs/performance.md, probe_gateway_cpu.py). So the gateway
keeps at most ``max_calls`` Triton requests in flight per ensemble and version; a request that arrives while they
are all out waits in a queue, and the next call takes everything queued (up to ``max_rows`` texts) in one tensor.

No timer: a request finding a free call goes at once, so a lone request is never delayed; requests only wait when
they would otherwise wait in Triton's queue. A joined call that fails for a reason that could be one request's input
(a 400) is retried request by request, so one bad request never fails the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tritonforge.errors import ClientError
from tritonforge.gateway.errors import APIError, from_client_error

# (ensemble, inputs, version) -> outputs by name: the gateway's AsyncClient.infer with its timeout bound
Infer = Callable[[str, dict[str, np.ndarray], str], Awaitable[dict[str, Any]]]
# requests joined in one Triton call, observed per call (the gateway's metrics)
Observe = Callable[[str, int], None]


@dataclass
class Embedded:
    """One request's rows: its vectors and, when the ensemble counts them, the tokens of each text."""

    vectors: np.ndarray
    tokens: np.ndarray | None


@dataclass
class _Waiting:
    texts: list[str]
    done: asyncio.Future[Embedded]


@dataclass
class _Lane:
    """The queue and the calls in flight of one (ensemble, version)."""

    queue: deque[_Waiting] = field(default_factory=deque)
    in_flight: int = 0


class EmbeddingBatcher:
    """Embeds texts through an ensemble, joining requests that overlap in time (see the module's docstring).

    ``max_calls`` 0 turns joining off: every request is its own Triton call, as a plain client would send it.
    """

    def __init__(self, infer: Infer, *, max_rows: int, max_calls: int, observe: Observe | None = None) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows} must be >= 1")
        if max_calls < 0:
            raise ValueError(f"max_calls={max_calls} must be >= 0 (0: no joining)")
        self._infer, self.max_rows, self.max_calls = infer, max_rows, max_calls
        self._observe = observe
        self._lanes: dict[tuple[str, str], _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def embed(self, ensemble: str, texts: list[str], version: str = "") -> Embedded:
        """The embeddings of ``texts`` (at most ``max_rows`` of them: the caller cuts longer inputs)."""
        if not 0 < len(texts) <= self.max_rows:
            raise ValueError(f"{len(texts)} texts: between 1 and max_rows={self.max_rows} per call")
        if self.max_calls == 0:
            return await self._call_one(ensemble, version, texts)
        lane = self._lanes.setdefault((ensemble, version), _Lane())
        waiting = _Waiting(texts, asyncio.get_running_loop().create_future())
        lane.queue.append(waiting)
        self._start_calls(ensemble, version, lane)
        return await waiting.done

    def _start_calls(self, ensemble: str, version: str, lane: _Lane) -> None:
        while lane.in_flight < self.max_calls and lane.queue:
            batch, rows = [], 0
            while lane.queue and rows + len(lane.queue[0].texts) <= self.max_rows:
                waiting = lane.queue.popleft()
                if waiting.done.done():  # its HTTP request went away (cancelled) while it waited
                    continue
                batch.append(waiting)
                rows += len(waiting.texts)
            if not batch:
                continue
            lane.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._call_joined(ensemble, version, lane, batch))
            self._tasks.add(task)  # a reference until it ends (the loop keeps only weak ones)
            task.add_done_callback(self._tasks.discard)

    async def _call_joined(self, ensemble: str, version: str, lane: _Lane, batch: list[_Waiting]) -> None:
        try:
            if self._observe is not None:
                self._observe(ensemble, len(batch))
            try:
                result = await self._call_one(ensemble, version, [t for w in batch for t in w.texts])
            except Exception as err:  # every waiting request hears of it: none may hang
                if len(batch) > 1 and _maybe_one_input(err):
                    await asyncio.gather(*(self._settle_alone(ensemble, version, w) for w in batch))
                else:
                    for w in batch:
                        _settle(w.done, error=err)
                return
            start = 0
            for w in batch:
                end = start + len(w.texts)
                tokens = None if result.tokens is None else result.tokens[start:end]
                _settle(w.done, Embedded(result.vectors[start:end], tokens))
                start = end
        finally:
            for w in batch:  # only when this task was cancelled (the gateway stopping): no request may hang
                _settle(w.done, error=APIError(503, "the gateway stopped before Triton answered", type="server_error",
                                               code="service_unavailable", retry_after=1))
            lane.in_flight -= 1
            self._start_calls(ensemble, version, lane)

    async def _settle_alone(self, ensemble: str, version: str, waiting: _Waiting) -> None:
        try:
            _settle(waiting.done, await self._call_one(ensemble, version, waiting.texts))
        except Exception as err:  # handed to the request that waits for it
            _settle(waiting.done, error=err)

    async def _call_one(self, ensemble: str, version: str, texts: list[str]) -> Embedded:
        tensor = np.array([t.encode("utf-8") for t in texts], dtype=object).reshape(len(texts), 1)
        out = await self._infer(ensemble, {"TEXT": tensor}, version)
        emb = out.get("EMBEDDING")
        if emb is None:
            raise APIError(502, f"ensemble '{ensemble}' returned no EMBEDDING", type="server_error")
        vectors = np.asarray(emb, np.float32).reshape(len(texts), -1)
        counts = out.get("NUM_TOKENS")
        tokens = None if counts is None else np.asarray(counts).reshape(len(texts), -1)[:, 0]
        return Embedded(vectors, tokens)


def _maybe_one_input(err: BaseException) -> bool:
    """Whether a joined call's failure may come from one request's texts (Triton refused an input: a 400), not
    from the server (overloaded, unavailable, deadline, model not loaded), which would fail each alone too."""
    if isinstance(err, APIError):
        return err.status == 400
    return isinstance(err, ClientError) and from_client_error(err).status == 400


def _settle(done: asyncio.Future[Embedded], result: Embedded | None = None, *, error: BaseException | None = None
            ) -> None:
    if done.done():  # cancelled: nobody waits for it any more
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)  # type: ignore[arg-type]
