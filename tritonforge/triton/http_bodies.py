"""Triton's HTTP infer bodies as tritonclient makes and reads them, for the two keep-alive transports of our own
(blocking_http for the synchronous client, keepalive_http for the asyncio one): one copy of what goes out and how a
reply is read, so both raise what tritonclient's HTTP clients raise and the one error mapping reads it unchanged."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def infer_request(
    http_module: Any,
    inputs: list[Any],
    outputs: list[Any] | None,
    *,
    request_id: str,
    parameters: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of one infer call; ``http_module`` is tritonclient.http (or its aio), whose ``inputs`` and
    ``outputs`` these are (binary tensors)."""
    body, json_size = http_module.InferenceServerClient.generate_request_body(
        inputs, outputs, request_id=request_id, parameters=dict(parameters) if parameters else None
    )
    sent = {"Content-Type": "application/octet-stream", **(headers or {})}
    if json_size is not None:
        sent["Inference-Header-Content-Length"] = str(json_size)
    return body, sent


def infer_result(http_module: Any, status: int, headers: Mapping[bytes, bytes], body: bytes,
                 verbose: bool = False) -> Any:
    """``InferResult`` of a reply (``headers`` lower-cased); a refusal raised as tritonclient raises it."""
    if status != 200:
        raise refusal(status, body)
    length, encoding = headers.get(b"inference-header-content-length"), headers.get(b"content-encoding")
    return http_module.InferResult.from_response_body(body, verbose, int(length) if length else None,
                                                      encoding.decode() if encoding else None)


def refusal(status: int, body: bytes) -> Exception:
    """The exception tritonclient's HTTP clients raise for a non-200 reply (Triton's ``{"error": ...}``)."""
    from tritonclient.utils import InferenceServerException

    try:
        message = json.loads(body)["error"] if body else "client received an empty response from the server."
    except (ValueError, KeyError, TypeError):
        message = f"unreadable error response: {body[:200]!r}"
    return InferenceServerException(msg=str(message), status=str(status))
