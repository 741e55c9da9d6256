"""The review page in a real headless Chromium: approve, edit, reject, keyboard, regenerate, then post.

The replies file is read back after the clicks; "Post approved" posts to the fake YouTube API on
loopback through the ledger, and a second post inserts nothing.
"""

from __future__ import annotations

import pytest

from responder.review.app import ReviewConfig, create_app
from tests.browser import launch, why_no_browser
from tests.fake_youtube import FakeYouTube
from tests.review_support import LINK_FLAG, TRIAGED, TRIAGED_REVIEW_ORDER, read_drafts, write_drafts
from tests.fakes import StubAnswerer

pytestmark = [pytest.mark.integration, pytest.mark.skipif(why_no_browser() is not None,
                                                          reason=f"browser test skipped: {why_no_browser()}")]


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture
def yt():
    fake = FakeYouTube().start()
    yield fake
    fake.stop()


def state_of(page, cid: str, state: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(f"#draft-{cid}")).to_have_attribute("data-state", state, timeout=10_000)


def test_review_in_a_browser_then_post_once(tmp_path, yt, live_server, browser):
    from playwright.sync_api import expect

    path = write_drafts(tmp_path / "replies.jsonl")
    config = ReviewConfig(replies=path, api_base=yt.url, channel_id=yt.channel_id, answerer=StubAnswerer(),
                          env={"YOUTUBE_ACCESS_TOKEN": yt.token})
    server = live_server(create_app(config))
    page = browser.new_page()
    page.goto(server.url)
    expect(page.locator("[data-count=pending]")).to_have_text("6")

    page.locator("#draft-UgxRunning").get_by_role("button", name="Approve a", exact=True).click()  # approve
    state_of(page, "UgxRunning", "approved")
    page.locator("#draft-UgxThanks textarea").fill("Thank you so much, Sam!")  # edit & approve
    page.locator("#draft-UgxThanks").get_by_role("button", name="Edit & approve e", exact=True).click()
    state_of(page, "UgxThanks", "approved")
    page.locator("#draft-UgxGpu").get_by_role("button", name="Reject r", exact=True).click()  # reject
    state_of(page, "UgxGpu", "rejected")

    page.keyboard.press("j")  # keyboard: next draft, approve it (its flags were on screen)
    expect(page.locator("#draft-UgxLink")).to_have_class(r"draft state-pending current", timeout=5_000)
    page.keyboard.press("a")
    state_of(page, "UgxLink", "approved")
    page.keyboard.press("j")  # next, e to edit, Ctrl+Enter to save and approve
    page.keyboard.press("e")
    page.keyboard.press("Control+a")
    page.keyboard.type("Good idea, it's on the list for next month!")
    page.keyboard.press("Control+Enter")
    state_of(page, "UgxLoop", "approved")
    page.keyboard.press("j")
    page.keyboard.press("r")  # r rejects the next one
    state_of(page, "UgxXss", "rejected")
    page.keyboard.press("k")
    expect(page.locator("#draft-UgxLoop")).to_have_class(r"draft state-approved current")
    page.keyboard.press("g")  # regenerate: a new pending draft from the (stub) responder
    state_of(page, "UgxLoop", "pending")
    expect(page.locator("#draft-UgxLoop .sources")).to_contain_text("Bootstrap Confidence Intervals")
    page.locator("#draft-UgxLoop").get_by_role("button", name="Approve a", exact=True).click()
    state_of(page, "UgxLoop", "approved")
    expect(page.locator("[data-count=approved]")).to_have_text("4")
    expect(page.locator("[data-count=rejected]")).to_have_text("2")

    saved = read_drafts(path)
    assert {c: r["approved"] for c, r in saved.items() if r["status"] == "answered"} == {
        "UgxRunning": True, "UgxThanks": True, "UgxLink": True, "UgxLoop": True}
    assert saved["UgxThanks"]["reply"] == "Thank you so much, Sam!" and saved["UgxThanks"]["edited"]
    assert saved["UgxLink"]["flags_seen"] == [LINK_FLAG]
    assert saved["UgxGpu"]["status"] == saved["UgxXss"]["status"] == "rejected"
    assert saved["UgxLoop"]["reply"] == "Resample with replacement, then take percentiles."

    page.get_by_role("button", name="Post approved…").click()  # the dry run first
    expect(page.locator("#post-body")).to_contain_text("4 approved replies would be posted")
    assert yt.count("insert") == 0
    page.get_by_role("button", name="Post 4 replies to YouTube").click()
    expect(page.locator("#post-body")).to_contain_text("Posted 4.", timeout=20_000)
    assert sorted(yt.replies) == ["UgxLink", "UgxLoop", "UgxRunning", "UgxThanks"]
    assert yt.texts_under("UgxThanks") == ["Thank you so much, Sam!"] and yt.shape_errors == []

    page.reload()  # posted badges; a second post inserts nothing
    expect(page.locator("#draft-UgxRunning .badge.posted")).to_have_text("posted")
    page.get_by_role("button", name="Post approved…").click()
    expect(page.locator("#post-body")).to_contain_text("0 approved replies would be posted")
    expect(page.locator("#post-confirm")).to_be_hidden()
    assert yt.count("insert") == 4
    page.close()


def test_the_page_reads_needs_you_first_and_filters_by_intent(tmp_path, live_server, browser):
    from playwright.sync_api import expect

    server = live_server(create_app(ReviewConfig(replies=write_drafts(tmp_path / "replies.jsonl", TRIAGED),
                                                 answerer=StubAnswerer())))
    page = browser.new_page()
    page.goto(server.url)
    cards = page.locator("article.draft")
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.id)") == TRIAGED_REVIEW_ORDER
    expect(cards.first.locator(".badge.needs-you")).to_be_visible()
    page.locator("#intents").get_by_role("link", name="question 3").click()
    expect(cards).to_have_count(3)
    assert cards.evaluate_all("cs => cs.map(c => c.dataset.id)") == ["UgxLink", "UgxRunning", "UgxGpu"]
    page.keyboard.press("a")  # the keys walk the filtered list in its order, from its first card
    state_of(page, "UgxLink", "approved")
    page.keyboard.press("j")
    page.keyboard.press("r")
    state_of(page, "UgxRunning", "rejected")
    saved = read_drafts(tmp_path / "replies.jsonl")
    assert saved["UgxLink"]["approved"] is True and saved["UgxRunning"]["status"] == "rejected"
    assert saved["UgxLink"]["intent"] == "question" and saved["UgxLink"]["needs_creator"] is True
    page.close()
