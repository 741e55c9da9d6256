"""A graceful stop: on SIGTERM (or Ctrl-C) queued requests are answered within a grace period.

Uvicorn, on SIGTERM, stops accepting connections and waits for the requests in flight. Without
more, a request queued behind a long batch was still waiting when the container was killed
(Docker's `stop` kills 10 s after SIGTERM) and got no answer at all. Here the signal also starts
`ServiceState.begin_drain`: new requests are refused (503), the queues keep being computed for
`shutdown_grace_s`, and whatever is still unanswered then gets 503, so every request has an answer
before the process is killed.

The handler is chained in front of the server's own (uvicorn installs one per process, also in
`--workers N` mode); in a thread (tests) or under a server that installed none, nothing is chained.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def chain_signal_handlers(loop: asyncio.AbstractEventLoop, on_signal: Callable[[], None]) -> bool:
    """Call `on_signal` (in the event loop) on SIGTERM/SIGINT, then the server's handler; True if chained."""
    if threading.current_thread() is not threading.main_thread():
        return False
    chained = False
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        if not callable(previous) or previous is signal.default_int_handler:
            continue  # no server handler to chain to: leave the signal's default alone

        def handler(signum: int, frame: FrameType | None, previous: Callable = previous) -> None:
            loop.call_soon_threadsafe(on_signal)
            previous(signum, frame)

        signal.signal(sig, handler)
        chained = True
    return chained
