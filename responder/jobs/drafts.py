"""The replies file as drafts to review: read it, change one draft, write it back atomically.

A change (approve, edit, reject, regenerate) takes the replies file's lock (the one `responder
batch` holds while it appends), reads the file again, changes the one record and swaps the whole
file in atomically (`base.fileio.AppendOnlyLog.rewrite`): a crash or a kill leaves the old file
or the new one, never half of each. A batch still appending is waited for a few seconds, then
the change is refused with a clear message; nothing is lost either way.

Review fields (all optional when reading): `flags_seen` (the flags shown when a person approved or
edited the reply), `reviewed_at`, `edited`, `original_reply`, `regenerated_at`. JSONL records
carry them inline. A CSV keeps exactly the columns `responder batch` writes (so a batch can still
append rows), and its review fields live beside it in REPLIES.csv.review.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from base.errors import UserError
from base.fileio import AppendOnlyLog, json_lines, write_text_atomic
from responder.jobs.reply_log import csv_columns, encode_csv, output_format, scan_csv, scan_jsonl

REVIEW_FIELDS = ("flags_seen", "reviewed_at", "edited", "original_reply", "regenerated_at")
IN_USE = ("is being written by a running `responder batch`; wait for it to finish (or stop it), then try again "
          "(nothing was changed)")


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".review.json")


class Drafts:
    """One replies file (JSONL or CSV, as `responder batch` writes it)."""

    def __init__(self, path: Path | str, wait_s: float = 5.0) -> None:
        self.path = Path(path).expanduser()
        self.fmt = output_format(self.path, None)
        self.name = f"replies file '{self.path}'"
        self.wait_s = wait_s

    def _scan(self, data: bytes):
        return scan_csv(data, self.name) if self.fmt == "csv" else scan_jsonl(data, self.name)

    def check(self) -> None:
        if not self.path.is_file():
            raise UserError(f"{self.name} does not exist; pass the output of `responder batch` (or run "
                            "`responder batch` first)")

    def load(self) -> list[dict[str, Any]]:
        """Every record, read without the lock (an interrupted last line is left out)."""
        self.check()
        try:
            records = self._scan(self.path.read_bytes()).records
        except OSError as exc:
            raise UserError(f"cannot read {self.name}: {exc.strerror}") from exc
        return self._with_review_fields(records)

    def _with_review_fields(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.fmt != "csv" or not sidecar(self.path).exists():
            return records
        try:
            meta = json.loads(sidecar(self.path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"review notes '{sidecar(self.path)}' cannot be read ({exc}); restore or delete "
                            "it (approvals of flagged replies are then asked again)") from exc
        return [{**r, **(meta.get(str(r.get("comment_id"))) or {})} for r in records]

    def change(self, comment_id: str, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `edit` to the draft of `comment_id` and write the file back at once; the new record."""
        log = self._open_locked()
        try:
            records = self._with_review_fields(log.records)
            index = next((i for i in range(len(records) - 1, -1, -1)
                          if str(records[i].get("comment_id")) == comment_id), None)
            if index is None:
                raise UserError(f"{self.name} has no reply to comment '{comment_id}'; reload the page")
            record = dict(records[index])
            edit(record)
            records[index] = record
            if self.fmt == "csv":
                self._write_sidecar(records)
            log.rewrite(self._encode(records), records)
            return record
        finally:
            log.close()

    def _open_locked(self) -> AppendOnlyLog:
        self.check()
        deadline = time.monotonic() + self.wait_s
        while True:
            log = AppendOnlyLog(self.path, self.name, in_use=IN_USE, scan=self._scan)
            try:
                return log.open()
            except UserError as exc:
                if not str(exc).endswith(IN_USE) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

    def _encode(self, records: list[dict[str, Any]]) -> bytes:
        # The batch job's own encoder: a rewrite keeps formula cells neutralised.
        return encode_csv(records, True, csv_columns(self.path)) if self.fmt == "csv" else json_lines(records)

    def _write_sidecar(self, records: list[dict[str, Any]]) -> None:
        meta = {str(r["comment_id"]): {k: r[k] for k in REVIEW_FIELDS if k in r} for r in records}
        write_text_atomic(sidecar(self.path), json.dumps({k: v for k, v in meta.items() if v}, ensure_ascii=False,
                                                         indent=1))
