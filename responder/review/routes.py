"""The review page's routes: the page, one POST per draft action, and posting (dry run, then for real)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from base.errors import UpstreamError, UserError
from responder.jobs.screening import repeats_of
from responder.review import drafts_view as dv
from responder.review.review import Review

router = APIRouter()


def get_review(request: Request) -> Review:
    return request.app.state.review


ReviewDep = Annotated[Review, Depends(get_review)]


class Action(BaseModel):
    reply: str | None = Field(None, max_length=20_000)
    shown: list[str] = Field(default_factory=list, max_length=50)  # the flags the page showed


def _error(exc: Exception) -> JSONResponse:
    if isinstance(exc, UpstreamError):
        return JSONResponse({"detail": str(exc)}, status_code=502)
    return JSONResponse({"detail": str(exc)}, status_code=409)


@router.get("/", response_class=HTMLResponse)
def page(review: ReviewDep, status: Annotated[str, Query()] = "drafts",
         intent: Annotated[str, Query()] = "all") -> HTMLResponse:
    status = status if status in dv.FILTERS else "drafts"
    intent = intent if intent in dv.INTENT_FILTERS else "all"
    try:
        records = review.drafts.load()
        states = review.ledger_states()
    except UserError as exc:
        return HTMLResponse(review.render("error.html", message=str(exc)), status_code=409)
    repeats = repeats_of(records, review.config.sign_off)
    views = [dv.view(r, review.config.sign_off, states.get(str(r.get("comment_id"))),
                     repeats.get(str(r.get("comment_id")), 1)) for r in records]
    in_status = dv.in_review_order([v for v in views if dv.keep(v.state, status)])
    shown = [v for v in in_status if dv.intent_matches(v, intent)]
    return HTMLResponse(review.render("page.html", drafts=shown, counts=dv.counts(records), status=status,
                                      filters=dv.FILTERS, intent=intent, intent_counts=dv.intent_counts(in_status),
                                      path=str(review.drafts.path)))


def _answer(review: Review, record: dict[str, Any]) -> dict[str, Any]:
    records = review.drafts.load()
    cid = str(record.get("comment_id"))
    repeats = repeats_of(records, review.config.sign_off).get(cid, 1)
    return {"card": review.card(record, review.ledger_states().get(cid), repeats), "counts": dv.counts(records),
            "state": dv.draft_state(record)}


@router.post("/api/drafts/{comment_id}/{action}")
def act(comment_id: str, action: str, body: Action, review: ReviewDep) -> Any:
    sign_off = review.config.sign_off
    try:
        if action == "approve":
            record = review.change(comment_id, lambda r: dv.approve(r, body.shown))
        elif action == "edit":
            text = (body.reply or "").strip()
            if not text:
                raise UserError("the reply is empty; write a reply, or Reject the draft")

            def apply(r: dict[str, Any]) -> None:  # the new text's flags, with its comment and sources
                dv.edit(r, text, dv.view({**r, "reply": text, "status": "answered"}, sign_off).flags)

            record = review.change(comment_id, apply)
        elif action == "reject":
            record = review.change(comment_id, dv.reject)
        elif action == "uncite":
            record = review.change(comment_id, dv.uncite)
        elif action == "regenerate":
            record = review.regenerate(comment_id)
        else:
            return JSONResponse({"detail": f"unknown action '{action}'"}, status_code=404)
    except (UserError, UpstreamError) as exc:
        return _error(exc)
    return _answer(review, record)


@router.get("/api/post")
def post_preview(review: ReviewDep) -> Any:
    from responder.jobs.posting import dry_run, summary_rows

    try:
        summary = dry_run(review.drafts.path, budget=review.config.budget, channel_id=review.channel_id(),
                          sign_off=review.config.sign_off)
    except UserError as exc:
        return _error(exc)
    return {"would_post": summary.would_post, "rows": summary_rows(summary, dry_run=True)}


@router.post("/api/post")
def post_now(review: ReviewDep) -> Any:
    from responder.jobs.posting import post_replies, summary_rows
    from responder.youtube.auth import post_token

    if not review.post_lock.acquire(blocking=False):
        return JSONResponse({"detail": "a post is already running; wait for it"}, status_code=409)
    try:
        access = post_token(review.env)
        summary = post_replies(review.drafts.path, yes=True, budget=review.config.budget,
                               api_base=review.config.api_base, token=access.token,
                               channel_id=review.config.channel_id or access.channel_id or None,
                               sign_off=review.config.sign_off, backoff_s=0.5)
    except UserError as exc:
        return _error(exc)
    finally:
        review.post_lock.release()
    return {"posted": summary.posted, "stopped": summary.stopped, "rows": summary_rows(summary, dry_run=False)}
