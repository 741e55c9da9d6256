"""Drafts for the review page tests and the README screenshot: a replies file as `responder batch` writes it."""

from __future__ import annotations

import json
from pathlib import Path

SIGN = "Keep exploring! - Nadia"
SQL = {"title": "SQL Window Functions", "section": "Running totals", "source": "sql-window.md",
       "url": "https://blog.test/sql-window", "similarity": 0.71}
DOCKER = {"title": "Docker for Data Scientists", "section": "GPUs", "source": "docker.md", "url": "",
          "similarity": 0.64}


def draft(cid: str, author: str, comment: str, reply: str, sources=(), **extra) -> dict:
    return {"comment_id": cid, "video_id": "vidSQL00001", "author": author, "comment": comment, "reply": reply,
            "sources": list(sources), "used_context": bool(sources), "status": "answered", "approved": False,
            **extra}


DRAFTS = [
    draft("UgxRunning", "@maria_analyst", "How do I get a running total per day in Postgres?",
          f"Use SUM(amount) OVER (ORDER BY day): the window adds each day to the ones before it.\n{SIGN}", [SQL]),
    draft("UgxThanks", "@sam", "This finally made window functions click, thank you!",
          f"Thanks for the kind words!\n{SIGN}"),
    draft("UgxGpu", "@devon", "My container can't see the GPU, what am I missing?",
          f"Install the NVIDIA container toolkit and run with --gpus all.\n{SIGN}", [DOCKER]),
    draft("UgxLink", "@curious_cat", "Is there a notebook for this?",
          f"Yes! Grab it at bit.ly/free-notebook and follow @nadia_extra for more.\n{SIGN}"),
    draft("UgxLoop", "@lee", "Can you do a video on bootstrap intervals?",
          f"Great idea. Great idea. Great idea.\n{SIGN}"),
    draft("UgxXss", "<script>alert(1)</script>", "<img src=x onerror=alert(2)> nice",
          f"Thanks <b>friend</b>!\n{SIGN}"),
    {"comment_id": "UgxEmoji", "video_id": "vidSQL00001", "author": "@fan", "comment": "🔥🔥", "reply": "",
     "sources": [], "used_context": False, "status": "skipped:emoji-only"},
    {"comment_id": "UgxFail", "video_id": "vidSQL00001", "author": "@x", "comment": "?", "reply": "",
     "sources": [], "used_context": False, "status": "failed:empty-reply"},
]


def write_drafts(path: Path, drafts: list[dict] | None = None) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in (drafts or DRAFTS)), encoding="utf-8")
    return path


def read_drafts(path: Path) -> dict[str, dict]:
    return {r["comment_id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}


def triaged(record: dict, intent: str, needs_creator: bool = False, confidence: float = 0.9) -> dict:
    return {**record, "intent": intent, "confidence": confidence, "needs_creator": needs_creator}


BY_ID = {d["comment_id"]: d for d in DRAFTS}
# The same drafts as a batch run with triage writes them, plus a criticism: file order is not review order.
TRIAGED = [
    triaged(BY_ID["UgxRunning"], "question"),
    triaged(BY_ID["UgxThanks"], "thanks"),
    triaged(BY_ID["UgxGpu"], "question"),
    triaged(BY_ID["UgxLink"], "question", needs_creator=True),  # no passage answered it
    triaged(BY_ID["UgxLoop"], "request", needs_creator=True),
    triaged(BY_ID["UgxXss"], "other", confidence=0.41),
    triaged(draft("UgxQuiet", "@ana", "the audio is way too quiet in this one, had to max my volume",
                  f"Sorry about that, I'll fix the levels next time.\n{SIGN}"), "criticism", needs_creator=True),
    triaged(BY_ID["UgxEmoji"], "thanks", confidence=1.0),
    BY_ID["UgxFail"],
]
# What the review page shows first: those that need the creator, then questions ... thank-yous.
TRIAGED_REVIEW_ORDER = ["UgxLink", "UgxLoop", "UgxQuiet", "UgxRunning", "UgxGpu", "UgxXss", "UgxThanks"]


LINK_FLAG = "link or @mention not in the comment or sources: @nadia_extra, bit.ly/free-notebook"
