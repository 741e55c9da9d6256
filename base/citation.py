"""The citation under a reply: which article it drew on, composed by code, never generated.

When a reply's passages include one at or above the confident similarity (knowledge.config), the
best such passage's article is cited through the creator's template (RESPONDER_CITATION, default
`More in my post "{title}": {url}`), on its own line before the sign-off. The title and URL come
from ingest (front matter, HTML canonical or og:url). An article without a URL is cited by its
title alone: `{url}` and the punctuation before it are dropped. The whole reply stays within
YouTube's limit: the title is shortened, a URL is never cut. An empty template turns citations off.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Sequence

from base.prompt import Passage, with_sign_off
from base.replychecks import YOUTUBE_MAX_CHARS

DEFAULT_CITATION = 'More in my post "{title}": {url}'
PLACEHOLDERS = ("title", "url")
_BEFORE_URL = re.compile(r"[\s:,;\-–—(]*\{url\}\)?")


def check_base_url(base_url: str) -> str:
    """The article base URL as given, or ValueError: it must be http(s) with a host, and may hold {slug}."""
    from urllib.parse import urlparse

    parsed = urlparse(base_url.replace("{slug}", "slug"))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"article base URL {base_url!r} is not an http(s) URL; give e.g. https://blog.example.com/posts/")
    if re.search(r"\{(?!slug\})[^}]*\}", base_url):
        raise ValueError(f"article base URL {base_url!r} has a placeholder other than {{slug}}")
    return base_url


def article_url(base_url: str | None, stem: str) -> str:
    """The URL of an article whose file is named `stem`, under the creator's base URL ("" without one):
    the slug (lower case, runs of other characters made one hyphen) replaces {slug}, or is appended."""
    if not base_url:
        return ""
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "article"
    if "{slug}" in base_url:
        return base_url.replace("{slug}", slug)
    return f"{base_url.rstrip('/')}/{slug}"


def check_template(template: str) -> str:
    """The template as given, or ValueError naming an unknown or malformed placeholder."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"citation template {template!r} is malformed ({exc}); use {{title}} and {{url}}") from None
    unknown = [f for f in fields if f not in PLACEHOLDERS]
    if unknown:
        raise ValueError(f"citation template has unknown placeholder {{{unknown[0]}}}; use {{title}} and {{url}}")
    return template


@dataclass(frozen=True)
class Cited:
    reply: str  # the reply with the citation line before the sign-off
    passage: Passage | None  # the passage whose article is cited; None when nothing was cited
    line: str = ""


def cite(reply: str, passages: Sequence[Passage], template: str, confident: float, sign_off: str = "") -> Cited:
    """`reply` with its citation line, when a passage reached `confident` and the template is on."""
    best = max((p for p in passages if p.similarity >= confident and (p.title or p.url)),
               key=lambda p: p.similarity, default=None)
    if best is None or not template.strip():
        return Cited(reply, None)
    body = reply[: -len(sign_off)].rstrip() if sign_off and reply.endswith(sign_off) else reply.rstrip()
    if best.url and best.url in body:
        return Cited(reply, None)  # the reply already points there
    room = YOUTUBE_MAX_CHARS - len(body) - len(sign_off) - 2
    line = citation_line(template, best.title or best.url, best.url, room)
    if not line:
        return Cited(reply, None)
    return Cited(with_sign_off(f"{body}\n{line}", sign_off), best, line)


def citation_line(template: str, title: str, url: str, room: int = YOUTUBE_MAX_CHARS) -> str:
    """The template filled in, at most `room` characters: the title is shortened first (with an
    ellipsis); a URL is never cut, so a line that cannot fit even with one letter of title is ''."""
    if not url:
        template = _BEFORE_URL.sub("", template)
    title = " ".join(title.split())
    line = template.format(title=title, url=url)
    while len(line) > room and len(title) > 1:
        title = title[: max(1, len(title) - (len(line) - room) - 1)].rstrip() + "…"
        line = template.format(title=title, url=url)
    return line if len(line) <= room else ""
