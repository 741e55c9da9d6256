"""The replies file of `responder batch`: one record per comment, appended, resumable.

The output file is the run's only state: one line (JSONL) or row (CSV) per comment, appended,
flushed and fsync'd batch by batch. A re-run with the same output skips every comment id already
in it, so a killed run resumes where it stopped and no id is ever written twice. A `kill -9` in the
middle of a write can leave an incomplete last line: it is cut off on the next run (a complete line
is never dropped); a damaged line anywhere else is reported, not guessed at.

A spreadsheet runs a CSV cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
formula (`=HYPERLINK(...)` in a comment would be a live link). Such a cell, and one that starts
with an apostrophe, is written with one more apostrophe in front (`neutralise_cell`), and every
cell read back loses it again (`restore_cell`): the text round-trips exactly, so `responder post`
and the review page read what the commenter and the model wrote. Sources carry the article's
URL and its path relative to the ingested folder, never an absolute path.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from base.errors import UserError
from base.fileio import AppendOnlyLog, LogScan, json_lines, scan_jsonl_log
from base.prompt import MAX_AUTHOR_CHARS, MAX_TITLE_CHARS, clean_text
from base.reply_figures import is_grounded
from responder.responder import Reply, source_record
from responder.youtube.export import Comment

log = logging.getLogger(__name__)


FIELDS = ["comment_id", "video_id", "author", "comment", "reply", "sources", "used_context", "status",
          "approved", "intent", "confidence", "needs_creator", "reply_intent", "video_title", "citation", "grounded"]
# The columns of replies files written by earlier versions (before triage; before video titles and
# citations): appending to one keeps its columns, so every row keeps parsing.
FIELDS_BEFORE_TRIAGE = FIELDS[:9]
FIELDS_BEFORE_CITATIONS = FIELDS[:13]


ANSWERED = "answered"


def output_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


def _is_reply_record(value: Any) -> bool:
    return isinstance(value, dict) and "comment_id" in value and "status" in value


def scan_jsonl(data: bytes, name: str) -> LogScan:
    """The JSONL replies file: a torn last line is cut off; a damaged line elsewhere is reported."""
    return scan_jsonl_log(data, name, accept=_is_reply_record,
                          damaged="is not a reply record; fix or delete that line (its comment is answered "
                                  "again on the next run), or pass a new -o file")


def scan_csv(data: bytes, name: str) -> LogScan:
    """The CSV replies file. A row may hold newlines inside quotes, so rows are found by parsing."""
    if not data.strip():
        return LogScan([], 0)
    # A row is complete when it ends with a newline outside quotes. Back off, newline by newline,
    # from the end until the text parses into whole rows: that drops only an interrupted write.
    end = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
    for _ in range(10_000):
        rows = _parse_csv(data[:end])
        if rows is not None:
            header, body = rows
            missing = {"comment_id", "status"} - set(header)
            if missing:
                raise UserError(f"{name} is a CSV without {', '.join(sorted(missing))} columns; "
                                "pass a new -o file")
            return LogScan([_csv_record(dict(zip(header, row))) for row in body], end)
        if end <= 0:
            break
        end = data.rfind(b"\n", 0, end - 1) + 1
    raise UserError(f"{name} is not a CSV this command wrote; pass a new -o file")


def _parse_csv(data: bytes) -> tuple[list[str], list[list[str]]] | None:
    try:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True))
    except (UnicodeDecodeError, csv.Error):
        return None
    if not rows:
        return None
    header, body = rows[0], rows[1:]
    if any(len(row) != len(header) for row in body):
        return None
    return header, body


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(text: str) -> str:
    """A CSV cell a spreadsheet shows as text: `'` in front of a formula start (and of a leading `'`)."""
    return "'" + text if text.startswith(_FORMULA_START + ("'",)) else text


def restore_cell(text: str) -> str:
    """The text `neutralise_cell` was given."""
    return text[1:] if text.startswith("'") else text


def _csv_record(row: dict[str, str]) -> dict[str, Any]:
    row = {k: restore_cell(v) for k, v in row.items()}
    record: dict[str, Any] = dict(row)
    try:
        record["sources"] = json.loads(row.get("sources") or "[]")
    except json.JSONDecodeError:
        record["sources"] = []
    record["used_context"] = row.get("used_context", "").lower() == "true"
    record["approved"] = row.get("approved", "").strip().lower() in ("true", "yes", "1", "y", "x")
    for flag in ("needs_creator", "grounded"):
        if row.get(flag, "").strip():
            record[flag] = row[flag].strip().lower() == "true"
    try:
        record["confidence"] = float(row["confidence"]) if row.get("confidence") else None
    except ValueError:
        record["confidence"] = None
    for key in ("intent", "confidence", "needs_creator", "reply_intent", "video_title", "citation", "grounded"):
        # a file written before triage (or before citations) has none
        if record.get(key) in (None, ""):
            record.pop(key, None)
    return record


class ReplyLog:
    """The output file: read once (repairing an interrupted last write), then appended to.

    The lock, the repair of a torn last write, the fsync'd appends and the atomic rewrite are
    `base.fileio.AppendOnlyLog`'s; this class adds the two formats and the replies' meaning.
    """

    def __init__(self, path: Path | str, fmt: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.fmt = output_format(self.path, fmt)
        name = f"output '{self.path}'"
        scan = (lambda data: scan_csv(data, name)) if self.fmt == "csv" else (lambda data: scan_jsonl(data, name))
        self._log = AppendOnlyLog(self.path, name, scan=scan,
                                  in_use="is being written by another `responder batch`; wait for it or pass "
                                         "another -o file")

    @property
    def records(self) -> list[dict[str, Any]]:
        return self._log.records

    @property
    def repaired_bytes(self) -> int:
        return self._log.repaired_bytes

    def open(self) -> "ReplyLog":
        if self.path.is_dir():
            raise UserError(f"output '{self.path}' is a folder; pass a file name such as replies.jsonl")
        self._log.open()
        return self

    @property
    def done_ids(self) -> set[str]:
        return {str(r["comment_id"]) for r in self.records}

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Write the records in one write and force them to disk before returning."""
        if records:
            self._log.write(self._encode(records, header=self._log.size() == 0), records)

    def _encode(self, records: Sequence[dict[str, Any]], header: bool) -> bytes:
        return json_lines(records) if self.fmt != "csv" else encode_csv(records, header, csv_columns(self.path))

    def drop_failed(self) -> int:
        """Rewrite the file without its failed lines (atomically), so they are answered again."""
        keep = [r for r in self.records if not str(r.get("status", "")).startswith("failed")]
        dropped = len(self.records) - len(keep)
        if dropped:
            self._log.rewrite(self._encode(keep, header=True) if keep else b"", keep)
        return dropped

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> "ReplyLog":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def csv_columns(path: Path) -> list[str]:
    """The columns to write to the CSV at `path`: FIELDS, or the older ones of a file an earlier
    version wrote (appends and rewrites keep a file's columns, so every row keeps parsing)."""
    try:
        with path.open("rb") as f:
            first = f.readline().decode("utf-8", "replace").strip()
    except OSError:
        return FIELDS
    return next((older for older in (FIELDS_BEFORE_TRIAGE, FIELDS_BEFORE_CITATIONS) if first == ",".join(older)),
                FIELDS)


def encode_csv(records: Sequence[dict[str, Any]], header: bool, columns: Sequence[str] = FIELDS) -> bytes:
    """CSV rows of `records` (the FIELDS columns), formula starts neutralised; `scan_csv` reads them back."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for r in records:
        writer.writerow([csv_cell(r.get(k)) for k in columns])
    return buf.getvalue().encode("utf-8")


def csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return neutralise_cell(json.dumps(value, ensure_ascii=False))
    return neutralise_cell("" if value is None else str(value))


def reply_judgement(reply: Reply, comment: str) -> dict[str, Any]:
    """What a record keeps about a reply beside its text: `grounded` (it carries its passages' own
    words, judged before the citation line code added; only when passage texts are known) and the
    `citation` line (its own line in the reply, which the review page can remove)."""
    out: dict[str, Any] = {}
    texts = [p.text for p in reply.sources if p.text]
    if texts:
        body = "\n".join(x for x in reply.reply.splitlines() if x != reply.citation)
        out["grounded"] = is_grounded(body, comment, texts)
    if reply.citation:
        out["citation"] = reply.citation
    if reply.weak:
        out["weak"] = reply.weak  # still no answer after redrafting: batch marks it needs_creator
    return out


def record(comment: Comment, status: str, reply: Reply | None = None) -> dict[str, Any]:
    """The replies file's record of one comment. Comment and author are cleaned as the prompt cleans
    them (base.prompt.clean_text): the reviewer reads what the model read, with no invisible or
    reordering characters and no unbounded name."""
    r: dict[str, Any] = {
        "comment_id": comment.comment_id, "video_id": comment.video_id,
        "author": clean_text(comment.author or "", MAX_AUTHOR_CHARS, one_line=True),
        "comment": clean_text(comment.text), "reply": reply.reply if reply else "",
        "sources": [source_record(p, p is reply.cited) for p in reply.sources] if reply else [],
        "used_context": bool(reply.used_context) if reply else False, "status": status,
    }
    if comment.video_title:
        r["video_title"] = clean_text(comment.video_title, MAX_TITLE_CHARS, one_line=True)
    if reply is not None:
        r.update(reply_judgement(reply, comment.text))
    if status == ANSWERED:
        r["approved"] = False  # a person sets it to true after reading the reply; `responder post` reads it
    return r
