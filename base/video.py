"""The video a comment was posted under, as retrieval uses it, and the id and URL rules shared by
fetch, ingest (front matter `video:`, `--videos`) and retrieval (links in a video's description).

- `Video`: id, title and description, each optional; `Video.of(...)` is None when all are empty.
- `parse_video_id(text)`: the 11-character id in an id or any YouTube URL form, else None.
- `url_key(url)`: a URL compared as a reader would (no scheme, www., query, fragment or final slash).
- `urls_in(text)`: the http(s) links in a text, in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_PATH_FORMS = ("shorts", "embed", "live", "v", "e")
_URL = re.compile(r"https?://[^\s<>\"')\]]+", re.IGNORECASE)


@dataclass(frozen=True)
class Video:
    id: str | None = None
    title: str | None = None
    description: str | None = None

    @classmethod
    def of(cls, id: str | None = None, title: str | None = None, description: str | None = None) -> "Video | None":
        parts = [(value or "").strip() or None for value in (id, title, description)]
        return cls(*parts) if any(parts) else None


def parse_video_id(text: str) -> str | None:
    """The 11-character video id in an id or a YouTube URL (watch, youtu.be, shorts, embed, live)."""
    value = text.strip()
    if _ID.match(value):
        return value
    url = urlparse(value if "://" in value else "https://" + value)
    host = (url.hostname or "").lower().removeprefix("www.").removeprefix("m.").removeprefix("music.")
    parts = [p for p in url.path.split("/") if p]
    found = ""
    if host == "youtu.be" and parts:
        found = parts[0]
    elif host in ("youtube.com", "youtube-nocookie.com"):
        if parts[:1] == ["watch"]:
            found = (parse_qs(url.query).get("v") or [""])[0]
        elif len(parts) >= 2 and parts[0] in _PATH_FORMS:
            found = parts[1]
    return found if _ID.match(found) else None


def url_key(url: str) -> str:
    """`url` as compared for a link: host (lower case, without www.) and path (without a final slash);
    "" for text that is not an http(s) URL with a host."""
    parsed = urlparse(url.strip())
    if parsed.scheme.lower() not in ("http", "https") or not parsed.hostname:
        return ""
    host = parsed.hostname.lower().removeprefix("www.")
    return f"{host}{parsed.path.rstrip('/')}"


def urls_in(text: str) -> list[str]:
    """The http(s) links in `text`, trailing punctuation removed."""
    return [m.group(0).rstrip(".,;:!?") for m in _URL.finditer(text or "")]
