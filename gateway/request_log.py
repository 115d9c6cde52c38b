"""Each request's id and the one log line a failed request leaves.

A client's complaint could not be traced: failed requests were never logged (nothing configured logging, uvicorn's
access log is off), and no id tied a client's request to the gateway's log or Triton's (operations audit). Now:

- the id is the request's ``X-Request-Id`` when it sends a usable one (what a proxy or the caller set), else a new
  one; it comes back in the response's ``X-Request-Id``, and the Triton requests the gateway streams carry it as
  their prefix (Triton's verbose log and the engines' stop lines name it);
- a request answered with a status of 400 or more is logged once, at INFO for a 4xx and WARNING for a 5xx, with
  its method, route, model, status, error code and duration: never its body, prompt, or key.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

LOG = logging.getLogger("tritonforge.gateway.requests")
HEADER = b"x-request-id"
# what a proxy's or a client's id may be to be used as is: it goes into log lines and Triton's request ids
_USABLE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(scope: Any) -> str:
    """The request's id: its X-Request-Id when usable, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            text = value.decode("latin-1").strip()
            if _USABLE.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


def log_failure(scope: Any, status: int, seconds: float, model: str, route: str) -> None:
    """One line for a request answered with ``status`` >= 400 (what the route recorded in the scope's state)."""
    if status < 400:
        return
    state = scope.get("state", {})
    code = state.get("gw_error_code") or ""
    LOG.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "%s %s -> %d%s model=%s %.1f ms request=%s",
        scope.get("method", ""), route, status, f" {code}" if code else "", model or "-", seconds * 1000,
        state.get("gw_request_id", "-"),
    )
