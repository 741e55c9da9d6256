"""POST /respond and /respond/batch: comments answered through the dynamic batcher."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, HTTPException

from base.prompt import CommentInput
from responder.responder import Reply
from responder.service.batcher import Batcher, QueueFull
from responder.service.deps import BatcherDep, Protected, StateDep
from responder.service.schemas import RespondBatchRequest, RespondRequest, RespondResponse
from responder.service.state import ServiceState

router = APIRouter(dependencies=Protected)


@router.post("/respond", response_model=RespondResponse, summary="Answer one comment")
async def respond(body: RespondRequest, state: StateDep, batcher: BatcherDep) -> RespondResponse:
    state.metrics.queue_depth.set(batcher.depth + 1)
    return RespondResponse.of((await answer(state, batcher, [body.to_core()]))[0])


@router.post("/respond/batch", response_model=list[RespondResponse],
             summary="Answer a list of comments, in order")
async def respond_batch(body: RespondBatchRequest, state: StateDep, batcher: BatcherDep) -> list[RespondResponse]:
    items = body.root
    limit = state.settings.queue_size
    if len(items) > limit:
        raise HTTPException(413, f"batch has {len(items)} comments; this server takes at most "
                                 f"{limit} per request (RESPONDER_QUEUE_SIZE); split it")
    if not items:
        return []
    state.metrics.queue_depth.set(batcher.depth + len(items))
    return [RespondResponse.of(r) for r in await answer(state, batcher, [i.to_core() for i in items])]


async def answer(state: ServiceState, batcher: Batcher, requests: list[CommentInput]) -> list[Reply]:
    """Replies from the batcher; a full queue is 503 with Retry-After, a reply too late is 504."""
    try:
        return await batcher.submit_many(requests)
    except QueueFull as exc:
        state.metrics.rejected.inc()
        raise HTTPException(503, f"server busy: {exc}", headers={"Retry-After": str(exc.retry_after_s)})
    except asyncio.TimeoutError:
        raise HTTPException(504, f"no reply within {state.settings.request_timeout_s:g} s; retry later "
                                 "or raise RESPONDER_REQUEST_TIMEOUT_S") from None
    finally:
        state.metrics.queue_depth.set(batcher.depth)
