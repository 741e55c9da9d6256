"""A real headless Chromium for the review page tests (Debian's `chromium` driven by Playwright).

`.ci/run` installs Chromium with apt-get, so CI always runs these tests; elsewhere they are
skipped, with the reason, when no Chromium or no Playwright is found. Playwright's own browser
download (`playwright install`) is not used: it needs the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def why_no_browser() -> str | None:
    """None when a browser test can run; else the reason it is skipped."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed (pip install playwright; its browser download is not needed)"
    if chromium_path() is None:
        return "no Chromium found (apt-get install -y chromium, or set CHROMIUM=/path/to/chromium)"
    return None


def launch(playwright):
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
