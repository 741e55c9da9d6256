"""The replies file of `responder batch`: one record per comment, appended, resumable.

The output file is the run's only state: one line (JSONL) or row (CSV) per comment, appended,
flushed and fsync'd batch by batch. A re-run with the same output skips every comment id already
in it, so a killed run resumes where it stopped and no id is ever written twice. A `kill -9` in the
middle of a write can leave an incomplete last line: it is cut off on the next run (a complete line
is never dropped); a damaged line anywhere else is reported, not guessed at.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from base.errors import UserError
from responder.responder import Reply
from responder.youtube.export import Comment

log = logging.getLogger(__name__)


FIELDS = ["comment_id", "video_id", "author", "comment", "reply", "sources", "used_context", "status",
          "approved"]


ANSWERED = "answered"


def output_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


@dataclass
class OutputScan:
    records: list[dict[str, Any]]
    keep_bytes: int  # the file's complete part; anything after it is an interrupted write
    needs_newline: bool = False  # the last record is complete but its newline never got written


def scan_jsonl(path: Path) -> OutputScan:
    data = path.read_bytes()
    records: list[dict[str, Any]] = []
    pos = 0
    lines = data.split(b"\n")
    for n, raw in enumerate(lines[:-1], 1):
        pos += len(raw) + 1
        if not raw.strip():
            continue
        record = _parse_line(raw)
        if record is None:
            raise UserError(f"output '{path}' line {n} is not a reply record; fix or delete that line "
                            "(its comment is answered again on the next run), or pass a new -o file")
        records.append(record)
    tail = lines[-1]
    if tail.strip():
        record = _parse_line(tail)
        if record is not None:  # complete, only its newline is missing
            records.append(record)
            return OutputScan(records, len(data), needs_newline=True)
        return OutputScan(records, pos)  # an interrupted write: cut it off
    return OutputScan(records, len(data))


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or "comment_id" not in record or "status" not in record:
        return None
    return record


def scan_csv(path: Path) -> OutputScan:
    data = path.read_bytes()
    if not data.strip():
        return OutputScan([], 0)
    # A row is complete when it ends with a newline outside quotes. Back off, newline by newline,
    # from the end until the text parses into whole rows: that drops only an interrupted write.
    end = len(data) if data.endswith(b"\n") else data.rfind(b"\n") + 1
    for _ in range(10_000):
        rows = _parse_csv(data[:end])
        if rows is not None:
            header, body = rows
            missing = {"comment_id", "status"} - set(header)
            if missing:
                raise UserError(f"output '{path}' is a CSV without {', '.join(sorted(missing))} columns; "
                                "pass a new -o file")
            return OutputScan([_csv_record(dict(zip(header, row))) for row in body], end)
        if end <= 0:
            break
        end = data.rfind(b"\n", 0, end - 1) + 1
    raise UserError(f"output '{path}' is not a CSV this command wrote; pass a new -o file")


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


def _csv_record(row: dict[str, str]) -> dict[str, Any]:
    record: dict[str, Any] = dict(row)
    try:
        record["sources"] = json.loads(row.get("sources") or "[]")
    except json.JSONDecodeError:
        record["sources"] = []
    record["used_context"] = row.get("used_context", "").lower() == "true"
    record["approved"] = row.get("approved", "").strip().lower() in ("true", "yes", "1", "y", "x")
    return record


class ReplyLog:
    """The output file: read once (repairing an interrupted last write), then appended to."""

    def __init__(self, path: Path | str, fmt: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.fmt = output_format(self.path, fmt)
        self.records: list[dict[str, Any]] = []
        self.repaired_bytes = 0
        self._fd: int | None = None

    def open(self) -> "ReplyLog":
        if self.path.is_dir():
            raise UserError(f"output '{self.path}' is a folder; pass a file name such as replies.jsonl")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UserError(f"cannot open output '{self.path}': {exc.strerror}; check the path") from exc
        self._lock()
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def _lock(self) -> None:
        try:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock, still correct for a single run
            return
        except OSError as exc:
            self.close()
            raise UserError(f"output '{self.path}' is being written by another `responder batch`; "
                            "wait for it or pass another -o file") from exc

    def _load(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        scan = scan_csv(self.path) if self.fmt == "csv" else scan_jsonl(self.path)
        self.records = scan.records
        if scan.keep_bytes < size:
            self.repaired_bytes = size - scan.keep_bytes
            log.warning("%s: dropped an incomplete last line (%d bytes) left by an interrupted run",
                        self.path, self.repaired_bytes)
            os.ftruncate(self._fd, scan.keep_bytes)
        if scan.needs_newline:
            os.write(self._fd, b"\n")
        os.fsync(self._fd)

    @property
    def done_ids(self) -> set[str]:
        return {str(r["comment_id"]) for r in self.records}

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Write the records in one write and force them to disk before returning."""
        if not records:
            return
        if self.fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            if os.fstat(self._fd).st_size == 0:
                writer.writerow(FIELDS)
            for r in records:
                writer.writerow([_csv_cell(r.get(k)) for k in FIELDS])
            payload = buf.getvalue().encode("utf-8")
        else:
            payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
        view = memoryview(payload)
        while view:  # os.write may write less than asked
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.records.extend(records)

    def drop_failed(self) -> int:
        """Rewrite the file without its failed lines (atomically), so they are answered again."""
        keep = [r for r in self.records if not str(r.get("status", "")).startswith("failed")]
        dropped = len(self.records) - len(keep)
        if not dropped:
            return 0
        tmp = self.path.with_name(self.path.name + ".tmp")
        old_fd, self._fd = self._fd, os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.records = []
        try:
            self._lock()
            if keep:
                self.append(keep)
            os.replace(tmp, self.path)
        finally:
            if old_fd is not None:
                os.close(old_fd)
        self.records = keep
        return dropped

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ReplyLog":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else str(value)


def record(comment: Comment, status: str, reply: Reply | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "comment_id": comment.comment_id, "video_id": comment.video_id, "author": comment.author,
        "comment": comment.text, "reply": reply.reply if reply else "",
        "sources": [p.to_dict() for p in reply.sources] if reply else [],
        "used_context": bool(reply.used_context) if reply else False, "status": status,
    }
    if status == ANSWERED:
        r["approved"] = False  # a person sets it to true after reading the reply; `responder post` reads it
    return r
