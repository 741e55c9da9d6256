"""`responder batch`: the resumable runner, its output file, the CLI, and `--server` mode.

Replies come from a real `Responder` with a deterministic generator (pure logic), from the real
`LocalGenerator` on the tiny model, and from a service on loopback for `--server`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.errors import UserError
from base.prompt import CommentInput, Passage, PromptStyle
from responder.cli import cli
from responder.jobs.batch_run import run_batch
from responder.jobs.reply_log import ReplyLog
from responder.responder import Responder
from responder.youtube.export import load_comments
from responder.youtube.selection import Filters, infer_channel_id, select

SIGN = "Keep exploring! - Nadia"
STYLE = PromptStyle(sign_off=SIGN)
RESPONDER = str(Path(sys.executable).parent / "responder")
TEN_TO_ANSWER = 10  # samples/youtube/commentThreads.json: 20 threads, 10 need a reply


class EchoGenerator:
    """Replies a person can predict; records batch sizes; fails on comments containing `fail_on`."""

    model_name = "echo"
    adapter_name = None

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[int] = []
        self.fail_on = fail_on

    def generate(self, items, style):
        self.batches.append(len(items))
        if self.fail_on and any(self.fail_on in i.comment for i in items):
            raise RuntimeError("generation blew up")
        # With a passage, it repeats the passage's first words: a reply grounded in it.
        return [f"Thanks {i.author or 'friend'}! You asked: {i.comment[:24]}"
                + (f" {i.passages[0].text}" if i.passages else "") for i in items]


class KeywordRetriever:
    def search(self, text, top_k=3, video=None):
        if "groupby" in text:
            return [Passage(text="Use categoricals for the keys.", title="Pandas groupby performance",
                            url="https://n.dev/g", similarity=0.71)]
        return []


def echo_responder(**kw) -> Responder:
    return Responder(EchoGenerator(**kw), STYLE, KeywordRetriever())


@pytest.fixture
def sample(samples_dir) -> Path:
    return samples_dir / "youtube" / "commentThreads.json"


def selected(path: Path, **kw):
    comments = load_comments(path)
    return select(comments, Filters(channel_id=infer_channel_id(comments), **kw))


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_answers_the_right_comments_in_batches(tmp_path, sample):
    responder = echo_responder()
    with ReplyLog(tmp_path / "out.jsonl") as out:
        summary = run_batch(selected(sample), responder, out, batch_size=4)
    records = lines(tmp_path / "out.jsonl")
    assert len(records) == 20 and len({r["comment_id"] for r in records}) == 20
    answered = [r for r in records if r["status"] == "answered"]
    assert len(answered) == summary.answered == TEN_TO_ANSWER
    assert responder.generator.batches == [4, 4, 2]
    for r in answered:
        assert set(r) - {"grounded"} == {"comment_id", "video_id", "author", "comment", "reply", "sources",
                                         "used_context", "status", "approved"}
        assert ("grounded" in r) == bool(r["sources"])  # judged only where passages were given
        assert r["reply"].startswith(f"Thanks {r['author']}!") and r["reply"].endswith(f"\n{SIGN}")
        assert r["approved"] is False and r["video_id"] == "nDdVid00001"
    groupby = next(r for r in answered if r["comment_id"] == "UgxxYzcb6iauujCtA-rxCRZ4AaABAg")
    assert groupby["used_context"] is True
    assert groupby["sources"] == [{"title": "Pandas groupby performance", "section": "", "source": "",
                                   "url": "https://n.dev/g", "similarity": 0.71}]
    assert dict(summary.skipped) == {"already-answered": 3, "own-comment": 1, "emoji-only": 1, "empty": 1,
                                     "likely-spam": 1, "duplicate": 1, "held-for-review": 1, "cannot-reply": 1}
    assert {r["status"] for r in records if r["status"] != "answered"} == {
        f"skipped:{k}" for k in summary.skipped}


def test_rerun_resumes_and_never_writes_an_id_twice(tmp_path, sample):
    out_path = tmp_path / "out.jsonl"
    with ReplyLog(out_path) as out:
        first = run_batch(selected(sample), echo_responder(), out, batch_size=3, limit=4)
    assert first.answered == 4 and first.left_for_later == 6
    with ReplyLog(out_path) as out:
        second = run_batch(selected(sample), echo_responder(), out, batch_size=3)
    assert second.answered == 6 and second.already_done == 14
    responder = echo_responder()
    with ReplyLog(out_path) as out:
        third = run_batch(selected(sample), responder, out)
    assert third.answered == 0 and third.already_done == 20 and responder.generator.batches == []
    ids = [r["comment_id"] for r in lines(out_path)]
    assert len(ids) == len(set(ids)) == 20


def test_overlapping_pages_write_each_comment_id_once(tmp_path, samples_dir):
    pages = tmp_path / "pages"
    pages.mkdir()
    data = json.loads((samples_dir / "youtube" / "commentThreads.json").read_text())
    (pages / "1.json").write_text(json.dumps({**data, "items": data["items"][:12], "nextPageToken": "T"}))
    (pages / "2.json").write_text(json.dumps({**data, "items": data["items"][8:]}))  # 4 threads again
    with ReplyLog(tmp_path / "out.jsonl") as out:
        summary = run_batch(selected(pages), echo_responder(), out)
    ids = [r["comment_id"] for r in lines(tmp_path / "out.jsonl")]
    assert len(ids) == len(set(ids)) == 20 and summary.answered == TEN_TO_ANSWER


def test_an_interrupted_last_line_is_cut_and_that_comment_answered_again(tmp_path, sample):
    out_path = tmp_path / "out.jsonl"
    with ReplyLog(out_path) as out:
        run_batch(selected(sample), echo_responder(), out, limit=3)
    complete = out_path.read_bytes()
    last = json.loads(complete.splitlines()[-1])
    # What kill -9 in the middle of a write leaves: the start of a line, no newline.
    half = json.dumps({**last, "comment_id": "UgxNEXT"}).encode()[:40]
    out_path.write_bytes(complete + half)
    with ReplyLog(out_path) as out:
        assert out.repaired_bytes == len(half)
        summary = run_batch(selected(sample), echo_responder(), out)
    assert summary.answered == TEN_TO_ANSWER - 3
    assert out_path.read_bytes().startswith(complete)  # no complete line lost or changed
    ids = [r["comment_id"] for r in lines(out_path)]
    assert len(ids) == len(set(ids)) == 20


def test_a_complete_last_line_missing_only_its_newline_is_kept(tmp_path, sample):
    out_path = tmp_path / "out.jsonl"
    with ReplyLog(out_path) as out:
        run_batch(selected(sample), echo_responder(), out, limit=2)
    out_path.write_bytes(out_path.read_bytes().rstrip(b"\n"))
    with ReplyLog(out_path) as out:
        assert out.repaired_bytes == 0 and len(out.records) == 12
        run_batch(selected(sample), echo_responder(), out)
    assert len(lines(out_path)) == 20


def test_a_damaged_line_in_the_middle_is_reported_not_guessed(tmp_path, sample):
    out_path = tmp_path / "out.jsonl"
    with ReplyLog(out_path) as out:
        run_batch(selected(sample), echo_responder(), out, limit=2)
    text = out_path.read_text().splitlines(keepends=True)
    text[3] = "{not json\n"
    out_path.write_text("".join(text))
    before = out_path.read_bytes()
    with pytest.raises(UserError, match=r"line 4 is not a reply record"):
        ReplyLog(out_path).open()
    assert out_path.read_bytes() == before


def test_csv_output_resumes_after_a_cut_row(tmp_path, sample):
    out_path = tmp_path / "out.csv"
    with ReplyLog(out_path) as out:
        run_batch(selected(sample), echo_responder(), out, limit=3)
    complete = out_path.read_bytes()
    out_path.write_bytes(complete + b'UgxCUT,nDdVid00001,@x,"a comment\nwith a newl')
    with ReplyLog(out_path) as out:
        assert len(out.records) == 13 and out.repaired_bytes > 0
        run_batch(selected(sample), echo_responder(), out)
    import csv

    rows = list(csv.DictReader(out_path.open(newline="")))
    assert len(rows) == 20 and len({r["comment_id"] for r in rows}) == 20
    assert sum(r["status"] == "answered" for r in rows) == TEN_TO_ANSWER
    assert all(r["reply"].endswith(SIGN) for r in rows if r["status"] == "answered")


def test_an_empty_reply_is_a_failure_not_an_answer(tmp_path, sample):
    class Silent(EchoGenerator):
        def generate(self, items, style):
            return ["  " if "thesis" in i.comment else f"{style.sign_off}" if "regex" in i.comment else "Sure!"
                    for i in items]

    with ReplyLog(tmp_path / "out.jsonl") as out:
        summary = run_batch(selected(sample), Responder(Silent(), STYLE), out)
    assert summary.answered == TEN_TO_ANSWER - 2 and dict(summary.failed) == {"empty-reply": 2}


def test_a_failing_comment_fails_alone_and_retry_failed_answers_it(tmp_path, sample):
    out_path = tmp_path / "out.jsonl"
    with ReplyLog(out_path) as out:
        summary = run_batch(selected(sample), echo_responder(fail_on="ROWS and RANGE"), out, batch_size=4)
    assert summary.answered == TEN_TO_ANSWER - 1 and dict(summary.failed) == {"RuntimeError": 1}
    with ReplyLog(out_path) as out:
        assert out.drop_failed() == 1
        again = run_batch(selected(sample), echo_responder(), out)
    assert again.answered == 1
    records = lines(out_path)
    assert len(records) == 20 and sum(r["status"] == "answered" for r in records) == TEN_TO_ANSWER


# ------------------------------------------------------------------------------------------ CLI

@pytest.fixture
def fake_factory(monkeypatch):
    """`responder batch` builds its answerer with responder.factory.build_answerer: use the echo one."""
    made = []

    def build_answerer(settings, server=None, api_key=None, **client_options):
        assert server is None, "this fixture stands for the in-process responder"
        made.append(settings)
        return echo_responder()

    monkeypatch.setitem(sys.modules, "responder.factory", types.SimpleNamespace(build_answerer=build_answerer))
    return made


def test_cli_batch_summary_and_default_channel(tmp_path, sample, fake_factory):
    out_path = tmp_path / "replies.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "answered" in result.output and "skipped: already-answered" in result.output
    assert "comments per minute" in result.output
    assert sum(r["status"] == "answered" for r in lines(out_path)) == TEN_TO_ANSWER
    # Nothing left to answer: the model is not even loaded.
    again = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path)])
    assert again.exit_code == 0 and len(fake_factory) == 1
    assert "already in the output" in again.output


QUESTIONS = 6  # of the ten, by triage; the other four are thanks


def test_cli_batch_drafts_questions_first_with_their_intent_and_only_leaves_the_rest(tmp_path, sample, fake_factory):
    out_path = tmp_path / "replies.jsonl"
    first = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--limit", "2"])
    assert first.exit_code == 0, first.output
    answered = [r for r in lines(out_path) if r["status"] == "answered"]
    assert [r["comment_id"][:8] for r in answered] == ["UgxxYzcb", "Ugx2Krvi"]  # the first two questions
    assert {r["intent"] for r in answered} == {"question"} and all(0 < r["confidence"] <= 1 for r in answered)
    assert all(r["reply_intent"] in ("question", "request", "thanks", "criticism", "other") for r in answered)
    # The groupby question has a confident passage; the StandardScaler one has none: it needs the creator.
    assert [r["needs_creator"] for r in answered] == [False, True]

    only = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--only", "question"])
    assert only.exit_code == 0, only.output
    assert "left for a later run (--only)" in only.output
    answered = [r for r in lines(out_path) if r["status"] == "answered"]
    assert len(answered) == QUESTIONS and {r["intent"] for r in answered} == {"question"}

    rest = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path)])
    assert rest.exit_code == 0, rest.output
    records = lines(out_path)
    assert len(records) == 20 and len({r["comment_id"] for r in records}) == 20
    assert [r["intent"] for r in records if r["status"] == "answered"] == ["question"] * QUESTIONS + ["thanks"] * 4
    spam = next(r for r in records if r["status"] == "skipped:likely-spam")
    assert spam["intent"] == "spam"  # the exact rule that skipped it says what it is


@pytest.mark.parametrize("args, env, problem", [
    (["--only", "question,jokes"], {}, "--only: unknown intent 'jokes'; use one of question, request"),
    ([], {"RESPONDER_TRIAGE_POLICY": "spam=draft,thanks"}, "RESPONDER_TRIAGE_POLICY: 'thanks' is not intent=action"),
    ([], {"RESPONDER_TRIAGE_POLICY": "instructions=draft"}, "'instructions' comments give the bot orders"),
])
def test_cli_bad_intents_or_policy_are_one_line_before_any_work(tmp_path, sample, fake_factory, args, env, problem):
    out_path = tmp_path / "replies.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), *args], env=env)
    assert isinstance(result.exception, UserError) and problem in str(result.exception)
    assert "\n" not in str(result.exception) and not out_path.exists() and fake_factory == []


def test_a_csv_written_before_triage_keeps_its_columns_when_appended(tmp_path, sample, fake_factory):
    import csv

    from responder.jobs.reply_log import FIELDS_BEFORE_TRIAGE

    out_path = tmp_path / "replies.csv"
    out_path.write_text(",".join(FIELDS_BEFORE_TRIAGE) + "\n"
                        "UgxWAFR7_U42fJAHS5lDtgJ4AaABAg,nDdVid00001,@priya.codes,old comment,Old reply,[],False,answered,"
                        "yes\n")
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out_path.open(newline="")))
    assert list(rows[0]) == FIELDS_BEFORE_TRIAGE and len(rows) == 20
    assert rows[0]["reply"] == "Old reply" and sum(r["status"] == "answered" for r in rows) == TEN_TO_ANSWER


def test_cli_bad_input_is_one_line_and_touches_no_output(tmp_path, fake_factory):
    bad = tmp_path / "threads.json"
    bad.write_text('{"items": [ {"snippet": ')
    out_path = tmp_path / "out.jsonl"
    result = subprocess.run([RESPONDER, "batch", str(bad), "-o", str(out_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"Error: input '{bad}' is not valid JSON (line 1, column 25: Expecting value); re-export it from the "
        "YouTube API"]
    assert not out_path.exists()
    out_path.write_text('{"comment_id": "x", "status": "answered"}\n')
    nocol = tmp_path / "c.csv"
    nocol.write_text("author,text_body\n@a,hi\n")
    result = CliRunner().invoke(cli, ["batch", str(nocol), "-o", str(out_path)])
    assert isinstance(result.exception, UserError) and "no 'comment' column" in str(result.exception)
    assert out_path.read_text() == '{"comment_id": "x", "status": "answered"}\n'


# ------------------------------------------------------------------------------ --server mode

class FakeService:
    """POST /respond/batch on loopback, answered by the echo responder; checks the request shape."""

    def __init__(self, api_key: str | None = None, delay_s: float = 0.0) -> None:
        self.api_key, self.delay_s = api_key, delay_s
        self.requests: list[list[dict]] = []
        self.problems: list[str] = []
        self.responder = echo_responder()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/respond/batch":
                    return self._send(404, {"detail": "Not Found"})
                if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._send(401, {"detail": "missing or wrong API key"})
                if not isinstance(body, list) or not all(
                        isinstance(x, dict) and isinstance(x.get("comment"), str)
                        and set(x) <= {"comment", "video_title", "video_id", "video_description", "author"} for x in body):
                    fake.problems.append(repr(body)[:200])
                    return self._send(422, {"detail": "bad body"})
                fake.requests.append(body)
                time.sleep(fake.delay_s)
                replies = fake.responder.respond_many([CommentInput(**x) for x in body])
                self._send(200, [{"reply": r.reply, "used_context": r.used_context, "model": r.model,
                                  "adapter": r.adapter, "timings": r.timings,
                                  "sources": [{"title": p.title, "section": p.section, "source": p.source,
                                               "url": p.url, "similarity": p.similarity} for p in r.sources]}
                                 for r in replies])

            def _send(self, status, data):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    made = []

    def make(**kw):
        made.append(FakeService(**kw))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def test_server_mode_sends_the_api_key_and_the_documented_body(tmp_path, sample, service, monkeypatch):
    svc = service(api_key="sekret")
    out_path = tmp_path / "out.jsonl"
    monkeypatch.setenv("RESPONDER_API_KEY", "wrong")
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--server", svc.url])
    assert isinstance(result.exception, UserError) and "RESPONDER_API_KEY" in str(result.exception)
    monkeypatch.setenv("RESPONDER_API_KEY", "sekret")
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--server", svc.url,
                                      "--batch-size", "5", "--video-title", "Pandas tips"])
    assert result.exit_code == 0, result.output
    assert svc.problems == [] and [len(r) for r in svc.requests] == [5, 5]
    # Questions are drafted first: the sample's first question opens the first request.
    assert svc.requests[0][0] == {"comment": "my groupby on a string column with 3 million rows takes ages, what "
                                             "should I change first?", "video_title": "Pandas tips",
                                  "video_id": "nDdVid00001", "author": "@tomasz_analytics"}
    answered = [r for r in lines(out_path) if r["status"] == "answered"]
    assert len(answered) == TEN_TO_ANSWER and all(r["reply"].endswith(SIGN) for r in answered)
    assert any(r["used_context"] and r["sources"][0]["url"] == "https://n.dev/g" for r in answered)


def test_server_mode_against_the_real_service_app(tmp_path, sample, monkeypatch):
    """The real FastAPI service (responder.service) on loopback, with the echo responder inside."""
    import socket

    import uvicorn

    from responder.service.app import create_app
    from responder.service.settings import ServiceSettings

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = ServiceSettings(api_key="sekret", max_batch_size=4, queue_size=6)
    server = uvicorn.Server(uvicorn.Config(create_app(settings, echo_responder()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        monkeypatch.setenv("RESPONDER_API_KEY", "sekret")
        url, out_path = f"http://127.0.0.1:{port}", tmp_path / "out.jsonl"
        too_big = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--server", url,
                                           "--batch-size", "8"])
        assert isinstance(too_big.exception, UserError) and "smaller --batch-size" in str(too_big.exception)
        result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--server", url,
                                          "--batch-size", "6"])
        assert result.exit_code == 0, result.output
        answered = [r for r in lines(out_path) if r["status"] == "answered"]
        assert len(answered) == TEN_TO_ANSWER
        assert all(r["reply"].startswith(f"Thanks {r['author']}!") and r["reply"].endswith(SIGN) for r in answered)
        groupby = next(r for r in answered if "groupby" in r["comment"])
        assert groupby["used_context"] and groupby["sources"][0]["title"] == "Pandas groupby performance"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_unreachable_server_is_one_clear_error(tmp_path, sample):
    """Retried (here without waiting), then the run stops: no comment is marked failed for it."""
    out_path = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--server", "http://127.0.0.1:9",
                                      "--backoff", "0"])
    assert result.exit_code == 1
    assert "Error: cannot reach the responder service at http://127.0.0.1:9" in result.output
    assert not any(r["status"].startswith("failed") for r in lines(out_path))


def test_kill_9_mid_run_then_rerun_loses_nothing_and_duplicates_nothing(tmp_path, sample, service):
    """A real `responder batch` process, killed with SIGKILL while answering, then run again."""
    svc = service(delay_s=0.4)
    out_path = tmp_path / "out.jsonl"
    cmd = [RESPONDER, "batch", str(sample), "-o", str(out_path), "--server", svc.url, "--batch-size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait for the skips and two answered batches
            if out_path.exists() and out_path.read_text().count('"status": "answered"') >= 4:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the batch never got going")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed = lines(out_path)
    answered_before = sum(r["status"] == "answered" for r in killed)
    assert 4 <= answered_before < TEN_TO_ANSWER, "killed too late to test anything"

    svc.delay_s = 0
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    records = lines(out_path)
    ids = [r["comment_id"] for r in records]
    assert len(ids) == len(set(ids)) == 20
    assert sum(r["status"] == "answered" for r in records) == TEN_TO_ANSWER
    assert records[: len(killed)] == killed  # what the killed run wrote is kept as it was
    asked = [x["comment"] for batch in svc.requests for x in batch]
    assert len(asked) - len(set(asked)) <= 2  # at most the batch in flight was asked twice


# --------------------------------------------------------------------- the real local generator

def test_real_local_generator_answers_in_batches(tmp_path, sample, base_model_dir):
    """The real default model (a random tiny one only writes newlines), few tokens to stay quick."""
    from engine.generation import LocalGenerator

    generator = LocalGenerator.load(str(base_model_dir), quantization="none", device="cpu", max_new_tokens=4)
    sizes = []
    real_generate = generator.generate
    generator.generate = lambda items, style: sizes.append(len(items)) or real_generate(items, style)
    responder = Responder(generator, STYLE)
    out_path = tmp_path / "out.jsonl"
    with ReplyLog(out_path) as out:
        summary = run_batch(selected(sample), responder, out, batch_size=8)
    assert summary.answered == TEN_TO_ANSWER and not summary.failed
    assert sizes == [8, 2]
    for r in lines(out_path):
        if r["status"] == "answered":
            body = r["reply"][: -len(SIGN)]
            assert r["reply"].endswith("\n" + SIGN) and body.strip() and "<|im_" not in r["reply"]


def test_cli_in_process_builds_the_real_responder(tmp_path, sample, tiny_model_dir, monkeypatch):
    """`responder batch` as a user runs it, with the factory's real responder (tiny model, no knowledge
    base yet). The random tiny model writes only whitespace: that is reported as a failure, never
    written as an answer someone could post."""
    monkeypatch.setenv("RESPONDER_BASE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("RESPONDER_QUANTIZATION", "none")
    monkeypatch.setenv("RESPONDER_MAX_NEW_TOKENS", "4")
    out_path = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(sample), "-o", str(out_path), "--limit", "5",
                                      "--store", str(tmp_path / "no-store")])
    assert result.exit_code == 0, result.output
    records = lines(out_path)
    assert len(records) == 15  # 10 skipped by the rules + the 5 allowed by --limit
    tried = [r for r in records if not r["status"].startswith("skipped:")]
    assert len(tried) == 5 and {r["status"] for r in tried} <= {"answered", "failed:empty-reply"}
    assert all(r["reply"].strip() for r in tried if r["status"] == "answered")
    assert "left for the next run (--limit)" in result.output


def test_a_reply_to_a_question_that_says_nothing_from_its_passages_is_left_for_the_creator(tmp_path, sample):
    from knowledge.triage import Triage

    class Deaf(EchoGenerator):  # answers without the passages it was given
        def generate(self, items, style):
            return [f"Great question, {i.author or 'friend'}! Keep at it." for i in items]

    def triage(texts):
        return [Triage("question" if "?" in t or "groupby" in t else "thanks", 0.9, None) for t in texts]

    for generator, grounded in ((EchoGenerator(), True), (Deaf(), False)):
        path = tmp_path / f"{grounded}.jsonl"
        with ReplyLog(path) as out:
            run_batch(selected(sample), Responder(generator, STYLE, KeywordRetriever()), out, triage=triage)
        with_passage = [r for r in lines(path) if r["status"] == "answered" and r["sources"]]
        assert with_passage and all(r["grounded"] is grounded for r in with_passage)
        assert all(r["needs_creator"] is (not grounded) for r in with_passage if r["intent"] == "question")


def test_a_question_answered_with_thanks_is_left_for_the_creator(tmp_path, sample):
    from knowledge.triage import Triage

    def triage(texts):  # questions ask; everything else (the echo replies included) thanks
        return [Triage("question" if "?" in t else "thanks", 0.9, None) for t in texts]

    with ReplyLog(tmp_path / "out.jsonl") as out:
        summary = run_batch(selected(sample), echo_responder(), out, triage=triage)
    answered = [r for r in lines(tmp_path / "out.jsonl") if r["status"] == "answered"]
    questions = [r for r in answered if r["intent"] == "question"]
    assert questions and all(r["reply_intent"] == "thanks" and r["needs_creator"] for r in questions)
    assert not any(r["needs_creator"] for r in answered if r["intent"] == "thanks")  # thanks for thanks is fine
    assert summary.needs_creator == len(questions)
