"""Which stored articles a video is about, so retrieval can prefer them for that video's comments.

In order: the articles whose URL the video's description links to, and the articles the creator
linked to the video (front matter `video:`, `ingest --videos`), both read from the chunks' metadata;
failing both, the one article most similar to the video's title (and the first paragraph of its
description), when it is at least the store's calibrated link threshold: a title like "Q&A
livestream" or "my desk setup" links to nothing. An unknown id with no title links to nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from base.video import Video, url_key, urls_in

# The link threshold's floor, and how far above the best generic video title (calibration.py's
# GENERIC_VIDEO_TITLES) a title must reach to link; measured on the sample store: README.
DEFAULT_LINK_SIMILARITY = 0.40
DESCRIPTION_CHARS = 300
_TIMESTAMP = re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?\b")


@dataclass(frozen=True)
class Link:
    source: str
    how: str                  # "description", "mapping" or "title"
    similarity: float | None = None  # the title's best chunk similarity, for "title"


def title_text(video: Video) -> str:
    """What a video is searched as when only its words can link it: the title and the first
    paragraph of the description, without links and timestamps (chapters, sponsors: noise)."""
    first = re.split(r"\n\s*\n", (video.description or "").strip())[0] if video.description else ""
    first = _TIMESTAMP.sub(" ", re.sub(r"https?://\S+", " ", first))
    first = " ".join(first.split())[:DESCRIPTION_CHARS]
    return "\n".join(part for part in ((video.title or "").strip(), first) if part)


class VideoLinks:
    """The video and URL links of every stored article, read from the chunks' metadata once."""

    def __init__(self, metadatas: Sequence[Mapping[str, Any]]) -> None:
        sources = [str(m.get("source", "")) for m in metadatas]
        self.sources = sorted(set(sources))
        code = {s: i for i, s in enumerate(self.sources)}
        self.row_source = np.array([code[s] for s in sources], dtype=np.int64)
        self.by_video: dict[str, set[str]] = {}
        self.by_url: dict[str, set[str]] = {}
        self.titles: dict[str, str] = {}
        for source, meta in zip(sources, metadatas):
            self.titles.setdefault(source, str(meta.get("title") or ""))
            for vid in str(meta.get("videos") or "").split():
                self.by_video.setdefault(vid, set()).add(source)
            key = url_key(str(meta.get("url") or ""))
            if key:
                self.by_url.setdefault(key, set()).add(source)

    def explicit(self, video: Video) -> list[Link]:
        """The links the description's URLs and the creator's mapping give, in that order."""
        links: dict[str, Link] = {}
        for url in urls_in(video.description or ""):
            for source in sorted(self.by_url.get(url_key(url), ())):
                links.setdefault(source, Link(source, "description"))
        for source in sorted(self.by_video.get(video.id or "", ())):
            links.setdefault(source, Link(source, "mapping"))
        return list(links.values())

    def most_similar(self, rows: Any, similarities: Any) -> tuple[str, float] | None:
        """(source, similarity) of the article whose best chunk among `rows` is most similar."""
        if not len(rows):
            return None
        best = int(np.argmax(similarities))
        return self.sources[int(self.row_source[rows[best]])], float(similarities[best])

    def mask(self, rows: Any, links: Sequence[Link]) -> Any:
        """True for each of `rows` whose article is linked."""
        codes = [self.sources.index(link.source) for link in links if link.source in self.sources]
        return np.isin(self.row_source[rows], codes)
