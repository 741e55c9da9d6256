"""base.fileio: the one JSONL reader and the append-only log under the replies file and the ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from base.errors import UserError
from base.fileio import AppendOnlyLog, parse_jsonl, read_jsonl, scan_jsonl_log

# ------------------------------------------------------------------------------------- reading


def test_parse_jsonl_numbers_lines_as_an_editor_does_and_never_raises():
    data = '\ufeff{"a": 1}\n\n  \n[1, 2]\nnot json\n{"b": "x\u2028y"}\r\n{"cut'
    lines = list(parse_jsonl(data))
    assert [(x.number, x.value, x.error is None, x.terminated) for x in lines] == [
        (1, {"a": 1}, True, True), (4, [1, 2], True, True), (5, None, False, True),
        (6, {"b": "x\u2028y"}, True, True), (7, None, False, False)]
    assert lines[2].error == "Expecting value at column 1"
    raw = data.encode()
    assert [x.value for x in parse_jsonl(raw)] == [x.value for x in lines]
    cut = list(parse_jsonl(raw))[-1]
    assert raw[cut.start:cut.end] == b'{"cut'  # byte offsets, for cutting a torn write


def test_parse_jsonl_reports_bytes_that_are_not_utf8():
    [line] = list(parse_jsonl(b'{"a": "caf\xe9"}\n'))
    assert line.number == 1 and line.error == "bytes that are not UTF-8 at column 11"


def test_read_jsonl_fails_fast_naming_the_file_the_line_and_the_fix(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"a": 1}\n{"a": 2,}\n{"a": 3}\n')
    seen = []
    with pytest.raises(UserError) as exc:
        for n, value in read_jsonl(path, f"questions file '{path}'", "fix that line"):
            seen.append((n, value))
    assert seen == [(1, {"a": 1})]
    assert str(exc.value) == (f"questions file '{path}' line 2 is not valid JSON (Expecting property name "
                              "enclosed in double quotes at column 9); fix that line")
    path.write_text('{"a": 1}\n[2]\n')
    with pytest.raises(UserError, match=rf"^'{path}' line 2 is not a JSON object; fix or remove that line$"):
        list(read_jsonl(path, objects=True))
    with pytest.raises(UserError, match=r"^cannot read 'nope.jsonl': No such file"):
        list(read_jsonl("nope.jsonl"))


def test_read_jsonl_can_skip_a_last_line_still_being_written(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2')
    assert list(read_jsonl(path, torn_tail=True)) == [(1, {"a": 1})]
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        list(read_jsonl(path))
    path.write_bytes(b'{"a": 1}\n{"a": 2\n{"a": 3}\n')  # not the last line: an error even so
    with pytest.raises(UserError, match="line 2 is not valid JSON"):
        list(read_jsonl(path, torn_tail=True))


# -------------------------------------------------------------------------------- the log


def test_scan_cuts_a_torn_tail_keeps_a_complete_one_and_reports_a_damaged_middle():
    assert scan_jsonl_log(b'{"a": 1}\n{"a": 2', "log").keep_bytes == len(b'{"a": 1}\n')
    whole = scan_jsonl_log(b'{"a": 1}\n{"a": 2}', "log")
    assert whole.records == [{"a": 1}, {"a": 2}] and whole.needs_newline and whole.keep_bytes == 17
    with pytest.raises(UserError, match=r"^ledger 'x' line 3 is damaged; restore it$"):
        scan_jsonl_log(b'{"a": 1}\n\n{"a": \n{"a": 3}\n', "ledger 'x'", damaged="is damaged; restore it")
    only_dicts = scan_jsonl_log(b'{"a": 1}\n[2]', "log", accept=lambda v: isinstance(v, dict))
    assert only_dicts.records == [{"a": 1}] and only_dicts.keep_bytes == 9


def test_log_repairs_on_open_and_appends_whole_fsynced_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "te')  # what kill -9 mid-write leaves
    with AppendOnlyLog(path) as log:
        assert log.records == [{"n": 1}, {"n": 2}] and log.repaired_bytes == len(b'{"n": 3, "te')
        log.append([{"n": 3}, {"n": "ü"}])
        assert log.records[-1] == {"n": "ü"}
    assert path.read_text(encoding="utf-8") == '{"n": 1}\n{"n": 2}\n{"n": 3}\n{"n": "ü"}\n'

    path.write_bytes(b'{"n": 1}')  # complete, only its newline missing: kept, the newline added
    with AppendOnlyLog(path) as log:
        assert log.records == [{"n": 1}] and log.repaired_bytes == 0
        log.append([{"n": 2}])
    assert path.read_bytes() == b'{"n": 1}\n{"n": 2}\n'


def test_a_damaged_middle_line_is_reported_and_the_file_left_alone(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": \n{"n": 3}\n{"n": 4')
    before = path.read_bytes()
    with pytest.raises(UserError, match=rf"^'{path}' line 2 is damaged; fix or delete that line$"):
        AppendOnlyLog(path).open()
    assert path.read_bytes() == before
    assert AppendOnlyLog(tmp_path / "new.jsonl").read() == []  # reading a missing log creates nothing
    assert not (tmp_path / "new.jsonl").exists()


HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_log_held_by_another_process_is_a_clear_error(tmp_path):
    pytest.importorskip("fcntl")
    path = tmp_path / "r.jsonl.ledger"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        log = AppendOnlyLog(path, f"ledger '{path}'", in_use="is in use by another `responder post`; wait for it")
        with pytest.raises(UserError) as exc:
            log.open()
        assert str(exc.value) == f"ledger '{path}' is in use by another `responder post`; wait for it"
    finally:
        holder.communicate("", timeout=10)
    with AppendOnlyLog(path) as log:  # free again once the other process is gone
        log.append([{"ok": True}])
    assert json.loads(path.read_text()) == {"ok": True}


def test_rewrite_swaps_the_content_atomically_and_keeps_the_lock(tmp_path):
    path = tmp_path / "r.jsonl"
    with AppendOnlyLog(path) as log:
        log.append([{"n": 1}, {"n": 2}])
        log.rewrite(b'{"n": 2}\n', [{"n": 2}])
        with pytest.raises(UserError, match="is in use"):
            AppendOnlyLog(path).open()  # a second writer is refused after the swap too
        log.append([{"n": 3}])
        assert log.records == [{"n": 2}, {"n": 3}]
    assert path.read_text() == '{"n": 2}\n{"n": 3}\n'
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["r.jsonl"]
