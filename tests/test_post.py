"""`responder post` against a local fake of YouTube's comments endpoint (real HTTP on loopback)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.errors import UserError
from responder.cli import cli
from responder.jobs.posting import Ledger, post_replies
from tests.fake_youtube import FakeYouTube

SIGN = "Keep exploring! - Nadia"
RESPONDER = str(Path(sys.executable).parent / "responder")  # the installed console script


@pytest.fixture
def yt():
    fake = FakeYouTube().start()
    yield fake
    fake.stop()


def write_replies(path: Path, n: int = 4, approved=lambda i: i % 2 == 0, extra: list[dict] | None = None) -> Path:
    lines = []
    for i in range(n):
        lines.append({"comment_id": f"Ugx{i:03d}", "video_id": "vid1", "author": f"@viewer{i}",
                      "comment": f"question {i}?", "reply": f"Answer number {i}.\n{SIGN}", "sources": [],
                      "used_context": False, "status": "answered", "approved": approved(i)})
    lines.append({"comment_id": "UgxSkip", "video_id": "vid1", "author": "@x", "comment": "🔥", "reply": "",
                  "sources": [], "used_context": False, "status": "skipped:emoji-only"})
    lines += extra or []
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    return path


def post(path: Path, yt: FakeYouTube, **kw):
    kw.setdefault("backoff_s", 0.01)
    return post_replies(path, yes=True, api_base=yt.url, token=yt.token, **kw)


def test_dry_run_calls_nothing_and_writes_no_ledger(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl")
    runner = CliRunner()
    result = runner.invoke(cli, ["post", str(replies)], env={"YOUTUBE_API_BASE": yt.url})
    assert result.exit_code == 0, result.output
    assert "Dry run: nothing posted. 2 replies would be posted (100 units" in result.output
    assert yt.calls == []
    assert not (tmp_path / "r.jsonl.ledger").exists()


def test_posts_only_approved_once_with_the_right_request_shape(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl")
    env = {"YOUTUBE_API_BASE": yt.url, "YOUTUBE_ACCESS_TOKEN": yt.token}
    result = CliRunner().invoke(cli, ["post", str(replies), "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert yt.shape_errors == []
    assert dict(yt.replies) .keys() == {"Ugx000", "Ugx002"}
    assert yt.texts_under("Ugx000") == [f"Answer number 0.\n{SIGN}"]
    assert "100 / 10000" in result.output  # quota used today, from the ledger

    again = CliRunner().invoke(cli, ["post", str(replies), "--yes", "--all"], env=env)
    assert again.exit_code == 0, again.output
    # --all adds the two unapproved ones; the approved ones are not posted a second time
    assert sorted(yt.replies) == ["Ugx000", "Ugx001", "Ugx002", "Ugx003"]
    assert all(len(v) == 1 for v in yt.replies.values())
    assert yt.count("insert") == 4


def test_missing_token_is_one_clear_line(tmp_path, yt, repo_root):
    replies = write_replies(tmp_path / "r.jsonl")
    env = {**os.environ, "YOUTUBE_API_BASE": yt.url, "YOUTUBE_ACCESS_TOKEN": ""}
    result = subprocess.run([RESPONDER, "post", str(replies), "--yes"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: posting needs an OAuth access token with the youtube.force-ssl scope: set "
        "YOUTUBE_ACCESS_TOKEN (or run without --yes for a dry run)"]
    assert yt.calls == [] and not (tmp_path / "r.jsonl.ledger").exists()


def test_wrong_token_stops_and_posts_nothing(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl")
    summary = post_replies(replies, yes=True, api_base=yt.url, token="expired")
    assert summary.posted == 0 and "access token" in summary.stopped
    assert yt.total_replies() == 0
    assert post(replies, yt).posted == 2  # a later run with a good token posts them


def test_retries_429_and_5xx_without_double_posting(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=1, approved=lambda i: True)
    yt.script.extend([429, 500, 503, "ok"])
    summary = post(replies, yt)
    assert summary.posted == 1 and summary.stopped is None
    assert yt.count("insert") == 4
    assert yt.count("list") == 2  # a 5xx may have stored the reply: checked before each retry
    assert yt.texts_under("Ugx000") == [f"Answer number 0.\n{SIGN}"]


def test_dropped_connection_after_store_is_found_not_reposted(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=1, approved=lambda i: True)
    yt.script.append("drop")
    summary = post(replies, yt)
    assert summary.recovered == 1 and summary.posted == 0
    assert len(yt.texts_under("Ugx000")) == 1
    assert Ledger.read(tmp_path / "r.jsonl.ledger").state("Ugx000") == "posted"


def test_quota_exceeded_stops_and_the_next_run_posts_the_rest(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=3, approved=lambda i: True)
    yt.script.extend(["ok", "quotaExceeded"])
    summary = post(replies, yt)
    assert summary.posted == 1 and "quotaExceeded" in summary.stopped
    assert yt.count("insert") == 2  # stopped at once: the third was not tried
    summary = post(replies, yt)
    assert summary.posted == 2 and summary.already_posted == 1
    assert all(len(v) == 1 for v in yt.replies.values()) and len(yt.replies) == 3


def test_too_long_and_unsupported_are_marked_failed_and_not_retried(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=3, approved=lambda i: True)
    yt.script.extend(["commentTextTooLong", "operationNotSupported", "ok"])
    summary = post(replies, yt)
    assert summary.posted == 1
    assert dict(summary.failed) == {"commentTextTooLong": 1, "operationNotSupported": 1}
    assert summary.stopped is None
    summary = post(replies, yt)
    assert summary.posted == 0 and summary.failed_before == 2 and summary.already_posted == 1
    assert yt.count("insert") == 3


def test_daily_budget_stops_cleanly_before_going_over(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=5, approved=lambda i: True)
    env = {"YOUTUBE_API_BASE": yt.url, "YOUTUBE_ACCESS_TOKEN": yt.token}
    result = CliRunner().invoke(cli, ["post", str(replies), "--yes", "--quota-budget", "120"], env=env)
    assert result.exit_code == 1
    assert "daily quota budget reached: 100 of 120 units used today" in result.output
    assert "Traceback" not in result.output
    assert yt.total_replies() == 2
    # Same day, same budget: nothing more is spent.
    again = CliRunner().invoke(cli, ["post", str(replies), "--yes", "--quota-budget", "120"], env=env)
    assert again.exit_code == 1 and yt.total_replies() == 2
    assert CliRunner().invoke(cli, ["post", str(replies), "--yes"], env=env).exit_code == 0
    assert yt.total_replies() == 5


def test_ledger_with_an_interrupted_last_line_still_works(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=2, approved=lambda i: True)
    post(replies, yt)
    ledger = tmp_path / "r.jsonl.ledger"
    with ledger.open("ab") as f:
        f.write(b'{"event": "intent", "comment_id": "Ugx0')  # a write cut by kill -9
    summary = post(replies, yt)
    assert summary.already_posted == 2 and summary.posted == 0
    assert all(json.loads(x) for x in ledger.read_text().splitlines())
    assert yt.total_replies() == 2


def test_local_ids_and_empty_replies_are_not_posted(tmp_path, yt):
    extra = [{"comment_id": "local-abc", "reply": "hi", "status": "answered", "approved": True},
             {"comment_id": "Ugx999", "reply": "  ", "status": "answered", "approved": True}]
    replies = write_replies(tmp_path / "r.jsonl", n=1, approved=lambda i: True, extra=extra)
    summary = post(replies, yt)
    assert summary.posted == 1
    assert dict(summary.not_postable) == {"no-youtube-id": 1, "empty-reply": 1}


def test_csv_replies_with_approved_column(tmp_path, yt):
    path = tmp_path / "r.csv"
    path.write_text("comment_id,reply,status,approved\nUgxA,Hi there,answered,yes\nUgxB,Hello,answered,\n")
    summary = post(path, yt)
    assert summary.posted == 1 and summary.not_approved == 1
    assert list(yt.replies) == ["UgxA"]


def test_kill_between_call_and_write_never_double_posts(tmp_path, yt, repo_root):
    """A real `responder post` process is killed (SIGKILL) while YouTube has stored its reply but
    not answered yet: the ledger holds an intent with no result. The next run checks YouTube first."""
    replies = write_replies(tmp_path / "r.jsonl", n=3, approved=lambda i: True)
    yt.script.extend(["ok", "hang"])
    env = {**os.environ, "YOUTUBE_API_BASE": yt.url, "YOUTUBE_ACCESS_TOKEN": yt.token}
    proc = subprocess.Popen([RESPONDER, "post", str(replies), "--yes"],
                            cwd=repo_root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert yt.wait_for_replies(2, timeout=60), "the post never reached the fake"
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    ledger = Ledger.read(tmp_path / "r.jsonl.ledger")
    assert ledger.state("Ugx000") == "posted"
    assert ledger.state("Ugx001") == "pending"  # intent on disk, result never written
    yt.release()

    result = subprocess.run([RESPONDER, "post", str(replies), "--yes"],
                            cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [len(yt.replies[f"Ugx00{i}"]) for i in range(3)] == [1, 1, 1]
    assert yt.count("list") == 1  # only the unsure one was checked
    assert Ledger.read(tmp_path / "r.jsonl.ledger").state("Ugx001") == "posted"


def test_a_hand_edit_that_breaks_a_line_names_the_line(tmp_path, yt):
    replies = write_replies(tmp_path / "r.jsonl", n=3, approved=lambda i: True)
    text = replies.read_text().splitlines(keepends=True)
    text[1] = text[1].replace('"approved": true', '"approved": true,')  # a trailing comma
    replies.write_text("".join(text))
    with pytest.raises(UserError, match=r"replies file '.*r.jsonl' line 2 is not valid JSON"):
        post(replies, yt)
    assert yt.calls == []
