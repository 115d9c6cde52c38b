"""The Triton side of ``/v1/embeddings``: a request's texts as chunks of ``embed_batch_size`` Triton requests, at
most ``embed_requests_in_flight`` of them at a time.

One chunk at a time left every encoder instance but one idle while a large request (an indexing job sends hundreds
of texts at once) waited for its chunks in turn; chunks in flight together run on every instance, and the dynamic
batcher may join them into fuller executions. The bound keeps one large request from filling the encoder's queue
ahead of everyone else's. Measured (tests/bench/probe_embed_chunks.py, cpu target, two encoder instances, 512 texts):
one chunk at a time 1.91 s, two 1.13 s, four 1.06 s; beside 16 small requests in flight, those kept 325.5, 257.5 and
168.5 sentences/s. Two is the default: most of the gain, a bounded share of the encoder.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from tritonforge.errors import BatchTooLargeError
from tritonforge.gateway.errors import APIError
from tritonforge.triton.bounded import chunked, gather_bounded

if TYPE_CHECKING:
    from tritonforge.gateway.state import Gateway


async def embed_texts(gw: Gateway, ensemble: str, texts: list[str], version: str) -> tuple[np.ndarray, int]:
    """The float32 rows of ``texts`` in order, and the tokens the ensemble counted (NUM_TOKENS; 0 if it has none).

    Chunks are no larger than the ensemble's max_batch_size either (read once, and again when Triton refuses a chunk
    as larger: the model was reloaded with a smaller one), so an ``embed_batch_size`` above a model's limit costs
    nothing but smaller chunks. A chunk that fails cancels the chunks not yet answered, and its error is the
    request's."""
    if len(texts) == 1:  # fits any max_batch_size: no limit to read
        return await _embed_chunks(gw, ensemble, texts, version, 1)
    try:
        limit = await gw.client.max_batch_size(ensemble, version=version, timeout=gw.timeout)
        return await _embed_chunks(gw, ensemble, texts, version, limit)
    except BatchTooLargeError:
        limit = await gw.client.max_batch_size(ensemble, version=version, timeout=gw.timeout, refresh=True)
        return await _embed_chunks(gw, ensemble, texts, version, limit)


async def _embed_chunks(
    gw: Gateway, ensemble: str, texts: list[str], version: str, limit: int
) -> tuple[np.ndarray, int]:
    size = min(gw.models.embed_batch_size, limit) if limit > 0 else gw.models.embed_batch_size
    results = await gather_bounded(
        [functools.partial(_embed_chunk, gw, ensemble, chunk, version) for chunk in chunked(texts, size)],
        gw.models.embed_requests_in_flight,
    )
    rows = results[0][0] if len(results) == 1 else np.concatenate([rows for rows, _ in results])
    return rows, sum(tokens for _, tokens in results)


async def _embed_chunk(gw: Gateway, ensemble: str, chunk: list[str], version: str) -> tuple[np.ndarray, int]:
    tensor = np.array([[t.encode("utf-8")] for t in chunk], dtype=object).reshape(len(chunk), 1)
    out = await gw.client.infer(ensemble, {"TEXT": tensor}, timeout=gw.timeout, version=version)
    emb = out.get("EMBEDDING")
    if emb is None:
        raise APIError(502, f"ensemble '{ensemble}' returned no EMBEDDING", type="server_error")
    rows = np.asarray(emb, np.float32).reshape(len(chunk), -1)
    tokens = int(np.asarray(out["NUM_TOKENS"]).sum()) if out.get("NUM_TOKENS") is not None else 0
    return rows, tokens
