"""What the routes share: settings, the responder once loaded, the batcher, metrics, and health facts.

With a responder given, the batcher starts with the app. Without one, the model loads in a
background task after startup, so `/healthz` and `/readyz` answer at once (`/readyz` is 503, and
`/respond` 503 with the loading error if any, until it is loaded).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from base.errors import UserError
from base.prompt import CommentInput
from base.settings import Settings
from responder.responder import Reply, Responder
from responder.service.batcher import Batcher, Process
from responder.service.metrics import Metrics

log = logging.getLogger(__name__)


class ServiceState:
    def __init__(self, settings: Settings, responder: Responder | None = None) -> None:
        self.settings = settings
        self.responder = responder
        self.error: str | None = None
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.model = settings.base_model
        self.adapter = str(settings.adapter) if settings.adapter else "no adapter"
        self.quantization = settings.quantization
        self.knowledge_base = "unknown"
        self._loader: asyncio.Task | None = None

    async def start(self) -> None:
        """At app startup: start the batcher, or load the model in the background first."""
        if self.responder is not None:
            self._start_batcher()
        else:
            self._loader = asyncio.create_task(self._load(), name="load-model")

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        if self.batcher is not None:
            await self.batcher.stop()

    async def _load(self) -> None:
        from responder.factory import build_responder, describe_knowledge_base, plan_serving

        settings = self.settings
        try:
            plan = await asyncio.to_thread(plan_serving, settings)
            self.model, self.adapter, self.quantization = plan.base_model, plan.adapter_label, plan.quantization
            self.knowledge_base = describe_knowledge_base(settings)
            self.responder = await asyncio.to_thread(build_responder, settings)
            self._start_batcher()
            log.warning("Model loaded: %s + %s (%s)", self.model, self.adapter, self.quantization)
        except UserError as exc:
            self.error = str(exc)
            log.error("Error: %s", exc)
        except Exception as exc:  # noqa: BLE001 - reported in /healthz and /readyz, not swallowed
            self.error = f"loading the model failed: {exc.__class__.__name__}: {exc}"
            log.exception("loading the model failed")

    def _start_batcher(self) -> None:
        assert self.responder is not None
        gen = self.responder.generator
        self.model = getattr(gen, "model_name", self.model)
        self.adapter = getattr(gen, "adapter_name", None) or self.adapter
        if self.knowledge_base == "unknown":
            self.knowledge_base = "attached" if self.responder.retriever is not None else "none"
        s = self.settings
        self.batcher = Batcher(batch_process(self.responder), s.max_batch_size, s.max_wait_ms, s.queue_size,
                               s.request_timeout_s, self.metrics.observe_batch)
        self.batcher.start()


def batch_process(responder: Responder) -> Process:
    """The batcher's `process`: one `respond_many` per batch; if it raises, every request gets the error."""

    def process(requests: Sequence[CommentInput]) -> list[Reply | Exception]:
        try:
            return list(responder.respond_many(requests))
        except Exception as exc:  # noqa: BLE001 - one failure answers the whole batch
            return [exc] * len(requests)

    return process
