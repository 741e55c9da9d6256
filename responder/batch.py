"""The resumable batch runner behind `responder batch`.

The output file is the run's only state: one line (JSONL) or row (CSV) per comment, appended,
flushed and fsync'd batch by batch. A re-run with the same output skips every comment id already
in it, so a killed run resumes where it stopped and no id is ever written twice. A `kill -9` in the
middle of a write can leave an incomplete last line: it is cut off on the next run (a complete line
is never dropped); a damaged line anywhere else is reported, not guessed at.

Replies come from anything with `respond_many(list[CommentRequest]) -> list[Reply]`: the
in-process `Responder`, or `HttpResponder` for a running `responder serve`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

from .core import CommentRequest, Reply, validate_comment
from .errors import UserError
from .prompt import Passage
from .youtube import Comment

log = logging.getLogger(__name__)

FIELDS = ["comment_id", "video_id", "author", "comment", "reply", "sources", "used_context", "status",
          "approved"]
ANSWERED = "answered"


class Answerer(Protocol):
    def respond_many(self, requests: Sequence[CommentRequest]) -> list[Reply]: ...


class CommentFailed(Exception):
    """One comment could not be answered; `reason` becomes `failed:<reason>` in the output."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


# ---------------------------------------------------------------------------------- output file

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


# ---------------------------------------------------------------------------------------- records

def source_dict(p: Passage) -> dict[str, Any]:
    return {"title": p.title, "section": p.section, "source": p.source, "url": p.url,
            "similarity": round(float(p.similarity), 4)}


def record(comment: Comment, status: str, reply: Reply | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "comment_id": comment.comment_id, "video_id": comment.video_id, "author": comment.author,
        "comment": comment.text, "reply": reply.reply if reply else "",
        "sources": [source_dict(p) for p in reply.sources] if reply else [],
        "used_context": bool(reply.used_context) if reply else False, "status": status,
    }
    if status == ANSWERED:
        r["approved"] = False  # a person sets it to true after reading the reply; `responder post` reads it
    return r


# ----------------------------------------------------------------------------------------- runner

@dataclass
class Summary:
    answered: int = 0
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    already_done: int = 0
    left_for_later: int = 0  # selected but beyond --limit
    answering_s: float = 0.0
    repaired_bytes: int = 0

    @property
    def per_minute(self) -> float:
        attempted = self.answered + sum(self.failed.values())
        return attempted / self.answering_s * 60 if self.answering_s > 0 else 0.0


def plan(selected: Iterable[tuple[Comment, str | None]], done: set[str], limit: int | None
         ) -> tuple[list[tuple[Comment, str]], list[Comment], int, int]:
    """(skips to record, comments to answer now, already in output, left beyond the limit).

    A comment id seen twice in the input (overlapping page exports) is recorded once.
    """
    skips, todo, already, later = [], [], 0, 0
    seen: set[str] = set()
    for comment, reason in selected:
        if comment.comment_id in seen:
            continue
        seen.add(comment.comment_id)
        if comment.comment_id in done:
            already += 1
        elif reason is not None:
            skips.append((comment, reason))
        elif limit is not None and len(todo) >= limit:
            later += 1
        else:
            todo.append(comment)
    return skips, todo, already, later


def run_batch(selected: Sequence[tuple[Comment, str | None]], answerer: Answerer, log_: ReplyLog,
              batch_size: int = 16, limit: int | None = None, video_title: str | None = None,
              on_planned: Callable[[int], None] | None = None,
              on_progress: Callable[[int], None] | None = None) -> Summary:
    """Answer the selected comments not yet in the output, appending one record per comment."""
    skips, todo, already, later = plan(selected, log_.done_ids, limit)
    summary = Summary(already_done=already, left_for_later=later, repaired_bytes=log_.repaired_bytes)
    log_.append([record(c, f"skipped:{reason}") for c, reason in skips])
    summary.skipped.update(reason for _, reason in skips)
    if on_planned:
        on_planned(len(todo))
    start = time.perf_counter()
    for i in range(0, len(todo), max(1, batch_size)):
        chunk = todo[i:i + batch_size]
        records = answer_chunk(chunk, answerer, video_title)
        log_.append(records)
        for r in records:
            if r["status"] == ANSWERED:
                summary.answered += 1
            else:
                summary.failed[r["status"].split(":", 1)[1]] += 1
        summary.answering_s = time.perf_counter() - start
        if on_progress:
            on_progress(len(chunk))
    return summary


def answer_chunk(chunk: Sequence[Comment], answerer: Answerer, video_title: str | None) -> list[dict[str, Any]]:
    """Records for one batch. A comment that cannot be answered fails alone; the batch goes on.

    A `UserError` (service unreachable, wrong API key, model missing) stops the whole run instead:
    every following comment would fail the same way.
    """
    out: dict[int, dict[str, Any]] = {}
    ok: list[int] = []
    sign_off = getattr(getattr(answerer, "style", None), "sign_off", "") or ""
    for n, c in enumerate(chunk):
        try:
            validate_comment(c.text)
            ok.append(n)
        except UserError as exc:
            log.info("%s: %s", c.comment_id, exc)
            out[n] = record(c, "failed:invalid-comment")
    requests = [CommentRequest(chunk[n].text, chunk[n].video_title or video_title, chunk[n].author or None)
                for n in ok]
    try:
        replies = answerer.respond_many(requests) if requests else []
        if len(replies) != len(requests):
            raise RuntimeError(f"{len(replies)} replies for {len(requests)} comments")
        for n, reply in zip(ok, replies):
            out[n] = _answered(chunk[n], reply, sign_off)
    except UserError:
        raise
    except Exception as exc:  # find which comment it was: answer them one by one
        log.warning("batch of %d failed (%s); answering its comments one by one", len(requests), exc)
        for n, request in zip(ok, requests):
            try:
                out[n] = _answered(chunk[n], answerer.respond_many([request])[0], sign_off)
            except UserError:
                raise
            except CommentFailed as one:
                out[n] = record(chunk[n], f"failed:{one.reason}")
            except Exception as one:  # noqa: BLE001 - recorded per comment, the run goes on
                log.warning("%s failed: %s", chunk[n].comment_id, one)
                out[n] = record(chunk[n], f"failed:{type(one).__name__}")
    return [out[n] for n in range(len(chunk))]


def _answered(comment: Comment, reply: Reply, sign_off: str) -> dict[str, Any]:
    """An answered record, unless the model said nothing (an empty reply, or the sign-off alone)."""
    body = reply.reply.strip()
    if sign_off and body.endswith(sign_off):
        body = body[: -len(sign_off)].strip()
    if not body:
        return record(comment, "failed:empty-reply")
    return record(comment, ANSWERED, reply)


# ----------------------------------------------------------------------- a running responder serve

class HttpResponder:
    """`respond_many` through a running `responder serve`: POST {url}/respond/batch."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    def respond_many(self, requests: Sequence[CommentRequest]) -> list[Reply]:
        import httpx

        body = []
        for r in requests:
            item: dict[str, Any] = {"comment": r.comment}
            if r.video_title:
                item["video_title"] = r.video_title
            if r.author:
                item["author"] = r.author
            body.append(item)
        endpoint = f"{self.url}/respond/batch"
        for attempt in range(self.retries + 1):
            try:
                response = self.client.post(endpoint, json=body)
            except httpx.TransportError as exc:
                raise UserError(f"cannot reach the responder service at {self.url} ({exc}); start it with "
                                "`responder serve` or check --server") from exc
            status = response.status_code
            if status == 200:
                break
            if status in (401, 403):
                raise UserError(f"the responder service at {self.url} refused the request ({status}); set "
                                "RESPONDER_API_KEY to the service's API key")
            if status == 404:
                raise UserError(f"{endpoint} does not exist (404); is --server the responder service's URL?")
            if status == 413:
                raise UserError(f"the responder service at {self.url} takes fewer comments per request "
                                f"({_detail(response)}); pass a smaller --batch-size")
            if status in (400, 422):  # this comment (or one in the batch) was refused
                raise CommentFailed("rejected", _detail(response))
            if (status in (429, 503) or status >= 500) and attempt < self.retries:
                wait = _retry_after(response) or self.backoff_s * 2 ** attempt
                log.info("service answered %d; retrying in %.1fs", status, wait)
                time.sleep(wait)
                continue
            raise CommentFailed(f"server-{status}", response.text[:200])
        data = response.json()
        if not isinstance(data, list) or len(data) != len(requests):
            raise RuntimeError(f"{endpoint} returned {type(data).__name__} for {len(requests)} comments")
        return [Reply(reply=str(d.get("reply") or ""), sources=[_passage(p) for p in d.get("sources") or []],
                      used_context=bool(d.get("used_context")), model=str(d.get("model") or ""),
                      adapter=d.get("adapter"), timings=d.get("timings") or {}) for d in data]

    def close(self) -> None:
        self.client.close()


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail"))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def _passage(d: dict[str, Any]) -> Passage:
    return Passage(text=str(d.get("text") or ""), title=str(d.get("title") or ""),
                   section=str(d.get("section") or ""), source=str(d.get("source") or ""),
                   url=str(d.get("url") or ""), page=d.get("page"), similarity=float(d.get("similarity") or 0.0))


def _retry_after(response: Any) -> float | None:
    try:
        return min(float(response.headers.get("Retry-After", "")), 60.0)
    except ValueError:
        return None
