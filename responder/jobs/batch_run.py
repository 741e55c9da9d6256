"""The resumable batch runner behind `responder batch`.

The output file is the run's only state: one line (JSONL) or row (CSV) per comment, appended,
flushed and fsync'd batch by batch. A re-run with the same output skips every comment id already
in it, so a killed run resumes where it stopped and no id is ever written twice. A `kill -9` in the
middle of a write can leave an incomplete last line: it is cut off on the next run (a complete line
is never dropped); a damaged line anywhere else is reported, not guessed at.

Replies come from anything with `respond_many(list[CommentInput]) -> list[Reply]`: the
in-process `Responder`, or `HttpResponder` for a running `responder serve`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from base.errors import UpstreamError, UserError
from base.prompt import CommentInput
from base.reply_figures import ASKING, misfit_reason, stock_reason
from base.replychecks import without_sign_off
from knowledge.config import CONFIDENT_SIMILARITY
from knowledge.triage import Triage, rule_triage
from knowledge.triage_policy import TriagePolicy, draft_rank
from responder.jobs.reply_log import ANSWERED, ReplyLog, record
from responder.jobs.screening import source_texts
from responder.responder import CommentFailed, Reply, validate_comment
from responder.youtube.export import Comment

log = logging.getLogger(__name__)


class Answerer(Protocol):
    def respond_many(self, requests: Sequence[CommentInput]) -> list[Reply]: ...


Triager = Callable[[list[str]], list[Triage]]
# Skip reasons the selection gives from triage's exact rules: their records carry the rule's intent.
RULE_SKIPS = frozenset({"instructions", "likely-spam"})


# ----------------------------------------------------------------------------------------- runner

@dataclass
class Summary:
    answered: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    already_done: int = 0
    left_for_later: int = 0  # selected but beyond --limit
    not_selected: int = 0  # an intent outside --only
    needs_creator: int = 0  # answered, and marked for the creator's attention
    answering_s: float = 0.0
    repaired_bytes: int = 0

    @property
    def per_minute(self) -> float:
        attempted = self.answered + sum(self.failed.values())
        return attempted / self.answering_s * 60 if self.answering_s > 0 else 0.0


@dataclass
class Plan:
    """What one run does: skips to record, comments to answer now (drafting order), the rest counted."""

    skips: list[tuple[Comment, str]]
    todo: list[Comment]
    already_done: int = 0
    left_for_later: int = 0  # beyond --limit
    not_selected: int = 0  # an intent outside --only: a later run drafts them
    verdicts: dict[str, Triage] = field(default_factory=dict)


def plan(selected: Iterable[tuple[Comment, str | None]], done: set[str], limit: int | None,
         triage: Triager | None = None, policy: TriagePolicy | None = None,
         only: frozenset[str] | None = None) -> Plan:
    """Which comments this run records as skipped and which it answers, questions first.

    A comment id seen twice in the input (overlapping page exports) is recorded once. With `triage`
    (texts -> one Triage each), the comments to answer are triaged in one call: the policy skips
    some intents, `only` leaves the intents it does not name for a later run, and the rest are
    answered in `DRAFT_ORDER` (file order within an intent), so `--limit` takes questions first.
    """
    policy = policy or TriagePolicy()
    result = Plan([], [])
    candidates: list[Comment] = []
    seen: set[str] = set()
    for comment, reason in selected:
        if comment.comment_id in seen:
            continue
        seen.add(comment.comment_id)
        if comment.comment_id in done:
            result.already_done += 1
        elif reason is not None:
            result.skips.append((comment, reason))
            decided = rule_triage(comment.text) if reason in RULE_SKIPS else None
            if decided is not None:
                result.verdicts[comment.comment_id] = decided
        else:
            candidates.append(comment)
    if triage is not None and candidates:
        result.verdicts.update(zip((c.comment_id for c in candidates), triage([c.text for c in candidates])))
    for comment in candidates:
        verdict = result.verdicts.get(comment.comment_id)
        reason = policy.skip_reason(verdict.intent) if verdict else None
        if reason is not None:
            result.skips.append((comment, reason))
        elif only is not None and (verdict is None or verdict.intent not in only):
            result.not_selected += 1
        else:
            result.todo.append(comment)
    if result.verdicts:
        result.todo.sort(key=lambda c: draft_rank(_intent_of(result.verdicts, c)))
    if limit is not None and len(result.todo) > limit:
        result.left_for_later = len(result.todo) - limit
        result.todo = result.todo[:limit]
    return result


def _intent_of(verdicts: dict[str, Triage], comment: Comment) -> str | None:
    verdict = verdicts.get(comment.comment_id)
    return verdict.intent if verdict else None


def run_batch(selected: Sequence[tuple[Comment, str | None]], answerer: Answerer, log_: ReplyLog,
              batch_size: int = 16, limit: int | None = None, video_title: str | None = None,
              triage: Triager | None = None, policy: TriagePolicy | None = None,
              only: frozenset[str] | None = None,
              on_planned: Callable[[int], None] | None = None,
              on_progress: Callable[[int], None] | None = None) -> Summary:
    """Answer the selected comments not yet in the output, appending one record per comment."""
    planned = plan(selected, log_.done_ids, limit, triage, policy, only)
    if on_planned:
        on_planned(len(planned.todo))
    return run_plan(planned, answerer, log_, batch_size, video_title, policy, on_progress, triage)


def run_plan(planned: Plan, answerer: Answerer | None, log_: ReplyLog, batch_size: int = 16,
             video_title: str | None = None, policy: TriagePolicy | None = None,
             on_progress: Callable[[int], None] | None = None, triage: Triager | None = None) -> Summary:
    """Record the plan's skips, then answer its comments batch by batch (with `triage`, each reply's
    own text is triaged too: `reply_intent`, which the review screening reads for misfits)."""
    policy = policy or TriagePolicy()
    verdicts = planned.verdicts
    summary = Summary(already_done=planned.already_done, left_for_later=planned.left_for_later,
                      not_selected=planned.not_selected, repaired_bytes=log_.repaired_bytes)
    log_.append([with_triage(record(c, f"skipped:{reason}"), verdicts.get(c.comment_id), policy)
                 for c, reason in planned.skips])
    summary.skipped.update(reason for _, reason in planned.skips)
    start = time.perf_counter()
    todo = planned.todo
    for i in range(0, len(todo), max(1, batch_size)):
        chunk = todo[i:i + batch_size]
        assert answerer is not None, "a plan with comments to answer needs an answerer"
        records = [with_triage(r, verdicts.get(c.comment_id), policy)
                   for c, r in zip(chunk, answer_chunk(chunk, answerer, video_title))]
        if triage is not None:
            triage_replies(records, triage, getattr(getattr(answerer, "style", None), "sign_off", ""))
        log_.append(records)
        for r in records:
            if r["status"] == ANSWERED:
                summary.answered += 1
                summary.needs_creator += bool(r.get("needs_creator"))
            else:
                summary.failed[r["status"].split(":", 1)[1]] += 1
        summary.answering_s = time.perf_counter() - start
        if on_progress:
            on_progress(len(chunk))
    return summary


def with_triage(rec: dict[str, Any], verdict: Triage | None, policy: TriagePolicy) -> dict[str, Any]:
    """The record with its intent, confidence and whether it needs the creator (see triage_policy)."""
    if verdict is None:
        return rec
    best = max((float(s.get("similarity") or 0.0) for s in rec.get("sources") or [] if isinstance(s, dict)),
               default=None)
    answered = rec["status"] == ANSWERED
    rec.update(intent=verdict.intent, confidence=round(verdict.confidence, 4),
               needs_creator=policy.needs_creator(verdict.intent, best, CONFIDENT_SIMILARITY if answered else None))
    return rec


def triage_replies(records: list[dict[str, Any]], triage: Triager, sign_off: str = "") -> None:
    """`reply_intent` on each answered record: what triage makes of the reply's own text. A reply to
    a question that only thanks (a misfit), takes nothing from its comment and sources (stock), or
    says nothing from the passages it was given (`grounded` false) is no answer, and so is one the
    redrafts left `weak` (base.redraft: also a reply already given to another comment): it is marked
    `needs_creator`, so the creator answers it instead of approving it."""
    answered = [r for r in records if r["status"] == ANSWERED]
    if not answered:
        return
    for r, verdict in zip(answered, triage([without_sign_off(r["reply"], sign_off) for r in answered])):
        r["reply_intent"] = verdict.intent
        if r.get("intent") in ASKING and (misfit_reason(r["intent"], verdict.intent) or stock_reason(
                r["reply"], r.get("comment") or "", source_texts(r), sign_off=sign_off)):
            r["needs_creator"] = True
        if r.get("intent") == "question" and r.get("grounded") is False:
            r["needs_creator"] = True
        if r.get("weak"):
            r["needs_creator"] = True


def answer_chunk(chunk: Sequence[Comment], answerer: Answerer, video_title: str | None) -> list[dict[str, Any]]:
    """Records for one batch. A comment that cannot be answered fails alone; the batch goes on.

    A `UserError` (wrong API key, model missing) or an `UpstreamError` (the service or the
    generation server down, timed out, answering 5xx after its retries) stops the whole run
    instead: every following comment would fail the same way. The comments of this batch are then
    not written at all, so the next run answers them.
    """
    out: dict[int, dict[str, Any]] = {}
    ok: list[int] = []
    sign_off = getattr(getattr(answerer, "style", None), "sign_off", "") or ""
    for n, c in enumerate(chunk):
        try:
            validate_comment(c.text)
            ok.append(n)
        except UserError as exc:
            log.info("%s: %s", c.comment_id, exc)
            out[n] = record(c, "failed:invalid-comment")
    requests = [CommentInput(chunk[n].text, chunk[n].video_title or video_title, chunk[n].author or None,
                             video_id=chunk[n].video_id or None, video_description=chunk[n].video_description)
                for n in ok]
    try:
        replies = answerer.respond_many(requests) if requests else []
        if len(replies) != len(requests):
            raise RuntimeError(f"{len(replies)} replies for {len(requests)} comments")
        for n, reply in zip(ok, replies):
            out[n] = _answered(chunk[n], reply, sign_off)
    except (UserError, UpstreamError):
        raise
    except Exception as exc:  # find which comment it was: answer them one by one
        log.warning("batch of %d failed (%s); answering its comments one by one", len(requests), exc)
        for n, request in zip(ok, requests):
            try:
                out[n] = _answered(chunk[n], answerer.respond_many([request])[0], sign_off)
            except (UserError, UpstreamError):
                raise
            except CommentFailed as one:
                out[n] = record(chunk[n], f"failed:{one.reason}")
            except Exception as one:  # noqa: BLE001 - recorded per comment, the run goes on
                log.warning("%s failed: %s", chunk[n].comment_id, one)
                out[n] = record(chunk[n], f"failed:{type(one).__name__}")
    return [out[n] for n in range(len(chunk))]


def _answered(comment: Comment, reply: Reply, sign_off: str) -> dict[str, Any]:
    """An answered record, unless the model said nothing (an empty reply, or the sign-off alone)."""
    body = reply.reply.strip()
    if sign_off and body.endswith(sign_off):
        body = body[: -len(sign_off)].strip()
    if not body:
        return record(comment, "failed:empty-reply")
    return record(comment, ANSWERED, reply)
