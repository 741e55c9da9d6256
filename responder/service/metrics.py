"""Prometheus metrics of the service, in the app's own registry (two apps in one process do not collide)."""

from __future__ import annotations

import time
from typing import Any


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("responder_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("responder_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
                                 registry=self.registry)
        self.batch_size = Histogram("responder_batch_size", "Comments per batched generate (static) or per decoding step (continuous)",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.batch_seconds = Histogram("responder_batch_seconds", "Seconds per batched generate",
                                       buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
                                       registry=self.registry)
        self.queue_depth = Gauge("responder_queue_depth", "Requests waiting for a batch",
                                 registry=self.registry)
        self.rejected = Counter("responder_rejected", "Requests refused because the queue was full",
                                registry=self.registry)
        self.refused = Counter("responder_refused", "Requests refused at the gate, before parsing",
                               ["reason"], registry=self.registry)
        self.tokens = Gauge("responder_tokens", "Tokens the model computed since it was loaded: prompt "
                            "(all of them), prompt_computed (less the cached prefix), generated",
                            ["kind"], registry=self.registry)
        self.retrieve_rejected = Counter("responder_retrieve_rejected",
                                         "/retrieve requests refused because its queue was full",
                                         registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_tokens(self, counts: Any) -> None:
        """The generator's token counts (`engine.generation.TokenCounts`), read at each scrape."""
        for kind, name in (("prompt", "prompt_tokens"), ("prompt_computed", "prompt_tokens_computed"),
                           ("generated", "generated_tokens")):
            self.tokens.labels(kind).set(getattr(counts, name))

    def exposition(self) -> tuple[bytes, str]:
        """The registry in Prometheus' text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class RequestCounter:
    """ASGI middleware: count every request by route template and status, and time it."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            name = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(name, str(status)).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - start)
