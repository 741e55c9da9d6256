"""What the routes share: settings, the responder once loaded, its two queues, metrics, health facts.

With a responder given, the queues start with the app. Without one, the model loads in a
background task after startup, so `/healthz` and `/readyz` answer at once (`/readyz` is 503, and
`/respond` 503, until it is loaded; a loading error goes to the log, never to a caller).

Two queues, each with its own worker thread and bound (the replies' is the thread the model was
loaded in: `model_thread.py` says why):
- `batcher`: replies (`/respond`, `/respond/batch`), continuous batching (`continuous.py`) or
  batched generates (`batcher.py`, `--batching static`);
- `retrieval`: `/retrieve` alone. It never takes a place in the replies' queue; it never computes
  while replies gather a batch or just after one (when their clients send their next comments: a
  comment that arrived late would wait a whole batch more), and while replies generate it computes
  at most `retrieve_share` of the time. So a flood of /retrieve cannot slow replies down: it waits,
  then gets 503 when its small queue is full.

What the service says about itself (model, adapter, knowledge base) is names, never paths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from base.adapter_info import adapter_display_name
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, Passage
from engine.generation import LocalGenerator
from knowledge.triage import Triage, rule_triage
from knowledge.triage_policy import TriagePolicy
from responder.factory import ServingPlan
from responder.responder import Reply, Responder
from responder.service.batcher import Batcher, Process, ShuttingDown
from responder.service.continuous import ContinuousBatcher
from responder.service.metrics import Metrics
from responder.service.model_thread import ModelThread
from responder.service.settings import ServiceSettings
from responder.service.shutdown import chain_signal_handlers

log = logging.getLogger(__name__)

ReplyLane = Batcher | ContinuousBatcher

LOAD_FAILED = "the model could not be loaded; the reason is in the server log"
# After a reply batch is answered, its clients send their next comments: /retrieve waits this long
# (more than the batcher's gathering window) before it may compute again.
SETTLE_S = 1.0


def public_name(value: str | Path | None) -> str:
    """A model or adapter as callers may see it: a hub id as is, a local path by its last part
    (an adapter saved as `<run>/adapter` by its run's name)."""
    if not value:
        return ""
    text = str(value)
    if not text.startswith(("/", "~", ".", "\\")) and ":" not in text[:3]:
        return text
    return adapter_display_name(text)


Triager = Callable[[list[str]], list[Triage]]


class ServiceState:
    def __init__(self, settings: ServiceSettings, responder: Responder | None = None,
                 triage: Triager | None = None, plan: ServingPlan | None = None) -> None:
        self.settings = settings
        self.responder = responder
        self.plan = plan  # made by `serve` before it started us, or here while loading
        # The triage classifier (loaded with the model); with a responder given and none, exact rules only.
        self.triage = triage
        self.policy = TriagePolicy.parse(settings.triage_policy)  # a bad policy stops `serve` at once
        self.error: str | None = None  # the full loading error: logged, not shown
        self.metrics = Metrics()
        self.model_thread = ModelThread()  # loads the model, then computes the replies
        self.batcher: ReplyLane | None = None
        self.retrieval: Batcher | None = None
        self.model, self.adapter, self.quantization = self._names(plan)
        self.knowledge_base = "unknown"
        self.draining = False
        self._loader: asyncio.Task | None = None
        self._store_lock: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """At app startup: start the queues, or load the model in the background first."""
        self._loop = asyncio.get_running_loop()
        chain_signal_handlers(self._loop, self.begin_drain)
        if self.responder is not None:
            self._start_queues()
        else:
            self._loader = asyncio.create_task(self._load(), name="load-model")

    async def stop(self) -> None:
        if self._loader is not None and not self._loader.done():
            self._loader.cancel()
        for lane in (self.batcher, self.retrieval):
            if lane is not None:
                await lane.stop()
        self.model_thread.shutdown(wait=False, cancel_futures=True)
        close = getattr(getattr(self.responder, "generator", None), "close", None)
        if close is not None:  # an engine in a child process (llama.cpp) stops with the service
            await asyncio.to_thread(close)
        if self._store_lock is not None:
            self._store_lock.release()

    # --- graceful stop ----------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """SIGTERM: refuse new requests, finish queued ones for `shutdown_grace_s`, then 503 the rest."""
        if self.draining:
            return
        self.draining = True
        grace = self.settings.shutdown_grace_s
        log.warning("Stopping: answering queued requests for up to %g s", grace)
        for lane in (self.batcher, self.retrieval):
            if lane is not None:
                lane.close()
        asyncio.get_running_loop().call_later(grace, self._end_grace)

    def request_drain(self) -> None:
        """`begin_drain` from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.begin_drain)

    def _end_grace(self) -> None:
        failed = sum(lane.fail_all(ShuttingDown) for lane in (self.batcher, self.retrieval) if lane is not None)
        if failed:
            log.warning("Grace period over: %d request(s) answered 503", failed)

    # --- loading ----------------------------------------------------------------------------------
    async def _load(self) -> None:
        from knowledge.store import shared_lock
        from responder.factory import build_responder, build_triage, plan_serving

        settings = self.settings
        try:
            if self.plan is None:
                self.plan = await asyncio.to_thread(plan_serving, settings)
                self.model, self.adapter, self.quantization = self._names(self.plan)
            plan = self.plan
            self._store_lock = await asyncio.to_thread(shared_lock, plan.retrieval)
            self.responder = await asyncio.wrap_future(self.model_thread.submit(build_responder, settings, plan))
            if self.triage is None:
                self.triage = await asyncio.to_thread(build_triage, settings, self.responder.retriever)
            self._start_queues()
            log.warning("Model loaded: %s + %s (%s)", plan.base_model, plan.adapter_label, plan.quantization)
        except UserError as exc:
            self.error = str(exc)
            log.error("Error: %s", exc)
        except Exception as exc:  # noqa: BLE001 - logged; /healthz and /readyz say "not ready"
            self.error = f"loading the model failed: {exc.__class__.__name__}: {exc}"
            log.exception("loading the model failed")

    async def classify(self, comments: Sequence[str]) -> list[Triage | None]:
        """One verdict per comment: the exact rules, then the classifier (off the event loop) for the
        rest; None where no classifier is loaded and no rule decides."""
        verdicts = [rule_triage(c) for c in comments]
        pending = [i for i, v in enumerate(verdicts) if v is None]
        if pending and self.triage is not None:
            found = await asyncio.to_thread(self.triage, [comments[i] for i in pending])
            for i, verdict in zip(pending, found):
                verdicts[i] = verdict
        return verdicts

    def _names(self, plan: ServingPlan | None) -> tuple[str, str, str]:
        """(model, adapter, quantization) as /healthz names them: the plan's, else a given
        responder's generator's, else the settings'."""
        if plan is not None:
            return (public_name(plan.base_model), public_name(plan.adapter.path) if plan.adapter else "no adapter",
                    plan.quantization)
        gen = self.responder.generator if self.responder is not None else None
        model = getattr(gen, "model_name", None) or self.settings.base_model
        adapter = getattr(gen, "adapter_name", None) if gen is not None else self.settings.adapter
        return public_name(model), public_name(adapter) or "no adapter", self.settings.quantization

    def _start_queues(self) -> None:
        assert self.responder is not None
        self.knowledge_base = describe_knowledge_base(self.settings, self.responder)
        s = self.settings
        self.responder.max_comment_tokens = s.max_comment_tokens
        self.batcher = reply_lane(self.responder, s, self.metrics.observe_batch, self.model_thread)
        # Small batches: a retrieval already computing when a reply batch ends is short.
        self.retrieval = Batcher(retrieve_process(self.responder), max_batch_size=4, max_wait_ms=0,
                                 queue_size=s.retrieve_queue_size, timeout_s=s.retrieve_timeout_s,
                                 name="retrieve", yield_to=self._replies_busy, share=s.retrieve_share,
                                 may_start=self._retrieval_may_start)
        self.batcher.start()
        self.retrieval.start()

    def _replies_busy(self) -> bool:
        return self.batcher is not None and (self.batcher.busy or self.batcher.gathering or self.batcher.depth > 0)

    def _retrieval_may_start(self) -> bool:
        """While replies generate (the rests keep /retrieve to its share), or once they have been
        idle for SETTLE_S; never while they gather a batch or their clients are sending comments."""
        replies = self.batcher
        if replies is None or replies.busy:
            return True
        return not replies.gathering and replies.depth == 0 and time.perf_counter() - replies.last_done > SETTLE_S


def reply_lane(responder: Responder, s: ServiceSettings, on_batch: Callable[[int, float], None],
               model_thread: ModelThread) -> ReplyLane:
    """The replies' queue: continuous batching for the local model, unless static is asked for (or
    generation runs on a server that batches by itself). The local model computes in `model_thread`,
    where it was loaded; comments for a generator on llama.cpp's server (`server_batching`) go to it as
    they come, without waiting for the batch before them, into the engine's own continuous batching."""
    if s.batching == "continuous" and isinstance(responder.generator, LocalGenerator):
        return ContinuousBatcher(responder, s.max_batch_size, s.queue_size, s.request_timeout_s, on_batch,
                                 share_prefix=s.prefix_cache, executor=model_thread)
    if getattr(responder.generator, "server_batching", False):
        # No gathering: what is queued goes at once, up to one batch per slot of the server.
        return Batcher(batch_process(responder), s.max_batch_size, 0, s.queue_size, s.request_timeout_s,
                       on_batch, in_flight=s.max_batch_size)
    return Batcher(batch_process(responder), s.max_batch_size, s.max_wait_ms, s.queue_size,
                   s.request_timeout_s, on_batch, executor=model_thread)


def describe_knowledge_base(settings: ServiceSettings, responder: Responder) -> str:
    retriever = responder.retriever
    if retriever is None:
        return "none: no knowledge base was ingested (run `ingest`)"
    config = getattr(retriever, "config", None)
    if config is None:  # a retriever of a test or an embedding program
        return f"{'chroma server' if settings.chroma_url else 'embedded store'}, collection '{settings.collection}'"
    where = "chroma server" if config.chroma_url else "embedded store"
    return (f"{where}, collection '{config.collection}', top {responder.top_k} above similarity "
            f"{retriever.threshold():.2f}")


def batch_process(responder: Responder) -> Process:
    """The replies' `process`: one `respond_many` per batch. When it fails, the comments are answered
    one by one, so only the comment that fails gets the error (a generation server that is down
    fails them all at once: asking it again per comment would only wait longer)."""

    def one(request: CommentInput) -> Reply | Exception:
        try:
            return responder.respond_many([request])[0]
        except Exception as exc:  # noqa: BLE001 - this request's answer
            return exc

    def process(requests: Sequence[CommentInput]) -> list[Reply | Exception]:
        try:
            return list(responder.respond_many(requests))
        except UpstreamError as exc:
            return [exc] * len(requests)
        except Exception as exc:  # noqa: BLE001 - find the comment that fails
            if len(requests) == 1:
                return [exc]
            log.warning("batch of %d failed (%s: %s); answering its comments one by one",
                        len(requests), type(exc).__name__, exc)
            return [one(r) for r in requests]

    return process


def retrieve_process(responder: Responder) -> Process:
    """The /retrieve queue's `process`: passages per request; a failure fails that request alone."""

    def process(requests: Sequence[CommentInput]) -> list[list[Passage] | Exception]:
        out: list[list[Passage] | Exception] = []
        for request in requests:
            try:
                out.append(responder.retrieve(request))
            except Exception as exc:  # noqa: BLE001 - this request's answer
                out.append(exc)
        return out

    return process
