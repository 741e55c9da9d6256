"""A place in a queue, or a clear refusal: what `/respond`, `/respond/batch` and `/retrieve` share.

- queue full: 503 with Retry-After (the replies' and /retrieve's queues are separate);
- stopping: 503 with Retry-After;
- not answered within the queue's timeout: 504.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Sequence

from fastapi import HTTPException

from responder.service.batcher import Batcher, QueueFull, ShuttingDown
from responder.service.continuous import ContinuousBatcher


async def submit(batcher: Batcher | ContinuousBatcher, items: Sequence[Any], what: str, noun: str, timeout_hint: str,
                 on_full: Callable[[], None] = lambda: None) -> list[Any]:
    """Results of `items` from `batcher`; `what` names the queue in a refusal ("replies", "retrieval"),
    `noun` what was not answered in time ("reply")."""
    try:
        return await batcher.submit_many(items)
    except QueueFull as exc:
        on_full()
        raise HTTPException(503, f"server busy: {what} {exc}", headers={"Retry-After": str(exc.retry_after_s)})
    except ShuttingDown as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    except asyncio.TimeoutError:
        raise HTTPException(504, f"no {noun} within {batcher.timeout_s:g} s; retry later or raise "
                                 f"{timeout_hint}") from None
