"""The gateway's Prometheus metrics: requests by route and status code, and how long each took, at `GET /metrics`.

A plain ASGI middleware times every request and labels it with the route's template
(`/v1/triggers/{request_id}`, never the id itself), so the labels stay bounded. `/metrics` is left
out of the OpenAPI schema: it is for Prometheus, not for API clients. With several server processes
(`trigger gateway --workers N`), each writes to the directory `PROMETHEUS_MULTIPROC_DIR` names and
`/metrics` answers with their sum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED = "unmatched"
"""The route label of a request no route matched (a 404 for an unknown path)."""

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf"))
"""Seconds: an enqueue answers in about a millisecond; a slow Redis shows up in the upper buckets."""


class GatewayMetrics:
    """The gateway's metric objects, in a registry of the app's own (two apps in one process never clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trigger_gateway_requests", "HTTP requests answered.", ["route", "code"], registry=self.registry
        )
        self.duration = Histogram(
            "trigger_gateway_request_duration_seconds",
            "Time from a request's arrival to its answer.",
            ["route"],
            registry=self.registry,
            buckets=BUCKETS,
        )

    def observe(self, route: str, code: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(route, str(code)).inc()
        self.duration.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        """The text Prometheus scrapes: this process's metrics, or every server process's summed."""
        path = os.environ.get(MULTIPROC_ENV)
        if not path:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        summed = CollectorRegistry()
        multiprocess.MultiProcessCollector(summed, path)
        return generate_latest(summed)


class MetricsMiddleware:
    """Times each HTTP request and counts it by route template and status code."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, answered = time.perf_counter(), [500]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe(route_of(scope), answered[0], time.perf_counter() - started)


def route_of(scope: Scope) -> str:
    """The matched route's path template, or `UNMATCHED`."""
    return getattr(scope.get("route"), "path", None) or UNMATCHED


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's metrics."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
