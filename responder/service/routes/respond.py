"""POST /respond and /respond/batch: comments answered through the replies' lane (continuous or static).

Before a comment takes a place in the queue it is counted in model tokens (422 when over
`max_comment_tokens`); a /respond/batch body is refused (413) by its item count before any item
is validated.

A comment that gives the bot orders (chat-template tags, "ignore previous instructions", "reply
only with ...", in several languages) or is spam (wallets, phone numbers, messenger contacts,
self-promotion) is caught by triage's exact rules before it is queued: it is answered 200 with an
empty reply, its intent and a fixed `screened` reason, and never reaches the model.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request

from base.prompt import CommentInput
from knowledge.triage import NEVER_DRAFTED
from knowledge.triage_rules import match_rule
from responder.responder import Reply, Responder
from responder.service.admission import submit
from responder.service.deps import BatcherDep, Protected, ResponderDep, StateDep
from responder.service.schemas import RespondBatchRequest, RespondRequest, RespondResponse
from responder.service.state import ReplyLane, ServiceState

router = APIRouter(dependencies=Protected)


@router.post("/respond", response_model=RespondResponse, summary="Answer one comment")
async def respond(body: RespondRequest, state: StateDep, responder: ResponderDep,
                  batcher: BatcherDep) -> RespondResponse:
    skipped = screen(responder, body.comment)
    if skipped is not None:
        return skipped
    request = await checked(responder, body.to_core(), "body")
    state.metrics.queue_depth.set(batcher.depth + 1)
    return RespondResponse.of((await answer(state, batcher, [request]))[0])


def screen(responder: Responder, comment: str) -> RespondResponse | None:
    """The answer to a comment that must not be drafted, or None for one that goes to the model."""
    rule = match_rule(comment)
    if rule is None or rule.intent not in NEVER_DRAFTED:
        return None
    generator = responder.generator
    return RespondResponse.skipped(generator.model_name, generator.adapter_name, rule.intent, rule.reason)


async def cap_batch_items(request: Request, state: StateDep) -> None:
    """413 for a list longer than the queue, before its items are validated (the body is parsed
    JSON by now, bounded by the body limit)."""
    if "json" not in request.headers.get("content-type", ""):
        return
    try:
        items = await request.json()  # cached: FastAPI validates this same parsed body next
    except ValueError:
        return  # FastAPI reports the broken JSON
    limit = state.settings.queue_size
    if isinstance(items, list) and len(items) > limit:
        raise HTTPException(413, f"batch has {len(items)} comments; this server takes at most "
                                 f"{limit} per request (RESPONDER_QUEUE_SIZE); split it")


@router.post("/respond/batch", response_model=list[RespondResponse], dependencies=[Depends(cap_batch_items)],
             summary="Answer a list of comments, in order")
async def respond_batch(body: RespondBatchRequest, state: StateDep, responder: ResponderDep,
                        batcher: BatcherDep) -> list[RespondResponse]:
    if not body.root:
        return []
    out: list[RespondResponse | None] = [screen(responder, item.comment) for item in body.root]
    requests = [await checked(responder, item.to_core(), f"body.{n}")
                for n, item in enumerate(body.root) if out[n] is None]
    if requests:
        state.metrics.queue_depth.set(batcher.depth + len(requests))
        replies = iter(await answer(state, batcher, requests))
        out = [r if r is not None else RespondResponse.of(next(replies)) for r in out]
    return out


async def checked(responder: Responder, request: CommentInput, where: str) -> CommentInput:
    """The request if its comment fits the model (tokenized off the event loop when long), else 422."""
    long = len(request.comment.encode("utf-8")) >= responder.max_comment_tokens
    problem = await asyncio.to_thread(responder.too_long, request.comment) if long else None
    if problem:
        raise HTTPException(422, f"{where}.comment: {problem}")
    return request


async def answer(state: ServiceState, batcher: ReplyLane, requests: list[CommentInput]) -> list[Reply]:
    """Replies from the batcher; a full queue is 503 with Retry-After, a reply too late is 504."""
    try:
        return await submit(batcher, requests, "replies", "reply", "RESPONDER_REQUEST_TIMEOUT_S",
                            on_full=state.metrics.rejected.inc)
    finally:
        state.metrics.queue_depth.set(batcher.depth)
