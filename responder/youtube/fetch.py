"""Reading comments from YouTube: a video's threads for `responder batch`, a channel's pairs for `finetune`.

- `video_id(text)`: the id from an id or any YouTube URL form (watch, youtu.be, shorts, embed, live).
- `fetch_threads(...)`: commentThreads.list pages (part snippet,replies, 100 a page, plain text),
  1 quota unit a page, into one commentThreads page that `responder.youtube.export` reads.
- `fetch_videos(...)`: videos.list (part snippet, 50 ids a call, 1 unit a call): each video's title
  and description, written beside the threads so retrieval can use the video a comment is under.
- `fetch_pairs(...)`: a channel's past threads (allThreadsRelatedToChannelId) where the channel
  replied: (comment, first channel reply) pairs for `finetune run --data`.

YouTube's refusals become one `UserError` line naming the video or channel, the reason and the fix.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from urllib.parse import urlparse

from base.errors import UserError
from base.prompt import has_words
from base.video import parse_video_id
from responder.youtube.client import YouTubeClient, YouTubeError, author_id
from responder.youtube.export import comment_text, parse_time

_CHANNEL_ID = re.compile(r"^UC[A-Za-z0-9_-]{22}$")
MAX_PAGES = 1000  # 100,000 threads: a guard against a server that never stops paginating


def video_id(text: str) -> str:
    """The 11-character video id in an id or a YouTube URL; a `UserError` when there is none."""
    found = parse_video_id(text)
    if found is None:
        raise UserError(f"'{text}' is not a YouTube video id or URL; pass the 11-character id (as in "
                        "youtube.com/watch?v=dQw4w9WgXcQ) or the video's URL")
    return found


def channel_ref(text: str) -> tuple[str, str]:
    """("id", UC...) or ("handle", @name) from a channel id, a handle or a channel URL."""
    value = text.strip()
    if _CHANNEL_ID.match(value):
        return "id", value
    if re.match(r"^@[\w.-]{3,}$", value):
        return "handle", value
    url = urlparse(value if "://" in value else "https://" + value)
    parts = [p for p in url.path.split("/") if p]
    if (url.hostname or "").lower().removeprefix("www.").removeprefix("m.") == "youtube.com" and parts:
        if parts[0] == "channel" and len(parts) > 1 and _CHANNEL_ID.match(parts[1]):
            return "id", parts[1]
        if parts[0].startswith("@"):
            return "handle", parts[0]
    raise UserError(f"'{text}' is not a YouTube channel; pass the channel id (UC followed by 22 characters), "
                    "the handle (@name) or the channel's URL")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO date or time (2026-05-01, 2026-05-01T12:00Z) or an age (7d, 12h, 30m, 2w)."""
    value = text.strip()
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([mhdw])", value.lower())
    if age:
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[age.group(2)]
        return (now or datetime.now(timezone.utc)) - timedelta(**{unit: float(age.group(1))})
    stamp = parse_time(value)
    if stamp is None:
        raise UserError(f"--since '{text}' is not a time; pass a date (2026-05-01), a time "
                        "(2026-05-01T12:00:00Z) or an age (7d, 12h)")
    return stamp


# ---------------------------------------------------------------------------------------- errors

def explain(exc: YouTubeError, what: str, credential: str) -> UserError:
    """One line for a refusal from YouTube: what was asked, YouTube's reason, the fix."""
    r = exc.reason
    fixes = {
        "keyInvalid": f"YouTube refused the API key ({r}); check YOUTUBE_API_KEY, or create a key in the Google "
                      "Cloud console with the YouTube Data API v3 enabled",
        "videoNotFound": f"{what} was not found ({r}); check the id or URL (private and deleted videos cannot "
                         "be read)",
        "channelNotFound": f"{what} was not found ({r}); check the channel id or handle",
        "commentsDisabled": f"{what} has comments turned off ({r}); there is nothing to fetch",
        "quotaExceeded": f"YouTube's daily quota for this project is used up ({r}); it resets at midnight "
                         "Pacific time, run again then",
        "accessNotConfigured": f"the YouTube Data API v3 is not enabled for this project ({r}); enable it in "
                               "the Google Cloud console",
        "forbidden": f"YouTube does not allow reading {what} ({r}); check that it is public or that you are "
                     "logged in as its owner",
    }
    if r in fixes:
        return UserError(fixes[r])
    if exc.status == 401 or r in ("authError", "unauthorized", "invalid_token"):
        return UserError(f"YouTube refused the {credential} ({exc.status} {r}); run `responder login` again or "
                         "set a fresh YOUTUBE_ACCESS_TOKEN")
    if exc.status == 0:
        return UserError(f"cannot reach YouTube ({exc.message}); check the network, or YOUTUBE_API_BASE")
    return UserError(f"YouTube refused to list the comments of {what} ({exc.status} {r}: {exc.message[:120]}); "
                     "try again later")


# --------------------------------------------------------------------------------- thread pages

@dataclass
class Fetched:
    items: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    units: int = 0
    older_skipped: int = 0

    @property
    def replies(self) -> int:
        return sum(len((t.get("replies") or {}).get("comments") or []) for t in self.items)

    def as_export(self, videos: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """One commentThreads.list page holding every thread: what `responder batch` reads; with
        `videos` (id -> title and description, from videos.list) under our own key "videos"."""
        page = {"kind": "youtube#commentThreadListResponse", "pageInfo": {"totalResults": len(self.items)},
                "items": self.items}
        if videos:
            page["videos"] = videos
        return page

    def video_ids(self) -> list[str]:
        return sorted({str((t.get("snippet") or {}).get("videoId") or "") for t in self.items} - {""})


def thread_time(item: dict[str, Any]) -> datetime | None:
    top = ((item.get("snippet") or {}).get("topLevelComment") or {}).get("snippet") or {}
    return parse_time(top.get("publishedAt"))


def fetch_threads(client: YouTubeClient, scope: dict[str, str], *, since: datetime | None = None,
                  max_threads: int | None = None, what: str = "the video", credential: str = "API key",
                  on_page: Callable[[Fetched], None] | None = None) -> Fetched:
    """Every thread of a video (scope {"videoId": id}) or a channel ({"allThreadsRelatedToChannelId": id}).

    Newest first (order=time): paging stops at the first thread older than `since`, and after
    `max_threads` threads.
    """
    params: dict[str, Any] = {"part": "snippet,replies", "maxResults": 100, "textFormat": "plainText",
                              "order": "time", **scope}
    out = Fetched()
    for _ in range(MAX_PAGES):
        try:
            page = client.get("commentThreads", params)
        except YouTubeError as exc:
            raise explain(exc, what, credential) from exc
        out.pages += 1
        out.units += 1
        reached_older = False
        for item in page.get("items") or []:
            stamp = thread_time(item)
            if since is not None and stamp is not None and stamp <= since:
                out.older_skipped += 1
                reached_older = True
                continue
            if max_threads is None or len(out.items) < max_threads:
                out.items.append(item)
        if on_page:
            on_page(out)
        token = page.get("nextPageToken")
        if not token or reached_older or (max_threads is not None and len(out.items) >= max_threads):
            break
        params["pageToken"] = token
    return out


# --------------------------------------------------------------------------------- videos

VIDEOS_PER_CALL = 50  # videos.list takes at most 50 ids a call


@dataclass
class Videos:
    found: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {"title", "description"}
    units: int = 0
    problem: str | None = None  # why some were not read (the threads are kept without them)


def fetch_videos(client: YouTubeClient, ids: list[str], credential: str = "API key") -> Videos:
    """Title and description of each video in `ids`. A refusal does not raise: what was read is kept
    and `problem` says what is missing, so the threads already fetched are still written."""
    out = Videos()
    for start in range(0, len(ids), VIDEOS_PER_CALL):
        batch = ids[start:start + VIDEOS_PER_CALL]
        try:
            page = client.get("videos", {"part": "snippet", "id": ",".join(batch), "maxResults": VIDEOS_PER_CALL})
        except YouTubeError as exc:
            out.problem = str(explain(exc, f"the titles of {len(ids) - start} video(s)", credential))
            return out
        out.units += 1
        for item in page.get("items") or []:
            snippet = item.get("snippet") or {}
            if item.get("id"):
                out.found[str(item["id"])] = {"title": str(snippet.get("title") or ""),
                                              "description": str(snippet.get("description") or "")}
    return out


# --------------------------------------------------------------------------------- training pairs

_LINK = re.compile(r"(?:https?://|www\.)\S+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|ly|be|gl|co|me|dev)"
                   r"\b(?:/\S*)?", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@[\w.-]+")
_LEADING_MENTION = re.compile(r"^\s*@[\w.-]+[\s,:]*")


@dataclass
class Pairs:
    pairs: list[tuple[str, str]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    threads: int = 0
    pages: int = 0
    units: int = 0


def reply_problem(reply: str) -> str | None:
    """Why a channel reply teaches no style: link-only, mention-only, emoji-only (None: keep it)."""
    if not reply.strip():
        return "empty"
    if not has_words(_MENTION.sub(" ", _LINK.sub(" ", reply))):
        if _LINK.search(reply):
            return "link-only"
        if _MENTION.search(reply):
            return "mention-only"
        return "emoji-only"
    return None


def pair_of(thread: dict[str, Any], channel_id: str, replies: list[dict[str, Any]]) -> tuple[str, str] | str:
    """(comment, reply) with the channel's first reply, or the reason this thread gives no pair."""
    top = (thread.get("snippet") or {}).get("topLevelComment") or {}
    if author_id(top) == channel_id:
        return "own-comment"
    comment = comment_text(top.get("snippet") or {}).strip()
    if not has_words(comment):
        return "comment-without-words"
    mine = [r for r in replies if author_id(r) == channel_id]
    if not mine:
        return "no-channel-reply"
    first = min(mine, key=lambda r: parse_time((r.get("snippet") or {}).get("publishedAt"))
                or datetime.max.replace(tzinfo=timezone.utc))
    # A reply in a thread usually starts with "@viewer": the address, not the creator's words.
    text = _LEADING_MENTION.sub("", comment_text(first.get("snippet") or {}), count=1).strip()
    problem = reply_problem(text) if text else "mention-only"
    return problem or (comment, text)


def thread_replies(client: YouTubeClient, thread: dict[str, Any], channel_id: str, pairs: Pairs,
                   what: str, credential: str) -> list[dict[str, Any]]:
    """The thread's replies; all of them (comments.list) when the page shows only some and not the channel's."""
    included = list((thread.get("replies") or {}).get("comments") or [])
    total = int((thread.get("snippet") or {}).get("totalReplyCount") or 0)
    if any(author_id(r) == channel_id for r in included) or total <= len(included):
        return included
    top_id = ((thread.get("snippet") or {}).get("topLevelComment") or {}).get("id") or thread.get("id")
    try:
        replies = client.list_replies(str(top_id))
    except YouTubeError as exc:
        raise explain(exc, what, credential) from exc
    pairs.units += max(1, (len(replies) + 99) // 100)
    return replies


def fetch_pairs(client: YouTubeClient, channel_id: str, *, since: datetime | None = None,
                max_pairs: int | None = None, credential: str = "API key",
                on_page: Callable[[Pairs], None] | None = None) -> Pairs:
    """The channel's (comment, first channel reply) pairs, newest first; duplicates dropped."""
    what = f"channel '{channel_id}'"
    out, seen = Pairs(), set()
    params: dict[str, Any] = {"part": "snippet,replies", "maxResults": 100, "textFormat": "plainText",
                              "order": "time", "allThreadsRelatedToChannelId": channel_id}
    for _ in range(MAX_PAGES):
        try:
            page = client.get("commentThreads", params)
        except YouTubeError as exc:
            raise explain(exc, what, credential) from exc
        out.pages += 1
        out.units += 1
        reached_older = False
        for thread in page.get("items") or []:
            if max_pairs is not None and len(out.pairs) >= max_pairs:
                break
            stamp = thread_time(thread)
            if since is not None and stamp is not None and stamp <= since:
                reached_older = True
                continue
            out.threads += 1
            found = pair_of(thread, channel_id, thread_replies(client, thread, channel_id, out, what, credential))
            key = tuple(" ".join(x.casefold().split()) for x in found) if isinstance(found, tuple) else None
            if isinstance(found, str):
                out.skipped[found] += 1
            elif key in seen or str(thread.get("id")) in seen:
                out.skipped["duplicate"] += 1
            else:
                seen.update([key, str(thread.get("id"))])
                out.pairs.append(found)
        if on_page:
            on_page(out)
        token = page.get("nextPageToken")
        if not token or reached_older or (max_pairs is not None and len(out.pairs) >= max_pairs):
            break
        params["pageToken"] = token
    return out
