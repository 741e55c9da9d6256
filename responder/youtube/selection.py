"""Which comments of an export need a reply: the selection rules behind `responder batch`.

Skipped, each with its reason: already answered by the channel, the channel's own comments,
blank or emoji-only text, held for review or likely spam, comments that give the bot orders
(triage's exact rules), duplicates, threads that cannot take a
reply, and whatever the user's filters (length, age, limit) leave out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from base.prompt import has_words
from knowledge.triage import NEVER_DRAFTED
from knowledge.triage_rules import match_rule
from responder.youtube.export import Comment, comparable_text

# Moderation states (`moderationStatus`, present when the owner exports held comments).
_MODERATION_SKIPS = {"heldForReview": "held-for-review", "likelySpam": "likely-spam", "rejected": "rejected"}


_URL = re.compile(r"(https?://|www\.|\b[a-z0-9-]+\.(ly|gl|co|me|io|xyz|top|click|link)/)", re.IGNORECASE)


_SPAM_PHRASES = re.compile(
    r"\b(sub4sub|check (out )?my channel|visit my channel|subscribe to my|free (crypto|bitcoin|robux|money|gift)"
    r"|whats ?app|telegram|dm me|investment (plan|platform)|earn \$|forex|crypto ?(signals|trading)"
    r"|giveaway|onlyfans|promo code)\b",
    re.IGNORECASE,
)


def looks_like_spam(text: str) -> bool:
    """A promotional phrase, or a link together with one; a lone link to a notebook is fine."""
    phrase = bool(_SPAM_PHRASES.search(text))
    links = len(_URL.findall(text))
    return phrase or links >= 3


def infer_channel_id(comments: Iterable[Comment]) -> str | None:
    """The channel that owns the video, as the export records it (commentThreads snippet.channelId)."""
    for c in comments:
        if c.thread_channel_id:
            return c.thread_channel_id
    return None


@dataclass(frozen=True)
class Filters:
    channel_id: str | None = None
    keep_empty: bool = False  # keep emoji-only comments (blank ones can never be answered)
    min_length: int = 0
    max_age_days: float | None = None
    now: datetime | None = None


def skip_reason(comment: Comment, filters: Filters) -> str | None:
    """Why this comment gets no reply, or None when it should get one. Order: most definite first."""
    channel = filters.channel_id
    if channel and comment.author_channel_id == channel:
        return "own-comment"
    if channel and channel in comment.reply_author_ids:
        return "already-answered"
    if not comment.can_reply:
        return "cannot-reply"
    if comment.moderation_status in _MODERATION_SKIPS:
        return _MODERATION_SKIPS[comment.moderation_status]
    text = comparable_text(comment.text)
    if not text:
        return "empty"
    if not has_words(text) and not filters.keep_empty:
        return "emoji-only"
    rule = match_rule(text)  # triage's exact rules: orders to the bot never reach the model
    if rule is not None and rule.intent in NEVER_DRAFTED:
        return "instructions" if rule.intent == "instructions" else "likely-spam"
    if looks_like_spam(text):
        return "likely-spam"
    if filters.min_length and len(text) < filters.min_length:
        return "too-short"
    if filters.max_age_days is not None and comment.published_at is not None:
        now = filters.now or datetime.now(timezone.utc)
        if now - comment.published_at > timedelta(days=filters.max_age_days):
            return "too-old"
    return None


def select(comments: Iterable[Comment], filters: Filters) -> list[tuple[Comment, str | None]]:
    """Each comment with its skip reason (None: answer it). Repeats are `duplicate`:

    the same comment id again (overlapping page exports), or the same text from the same author on
    the same video (a double submit); the first one is kept.
    """
    seen_ids: set[str] = set()
    seen_texts: set[tuple[str, str, str]] = set()
    out = []
    for c in comments:
        key = (c.video_id, c.author_channel_id or c.author, comparable_text(c.text).casefold())
        if c.comment_id in seen_ids or (key[2] and key in seen_texts):
            out.append((c, "duplicate"))
            continue
        seen_ids.add(c.comment_id)
        seen_texts.add(key)
        out.append((c, skip_reason(c, filters)))
    return out
