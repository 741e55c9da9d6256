"""POST /respond and /respond/batch: comments answered through the replies' lane (continuous or static).

Before a comment takes a place in the queue it is counted in model tokens (422 when over
`max_comment_tokens`); a /respond/batch body is refused (413) by its item count before any item
is validated.

Every comment is triaged before it is queued (exact rules, then the classifier) and the triage
policy applied: a comment whose intent is skipped (orders to the bot, spam; whatever
RESPONDER_TRIAGE_POLICY adds) is answered 200 with an empty reply, its intent and a fixed
`screened` reason, and never reaches the model. Every answer carries the intent, its confidence and
`needs_creator`.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request

from base.prompt import CommentInput
from knowledge.config import CONFIDENT_SIMILARITY
from knowledge.triage import Triage
from responder.responder import Reply, Responder
from responder.service.admission import submit
from responder.service.deps import BatcherDep, Protected, ResponderDep, StateDep
from responder.service.schemas import RespondBatchRequest, RespondRequest, RespondResponse
from responder.service.state import ReplyLane, ServiceState

router = APIRouter(dependencies=Protected)


@router.post("/respond", response_model=RespondResponse, summary="Answer one comment")
async def respond(body: RespondRequest, state: StateDep, responder: ResponderDep,
                  batcher: BatcherDep) -> RespondResponse:
    verdict = (await state.classify([body.comment]))[0]
    skipped = screen(state, responder, verdict)
    if skipped is not None:
        return skipped
    request = await checked(responder, body.to_core(), "body")
    state.metrics.queue_depth.set(batcher.depth + 1)
    return answered(state, (await answer(state, batcher, [request]))[0], verdict)


def screen(state: ServiceState, responder: Responder, verdict: Triage | None) -> RespondResponse | None:
    """The answer to a comment the policy does not draft, or None for one that goes to the model."""
    reason = state.policy.screened(verdict)
    if reason is None or verdict is None:
        return None
    generator = responder.generator
    return RespondResponse.skipped(generator.model_name, generator.adapter_name, verdict, reason,
                                   state.policy.needs_creator(verdict.intent))


def answered(state: ServiceState, reply: Reply, verdict: Triage | None) -> RespondResponse:
    """The response to a generated reply, with its intent and whether it needs the creator."""
    intent = verdict.intent if verdict else None
    best = max((p.similarity for p in reply.sources), default=None)
    return RespondResponse.of(reply, verdict, state.policy.needs_creator(intent, best, CONFIDENT_SIMILARITY))


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
    verdicts = await state.classify([item.comment for item in body.root])
    out: list[RespondResponse | None] = [screen(state, responder, v) for v in verdicts]
    requests = [await checked(responder, item.to_core(), f"body.{n}")
                for n, item in enumerate(body.root) if out[n] is None]
    if requests:
        state.metrics.queue_depth.set(batcher.depth + len(requests))
        replies = iter(await answer(state, batcher, requests))
        out = [r if r is not None else answered(state, next(replies), v) for r, v in zip(out, verdicts)]
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
