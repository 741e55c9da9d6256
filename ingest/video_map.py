"""The creator's video -> article mapping (`ingest --videos FILE`): which articles each video is about.

A CSV with a `video` column (an id or any YouTube URL) and an `article` column (the file as ingest
names it, `articles/post.md`, its file name, `post.md`, its stem, `post`, or the article's URL). The
links are stored with the article's chunks (metadata `videos`, beside front matter `video:`), so
every reader of the store, service workers and a Chroma server's clients alike, sees them.
A row naming no video, or an article that is not among the files ingested, is one error line naming
the row: nothing is written before the whole file is resolved.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from base.errors import UserError
from base.video import parse_video_id, url_key


@dataclass(frozen=True)
class VideoRow:
    line: int
    video: str     # the 11-character id
    article: str   # as written in the file


def read_video_map(path: Path) -> list[VideoRow]:
    name = f"videos file {path}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{name} cannot be read ({getattr(exc, 'strerror', None) or exc}); give a UTF-8 CSV "
                        "with video and article columns") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = {(c or "").strip().lower(): c for c in reader.fieldnames or []}
    if "video" not in columns or "article" not in columns:
        raise UserError(f"{name} has no video and article columns (found: {', '.join(columns) or 'none'}); "
                        "its first line must be video,article")
    rows = []
    for line, row in enumerate(reader, start=2):
        video, article = (row.get(columns[key]) or "" for key in ("video", "article"))
        if not video.strip() and not article.strip():
            continue
        vid = parse_video_id(video)
        if vid is None:
            raise UserError(f"{name} line {line}: {video.strip()!r} is not a YouTube video id or URL; "
                            "give the 11-character id or the video's URL")
        if not article.strip():
            raise UserError(f"{name} line {line}: no article for video {vid}; name its file or URL")
        rows.append(VideoRow(line, vid, article.strip()))
    if not rows:
        raise UserError(f"{name} has no rows; add lines of video,article")
    return rows


def resolve_video_map(rows: Sequence[VideoRow], files: Sequence[tuple[Path, str]], path: Path,
                      url_of: Callable[[Path], str]) -> dict[str, tuple[str, ...]]:
    """{source key: its video ids} for the ingested `files` ((path, source key) pairs). `url_of`
    gives a file's article URL; it is asked only when a row names an article by URL."""
    by_name: dict[str, set[str]] = {}
    for real, source in files:
        for name in {source, Path(source).name, Path(source).stem, real.name, real.stem}:
            by_name.setdefault(name.casefold(), set()).add(source)
    by_url: dict[str, set[str]] | None = None
    links: dict[str, list[str]] = {}
    for row in rows:
        key = url_key(row.article)
        if key:
            if by_url is None:
                by_url = {}
                for real, source in files:
                    by_url.setdefault(url_key(url_of(real)), set()).add(source)
                by_url.pop("", None)
            sources = by_url.get(key, set())
        else:
            sources = by_name.get(row.article.replace("\\", "/").removeprefix("./").casefold(), set())
        if not sources:
            raise UserError(f"videos file {path} line {row.line}: article {row.article!r} (video {row.video}) is "
                            "not among the articles ingested; fix the name, or ingest that article in this run")
        if len(sources) > 1:
            raise UserError(f"videos file {path} line {row.line}: article {row.article!r} names "
                            f"{len(sources)} files ({', '.join(sorted(sources)[:3])}); give the file as ingest names it")
        for source in sources:
            ids = links.setdefault(source, [])
            if row.video not in ids:
                ids.append(row.video)
    return {source: tuple(ids) for source, ids in links.items()}
