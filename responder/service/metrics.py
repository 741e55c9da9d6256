"""Prometheus metrics of the service, in the app's own registry (two apps in one process do not collide)."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

from fastapi import Request, Response


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("responder_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("responder_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
                                 registry=self.registry)
        self.batch_size = Histogram("responder_batch_size", "Comments per batched generate",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.batch_seconds = Histogram("responder_batch_seconds", "Seconds per batched generate",
                                       buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
                                       registry=self.registry)
        self.queue_depth = Gauge("responder_queue_depth", "Requests waiting for a batch",
                                 registry=self.registry)
        self.rejected = Counter("responder_rejected", "Requests refused because the queue was full",
                                registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


CallNext = Callable[[Request], Awaitable[Response]]


def request_counter(metrics: Metrics) -> Callable[[Request, CallNext], Awaitable[Any]]:
    """HTTP middleware: count every request by route template and status, and time it."""

    async def count(request: Request, call_next: CallNext) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            name = getattr(route, "path", "unmatched")
            metrics.requests.labels(name, str(status)).inc()
            metrics.latency.labels(name).observe(time.perf_counter() - start)

    return count
