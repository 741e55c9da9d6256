"""Screening a draft before it is posted: its flags (base.replychecks) and whether a person saw them.

The flags are computed from the record as it is now (the reply may have been edited), with
`base.replychecks.check_reply`, the one implementation of the reply checks. A flagged reply is
posted only when a person approved or edited it on the review page after its flags were shown:
the page records them as `flags_seen` in the record.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from base.replychecks import check_reply
from knowledge.triage_policy import TriagePolicy


def source_texts(record: dict[str, Any]) -> list[str]:
    """What the replies file keeps of the passages (titles, links): the known sources of links."""
    out = []
    for s in record.get("sources") or []:
        if isinstance(s, dict):
            out.append(" ".join(str(s.get(k) or "") for k in ("title", "section", "url", "source", "text")))
    return out


def draft_flags(record: dict[str, Any], sign_off: str = "") -> list[str]:
    reply = str(record.get("reply") or "")
    if not reply.strip() and record.get("status") != "answered":
        return []
    return check_reply(reply, str(record.get("comment") or ""), source_texts(record), sign_off,
                       intent=record.get("intent")).flags


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
