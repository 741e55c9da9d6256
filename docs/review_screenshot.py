"""Take docs/review.png: the review page over sample drafts, in headless Chromium.

    .venv/bin/python docs/review_screenshot.py [OUT.png]

Needs Debian's chromium (apt-get install -y chromium) and Playwright from PyPI; no network, no
model. The drafts are the ones the review tests use (tests/review_support.py).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from responder.review.app import ReviewConfig, create_app  # noqa: E402
from tests.browser import launch, why_no_browser  # noqa: E402
from tests.review_support import DRAFTS, write_drafts  # noqa: E402
from tests.support import LiveServer  # noqa: E402


def main(out: Path) -> None:
    if why_no_browser():
        sys.exit(f"cannot take the screenshot: {why_no_browser()}")
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the page shows the path as given: a short one
        order = ["UgxRunning", "UgxLink", "UgxLoop", "UgxThanks", "UgxGpu", "UgxEmoji", "UgxFail"]
        path = write_drafts(Path("nadia-sql-video.replies.jsonl"),
                            sorted((d for d in DRAFTS if d["comment_id"] in order),
                                   key=lambda d: order.index(d["comment_id"])))
        config = ReviewConfig(replies=path, channel_id="UCnadiaDoesData000000001",
                              sign_off="Keep exploring! - Nadia", env={})
        with LiveServer(create_app(config)) as server, sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1100, "height": 1250}, device_scale_factor=1)
            page.goto(server.url)
            page.locator("#draft-UgxRunning [data-action=approve]").click()
            page.wait_for_selector("#draft-UgxRunning[data-state=approved]")
            page.locator("#draft-UgxGpu [data-action=reject]").click()
            page.wait_for_selector("#draft-UgxGpu[data-state=rejected]")
            page.locator("#draft-UgxLink .comment").click()
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(out), full_page=False)
            browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "review.png")
