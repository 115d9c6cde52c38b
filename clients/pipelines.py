"""Request builders and response readers for tritonforge's pipelines, shared by Client and AsyncClient.

Each pipeline's naming contract (see ensembles/) lives here once: which tensors to send, which to read back,
and how padding in the responses ("" ids, NaN scores) is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tritonforge.errors import ClientError, InvalidInputError
from tritonforge.values import is_whole


@dataclass(frozen=True)
class Hit:
    """One retrieved passage."""

    id: str
    score: float
    text: str


def _strings(values: Any, what: str) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise InvalidInputError(f"{what} must be a list of strings, not a single {type(values).__name__}")
    try:
        items = list(values)
    except TypeError:
        raise InvalidInputError(f"{what} must be a list of strings, got {type(values).__name__}") from None
    if not items:
        raise InvalidInputError(f"{what} is empty: give at least one string")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(f"{what}[{i}] is {type(item).__name__}, not str")
    return items


INT32_MAX = 2**31 - 1


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidInputError(f"{what} cannot be encoded as UTF-8 ({err.reason} at {err.start}): send text") from None


def _bytes_column(texts: list[str], what: str = "texts") -> np.ndarray:
    encoded = [[_utf8(t, f"{what}[{i}]")] for i, t in enumerate(texts)]
    return np.array(encoded, dtype=object).reshape(len(texts), 1)


def _count(value: int | None, name: str, n: int) -> np.ndarray | None:
    if value is None:
        return None
    if not is_whole(value) or not 1 <= value <= INT32_MAX:
        raise InvalidInputError(f"{name} must be an integer in [1, {INT32_MAX}], got {value!r}")
    return np.full((n, 1), int(value), dtype=np.int32)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# ------------------------------------------------------------------------------------------------------ search


def search_request(
    queries: Sequence[str], top_k: int | None, top_n: int | None = None, *, rerank: bool = True
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The search (``rerank`` False) or search_rerank request; ``top_n`` is the reranker's, refused without it
    rather than ignored."""
    if top_n is not None and not rerank:
        raise InvalidInputError(f"top_n={top_n!r} applies with rerank=True (the cross-encoder keeps top_n of the "
                                "top_k candidates); without it the search returns top_k hits")
    items = _strings(queries, "queries")
    inputs = {"QUERY": _bytes_column(items, "queries")}
    for name, value in (("TOP_K", top_k), ("TOP_N", top_n)):
        tensor = _count(value, name.lower(), len(items))
        if tensor is not None:
            inputs[name] = tensor
    return inputs, ["DOC_IDS", "SCORES", "DOCUMENTS"]


def search_results(out: Mapping[str, np.ndarray], n: int, model: str) -> list[list[Hit]]:
    try:
        ids, scores, docs = out["DOC_IDS"], out["SCORES"], out["DOCUMENTS"]
    except KeyError as err:
        raise ClientError(f"model '{model}' did not return {err.args[0]}") from None
    if ids.shape[0] != n or ids.shape != scores.shape or ids.shape != docs.shape:
        raise ClientError(f"model '{model}' returned mismatched shapes {ids.shape}, {scores.shape}, {docs.shape}")
    results = []
    for row in range(n):
        hits = []
        for col in range(ids.shape[1]):
            doc_id = _text(ids[row, col])
            if not doc_id:  # padding: this query has fewer results than the widest in the request
                break
            hits.append(Hit(doc_id, float(scores[row, col]), _text(docs[row, col])))
        results.append(hits)
    return results


# ------------------------------------------------------------------------------------------------------ rerank


def rerank_request(query: str, passages: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInputError(f"query must be a non-empty string, got {query!r}")
    items = _strings(passages, "passages")
    return {
        "QUERY": np.array([[_utf8(query, "query")]], dtype=object),
        "PASSAGES": np.array([[_utf8(p, f"passages[{i}]") for i, p in enumerate(items)]], dtype=object),
    }, ["SCORES"]


def counted_tokens(out: Mapping[str, np.ndarray]) -> int:
    """The tokens an embed or rerank ensemble counted (its NUM_TOKENS output, summed); 0 from one built without it."""
    counts = out.get("NUM_TOKENS")
    return int(np.asarray(counts).sum()) if counts is not None else 0


def rerank_scores(out: Mapping[str, np.ndarray], n: int, model: str) -> np.ndarray:
    scores = out.get("SCORES")
    if scores is None or scores.reshape(-1).shape[0] != n:
        shape = None if scores is None else list(scores.shape)
        raise ClientError(f"model '{model}' returned SCORES of shape {shape}, expected [1, {n}]")
    return np.asarray(scores, dtype=np.float32).reshape(n)
