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
import logging
import math
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tritonforge.clients.pipelines import counted_tokens
from tritonforge.errors import BatchTooLargeError, ClientError, DeadlineExceededError, TransientError
from tritonforge.gateway.errors import APIError
from tritonforge.triton.bounded import chunked, gather_bounded

if TYPE_CHECKING:
    from tritonforge.gateway.state import Gateway

LOG = logging.getLogger(__name__)

# a `dimensions` that disagrees with a width known for longer than this re-reads the model's config first (the model
# may have been reloaded with another width): bad requests cost at most one config read per model this often
WIDTH_REFRESH_SECONDS = 5.0


class Embedded(NamedTuple):
    """A request's rows in order, the tokens the ensemble counted (NUM_TOKENS; 0 from one built without it), and per
    text the tokens embedded with whether the text was cut to the model's length (TRUNCATED; None without it)."""

    rows: np.ndarray
    tokens: int
    lengths: np.ndarray | None
    truncated: np.ndarray | None


async def embed_texts(gw: Gateway, ensemble: str, texts: list[str], version: str) -> Embedded:
    """The float32 rows of ``texts`` in order, with their token counts and truncation flags.

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


async def _embed_chunks(gw: Gateway, ensemble: str, texts: list[str], version: str, limit: int) -> Embedded:
    size = min(gw.models.embed_batch_size, limit) if limit > 0 else gw.models.embed_batch_size
    results = await gather_bounded(
        [functools.partial(_embed_chunk, gw, ensemble, chunk, version) for chunk in chunked(texts, size)],
        gw.models.embed_requests_in_flight,
    )
    if len(results) == 1:
        return results[0]
    lengths, truncated = [r.lengths for r in results], [r.truncated for r in results]
    return Embedded(
        np.concatenate([r.rows for r in results]), sum(r.tokens for r in results),
        None if any(x is None for x in lengths) else np.concatenate(lengths),  # type: ignore[arg-type]
        None if any(x is None for x in truncated) else np.concatenate(truncated),  # type: ignore[arg-type]
    )


async def _embed_chunk(gw: Gateway, ensemble: str, chunk: list[str], version: str) -> Embedded:
    tensor = np.array([[t.encode("utf-8")] for t in chunk], dtype=object).reshape(len(chunk), 1)
    out = await gw.infer_client.infer(ensemble, {"TEXT": tensor}, timeout=gw.timeout, version=version)
    emb = out.get("EMBEDDING")
    if emb is None:
        raise APIError(502, f"ensemble '{ensemble}' returned no EMBEDDING", type="server_error")
    rows = np.asarray(emb, np.float32).reshape(len(chunk), -1)
    lengths, truncated = out.get("NUM_TOKENS"), out.get("TRUNCATED")
    return Embedded(
        rows, counted_tokens(out),
        None if lengths is None else np.asarray(lengths).reshape(-1),
        None if truncated is None else np.asarray(truncated, dtype=bool).reshape(-1),
    )


def truncation_error(embedded: Embedded, model: str) -> APIError | None:
    """OpenAI's 400 for an input over the model's context, where the ensemble cut it (TRUNCATED): an indexing job
    relies on it to split long documents, and a silent cut left everything past the model's length (256 tokens for
    MiniLM, ~1,000 characters) out of the index (gateway audit). None when nothing was cut."""
    if embedded.truncated is None or not embedded.truncated.any():
        return None
    cut = [int(i) for i in np.flatnonzero(embedded.truncated)]
    limit = f"{int(embedded.lengths[cut[0]])} tokens" if embedded.lengths is not None else "its length"
    which = ", ".join(f"input[{i}]" for i in cut[:5]) + (f" and {len(cut) - 5} more" if len(cut) > 5 else "")
    return APIError(400, f"This model's maximum context length is {limit}, and {which} "
                    f"{'is' if len(cut) == 1 else 'are'} longer: split or shorten {'it' if len(cut) == 1 else 'them'}"
                    f", or send \"truncate_prompt_tokens\": -1 to embed the first {limit} of each "
                    f"(`{model}`)", param="input", code="context_length_exceeded")


def dimensions_error(width: int, model: str) -> APIError:
    return APIError(400, f"'dimensions' must be {width} for `{model}` (no truncation)", param="dimensions",
                    code="unsupported_parameter")


async def embedding_width(gw: Gateway, ensemble: str, version: str, wanted: int) -> int | None:
    """The width of ``ensemble``'s embeddings if known before it runs, to refuse a wrong ``dimensions`` up front
    (None: not known, the request runs and its rows tell).

    Cached per (ensemble, version) like the other model facts the gateway keeps: read from the model's config (the
    EMBEDDING output's dims) the first time a request asks for ``dimensions``, and confirmed by every embedding the
    gateway returns (``remember_width``), so a request with the right value costs nothing after the first. Only a
    request that disagrees with an entry older than WIDTH_REFRESH_SECONDS re-reads the config."""
    key = (ensemble, version)
    entry = gw.embedding_widths.get(key)
    if entry is not None and (entry[0] == wanted or time.monotonic() - entry[1] < WIDTH_REFRESH_SECONDS):
        return entry[0]
    try:
        config = await gw.client.model_config(ensemble, version, timeout=gw.timeout)
    except (TransientError, DeadlineExceededError):
        raise  # Triton is down or slow: the embedding would fail the same way, after a second wait
    except ClientError as err:  # e.g. the model-config API restricted: the embedding's rows will tell
        LOG.debug("embedding width of %s: %s", ensemble, err)
        config = {}
    width = config_width(config)
    gw.embedding_widths[key] = (width, time.monotonic())
    return width


def remember_width(gw: Gateway, ensemble: str, version: str, width: int) -> None:
    gw.embedding_widths[(ensemble, version)] = (width, time.monotonic())


def config_width(config: dict[str, Any]) -> int | None:
    """The row width of the EMBEDDING output a Triton config declares; None when a dim is variable (-1) or there is
    no such output. Without batching (max_batch_size 0) the first dim is the batch's."""
    for output in config.get("output", []):
        if output.get("name") != "EMBEDDING":
            continue
        try:
            dims = [int(d) for d in output.get("dims", [])]  # int64s: strings in Triton's JSON
        except (TypeError, ValueError):
            return None
        if not int(config.get("max_batch_size", 0) or 0):
            dims = dims[1:]
        return math.prod(dims) if dims and all(d > 0 for d in dims) else None
    return None
