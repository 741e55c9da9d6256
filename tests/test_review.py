"""`responder review`: the app's routes (no browser; tests/test_review_browser.py drives a real one)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from base.errors import UserError
from responder.cli import cli
from responder.jobs.reply_log import ReplyLog
from responder.review.app import ReviewConfig, create_app
from tests.review_support import LINK_FLAG, SIGN, SQL, TRIAGED, TRIAGED_REVIEW_ORDER, draft, read_drafts, write_drafts
from tests.fakes import StubAnswerer

H = {"X-Review": "1"}


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("YOUTUBE_ACCESS_TOKEN", raising=False)


def client(path, **kw) -> TestClient:
    return TestClient(create_app(ReviewConfig(replies=path, **kw)))


def test_page_shows_drafts_with_flags_sources_and_counts_escaped(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    page = client(path).get("/").text
    assert "@maria_analyst" in page and "How do I get a running total per day in Postgres?" in page
    assert 'href="https://blog.test/sql-window"' in page and "SQL Window Functions" in page
    assert "⚠ " + LINK_FLAG in page and "⚠ loop: a sentence or phrase repeats" in page
    assert 'data-count="pending">6<' in page and 'data-count="skipped">1<' in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "Thanks &lt;b&gt;friend&lt;/b&gt;!" in page
    assert "watch?v=vidSQL00001&amp;lc=UgxRunning" in page
    skipped = client(path).get("/?status=skipped").text
    assert "UgxEmoji" in skipped and "UgxRunning" not in skipped


def card_ids(page: str) -> list[str]:
    import re

    return re.findall(r'<article class="draft[^"]*" id="draft-([^"]+)"', page)


def test_drafts_that_need_the_creator_come_first_then_questions_with_counts_per_intent(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl", TRIAGED)
    page = client(path).get("/").text
    assert card_ids(page) == TRIAGED_REVIEW_ORDER
    assert page.count('<span class="badge needs-you">needs you</span>') == 3
    for intent, n in {"all": 7, "needs-you": 3, "question": 3, "request": 1, "criticism": 1, "other": 1,
                      "thanks": 1}.items():
        assert f'data-intent="{intent}">{"needs you" if intent == "needs-you" else intent} <b>{n}</b>' in page
    assert 'data-intent="spam"' not in page  # an intent with no draft gets no filter
    assert card_ids(client(path).get("/?intent=question").text) == ["UgxLink", "UgxRunning", "UgxGpu"]
    assert card_ids(client(path).get("/?intent=needs-you").text) == ["UgxLink", "UgxLoop", "UgxQuiet"]
    assert card_ids(client(path).get("/?status=skipped&intent=thanks").text) == ["UgxEmoji"]
    assert card_ids(client(path).get("/?intent=bogus").text) == TRIAGED_REVIEW_ORDER  # an unknown filter: all


def test_a_stock_or_misfit_reply_to_a_question_is_flagged_in_words_and_held_back_from_post(tmp_path):
    from responder.jobs.posting import read_replies
    from tests.review_support import draft, triaged

    stock = "Thanks for the kind words! I hope this helps."
    questions = ["is text embedding the same as tokenization?", "how are edge directions found in GES?",
                 "wavelet or FFT for EEG data?"]
    drafts = [triaged(draft(f"UgxQ{n}", "@v", q, stock, approved=True), "question") for n, q in enumerate(questions)]
    drafts += [triaged(draft(f"UgxT{n}", "@fan", f"great video {n}!", stock, approved=True), "thanks")
               for n in range(3)]
    drafts.append(triaged(draft("UgxMis", "@q", "which xgboost params should I tune first?",
                                "Thank you so much, glad you enjoyed it!", approved=True, reply_intent="thanks"),
                          "question"))
    path = write_drafts(tmp_path / "r.jsonl", drafts)
    page = client(path).get("/").text
    assert page.count("⚠ stock: the same reply went to 6 different comments") == 3  # the questions', not the thanks'
    assert "misfit: the comment is a question, the reply only thanks" in page
    posted = read_replies(path)
    assert sorted(p.comment_id for p in posted.approved) == ["UgxT0", "UgxT1", "UgxT2"]


def test_drafts_from_before_triage_keep_file_order(tmp_path):
    page = client(write_drafts(tmp_path / "r.jsonl")).get("/").text
    assert card_ids(page) == ["UgxRunning", "UgxThanks", "UgxGpu", "UgxLink", "UgxLoop", "UgxXss"]
    assert 'data-intent="untriaged">untriaged <b>6</b>' in page


def test_actions_write_the_file_at_once(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    c = client(path)
    r = c.post("/api/drafts/UgxRunning/approve", json={"shown": []}, headers=H)
    assert r.status_code == 200 and r.json()["state"] == "approved" and r.json()["counts"]["approved"] == 1
    assert read_drafts(path)["UgxRunning"]["approved"] is True
    c.post("/api/drafts/UgxThanks/edit", json={"reply": "Thank you, Sam!", "shown": []}, headers=H)
    c.post("/api/drafts/UgxGpu/reject", json={}, headers=H)
    c.post("/api/drafts/UgxLink/approve", json={"shown": [LINK_FLAG]}, headers=H)
    saved = read_drafts(path)
    assert saved["UgxThanks"]["reply"] == "Thank you, Sam!" and saved["UgxThanks"]["edited"] is True
    assert saved["UgxThanks"]["original_reply"].startswith("Thanks for the kind words!")
    assert saved["UgxGpu"]["status"] == "rejected" and saved["UgxGpu"]["approved"] is False
    assert saved["UgxLink"]["flags_seen"] == [LINK_FLAG] and saved["UgxLink"]["reviewed_at"]
    assert list(saved) == [json.loads(x)["comment_id"] for x in path.read_text().splitlines()]  # order kept
    assert not list(tmp_path.glob("*.tmp"))


def test_regenerate_builds_the_responder_on_first_use(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    stub = StubAnswerer()
    c = client(path, answerer=stub)
    c.post("/api/drafts/UgxLoop/approve", json={"shown": ["loop: a sentence or phrase repeats"]}, headers=H)
    r = c.post("/api/drafts/UgxLoop/regenerate", json={}, headers=H)
    assert r.status_code == 200, r.text
    saved = read_drafts(path)["UgxLoop"]
    assert saved["reply"] == "Resample with replacement, then take percentiles."
    assert saved["sources"][0]["url"] == "https://blog.test/bootstrap" and saved["approved"] is False
    assert "flags_seen" not in saved and stub.asked == ["Can you do a video on bootstrap intervals?"]
    assert "Bootstrap Confidence Intervals" in r.json()["card"]


def test_a_running_batch_is_waited_for_then_refused(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    c = client(path, wait_s=0.3)
    with ReplyLog(path):  # what `responder batch` holds while it appends
        r = c.post("/api/drafts/UgxRunning/approve", json={"shown": []}, headers=H)
    assert r.status_code == 409
    assert "is being written by a running `responder batch`; wait for it to finish" in r.json()["detail"]
    assert read_drafts(path)["UgxRunning"]["approved"] is False
    assert c.post("/api/drafts/UgxRunning/approve", json={"shown": []}, headers=H).status_code == 200


def test_a_batch_can_append_after_a_review_change(tmp_path):
    from responder.jobs.reply_log import record
    from responder.youtube.export import Comment

    path = write_drafts(tmp_path / "r.jsonl")
    client(path).post("/api/drafts/UgxRunning/approve", json={"shown": []}, headers=H)
    with ReplyLog(path) as log:
        log.append([record(Comment("UgxNew", "new one?"), "skipped:too-short")])
    assert list(read_drafts(path))[-1] == "UgxNew" and read_drafts(path)["UgxRunning"]["approved"] is True


def test_csv_replies_keep_their_columns_and_review_notes_beside_them(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("comment_id,video_id,author,comment,reply,sources,used_context,status,approved\n"
                    'UgxA,v,@a,is there a notebook?,"See bit.ly/x",[],false,answered,false\n')
    c = client(path)
    flag = "link or @mention not in the comment or sources: bit.ly/x"
    assert flag in c.get("/").text
    c.post("/api/drafts/UgxA/approve", json={"shown": [flag]}, headers=H)
    assert path.read_text().splitlines()[0] == "comment_id,video_id,author,comment,reply,sources,used_context," \
                                               "status,approved"
    assert path.read_text().splitlines()[1].endswith(",answered,true")
    notes = json.loads((tmp_path / "r.csv.review.json").read_text())
    assert notes["UgxA"]["flags_seen"] == [flag]
    from responder.jobs.posting import read_replies

    assert [p.comment_id for p in read_replies(path).approved] == ["UgxA"]  # post sees the review


def test_changes_need_the_page_header_and_other_hosts_need_the_key(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    assert client(path).post("/api/drafts/UgxRunning/approve", json={"shown": []}).status_code == 403
    locked = client(path, api_key="s3cret-key")
    assert locked.get("/").status_code == 401
    assert locked.get("/", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert locked.get("/?key=wrong", follow_redirects=False).status_code == 401
    first = locked.get("/?key=s3cret-key", follow_redirects=False)
    assert first.status_code == 303 and "httponly" in first.headers["set-cookie"].lower()
    assert locked.get("/").status_code == 200  # the cookie now
    local = client(path, allowed_hosts=["127.0.0.1", "localhost"])
    assert local.get("/", headers={"Host": "evil.example"}).status_code == 400


def test_review_cli_refuses_another_host_without_a_key(tmp_path, monkeypatch):
    path = write_drafts(tmp_path / "r.jsonl")
    monkeypatch.delenv("RESPONDER_API_KEY", raising=False)
    with pytest.raises(UserError, match="--host 0.0.0.0 opens the review page to other machines: set "
                                        "RESPONDER_API_KEY"):
        CliRunner().invoke(cli, ["review", str(path), "--host", "0.0.0.0"], standalone_mode=False,
                           catch_exceptions=False)
    monkeypatch.setenv("RESPONDER_API_KEY", "  ")
    with pytest.raises(UserError, match="RESPONDER_API_KEY is blank"):
        CliRunner().invoke(cli, ["review", str(path), "--host", "0.0.0.0"], standalone_mode=False,
                           catch_exceptions=False)
    with pytest.raises(UserError, match="replies file '.*nope.jsonl' does not exist"):
        CliRunner().invoke(cli, ["review", str(tmp_path / "nope.jsonl")], standalone_mode=False,
                           catch_exceptions=False)


def test_the_app_starts_without_loading_a_model(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    code = ("import sys; from fastapi.testclient import TestClient; from responder.review.app import ReviewConfig, "
            f"create_app; c = TestClient(create_app(ReviewConfig(replies={str(path)!r}))); "
            "assert c.get('/').status_code == 200; assert c.get('/static/review.js').status_code == 200; "
            "print(','.join(m for m in ('torch', 'transformers', 'chromadb') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def test_skipped_and_failed_comments_have_no_draft_to_approve(tmp_path):
    path = write_drafts(tmp_path / "r.jsonl")
    c = client(path, answerer=StubAnswerer())
    r = c.post("/api/drafts/UgxEmoji/approve", json={"shown": []}, headers=H)
    assert r.status_code == 409 and "was skipped:emoji-only, it has no draft to approve" in r.json()["detail"]
    assert c.post("/api/drafts/UgxEmoji/regenerate", json={}, headers=H).status_code == 409
    assert c.post("/api/drafts/UgxFail/edit", json={"reply": "hi"}, headers=H).status_code == 409
    r = c.post("/api/drafts/UgxFail/regenerate", json={}, headers=H)  # a failed one gets a new draft
    assert r.status_code == 200 and r.json()["state"] == "pending"
    saved = read_drafts(path)
    assert saved["UgxEmoji"]["status"] == "skipped:emoji-only" and "approved" not in saved["UgxEmoji"]


def test_the_citation_is_its_own_line_on_the_page_and_can_be_removed(tmp_path):
    line = 'More in my post "SQL Window Functions": https://blog.test/sql-window'
    cited = draft("UgxCited", "@maria_analyst", "How do I get a running total per day in Postgres?",
                  f"Use SUM(amount) OVER (ORDER BY day).\n{line}\n{SIGN}", [{**SQL, "cited": True}], citation=line)
    path = write_drafts(tmp_path / "r.jsonl", [cited])
    c = client(path)
    page = c.get("/").text
    assert "Citation, composed from the article" in page and 'data-action="uncite"' in page
    r = c.post("/api/drafts/UgxCited/uncite", json={}, headers=H)
    assert r.status_code == 200 and 'data-action="uncite"' not in r.json()["card"]
    saved = read_drafts(path)["UgxCited"]
    assert saved["reply"] == f"Use SUM(amount) OVER (ORDER BY day).\n{SIGN}"  # the rest untouched, sign-off kept
    assert saved["citation_removed"] is True and "citation" not in saved and not saved["sources"][0].get("cited")
    assert saved["original_reply"].count(line) == 1 and saved["approved"] is False
    again = c.post("/api/drafts/UgxCited/uncite", json={}, headers=H)
    assert again.status_code == 409 and "no citation line" in again.json()["detail"]
