"""What the gateway takes on at once: requests in flight (in all, and per API key) and the bytes of their bodies.

Without these, the only bound was Triton's queues: the encoder's sheds load (429), but the LLM engine takes every
request into its own queue and the tokenizer's queue is unbounded, so an LLM burst waited minutes instead of being
refused, one key could hold every slot, and 350 bodies of 3.7 MiB (each refused with a 400 after parsing) took the
gateway to 1.36 GB, past the 1 GiB its Kubernetes pod may use (operations audit). Over a bound the gateway answers
429 with ``Retry-After: 1`` at once, as TGI's ``--max-concurrent-requests`` does.

Raw ASGI, as :class:`~tritonforge.gateway.app.ContainErrors` and for the same reason (no per-response copying).
A request counts from its arrival until its response (a stream: its last event) is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tritonforge.gateway.auth import KeyChecker
from tritonforge.gateway.errors import APIError, error_response
from tritonforge.gateway.schemas import TICKET, GatewayLimits

# the routes that run models: listing models, health, metrics and the admin API are cheap and stay reachable (a
# full gateway still answers its probes and its scrape)
ADMITTED = frozenset(("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank"))


def _too_many(message: str) -> APIError:
    return APIError(429, message, type="rate_limit_error", code="rate_limit_exceeded", retry_after=1)


@dataclass
class Ticket:
    """One admitted request: the body bytes it holds against the shared budget (given back when it ends)."""

    admission: Admission
    body_bytes: int = 0

    def take_body(self, size: int) -> None:
        """Count ``size`` more bytes of this request's body; a 429 when the bodies in flight would pass the budget
        (a body is read in chunks: its Content-Length, when given, is taken at once)."""
        budget = self.admission.limits.body_bytes_in_flight
        if self.admission.body_bytes + size > budget:
            raise _too_many(
                f"the gateway is holding {self.admission.body_bytes} bytes of request bodies, and this one's "
                f"{self.body_bytes + size} would pass its limit of {budget}: retry shortly"
            )
        self.admission.body_bytes += size
        self.body_bytes += size


@dataclass
class Admission:
    """The middleware: counts what is in flight and refuses what would pass ``limits``."""

    app: Any
    limits: GatewayLimits
    # whether the gateway checks API keys: without them a bearer token is whatever a client sends, and counting
    # each apart let any client pass the per-key limit by sending a new one (docs audit); all count as one then
    keyed: bool = True
    in_flight: int = 0
    body_bytes: int = 0
    by_key: dict[str, int] = field(default_factory=dict)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in ADMITTED:
            await self.app(scope, receive, send)
            return
        key = _bearer(scope) if self.keyed else ""
        refused = self._refusal(key)
        if refused is not None:
            scope.setdefault("state", {})["gw_error_code"] = refused.code  # for the request's log line
            await error_response(refused)(scope, receive, send)
            return
        ticket = Ticket(self)
        scope.setdefault("state", {})[TICKET] = ticket
        self.in_flight += 1
        self.by_key[key] = self.by_key.get(key, 0) + 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.body_bytes -= ticket.body_bytes
            left = self.by_key[key] - 1
            if left:
                self.by_key[key] = left
            else:
                del self.by_key[key]  # keys seen once do not pile up

    def _refusal(self, key: str) -> APIError | None:
        if self.in_flight >= self.limits.requests_in_flight:
            return _too_many(
                f"the gateway has {self.in_flight} requests in flight, its limit: retry shortly"
            )
        per_key = self.limits.requests_in_flight_per_key
        if per_key and self.by_key.get(key, 0) >= per_key:
            return _too_many(
                f"this API key has {per_key} requests in flight, the limit per key: wait for one to finish"
            )
        return None


def _bearer(scope: Any) -> str:
    """The request's bearer token, the identity its per-key count is kept under on a gateway with API keys ("" without
    one; an unknown key is refused by the route, and counts only against itself meanwhile)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return KeyChecker.bearer(value.decode("latin-1")) or ""
    return ""

