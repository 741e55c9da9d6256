"""Dynamic batching: concurrent requests gathered into one batched generate.

A request waits in a bounded queue. One worker task takes the oldest request, then keeps taking
more until the batch holds `max_batch_size` requests or `max_wait_ms` has passed since it started
gathering the batch, and runs the whole batch as ONE call of `process` in a worker thread, so the event
loop (and `/healthz`) keeps answering while the model computes.

- A full queue is refused at once (`QueueFull`, the service answers 503 with Retry-After).
- A request not answered within `timeout_s` raises `asyncio.TimeoutError` (the service answers
  504); if it has not started yet it is dropped from its batch instead of being computed for nobody.
- `may_start`, `yield_to` and `share` make a low-priority lane (/retrieve): a batch starts only when
  `may_start()` allows it, and while `yield_to()` is true (replies are generating) the worker rests
  after each batch so that it computes at most `share` of the time.
- `close()` refuses new requests (`ShuttingDown`); `fail_all()` answers every request still waiting
  or computing with an error (the end of the shutdown grace period).
- `in_flight` > 1 lets that many batches compute at once (the executor needs as many threads): for
  a generator on an engine that batches by itself (llama.cpp), the next comments are sent while
  the last ones are still generating, instead of waiting for the whole batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The queue has no room for the request(s); try again after `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class ShuttingDown(Exception):
    """The server is stopping: the request was refused, or not answered within the grace period."""

    def __init__(self) -> None:
        super().__init__("the server is shutting down; retry (another instance, or this one once restarted)")


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future


# `process` gets the items of one batch and returns one result per item, in order; a result that
# is an Exception instance fails that request alone.
Process = Callable[[Sequence[Any]], Sequence[Any]]


def _waiting(batch: list[_Pending]) -> bool:
    return any(not p.future.done() for p in batch)


class Batcher(Generic[T, R]):
    def __init__(self, process: Process, max_batch_size: int = 16, max_wait_ms: float = 250,
                 queue_size: int = 64, timeout_s: float = 300.0,
                 on_batch: Callable[[int, float], None] | None = None, name: str = "generate",
                 yield_to: Callable[[], bool] | None = None, share: float = 1.0,
                 may_start: Callable[[], bool] | None = None,
                 executor: concurrent.futures.Executor | None = None, in_flight: int = 1) -> None:
        self.process = process
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self.on_batch = on_batch  # called with (batch size, seconds) after each batch
        self.yield_to = yield_to
        self.share = share
        self.may_start = may_start
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        # One thread by default: batches run one after another, each using every core. The local
        # replies' lane is given the thread the model was loaded in (`model_thread.py`); it shuts it
        # down at stop. With `in_flight` > 1, a thread per batch in flight.
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(in_flight, thread_name_prefix=name)
        self._last_batch_s = 1.0
        self._current: list[list[_Pending]] = []  # the batches being computed
        self._slots = asyncio.Semaphore(in_flight)
        self._computing: set[asyncio.Task] = set()
        self.gathering = False  # holding requests while the batch fills up
        self.last_done = 0.0  # time.perf_counter() when the last batch was answered
        self.closed = False

    @property
    def busy(self) -> bool:
        """Computing a batch."""
        return bool(self._current)

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch being computed)."""
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.fail_all(ShuttingDown)  # nobody will answer what is still queued
        self._executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Take no new requests; those already queued are still computed."""
        self.closed = True

    def fail_all(self, error: Callable[[], BaseException]) -> int:
        """Answer every request still queued or computing with `error()`; how many there were."""
        failed = 0
        waiting = [p for batch in self._current for p in batch]
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(error())
                failed += 1
        return failed

    def retry_after_s(self) -> int:
        """A fair guess at when room frees up: batches ahead of the queue, times the last batch."""
        batches_ahead = 1 + self.depth // max(self.max_batch_size, 1)
        return max(1, round(batches_ahead * self._last_batch_s))

    async def submit(self, item: T) -> R:
        return (await self.submit_many([item]))[0]

    async def submit_many(self, items: Sequence[T]) -> list[R]:
        """Results for `items`, batched with whatever else is queued; all-or-nothing admission."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        if self.closed:
            raise ShuttingDown()
        if self._queue.qsize() + len(items) > self.queue_size:
            raise QueueFull(self.retry_after_s())
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        for p in pending:  # no await in between: admission cannot race another request
            self._queue.put_nowait(p)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(p.future for p in pending)),
                                               self.timeout_s))
        except (asyncio.TimeoutError, asyncio.CancelledError):
            for p in pending:  # not started yet: the worker skips cancelled requests
                p.future.cancel()
            raise

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            # The wait starts when the worker is free, not when the oldest request arrived: after a
            # long batch, the clients it just answered send their next comments within a few ms,
            # and they join this batch instead of forming a small one of their own.
            self.gathering = True
            try:
                await self._gather(batch)
                while self.may_start is not None and not self.may_start() and _waiting(batch):
                    await asyncio.sleep(0.02)  # a low-priority lane waits for its turn
            finally:
                self.gathering = False
            batch = [p for p in batch if not p.future.done()]  # timed out or cancelled while queued
            if not batch:
                continue
            await self._slots.acquire()
            self._current.append(batch)  # busy from now, and computing: submitted before any await
            running = loop.run_in_executor(self._executor, self.process, [p.item for p in batch])
            computing = loop.create_task(self._compute(batch, running, time.perf_counter()))
            self._computing.add(computing)  # the loop keeps only a weak reference to a task
            computing.add_done_callback(lambda task, batch=batch: self._computed(task, batch))
            if self._slots.locked():  # as many batches computing as allowed: wait for one
                elapsed = await computing
                if self.yield_to is not None and self.share < 1 and self.yield_to():
                    # Rest so that this lane computes at most `share` of the time (capped at 2 s a rest).
                    await asyncio.sleep(min(2.0, elapsed * (1 - self.share) / self.share))

    def _computed(self, task: asyncio.Task, batch: list[_Pending]) -> None:
        self._computing.discard(task)
        if batch in self._current:  # cancelled before it started
            self._current.remove(batch)
        self._slots.release()

    async def _gather(self, batch: list[_Pending]) -> None:
        """Add queued requests to `batch` until it is full or `max_wait_s` has passed."""
        assert self._queue is not None
        deadline = time.perf_counter() + self.max_wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                return

    async def _compute(self, batch: list[_Pending], running: asyncio.Future, start: float) -> float:
        """Answer one batch's requests once the worker thread has computed it (`running`); the seconds
        it took."""
        try:
            results = await running
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
            log.exception("batch of %d failed", len(batch))
            results = [exc] * len(batch)
        finally:
            self._current.remove(batch)
            self.last_done = time.perf_counter()
        elapsed = time.perf_counter() - start
        self._last_batch_s = elapsed
        if self.on_batch is not None:
            self.on_batch(len(batch), elapsed)
        for p, result in zip(batch, results):
            if p.future.done():
                continue
            if isinstance(result, BaseException):
                p.future.set_exception(result)
            else:
                p.future.set_result(result)
        return elapsed
