"""Screening a draft before it is posted: its flags (base.replychecks) and whether a person saw them.

The flags are computed from the record as it is now (the reply may have been edited), with
`base.replychecks.check_reply`, the one implementation of the reply checks. A flagged reply is
posted only when a person approved or edited it on the review page after its flags were shown:
the page records them as `flags_seen` in the record.

Replies to comments that ask (triaged `question` or `request`) also get the reply figures' flags
(`base.reply_figures`): stock (the same reply to three or more different comments of the file, or
nothing shared with the comment and its sources) and misfit (the reply's own text triaged `thanks`,
recorded by `batch` as `reply_intent`). A thank-you for a thank-you is not flagged.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from base.reply_figures import ASKING, misfit_reason, repeat_counts, stock_reason
from base.replychecks import check_reply
from knowledge.triage_policy import TriagePolicy


def source_texts(record: dict[str, Any]) -> list[str]:
    """What the replies file keeps of the passages (titles, links): the known sources of links."""
    out = []
    for s in record.get("sources") or []:
        if isinstance(s, dict):
            out.append(" ".join(str(s.get(k) or "") for k in ("title", "section", "url", "source", "text")))
    return out


def draft_flags(record: dict[str, Any], sign_off: str = "", repeats: int = 1) -> list[str]:
    """The flags of a record's reply, in words (`repeats`: how many different comments of its file
    got the same reply, `repeats_of`)."""
    reply = str(record.get("reply") or "")
    if not reply.strip() and record.get("status") != "answered":
        return []
    comment, sources, intent = str(record.get("comment") or ""), source_texts(record), record.get("intent")
    flags = check_reply(reply, comment, sources, sign_off, intent=intent).flags
    if intent in ASKING:
        for reason in (stock_reason(reply, comment, sources, repeats=repeats, sign_off=sign_off),
                       misfit_reason(intent, record.get("reply_intent"))):
            if reason:
                flags.append(reason)
    return flags


def repeats_of(records: list[dict[str, Any]], sign_off: str = "") -> dict[str, int]:
    """comment id -> how many different comments in `records` got the same answered reply."""
    answered = [r for r in records if r.get("status") in ("answered", "rejected") and r.get("reply")]
    counts = repeat_counts([str(r["reply"]) for r in answered], [str(r.get("comment") or "") for r in answered],
                           sign_off)
    return {str(r.get("comment_id")): n for r, n in zip(answered, counts)}


def flags_cleared(record: dict[str, Any], flags: list[str]) -> bool:
    """No flags, or every one of them was shown to the person who approved or edited the reply."""
    seen = record.get("flags_seen")
    return not flags or (isinstance(seen, list) and set(flags) <= {str(f) for f in seen})


def configured_policy() -> TriagePolicy:
    """The triage policy of the settings (RESPONDER_TRIAGE_POLICY); a bad one is the user's error."""
    from base.settings import load_settings

    return TriagePolicy.parse(load_settings().triage_policy)


def sign_off_hint(env: Mapping[str, str] = os.environ) -> str:
    """The sign-off replies end with (settings, else the adapter's record): the checks leave it out."""
    try:
        from base.settings import load_settings

        settings = load_settings()
        if settings.sign_off is not None:
            return settings.sign_off
        if settings.adapter is not None:
            from base.adapter_info import read_adapter_info

            return read_adapter_info(settings.adapter).sign_off or ""
    except Exception:  # noqa: BLE001 - a hint only: the checks still run without it
        return ""
    return ""
