"""`responder batch` when every comment fails: the failure must show, never pass for a finished run.

The answerer raises on every call (a model that crashes on any input), so the runner's one-by-one
fallback fails each comment too. What a user sees: the summary counts, the replies file, and the
exit code of `responder batch`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.prompt import CommentInput
from responder.responder import Reply
from responder.youtube.export import load_comments
from responder.youtube.selection import Filters, infer_channel_id, select

TEN_TO_ANSWER = 10  # samples/youtube/commentThreads.json: 20 threads, 10 need a reply


class BrokenAnswerer:
    """Every `respond_many` raises, whatever it is asked; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def respond_many(self, requests: list[CommentInput]) -> list[Reply]:
        self.calls += 1
        raise RuntimeError("CUDA error: device-side assert triggered")


@pytest.fixture
def sample(samples_dir) -> Path:
    return samples_dir / "youtube" / "commentThreads.json"


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_run_batch_reports_every_comment_failed_and_none_answered(tmp_path, sample):
    from responder.jobs.batch_run import run_batch
    from responder.jobs.reply_log import ReplyLog

    comments = load_comments(sample)
    selected = select(comments, Filters(channel_id=infer_channel_id(comments)))
    answerer, out = BrokenAnswerer(), tmp_path / "out.jsonl"
    with ReplyLog(out) as log_:
        summary = run_batch(selected, answerer, log_, batch_size=4)
    assert summary.answered == 0
    assert dict(summary.failed) == {"RuntimeError": TEN_TO_ANSWER}
    assert answerer.calls == 3 + TEN_TO_ANSWER  # three batches (4, 4, 2), then each comment alone
    tried = [r for r in records(out) if not r["status"].startswith("skipped:")]
    assert [r["status"] for r in tried] == ["failed:RuntimeError"] * TEN_TO_ANSWER
    assert not any(r["reply"] or r.get("approved") for r in tried)  # nothing anyone could post


@pytest.fixture
def broken_factory(monkeypatch):
    """`responder batch` in process builds its answerer with build_responder: use the broken one."""
    import responder.factory

    monkeypatch.setattr(responder.factory, "build_responder", lambda settings: BrokenAnswerer())


def test_cli_batch_shows_the_failures_and_no_review_advice(tmp_path, sample, broken_factory):
    from responder.cli import cli

    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out), "--batch-size", "4"],
                                env={"COLUMNS": "200"})
    assert re.search(rf"failed: RuntimeError\W+{TEN_TO_ANSWER}\b", result.output), result.output
    assert re.search(r"\banswered\W+0\b", result.output), result.output
    assert "responder post" not in result.output  # no "review the replies, then post" for zero replies


def test_cli_batch_exits_non_zero_when_every_comment_failed(tmp_path, sample, broken_factory):
    from responder.cli import cli

    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out), "--batch-size", "4"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code != 0, result.output
