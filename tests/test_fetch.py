"""`responder fetch` (a video's threads, a channel's pairs) and `batch --video`, against the fake YouTube API."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.errors import UserError
from responder.cli import cli
from responder.youtube.export import load_comments
from responder.youtube.fetch import channel_ref, parse_since, video_id
from tests.fake_youtube import CHANNEL, FakeYouTube, comment

RESPONDER = str(Path(sys.executable).parent / "responder")
VIDEO = "dQw4w9WgXcQ"


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for name in ("YOUTUBE_ACCESS_TOKEN", "YOUTUBE_API_KEY", "YOUTUBE_CHANNEL_ID", "YOUTUBE_API_BASE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def yt():
    fake = FakeYouTube().start()
    for n in range(5):  # five threads, newest first: 2026-11-05 ... 2026-11-01
        fake.add_thread(VIDEO, f"Ugw{n}", f"question number {n}?", author=f"@viewer{n}",
                        published=f"2026-11-0{n + 1}T10:00:00Z")
    fake.page_size = 2  # three pages
    yield fake
    fake.stop()


def fetch(yt: FakeYouTube, *args: str, key: str = "test-key"):
    env = {"YOUTUBE_API_BASE": yt.url, "YOUTUBE_API_KEY": key}
    return CliRunner().invoke(cli, ["fetch", *args], env=env, standalone_mode=False)


@pytest.mark.parametrize("text", [
    VIDEO, f"https://www.youtube.com/watch?v={VIDEO}&t=42s", f"youtube.com/watch?feature=share&v={VIDEO}",
    f"https://youtu.be/{VIDEO}?si=abc", f"https://www.youtube.com/shorts/{VIDEO}",
    f"https://www.youtube.com/embed/{VIDEO}", f"https://m.youtube.com/watch?v={VIDEO}",
    f"https://www.youtube.com/live/{VIDEO}?feature=share", f"https://www.youtube-nocookie.com/embed/{VIDEO}",
])
def test_video_id_from_every_url_form(text):
    assert video_id(text) == VIDEO


@pytest.mark.parametrize("text", ["", "dQw4w9WgXc", "https://vimeo.com/123", "https://www.youtube.com/@nadia"])
def test_not_a_video_is_one_clear_error(text):
    with pytest.raises(UserError, match="is not a YouTube video id or URL; pass the 11-character id"):
        video_id(text)


def test_channel_refs_and_since():
    assert channel_ref(CHANNEL) == ("id", CHANNEL)
    assert channel_ref("@NadiaDoesData") == ("handle", "@NadiaDoesData")
    assert channel_ref(f"https://www.youtube.com/channel/{CHANNEL}") == ("id", CHANNEL)
    assert channel_ref("https://www.youtube.com/@NadiaDoesData/videos") == ("handle", "@NadiaDoesData")
    assert parse_since("2026-11-03").isoformat() == "2026-11-03T00:00:00+00:00"
    with pytest.raises(UserError, match="--since 'yesterday' is not a time"):
        parse_since("yesterday")


def test_fetch_three_pages_into_the_format_batch_reads(tmp_path, yt):
    out = tmp_path / "threads.json"
    result = fetch(yt, f"https://youtu.be/{VIDEO}", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert yt.shape_errors == [] and yt.count("threads") == 3
    assert "Fetched 3 page(s): 5 comments" in result.stdout and "3 quota unit(s)" in result.stdout
    comments = load_comments(out)
    assert [c.comment_id for c in comments] == [f"Ugw{n}" for n in (4, 3, 2, 1, 0)]  # newest first
    assert comments[0].text == "question number 4?" and comments[0].video_id == VIDEO
    assert comments[0].thread_channel_id == CHANNEL  # batch recognises the channel's own replies


def test_fetch_since_and_max_stop_paging_early(tmp_path, yt):
    out = tmp_path / "new.json"
    result = fetch(yt, VIDEO, "-o", str(out), "--since", "2026-11-03T12:00:00Z")
    assert result.exit_code == 0, result.output
    assert [c.comment_id for c in load_comments(out)] == ["Ugw4", "Ugw3"]
    assert yt.count("threads") == 2  # the second page reached older threads: no third page
    result = fetch(yt, VIDEO, "-o", str(out), "--max", "3")
    assert len(load_comments(out)) == 3 and yt.count("threads") == 4


def test_default_output_name_and_the_login_when_there_is_no_key(tmp_path, yt, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"YOUTUBE_API_BASE": yt.url, "YOUTUBE_ACCESS_TOKEN": yt.token}
    result = CliRunner().invoke(cli, ["fetch", VIDEO], env=env, standalone_mode=False)
    assert result.exit_code == 0, result.output
    assert len(load_comments(tmp_path / f"{VIDEO}.threads.json")) == 5


@pytest.mark.parametrize("setup, expected", [
    (lambda yt: None, "YouTube refused the API key (keyInvalid); check YOUTUBE_API_KEY"),
    (lambda yt: yt.disabled.add(VIDEO), f"video '{VIDEO}' has comments turned off (commentsDisabled)"),
    (lambda yt: yt.threads.clear(), f"video '{VIDEO}' was not found (videoNotFound)"),
    (lambda yt: setattr(yt, "quota_exhausted", True), "quota for this project is used up (quotaExceeded)"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path, yt, setup, expected):
    setup(yt)
    out = tmp_path / "threads.json"
    key = "wrong-key" if "keyInvalid" in expected else "test-key"
    result = fetch(yt, VIDEO, "-o", str(out), key=key)
    assert isinstance(result.exception, UserError), result.output
    assert expected in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()


def test_a_bad_key_exits_2_with_one_line(tmp_path, yt):
    env = {**os.environ, "YOUTUBE_API_BASE": yt.url, "YOUTUBE_API_KEY": "wrong"}
    out = tmp_path / "t.json"
    result = subprocess.run([RESPONDER, "fetch", VIDEO, "-o", str(out)], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: YouTube refused the API key (keyInvalid)")
    assert not out.exists()


def test_no_credentials_says_how_to_get_one(yt):
    result = CliRunner().invoke(cli, ["fetch", VIDEO], env={"YOUTUBE_API_BASE": yt.url}, standalone_mode=False)
    assert "needs YOUTUBE_API_KEY" in str(result.exception) and "responder login" in str(result.exception)
    assert yt.calls == []


# ------------------------------------------------------------------------------- training pairs

def channel_history(yt: FakeYouTube) -> None:
    """Threads across two videos: channel replies, link/emoji/mention-only replies, duplicates."""
    yt.threads.clear()

    def mine(cid, text, when="2026-10-02T10:00:00Z"):
        return comment(cid, text, "@NadiaDoesData", CHANNEL, when)

    def other(cid, text, when="2026-10-02T09:00:00Z"):
        return comment(cid, text, "@someone", "UCsomeone000000000000001", when)

    add = yt.add_thread
    add("vidA", "T1", "How do I compute a running total?", published="2026-10-09T10:00:00Z",
        replies=[other("T1.a", "use a loop"), mine("T1.b", "@viewer SUM() OVER (ORDER BY day) does it."),
                 mine("T1.c", "Also see the article.", "2026-10-03T10:00:00Z")])
    add("vidA", "T2", "Great video!", published="2026-10-08T10:00:00Z",
        replies=[mine("T2.a", "https://blog.test/sql-window")])  # link only
    add("vidA", "T3", "love it", published="2026-10-07T10:00:00Z", replies=[mine("T3.a", "🙏🔥")])  # emoji only
    add("vidA", "T4", "cc my friend", published="2026-10-06T10:00:00Z", replies=[mine("T4.a", "@friend")])
    add("vidB", "T5", "Great video!", published="2026-10-05T10:00:00Z",
        replies=[mine("T5.a", "@viewer Thanks, glad it helped!")])
    add("vidB", "T6", "great video!", published="2026-10-04T10:00:00Z",
        replies=[mine("T6.a", "Thanks, glad it helped!")])  # the same pair again: a duplicate
    add("vidB", "T7", "no answer here", published="2026-10-03T10:00:00Z")
    add("vidB", "T8", "Which GPU flag?", published="2026-10-02T10:00:00Z",  # channel reply beyond the 5 inline
        replies=[other(f"T8.{n}", f"me too {n}") for n in range(6)] + [mine("T8.z", "Run it with --gpus all.")])
    add("vidB", "T9", "Pinned: links below", published="2026-10-01T10:00:00Z", author_channel=CHANNEL)
    yt.page_size = 3


def test_pairs_from_the_channel_history(tmp_path, yt):
    from finetune.data import load_pairs

    channel_history(yt)
    out = tmp_path / "pairs.csv"
    result = fetch(yt, "--channel", "@NadiaDoesData", "--pairs", str(out))
    assert result.exit_code == 0, result.output
    assert yt.shape_errors == []
    rows = list(csv.reader(out.open(newline="", encoding="utf-8")))
    assert rows == [["comment", "reply"],
                    ["How do I compute a running total?", "SUM() OVER (ORDER BY day) does it."],
                    ["Great video!", "Thanks, glad it helped!"],
                    ["Which GPU flag?", "Run it with --gpus all."]]
    assert ("1 duplicate, 1 emoji-only, 1 link-only, 1 mention-only, 1 no-channel-reply, 1 own-comment"
            in " ".join(result.stdout.split()))
    assert yt.count("threads") == 3 and yt.count("channels") == 1 and yt.count("list") == 1
    assert len(load_pairs(str(out)).pairs) == 3  # what `finetune run --data` reads


def test_pairs_max_and_since(tmp_path, yt):
    channel_history(yt)
    out = tmp_path / "pairs.csv"
    assert fetch(yt, "--channel", CHANNEL, "--pairs", str(out), "--max", "1").exit_code == 0
    assert len(list(csv.reader(out.open()))) == 2 and yt.count("threads") == 1
    assert fetch(yt, "--channel", CHANNEL, "--pairs", str(out), "--since", "2026-10-04T12:00:00Z").exit_code == 0
    assert [r[0] for r in csv.reader(out.open())] == ["comment", "How do I compute a running total?", "Great video!"]


def test_pairs_need_a_channel_and_an_unknown_handle_is_clear(tmp_path, yt):
    result = fetch(yt, VIDEO, "--pairs", str(tmp_path / "p.csv"))
    assert "--pairs needs --channel" in str(result.exception)
    result = fetch(yt, "--channel", "@nobody", "--pairs", str(tmp_path / "p.csv"))
    assert "no YouTube channel has the handle '@nobody'" in str(result.exception)
    assert not (tmp_path / "p.csv").exists()


def test_channel_threads_without_pairs(tmp_path, yt):
    channel_history(yt)
    out = tmp_path / "all.json"
    result = fetch(yt, "--channel", CHANNEL, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert {c.video_id for c in load_comments(out)} == {"vidA", "vidB"} and len(load_comments(out)) == 9


def test_batch_video_fetches_then_answers(tmp_path, yt, live_server, monkeypatch):
    """`responder batch --video` = fetch + batch, here with a stub `responder serve` on loopback."""
    import json

    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/respond/batch")
    def respond(body: list[dict]) -> list[dict]:
        return [{"reply": f"Thanks for asking about {b['comment'][:20]}", "sources": [], "used_context": False,
                 "model": "stub"} for b in body]

    service = live_server(app)
    monkeypatch.chdir(tmp_path)
    env = {"YOUTUBE_API_BASE": yt.url, "YOUTUBE_API_KEY": "test-key"}
    result = CliRunner().invoke(cli, ["batch", "--video", f"https://youtu.be/{VIDEO}", "--server", service.url],
                                env=env, standalone_mode=False)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / f"{VIDEO}.threads.json").exists()
    records = [json.loads(x) for x in (tmp_path / f"{VIDEO}.replies.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["answered"] * 5 and records[0]["comment_id"] == "Ugw4"
    assert "responder review" in result.stdout


def test_fetch_writes_each_videos_title_and_batch_searches_with_it(tmp_path, yt, live_server, monkeypatch):
    import json

    from fastapi import FastAPI

    yt.videos[VIDEO] = {"title": "SQL window functions: five patterns", "description": "More: https://n.dev/sql"}
    out = tmp_path / "threads.json"
    result = fetch(yt, VIDEO, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert yt.shape_errors == [] and yt.count("videos") == 1
    assert "title and description of 1 video(s); 1 quota unit(s)" in result.stderr
    comments = load_comments(out)
    assert {c.video_title for c in comments} == {"SQL window functions: five patterns"}
    assert comments[0].video_description == "More: https://n.dev/sql"

    seen: list[dict] = []
    app = FastAPI()

    @app.post("/respond/batch")
    def respond(body: list[dict]) -> list[dict]:
        seen.extend(body)
        return [{"reply": "Use LAG.", "sources": [], "used_context": False, "model": "stub"} for _ in body]

    service = live_server(app)
    replies = tmp_path / "replies.jsonl"
    done = CliRunner().invoke(cli, ["batch", str(out), "-o", str(replies), "--server", service.url],
                              standalone_mode=False)
    assert done.exit_code == 0, (done.output, done.exception)
    assert seen and all(b["video_title"] == "SQL window functions: five patterns" for b in seen)
    records = [json.loads(x) for x in replies.read_text().splitlines()]
    assert {r["video_title"] for r in records} == {"SQL window functions: five patterns"}


def test_a_videos_list_refusal_keeps_the_threads_and_says_what_is_missing(tmp_path, yt):
    yt.videos[VIDEO] = {"title": "SQL window functions", "description": ""}
    yt.videos_refused = "quotaExceeded"
    out = tmp_path / "threads.json"
    result = fetch(yt, VIDEO, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "Warning:" in result.stderr and "quota" in result.stderr and "without those titles" in result.stderr
    comments = load_comments(out)
    assert len(comments) == 5 and all(c.video_title is None for c in comments)
