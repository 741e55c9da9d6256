"""What the review page shows of each record: status, flags, sources, posted or not; and the changes.

Pure functions on records (dicts from the replies file), so the page and the tests agree on what
"pending" or "approved" means; the changes (`approve`, `edit`, `reject`, `regenerated`) are the
edits `responder.jobs.drafts.Drafts.change` applies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from knowledge.triage_policy import DRAFT_ORDER, draft_rank
from responder.jobs.posting import is_approved
from responder.jobs.reply_log import reply_judgement
from responder.responder import source_record
from responder.jobs.screening import draft_flags, flags_cleared

FILTERS = ("drafts", "pending", "approved", "rejected", "skipped", "failed", "all")
DRAFT_STATES = ("pending", "approved", "rejected")
# The intent filter: every intent, those the creator must look at, and records from before triage.
NEEDS_YOU, UNTRIAGED = "needs-you", "untriaged"
INTENT_FILTERS = ("all", NEEDS_YOU, *DRAFT_ORDER, UNTRIAGED)


def draft_state(record: dict[str, Any]) -> str:
    status = str(record.get("status") or "")
    if status == "answered":
        return "approved" if is_approved(record.get("approved", False)) else "pending"
    if status == "rejected":
        return "rejected"
    return "failed" if status.startswith("failed") else "skipped"


@dataclass
class DraftView:
    record: dict[str, Any]
    state: str
    flags: list[str]
    flags_cleared: bool
    posted: str | None  # the ledger's state: "posted", "failed", "pending" or None
    sources: list[dict[str, str]] = field(default_factory=list)

    @property
    def comment_id(self) -> str:
        return str(self.record.get("comment_id") or "")

    @property
    def video_url(self) -> str:
        video = str(self.record.get("video_id") or "")
        if not video:
            return ""
        link = f"https://www.youtube.com/watch?v={quote(video)}"
        return link + (f"&lc={quote(self.comment_id)}" if not self.comment_id.startswith("local-") else "")

    @property
    def intent(self) -> str:
        return str(self.record.get("intent") or "")

    @property
    def needs_creator(self) -> bool:
        return self.record.get("needs_creator") is True

    @property
    def citation(self) -> str:
        """The reply's citation line while the reply still holds it ("" otherwise)."""
        line = str(self.record.get("citation") or "")
        return line if line and line in str(self.record.get("reply") or "").splitlines() else ""

    @property
    def reason(self) -> str:
        status = str(self.record.get("status") or "")
        return status.split(":", 1)[1] if ":" in status else ""


def view(record: dict[str, Any], sign_off: str, ledger_state: str | None = None, repeats: int = 1) -> DraftView:
    """`repeats`: how many different comments of the file got this same reply (screening.repeats_of)."""
    flags = draft_flags(record, sign_off, repeats) if record.get("status") in ("answered", "rejected") else []
    sources = []
    for s in record.get("sources") or []:
        if isinstance(s, dict):
            url = str(s.get("url") or "")
            sources.append({"title": str(s.get("title") or s.get("source") or url or "untitled"),
                            "section": str(s.get("section") or ""),
                            "url": url if url.startswith(("http://", "https://")) else ""})
    return DraftView(record, draft_state(record), flags, flags_cleared(record, flags), ledger_state, sources)


def counts(records: list[dict[str, Any]]) -> dict[str, int]:
    c = Counter(draft_state(r) for r in records)
    out = {state: c.get(state, 0) for state in FILTERS if state not in ("drafts", "all")}
    out["drafts"] = sum(c.get(s, 0) for s in DRAFT_STATES)
    out["all"] = len(records)
    return out


def in_review_order(views: list[DraftView]) -> list[DraftView]:
    """Those that need the creator first (criticism, questions without a confident passage, orders to
    the bot), then by intent in drafting order (questions first, thank-yous last), file order within."""
    return sorted(views, key=lambda v: (not v.needs_creator, draft_rank(v.intent or None)))


def intent_matches(v: DraftView, intent_filter: str) -> bool:
    if intent_filter == "all":
        return True
    if intent_filter == NEEDS_YOU:
        return v.needs_creator
    if intent_filter == UNTRIAGED:
        return not v.intent
    return v.intent == intent_filter


def intent_counts(views: list[DraftView]) -> dict[str, int]:
    """How many of `views` each intent filter shows."""
    return {f: sum(intent_matches(v, f) for v in views) for f in INTENT_FILTERS}


def keep(state: str, status_filter: str) -> bool:
    if status_filter == "all":
        return True
    if status_filter == "drafts":
        return state in DRAFT_STATES
    return state == status_filter


# ------------------------------------------------------------------------------------ changes

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _must_be_draft(record: dict[str, Any], action: str) -> None:
    state = draft_state(record)
    if state not in DRAFT_STATES:
        from base.errors import UserError

        raise UserError(f"comment '{record.get('comment_id')}' was {record.get('status')}, it has no draft to "
                        f"{action}" + ("; Regenerate writes one" if state == "failed" else ""))


def approve(record: dict[str, Any], shown: list[str]) -> None:
    """Approved as it stands; the flags the page showed are recorded as seen."""
    _must_be_draft(record, "approve")
    record.update(status="answered", approved=True, flags_seen=list(shown), reviewed_at=_now())


def edit(record: dict[str, Any], reply: str, flags_now: list[str]) -> None:
    """The person's own text, approved: its flags count as seen (the page shows them right after)."""
    _must_be_draft(record, "edit")
    if reply != record.get("reply"):
        record.setdefault("original_reply", record.get("reply") or "")
        record["edited"] = True
    record.update(reply=reply, status="answered", approved=True, flags_seen=list(flags_now), reviewed_at=_now())


def uncite(record: dict[str, Any]) -> None:
    """The citation line taken out of the reply (the rest as it was), its source no longer marked cited."""
    _must_be_draft(record, "remove the citation from")
    line = str(record.get("citation") or "")
    reply = str(record.get("reply") or "")
    if not line or line not in reply.splitlines():
        from base.errors import UserError

        raise UserError(f"the reply to comment '{record.get('comment_id')}' holds no citation line to remove")
    record.setdefault("original_reply", reply)
    record.update(reply="\n".join(x for x in reply.splitlines() if x != line), edited=True, citation_removed=True,
                  reviewed_at=_now())
    record.pop("citation", None)
    for source in record.get("sources") or []:
        if isinstance(source, dict):
            source.pop("cited", None)


def reject(record: dict[str, Any]) -> None:
    _must_be_draft(record, "reject")
    record.update(status="rejected", approved=False, reviewed_at=_now())


def regenerated(record: dict[str, Any], reply: Any) -> None:
    """A new draft from the responder: back to pending, earlier approvals and seen flags dropped."""
    record.update(reply=reply.reply, sources=[source_record(p, p is reply.cited) for p in reply.sources],
                  used_context=bool(reply.used_context), status="answered", approved=False,
                  regenerated_at=_now())
    for key in ("flags_seen", "reviewed_at", "edited", "original_reply", "citation", "citation_removed", "grounded"):
        record.pop(key, None)
    record.update(reply_judgement(reply, str(record.get("comment") or "")))
