"""Files a kill or a crash never leaves half-written, and the one JSONL reader.

- Atomic writes: files go to a temporary name in the same directory and are renamed into place
  (rename is atomic on one filesystem); a directory is built in a temporary directory and renamed
  likewise.
- `parse_jsonl` / `read_jsonl`: JSONL with line numbers; errors name the file, the line and the fix.
- `AppendOnlyLog`: a file that only grows (the replies file of `responder batch`, the ledger of
  `responder post`): one writer at a time (a lock), every append fsync'd, and after a `kill -9` in
  the middle of a write the torn last line is cut off on the next open (a complete line never is).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from base.errors import UserError

log = logging.getLogger(__name__)


def write_text_atomic(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    write_with_atomic(path, write)


def write_with_atomic(path: Path, writer: Callable[[Path], None]) -> None:
    """`writer(tmp_path)` then rename to `path` (for torch.save, savefig and the like)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_dir_atomic(target: Path, builder: Callable[[Path], None]) -> None:
    """Build a directory with `builder(tmp_dir)`, then swap it in for `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = None
    try:
        builder(tmp)
        os.chmod(tmp, 0o755)
        for f in tmp.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)




# ------------------------------------------------------------------------------ reading JSONL

_BOM = "\ufeff"


@dataclass(frozen=True)
class JsonlLine:
    """One non-blank line of a JSONL text, parsed (or not: then `error` says why)."""

    number: int           # 1-based line number, blank lines counted: what an editor shows
    value: Any            # the parsed JSON value; None when `error` is set
    error: str | None     # why the line is not JSON ("Expecting value at column 1", "bytes that are not UTF-8")
    terminated: bool      # ends with a newline; False only for the last line of a file still being written
    start: int            # offset of the line in the data (bytes for bytes, characters for str)
    end: int              # offset just past its newline


def parse_jsonl(data: bytes | str) -> Iterator[JsonlLine]:
    """Every non-blank line of `data`, parsed. Never raises for a bad line: the caller decides.

    Lines end at "\\n" only (a "\\r" before it is whitespace to JSON), so a U+2028 inside a JSON string
    never splits a record. A UTF-8 byte-order mark at the start is ignored.
    """
    newline = b"\n" if isinstance(data, bytes) else "\n"
    pos, number = 0, 0
    while pos < len(data):
        cut = data.find(newline, pos)  # type: ignore[arg-type]
        end = len(data) if cut < 0 else cut + 1
        raw = data[pos:end]
        number += 1
        if raw.strip():
            value, error = _parse_json_line(raw, first=number == 1)
            yield JsonlLine(number, value, error, cut >= 0, pos, end)
        pos = end


def _parse_json_line(raw: bytes | str, first: bool) -> tuple[Any, str | None]:
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8-sig" if first else "utf-8")
        except UnicodeDecodeError as exc:
            return None, f"bytes that are not UTF-8 at column {exc.start + 1}"
    elif first:
        raw = raw.removeprefix(_BOM)
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as exc:
        return None, f"{exc.msg} at column {exc.colno}"


def read_jsonl(path: Path | str, name: str | None = None, fix: str = "fix or remove that line", *,
               data: bytes | str | None = None, objects: bool = False,
               torn_tail: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, value) for each non-blank line; the first bad line raises a `UserError`.

    The error names the file (`name`, e.g. "replies file 'r.jsonl'"; default the quoted path), the
    line and the fix. `data` is the file's content when the caller has read it already. `objects`:
    every value must be a JSON object. `torn_tail`: a last line without its newline that does not
    parse is a write still under way (or cut by a kill), skipped with a warning instead of an error.
    Callers that report every problem at once use `parse_jsonl` and collect its `error`s.
    """
    name = name or f"'{path}'"
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read {name}: {exc.strerror or exc}; check the path and its "
                            "permissions") from exc
    for line in parse_jsonl(data):
        if line.error is not None:
            if torn_tail and not line.terminated:
                log.warning("%s: ignoring an incomplete last line (a run still writing it, or one killed "
                            "mid-write)", name)
                return
            raise UserError(f"{name} line {line.number} is not valid JSON ({line.error}); {fix}")
        if objects and not isinstance(line.value, dict):
            raise UserError(f"{name} line {line.number} is not a JSON object; {fix}")
        yield line.number, line.value


# ------------------------------------------------------------------------- append-only logs

@dataclass
class LogScan:
    """What an append-only log holds: its records, and how much of the file is whole."""

    records: list[Any]
    keep_bytes: int               # the file's complete part; anything after it is an interrupted write
    needs_newline: bool = False   # the last record is complete but its newline never got written


def scan_jsonl_log(data: bytes, name: str, damaged: str = "is damaged; fix or delete that line",
                   accept: Callable[[Any], bool] | None = None) -> LogScan:
    """Records of a JSONL log: a torn last line is cut off, a complete one is never dropped.

    A line counts as a record when it parses and `accept(value)` is true. A bad last line without
    its newline is what a kill in the middle of a write leaves: it is left out of `keep_bytes`. A
    bad line anywhere else is not guessed at: `UserError` "{name} line N {damaged}".
    """
    records: list[Any] = []
    for line in parse_jsonl(data):
        ok = line.error is None and (accept is None or accept(line.value))
        if not line.terminated:  # the last line, its newline never written
            if not ok:
                return LogScan(records, line.start)
            records.append(line.value)
            return LogScan(records, len(data), needs_newline=True)
        if not ok:
            raise UserError(f"{name} line {line.number} {damaged}")
        records.append(line.value)
    return LogScan(records, len(data))


def json_lines(records: Sequence[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


class AppendOnlyLog:
    """A file of records that only grows, written by one process at a time, safe against kill -9.

    `open()` takes an exclusive lock (another process holding it is a `UserError` naming the file),
    scans the records (`scan(data)`, JSONL by default) and cuts off a torn last write. `write()`
    appends whole records in one write and fsyncs before returning, so a record the caller was told
    about is on disk. `rewrite()` swaps in new content atomically (for dropping records).
    """

    def __init__(self, path: Path | str, name: str | None = None, *,
                 in_use: str = "is in use by another process; wait for it to finish",
                 scan: Callable[[bytes], LogScan] | None = None) -> None:
        self.path = Path(path)
        self.name = name or f"'{self.path}'"
        self.in_use = in_use
        self.scan = scan or (lambda data: scan_jsonl_log(data, self.name))
        self.records: list[Any] = []
        self.repaired_bytes = 0
        self._fd: int | None = None

    def read(self) -> list[Any]:
        """The records, without a lock and without writing anything (a dry run, a reader)."""
        self.records = self.scan(self.path.read_bytes()).records if self.path.exists() else []
        return self.records

    def open(self) -> "AppendOnlyLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise UserError(f"cannot open {self.name}: {exc.strerror}; check the path") from exc
        try:
            self._lock(self._fd)
            self._load()
        except BaseException:
            self.close()
            raise
        return self

    def _lock(self, fd: int) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, still correct for a single process
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise UserError(f"{self.name} {self.in_use}") from exc

    def _load(self) -> None:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        scan = self.scan(self.path.read_bytes())
        self.records = scan.records
        if scan.keep_bytes < size:
            self.repaired_bytes = size - scan.keep_bytes
            log.warning("%s: dropped an incomplete last line (%d bytes) left by an interrupted run",
                        self.path, self.repaired_bytes)
            os.ftruncate(self._fd, scan.keep_bytes)
        if scan.needs_newline:
            _write_all(self._fd, b"\n")
        if self.repaired_bytes or scan.needs_newline:
            os.fsync(self._fd)

    def size(self) -> int:
        assert self._fd is not None, "open() the log first"
        return os.fstat(self._fd).st_size

    def append(self, records: Sequence[Any]) -> None:
        """Append records as JSON lines (one write, fsync'd)."""
        self.write(json_lines(records), records)

    def write(self, payload: bytes, records: Sequence[Any] = ()) -> None:
        """Append `payload` (whole records, newline-terminated) in one write; on disk before returning."""
        assert self._fd is not None, "open() the log first"
        if not payload:
            return
        _write_all(self._fd, payload)
        os.fsync(self._fd)
        self.records.extend(records)

    def rewrite(self, payload: bytes, records: Sequence[Any]) -> None:
        """Replace the whole content atomically: a temporary file, locked, fsync'd, renamed into place."""
        assert self._fd is not None, "open() the log first"
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            self._lock(fd)  # held before the rename: a process opening the new file finds it locked
            _write_all(fd, payload)
            os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        self.records = list(records)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "AppendOnlyLog":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:  # os.write may write less than asked
        written = os.write(fd, view)
        view = view[written:]
