"""The model's thread: where the service loads the model, and where every reply is computed after.

PyTorch's OpenMP (libgomp) gives each thread that starts parallel work a team of threads of its
own. A model loaded in one thread and run in another leaves two teams: more OpenMP threads than
cores, so libgomp throttles their spinning, and each of a forward pass's hundreds of parallel
regions waits for threads to wake up. Measured with the continuous batch in one process (float32,
2 cores, 64 comments, 16 at a time): 6.1 replies/s loaded and decoded in one thread, 5.5 loaded in
one and decoded in another (4.8 without `base.clikit.keep_compute_threads_spinning`).

`ModelThread` is a one-thread `Executor` whose thread is a daemon, as the reply lane's thread was:
the process does not wait at exit for a model call in flight (a long prefill).
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any


class ModelThread(concurrent.futures.Executor):
    """Runs what it is given in one daemon thread, in order."""

    def __init__(self, name: str = "model") -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future, Callable[..., Any], tuple, dict] | None] = \
            queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        with self._lock:
            if self._closed:
                raise RuntimeError("the model's thread has been shut down")
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._jobs.put((future, fn, args, kwargs))
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            if cancel_futures:
                while True:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is not None:
                        job[0].cancel()
            self._jobs.put(None)  # after the jobs already queued
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args, kwargs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # noqa: BLE001 - the caller's to handle, through the future
                future.set_exception(exc)
