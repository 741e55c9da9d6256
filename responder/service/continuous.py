"""Continuous batching of replies: a comment joins the running batch at the next decoding step.

The replies' lane when `batching = "continuous"` (the default for the local backend), with the
static `Batcher`'s interface and rules (a bounded queue refused with `QueueFull`, a timeout per
request, `close` and `fail_all` for the drain), over a `engine.inflight.ContinuousDecoder`.

One worker loops, in the thread the model was loaded in (`model_thread.py`): take waiting
comments (as many as the batch has room for), prepare them (check, retrieve, fit:
`Responder.prepare`), then decode one step for every reply in the batch with the new comments
prefilled in the same forward pass (into an empty batch, or with a model that cannot, they are
prefilled first, in a pass of their own); a reply that ends is answered at once. A comment that
cannot be prepared or prefilled fails alone (a joining step that fails leaves the batch as it was
and its comments join apart; a joining group that fails is retried comment by comment); a step
that fails fails the replies in the batch, and the lane goes on. A request that timed out or was
cancelled leaves the batch at the next step, so nothing is computed for nobody.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from engine.inflight import ContinuousDecoder, FusedJoinFailed
from base.prompt import CommentInput
from responder.responder import Responder
from responder.service.batcher import QueueFull, ShuttingDown
from responder.service.model_thread import ModelThread

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    request: CommentInput
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)
    item: CommentInput | None = None  # once prepared
    joined: float = 0.0
    drafts: list[tuple[Any, str]] = field(default_factory=list)  # (verdict, raw) of each draft (base.redraft)
    intent: str | None = None  # the comment's triage, once a draft is judged


class ContinuousBatcher:
    def __init__(self, responder: Responder, max_batch_size: int = 16, queue_size: int = 64,
                 timeout_s: float = 300.0, on_batch: Callable[[int, float], None] | None = None,
                 share_prefix: bool = True, executor: concurrent.futures.Executor | None = None) -> None:
        self.responder = responder
        self.decoder = ContinuousDecoder(responder.generator, responder.style, share_prefix)  # type: ignore[arg-type]
        self.max_batch_size = max_batch_size
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.on_batch = on_batch  # called with (replies in the batch, seconds) after each step
        self._waiting: collections.deque[_Request] = collections.deque()
        self._joining: list[_Request] = []  # taken from the queue, being prepared and prefilled
        self._lock = threading.Lock()  # guards _waiting between the event loop and the worker
        self._wake = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = executor or ModelThread("generate")  # the worker's thread, shut down at stop
        self._worker: concurrent.futures.Future | None = None
        self._stopping = False
        self._reply_s = 5.0  # how long a reply takes, for Retry-After
        self.closed = False
        self.gathering = False  # never holds requests back: they join at the next step
        self.last_done = 0.0

    # --- what the service reads -------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Requests waiting to join the batch."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        return self.decoder.size > 0

    def retry_after_s(self) -> int:
        rounds = 1 + self.depth // max(self.max_batch_size, 1)
        return max(1, round(rounds * self._reply_s))

    # --- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._worker is None:
            self._loop = asyncio.get_running_loop()
            self._worker = self._executor.submit(self._run)

    async def stop(self) -> None:
        """Stop the worker after its current model call (a long prefill is not waited for: the
        thread is a daemon, and everyone still waiting is answered now)."""
        self._stopping = True
        self._wake.set()
        if self._worker is not None:
            await asyncio.to_thread(concurrent.futures.wait, [self._worker], 2.0)
            self._worker = None
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.fail_all(ShuttingDown)

    def close(self) -> None:
        """Take no new requests; those already queued or decoding are still answered."""
        self.closed = True

    def fail_all(self, error: Callable[[], BaseException]) -> int:
        """Answer every request still waiting or decoding with `error()`; how many there were."""
        with self._lock:
            pending = list(self._waiting) + list(self._joining) + [row.tag for row in self.decoder.rows]
        failed = 0
        for p in pending:
            if not p.future.done():
                p.future.set_exception(error())
                failed += 1
        return failed

    # --- admission (event loop) -------------------------------------------------------------------
    async def submit(self, item: CommentInput) -> Any:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[CommentInput]) -> list[Any]:
        """Replies to `items`, each decoded in the running batch; all-or-nothing admission."""
        if self._loop is None:
            raise RuntimeError("ContinuousBatcher.start() was not called")
        if self.closed:
            raise ShuttingDown()
        with self._lock:
            if len(self._waiting) + len(items) > self.queue_size:
                raise QueueFull(self.retry_after_s())
            pending = [_Request(item, self._loop.create_future()) for item in items]
            self._waiting.extend(pending)
        self._wake.set()
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(p.future for p in pending)), self.timeout_s))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            for p in pending:  # the worker drops them, waiting or decoding
                p.future.cancel()
            raise

    # --- the worker thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            try:
                self._turn()
            except Exception:  # noqa: BLE001 - the lane must outlive any one turn
                log.exception("the reply lane's worker hit an error; going on")

    def _turn(self) -> None:
        """Let waiting comments join, drop replies nobody waits for, decode one step."""
        self._wake.clear()  # before looking at the queue: a comment queued after this wakes the wait below
        joining = self._prepare(self._take(self.max_batch_size - self.decoder.size))
        if self._stopping:
            return
        self.decoder.drop([row.tag for row in self.decoder.rows if row.tag.future.done()])
        if joining and self.decoder.size and self.decoder.fuses_joins:
            self._step(joining)  # they join inside the step: the batch waits for no prefill of theirs
            self._joined()
            return
        if joining:
            self._join(joining)
            self._joined()
        if self.decoder.size == 0:
            self._wake.wait(0.5)
            return
        self._step()

    def _take(self, room: int) -> list[_Request]:
        taken: list[_Request] = []
        with self._lock:
            while self._waiting and len(taken) < room:
                p = self._waiting.popleft()
                if not p.future.done():  # timed out or cancelled while waiting
                    taken.append(p)
            self._joining = list(taken)
        return taken

    def _prepare(self, taken: list[_Request]) -> list[_Request]:
        """Check, retrieve and fit each comment (`Responder.prepare`); one that fails, fails alone."""
        ready: list[_Request] = []
        for p in taken:
            if p.item is not None:  # a redraft: prepared already
                ready.append(p)
                continue
            try:
                p.item = self.responder.prepare(p.request)
                ready.append(p)
            except Exception as exc:  # noqa: BLE001 - this request's answer
                self._settle(p, exc)
        return ready

    def _joined(self) -> None:
        """The comments taken are in the batch (or answered): `fail_all` finds them there now."""
        with self._lock:
            self._joining = []

    def _join(self, ready: list[_Request]) -> None:
        """Prefill the comments into the batch in a pass of their own; one that fails, fails alone."""
        groups = [ready] if ready else []
        while groups:
            group = groups.pop()
            try:
                self._stamp(group)
                self._answer(self.decoder.join([p.item for p in group], group))
            except Exception as exc:  # noqa: BLE001 - find the comment that fails
                if len(group) == 1:
                    log.warning("a comment failed to join the batch: %s: %s", type(exc).__name__, exc)
                    self._settle(group[0], exc)
                else:
                    groups += [[p] for p in group]

    @staticmethod
    def _stamp(joining: list[_Request]) -> None:
        now = time.perf_counter()
        for p in joining:
            p.joined = p.joined or now  # a redraft keeps its first join: generate_ms counts every draft

    def _step(self, joining: list[_Request] | None = None) -> None:
        """One decoding step, with `joining` prefilled in it; a step that fails fails the batch."""
        joining = joining or []
        self._stamp(joining)
        start = time.perf_counter()
        size = self.decoder.size + len(joining)
        try:
            finished = self.decoder.step([p.item for p in joining], joining)
        except FusedJoinFailed as exc:
            log.warning("%d comments could not join inside the decoding step (%s); prefilling them apart",
                        len(joining), exc)
            self._join(joining)
            self._step()
            return
        except Exception as exc:  # noqa: BLE001 - every reply in the batch gets the error
            log.exception("a decoding step of %d replies failed", size)
            for p in [*self.decoder.reset(), *joining]:
                self._settle(p, exc)
            return
        if self.on_batch is not None:
            self.on_batch(size, time.perf_counter() - start)
        self._answer(finished)

    def _answer(self, finished: list[tuple[_Request, str]]) -> None:
        now = time.perf_counter()
        for p, raw, weak in self._kept(finished):
            assert p.item is not None
            timings = {"queue_ms": round((p.joined - p.queued) * 1000, 1),
                       "generate_ms": round((now - p.joined) * 1000, 1)}
            self._settle(p, self.responder.reply(p.item, raw, timings, weak))
            self._reply_s = 0.8 * self._reply_s + 0.2 * (now - p.joined)
        if finished:
            self.last_done = now

    def _kept(self, finished: list[tuple[_Request, str]]) -> list[tuple[_Request, str, str | None]]:
        """The finished replies to answer now, each with why it is still weak (None: fine). The drafts
        of one step are judged together (`base.redraft`, one triage call for their comments and one
        for their replies); a weak one goes back to the front of the queue to be decoded once more,
        opening differently, its drafts so far kept on it."""
        drafter = self.responder.drafter
        judged = [(p, raw) for p, raw in finished if drafter.active and not p.future.done()]
        kept = [(p, raw, None) for p, raw in finished if not drafter.active or p.future.done()]
        if not judged:
            return kept
        first = [p for p, _ in judged if not p.drafts]
        for p, intent in zip(first, drafter.intents([p.item for p in first])):
            p.intent = intent
        verdicts = drafter.judge([p.item for p, _ in judged], [raw for _, raw in judged], [p.intent for p, _ in judged])
        for (p, raw), verdict in zip(judged, verdicts):
            assert p.item is not None
            p.drafts.append((verdict, raw))
            if drafter.settled(p.drafts, p.item.comment):
                chosen, text = drafter.choose(p.drafts, p.item.comment)
                kept.append((p, text, chosen.reason))
                continue
            drafter.drafts_written += 1
            p.item = drafter.again(p.item, raw)
            with self._lock:
                self._waiting.appendleft(p)
            self._wake.set()
        return kept

    def _settle(self, p: _Request, result: Any) -> None:
        """Answer `p` from the worker thread (futures belong to the event loop)."""
        assert self._loop is not None

        def settle() -> None:
            if p.future.done():
                return
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed: the server has stopped, nobody to answer
            pass
