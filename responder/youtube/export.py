"""Reading a video's comments, from any of the forms an export takes.

Inputs, detected from the file itself:
- YouTube Data API v3 `commentThreads.list` responses: one JSON page, a folder of page files
  (`*.json`, read in name order), or JSONL with one page or one thread item per line;
- CSV with a `comment` column (found case-insensitively) and optional id, author, video,
  video_title and published columns;
- JSONL of plain records with the same keys.

Every problem with an input is a `UserError` naming the file, the problem and the fix, raised
before anything is written, so a bad input never damages an output file.

Which comments get a reply is `selection.py`'s.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from base.errors import UserError
from base.fileio import read_jsonl

LOCAL_ID_PREFIX = "local-"  # ids we make up for rows without one; they cannot be posted to YouTube


@dataclass
class Comment:
    comment_id: str
    text: str
    video_id: str = ""
    author: str = ""
    author_channel_id: str = ""
    video_title: str | None = None
    video_description: str | None = None  # from the threads file's "videos" (responder fetch)
    published_at: datetime | None = None
    can_reply: bool = True
    moderation_status: str = ""
    thread_channel_id: str = ""  # the channel that owns the video (commentThreads snippet.channelId)
    reply_author_ids: list[str] = field(default_factory=list)  # authors of the replies in the export
    source: str = ""  # "file:line" or "file:item N", for messages


# --------------------------------------------------------------------------------------- reading

def load_comments(path: Path | str) -> list[Comment]:
    """Every top-level comment in INPUT, in file order."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"input '{path}' does not exist; pass a commentThreads JSON export, a folder "
                        "of them, a CSV with a 'comment' column or a JSONL file")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".jsonl") and p.is_file())
        if not files:
            raise UserError(f"input folder '{path}' holds no .json or .jsonl files; put the "
                            "commentThreads.list pages there")
        return [c for f in files for c in _load_file(f)]
    return _load_file(path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserError(f"input '{path}' is not UTF-8 text (byte {exc.start}); export it as UTF-8") from exc
    except OSError as exc:
        raise UserError(f"cannot read input '{path}': {exc.strerror or exc}; check the path and "
                        "its permissions") from exc


def _load_file(path: Path) -> list[Comment]:
    text = _read_text(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _load_csv(path, text)
    if suffix == ".jsonl" or (suffix != ".json" and _looks_like_jsonl(text)):
        return _load_jsonl(path, text)
    if suffix == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"input '{path}' is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                            f"{exc.msg}); re-export it from the YouTube API") from exc
        return list(_from_json(path, data, where=""))
    raise UserError(f"input '{path}': unknown format; use .json (commentThreads.list), .jsonl or .csv")


def _looks_like_jsonl(text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return len(lines) > 1 and all(ln.lstrip().startswith("{") for ln in lines[:3])


def _load_jsonl(path: Path, text: str) -> list[Comment]:
    out: list[Comment] = []
    for n, data in read_jsonl(path, f"input '{path}'", "fix or remove that line", data=text):
        out.extend(_from_json(path, data, where=f" line {n}"))
    return out


def _from_json(path: Path, data: Any, where: str) -> Iterator[Comment]:
    """Comments from a commentThreads page, a thread item, a list of them, or plain records."""
    if isinstance(data, list):
        for i, item in enumerate(data, 1):
            yield from _from_json(path, item, where=f"{where} item {i}")
        return
    if not isinstance(data, dict):
        raise UserError(f"input '{path}'{where}: expected a JSON object, found {type(data).__name__}; "
                        "pass commentThreads.list responses or records with a 'comment' field")
    if "error" in data and "items" not in data:
        raise UserError(f"input '{path}'{where} is a YouTube API error response, not comments; "
                        "fetch the comment threads again")
    if "items" in data:  # a commentThreads.list page
        if not isinstance(data["items"], list):
            raise UserError(f"input '{path}'{where}: 'items' is not a list; pass commentThreads.list pages")
        videos = data.get("videos") if isinstance(data.get("videos"), dict) else {}
        for i, item in enumerate(data["items"], 1):
            comment = _from_thread(path, item, where=f"{where} item {i}")
            video = videos.get(comment.video_id)
            if isinstance(video, dict):
                comment.video_title = str(video.get("title") or "").strip() or None
                comment.video_description = str(video.get("description") or "").strip() or None
            yield comment
        return
    if isinstance(data.get("snippet"), dict) and "topLevelComment" in data["snippet"]:
        yield _from_thread(path, data, where=where)
        return
    yield _from_record(path, {str(k): v for k, v in data.items()}, where=where)


def _from_thread(path: Path, item: Any, where: str) -> Comment:
    try:
        snippet = item["snippet"]
        top = snippet["topLevelComment"]
        top_snippet = top["snippet"]
    except (KeyError, TypeError) as exc:
        raise UserError(f"input '{path}'{where}: not a commentThread (missing snippet.topLevelComment."
                        "snippet); export with part=snippet,replies") from exc
    comment_id = top.get("id") or item.get("id")
    if not comment_id:
        raise UserError(f"input '{path}'{where}: the thread has no id; export with part=snippet,replies")
    replies = (item.get("replies") or {}).get("comments") or []
    return Comment(
        comment_id=str(comment_id),
        text=comment_text(top_snippet),
        video_id=str(snippet.get("videoId") or top_snippet.get("videoId") or ""),
        author=str(top_snippet.get("authorDisplayName") or ""),
        author_channel_id=_channel_value(top_snippet.get("authorChannelId")),
        published_at=parse_time(top_snippet.get("publishedAt")),
        can_reply=snippet.get("canReply", True) is not False,
        moderation_status=str(top_snippet.get("moderationStatus") or ""),
        thread_channel_id=str(snippet.get("channelId") or ""),
        reply_author_ids=[_channel_value((r.get("snippet") or {}).get("authorChannelId")) for r in replies
                          if isinstance(r, dict)],
        source=f"{path.name}{where}",
    )


def _channel_value(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("value") or "")
    return str(value or "")


_TAG = re.compile(r"<[^>]+>")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)


def comment_text(snippet: dict) -> str:
    """The comment as its author typed it: `textOriginal` when exported, else `textDisplay` de-HTMLed."""
    original = snippet.get("textOriginal")
    if isinstance(original, str):
        return html.unescape(original)
    display = snippet.get("textDisplay")
    if not isinstance(display, str):
        return ""
    return html.unescape(_TAG.sub("", _BR.sub("\n", display)))


def parse_time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


# Column / key names, compared case-insensitively with '_', '-' and spaces ignored.
_ALIASES = {
    "comment": ("comment", "text", "textoriginal", "commenttext", "body"),
    "id": ("id", "commentid", "comment_id", "threadid"),
    "author": ("author", "authordisplayname", "authorname", "user", "username"),
    "author_channel_id": ("authorchannelid",),
    "video": ("video", "videoid", "video_id"),
    "video_title": ("videotitle", "title"),
    "published": ("published", "publishedat", "date", "timestamp", "time"),
}


def _norm_key(key: str) -> str:
    return re.sub(r"[\s_\-]", "", key.strip().lower())


def _find_keys(keys: Iterable[str]) -> dict[str, str]:
    """Our field name -> the input's own column name, for the columns present."""
    by_norm = {}
    for key in keys:
        by_norm.setdefault(_norm_key(key), key)
    found = {}
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if _norm_key(alias) in by_norm:
                found[name] = by_norm[_norm_key(alias)]
                break
    return found


def _from_record(path: Path, record: dict[str, Any], where: str, columns: dict[str, str] | None = None) -> Comment:
    columns = columns if columns is not None else _find_keys(record)
    if "comment" not in columns:
        raise UserError(f"input '{path}'{where} has no 'comment' field (found: {', '.join(record) or 'none'}); "
                        "name the comment text 'comment' or pass commentThreads.list responses")

    def get(name: str) -> str:
        value = record.get(columns[name]) if name in columns else None
        return "" if value is None else str(value)

    text = html.unescape(get("comment"))
    video, author = get("video").strip(), get("author").strip()
    comment_id = get("id").strip() or local_id(video, author, text)
    return Comment(comment_id=comment_id, text=text, video_id=video, author=author,
                   author_channel_id=get("author_channel_id").strip(),
                   video_title=get("video_title").strip() or None,
                   published_at=parse_time(get("published")), source=f"{path.name}{where}")


def local_id(video: str, author: str, text: str) -> str:
    """A stable id for a row without one, so that re-runs recognise it (and exact repeats collide)."""
    digest = hashlib.sha1(f"{video}\x1f{author}\x1f{comparable_text(text)}".encode()).hexdigest()[:16]
    return LOCAL_ID_PREFIX + digest


def _load_csv(path: Path, text: str) -> list[Comment]:
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = reader.fieldnames or []
        columns = _find_keys(header)
        if "comment" not in columns:
            raise UserError(f"input '{path}' has no 'comment' column (columns: {', '.join(header) or 'none'}); "
                            "add a header row with a column named 'comment'")
        out = []
        for row in reader:
            if None in row:  # more cells than header names: a quoting error, not data to guess at
                raise UserError(f"input '{path}' line {reader.line_num} has more cells than the header; "
                                "quote fields that contain commas")
            out.append(_from_record(path, row, where=f" line {reader.line_num}", columns=columns))
        return out
    except csv.Error as exc:
        raise UserError(f"input '{path}' is not valid CSV (line {reader.line_num}: {exc}); check its quoting") from exc


# ------------------------------------------------------------------------------------- matching


def comparable_text(text: str) -> str:
    """The text as comparisons see it (duplicates, local ids): NFC, whitespace runs made one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())
