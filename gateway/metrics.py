"""Prometheus metrics: requests and latency per route, model and status; split arms and their guards."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tritonforge.gateway.errors import CLIENT_CLOSED_REQUEST
from tritonforge.gateway.request_log import HEADER, log_failure, request_id
from tritonforge.gateway.splits import Choice, SplitRouter
from tritonforge.triton.streams import REQUEST_LABEL

LOG = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ metrics


_ROUTES = (
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/rerank", "/v1/models", "/health", "/ready",
    "/live", "/metrics",
)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.in_flight = Gauge("tritonforge_gateway_requests_in_flight", "HTTP requests being answered (streams "
                               "until their last event)", registry=self.registry)
        self.stream_errors = Counter(
            "tritonforge_gateway_stream_errors", "Streams that failed after their 200 was sent, by the status of the "
            "failure (the request counts as 200 in tritonforge_gateway_requests)", ["route", "model", "status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "tritonforge_gateway_requests", "HTTP requests by route, model and status",
            ["route", "model", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "tritonforge_gateway_request_seconds", "Request latency (to the last byte) by route and model",
            ["route", "model"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.arm_requests = Counter(
            "tritonforge_gateway_split_requests", "Requests per split arm", ["split", "arm"], registry=self.registry
        )
        self.arm_errors = Counter(
            "tritonforge_gateway_split_errors", "Failed requests per split arm (5xx, or Triton failed the call)",
            ["split", "arm"], registry=self.registry,
        )
        self.arm_latency = Histogram(
            "tritonforge_gateway_split_request_seconds", "Latency (to the last byte) per split arm",
            ["split", "arm"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.trips = Counter(
            "tritonforge_gateway_split_trips", "Times a split's guard tripped", ["split"], registry=self.registry
        )

    def watch(self, router: SplitRouter) -> None:
        """Export the router's live state (tripped, shares, window error rates) at every scrape."""
        self.registry.register(_SplitCollector(router))

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _SplitCollector:
    """Gauges computed from the router's state when Prometheus scrapes."""

    def __init__(self, router: SplitRouter) -> None:
        self.router = router

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        tripped = GaugeMetricFamily(
            "tritonforge_gateway_split_tripped", "1 when the split's guard tripped (all traffic to control)",
            labels=["split"],
        )
        tripped_at = GaugeMetricFamily(
            "tritonforge_gateway_split_tripped_timestamp_seconds", "When the split's guard tripped (unix time)",
            labels=["split", "reason"],
        )
        share = GaugeMetricFamily(
            "tritonforge_gateway_split_share", "Share of new traffic each arm receives now", labels=["split", "arm"]
        )
        rate = GaugeMetricFamily(
            "tritonforge_gateway_split_window_error_rate", "Error rate over the guard window (treatment arms)",
            labels=["split", "arm"],
        )
        ok = GaugeMetricFamily(
            "tritonforge_gateway_splits_config_ok", "0 when the last split configuration offered was refused"
        )
        for state in self.router.states():
            status = state.status()
            tripped.add_metric([state.name], float(status["tripped"]))
            if status["tripped"]:
                tripped_at.add_metric([state.name, status["tripped_reason"] or ""], status["tripped_at"] or 0.0)
            for arm, info in status["arms"].items():
                share.add_metric([state.name, arm], info["share"])
                if info["window_error_rate"] is not None:
                    rate.add_metric([state.name, arm], info["window_error_rate"])
        ok.add_metric([], float(self.router.last_error is None))
        yield from (tripped, tripped_at, share, rate, ok)


class MetricsMiddleware:
    """Raw ASGI middleware: counts and times every request until its last byte (streams included).

    For a request routed through a split (``state.gw_choice``), it adds the ``x-tritonforge-split``/``-arm``
    response headers and records the arm's outcome (an error: status >= 500, or ``state.gw_upstream_error``).
    """

    def __init__(self, app: Any, metrics: Metrics, known: Callable[[str], bool], router: SplitRouter) -> None:
        self.app, self.metrics, self.known, self.router = app, metrics, known, router

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]
        rid = request_id(scope)
        scope.setdefault("state", {})["gw_request_id"] = rid
        token = REQUEST_LABEL.set(rid)  # the Triton requests it streams carry it (streams.py)
        self.metrics.in_flight.inc()

        started: list[bool] = []
        completed: list[bool] = []  # the response's last body message went out

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                completed.append(True)
            if message["type"] == "http.response.start":
                started.append(True)
                status[0] = message["status"]
                headers = [*message.get("headers", []), (HEADER, rid.encode())]
                choice: Choice | None = scope.get("state", {}).get("gw_choice")
                if choice is not None:
                    headers += [(b"x-tritonforge-split", choice.split.name.encode()),
                                (b"x-tritonforge-arm", choice.arm.name.encode())]
                message = {**message, "headers": headers}
            await send(message)

        cut = False
        try:
            await self.app(scope, receive, send_wrapper)
        except asyncio.CancelledError:
            cut = True
            if not started:  # cut by the stop's grace: ContainErrors (outside) answers 503, not the default 500
                status[0] = 503
            raise
        finally:
            REQUEST_LABEL.reset(token)
            self.metrics.in_flight.dec()
            path = scope.get("path", "")
            route = path if path in _ROUTES else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
            state = scope.get("state", {})
            requested = state.get("gw_model_requested", "")
            model = requested if requested and self.known(requested) else ("" if not requested else "unknown")
            seconds = time.perf_counter() - start
            self.metrics.requests.labels(route, model, str(status[0])).inc()
            self.metrics.latency.labels(route, model).observe(seconds)
            failed_in_stream = state.get("gw_upstream_status")  # its 200 was on the wire when it failed
            if started and not completed and not cut and not failed_in_stream and status[0] < 400:
                failed_in_stream = CLIENT_CLOSED_REQUEST  # the client left mid-stream (it counted as a plain 200)
            if status[0] < 400 and failed_in_stream:
                self.metrics.stream_errors.labels(route, model, str(failed_in_stream)).inc()
            log_failure(scope, failed_in_stream if status[0] < 400 and failed_in_stream else status[0], seconds,
                        model, route)
            picked: Choice | None = state.get("gw_choice")
            if picked is not None:
                failed = status[0] >= 500 or bool(state.get("gw_upstream_error"))
                unavailable = (state.get("gw_upstream_status") or status[0]) == 503
                labels = (picked.split.name, picked.arm.name)
                self.metrics.arm_requests.labels(*labels).inc()
                self.metrics.arm_latency.labels(*labels).observe(seconds)
                if failed:
                    self.metrics.arm_errors.labels(*labels).inc()
                if picked.split.record(picked.arm.name, failed, unavailable=unavailable):
                    self.metrics.trips.labels(picked.split.name).inc()
