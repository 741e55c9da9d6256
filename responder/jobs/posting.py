"""`responder post`: post approved replies with YouTube's `comments.insert`, never twice.

`comments.insert` is not idempotent: a retried or repeated call can reply twice. So every post
goes through one ledger per channel in the user's data directory
(`$XDG_DATA_HOME/comment-responder/ledgers/CHANNEL_ID.jsonl`, append-only JSONL, fsync'd line by
line), whatever replies file the reply came from: drafts regenerated into a new file and posted
again find their comments already answered.

    intent  -> written BEFORE the API call
    posted  -> written after YouTube answered with the new reply's id
    failed  -> YouTube refused this reply for good (commentTextTooLong, operationNotSupported, ...)
    not-posted -> YouTube refused the call before doing anything (quotaExceeded, 401): retry later
    check / retry / channel -> quota spent on a comments.list check, a repeated insert, channels.list

An `intent` without a result means the process died between the call and the write: the reply
may or may not exist. It is never re-posted blindly: the next run first lists the replies under
that parent (`comments.list?parentId=...`) and re-posts only when none from the channel (and none
with the same text) is there. The same check runs before retrying after a 5xx or a dropped
connection, where YouTube may have stored the reply and failed afterwards.

Quota: every insert costs 50 units, every check 1, counted per quota day (YouTube's: it resets at
midnight America/Los_Angeles) from the ledger against a daily budget (default 10,000); the run
stops cleanly before a call would go over it. `quotaExceeded` from the API also stops the run.

Which lines are posted: `status` is `answered`, `reply` is not empty, `approved` is true (JSON
true, or true/yes/1 in a CSV; `--all` takes every answered line), the reply has no flag
(base.replychecks) that a person did not see when approving or editing it on the review page, and
the triage policy drafts the comment's intent: neither its recorded intent nor an exact rule on its
text (orders to the bot, spam) says skip, whatever a hand edit made of the file.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo

from base.errors import UserError
from base.fileio import AppendOnlyLog, read_jsonl, scan_jsonl_log
from knowledge.triage_policy import TriagePolicy
from knowledge.triage_rules import match_rule
from responder.jobs.drafts import Drafts
from responder.jobs.screening import configured_policy, draft_flags, flags_cleared, repeats_of
from responder.youtube.auth import data_dir
from responder.youtube.client import DEFAULT_API_BASE, DEFAULT_DAILY_QUOTA, Ambiguous, Token, YouTubeClient, YouTubeError, reply_exists
from responder.youtube.export import LOCAL_ID_PREFIX

log = logging.getLogger(__name__)

UNITS_PER_REPLY = 50
UNITS_PER_CHECK = 1
DEFAULT_DAILY_BUDGET = DEFAULT_DAILY_QUOTA
QUOTA_TIMEZONE = ZoneInfo("America/Los_Angeles")  # YouTube's quota day ends at midnight Pacific time
FINAL_FAILURES = {"commentTextTooLong", "operationNotSupported", "processingFailure", "parentCommentNotFound",
                  "commentNotFound", "forbidden", "invalidCommentMetadata", "parentIdMissing", "textOriginalMissing"}
TRUTHY = {"true", "yes", "y", "1", "x"}
FLAGGED = "flagged, not reviewed (approve it in `responder review`)"


# ---------------------------------------------------------------------------------- replies file

@dataclass
class ToPost:
    comment_id: str
    text: str
    line: int


@dataclass
class Selection:
    approved: list[ToPost] = field(default_factory=list)
    not_approved: int = 0
    not_postable: Counter = field(default_factory=Counter)  # reason -> count


def is_approved(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUTHY


def read_replies(path: Path, take_all: bool = False, sign_off: str = "",
                 policy: TriagePolicy | None = None) -> Selection:
    """The replies to post, in file order (JSONL, or CSV when the name ends in .csv)."""
    policy = policy or configured_policy()
    if not path.is_file():
        raise UserError(f"replies file '{path}' does not exist; pass the output of `responder batch`")
    try:
        records = Drafts(path).load() if path.suffix.lower() == ".csv" else _read_jsonl_replies(path)
    except OSError as exc:
        raise UserError(f"cannot read replies file '{path}': {exc.strerror}") from exc
    sel = Selection()
    seen: set[str] = set()
    repeats = repeats_of(records, sign_off)
    for n, r in enumerate(records, 1):
        if r.get("status") != "answered":
            continue
        cid, text = str(r.get("comment_id") or ""), str(r.get("reply") or "").strip()
        skipped = skipped_intent(r, policy)
        if skipped:
            sel.not_postable[f"the triage policy skips {skipped} comments"] += 1
        elif not (take_all or is_approved(r.get("approved", False))):
            sel.not_approved += 1
        elif not text:
            sel.not_postable["empty-reply"] += 1
        elif not cid or cid.startswith(LOCAL_ID_PREFIX):
            sel.not_postable["no-youtube-id"] += 1
        elif cid in seen:
            sel.not_postable["duplicate"] += 1
        elif not flags_cleared(r, draft_flags(r, sign_off, repeats.get(cid, 1))):
            sel.not_postable[FLAGGED] += 1
        else:
            seen.add(cid)
            sel.approved.append(ToPost(cid, text, n))
    return sel


def skipped_intent(record: dict[str, Any], policy: TriagePolicy) -> str | None:
    """The intent the policy does not draft that this record's comment has (recorded, or by an exact
    rule on its text), or None."""
    rule = match_rule(str(record.get("comment") or ""))
    for intent in (rule.intent if rule else None, record.get("intent")):
        if intent and not policy.drafts(str(intent)):
            return str(intent)
    return None


def _read_jsonl_replies(path: Path) -> list[dict[str, Any]]:
    # A last line without its newline is a batch still writing it (or one killed mid-write): skipped.
    return [record for _, record in read_jsonl(path, f"replies file '{path}'", "fix that line (a hand edit?) "
                                               "and run again", objects=True, torn_tail=True)]


# ---------------------------------------------------------------------------------------- ledger

def quota_day(now: datetime | None = None) -> str:
    """The quota day of a moment: YouTube's day, which ends at midnight Pacific time."""
    return (now or datetime.now(timezone.utc)).astimezone(QUOTA_TIMEZONE).strftime("%Y-%m-%d")


def ledger_dir(env=os.environ) -> Path:
    return data_dir(env) / "ledgers"


def channel_ledger(channel_id: str, env=os.environ) -> Path:
    return ledger_dir(env) / f"{channel_id}.jsonl"


class Ledger:
    """Append-only JSONL (`base.fileio.AppendOnlyLog`); the state of a comment is its last decisive event."""

    def __init__(self, path: Path) -> None:
        self.path = path
        name = f"ledger '{path}'"
        self._log = AppendOnlyLog(
            path, name, in_use="is in use by another `responder post`; wait for it",
            scan=lambda data: scan_jsonl_log(data, name, damaged="is damaged; restore it from a backup. Deleting "
                                             "the ledger would let replies be posted twice"))

    @property
    def events(self) -> list[dict[str, Any]]:
        return self._log.records

    @classmethod
    def read(cls, *paths: Path) -> "Ledger":
        """Read without writing anything (dry runs); several ledgers read as one."""
        ledger = cls(paths[0])
        for path in paths:
            ledger._log.records = ledger.events + AppendOnlyLog(path, f"ledger '{path}'").read()
        return ledger

    def open(self) -> "Ledger":
        self._log.open()
        return self

    def close(self) -> None:
        self._log.close()

    def append(self, event: str, comment_id: str, **data: Any) -> None:
        now = datetime.now(timezone.utc)
        entry = {"event": event, "comment_id": comment_id, "at": now.isoformat(timespec="seconds"),
                 "day": quota_day(now), **data}
        self._log.append([entry])  # fsync'd: on disk before the API call it announces

    def import_legacy(self, legacy: Path) -> None:
        """Take over a ledger kept next to a replies file (before ledgers were per channel), once."""
        key = str(legacy.resolve())
        if not legacy.exists() or any(e.get("event") == "imported" and e.get("from") == key for e in self.events):
            return
        events = [e for e in AppendOnlyLog(legacy, f"ledger '{legacy}'").read() if e.get("event") != "imported"]
        self._log.append([*events, {"event": "imported", "comment_id": "", "from": key}])

    def state(self, comment_id: str) -> str | None:
        """posted | failed | pending (an intent with no result) | None (never tried, or retryable)."""
        return self.states().get(comment_id)

    def states(self) -> dict[str, str | None]:
        """Every comment's state, from its last decisive event."""
        out: dict[str, str | None] = {}
        for e in self.events:
            kind, cid = e.get("event"), str(e.get("comment_id") or "")
            if kind == "intent":
                out[cid] = "pending"
            elif kind in ("posted", "failed"):
                out[cid] = kind
            elif kind == "not-posted":
                out[cid] = None
        return out

    def units_on(self, day: str) -> int:
        return sum(int(e.get("units") or 0) for e in self.events if _event_day(e) == day)

    def known_channel_id(self) -> str | None:
        for e in reversed(self.events):
            if e.get("event") == "posted" and e.get("channel_id"):
                return str(e["channel_id"])
        return None


def _event_day(event: dict[str, Any]) -> str | None:
    try:
        return quota_day(datetime.fromisoformat(str(event["at"])))
    except (KeyError, ValueError):
        return event.get("day")


# ------------------------------------------------------------------------------------ posting run

class Stop(Exception):
    """End the run cleanly: everything so far is recorded; the message says what to do."""


@dataclass
class PostSummary:
    posted: int = 0
    recovered: int = 0  # an interrupted post found already on YouTube: recorded, not re-posted
    already_posted: int = 0
    failed: Counter = field(default_factory=Counter)
    failed_before: int = 0
    not_approved: int = 0
    not_postable: Counter = field(default_factory=Counter)
    would_post: int = 0  # dry run
    units_today: int = 0
    budget: int = DEFAULT_DAILY_BUDGET
    stopped: str | None = None
    pending_left: int = 0  # intents still without a result at the end (checked next run)
    ledger: str = ""


def dry_run(replies_path: Path | str, *, take_all: bool = False, budget: int = DEFAULT_DAILY_BUDGET,
            channel_id: str | None = None, ledger_path: Path | str | None = None, sign_off: str = "") -> PostSummary:
    """What `post_replies` would do: reads the replies and the ledger, writes nothing, calls nothing."""
    replies_path = Path(replies_path).expanduser()
    selection = read_replies(replies_path, take_all, sign_off)
    summary = PostSummary(not_approved=selection.not_approved, not_postable=selection.not_postable, budget=budget)
    ledger, summary.ledger = read_ledgers(replies_path, channel_id, ledger_path)
    for item in selection.approved:
        state = ledger.state(item.comment_id)
        if state == "posted":
            summary.already_posted += 1
        elif state == "failed":
            summary.failed_before += 1
        else:
            summary.would_post += 1
            summary.pending_left += state == "pending"  # checked on YouTube before posting
    summary.units_today = ledger.units_on(quota_day())
    return summary


def read_ledgers(replies_path: Path, channel_id: str | None = None,
                 ledger_path: Path | str | None = None) -> tuple[Ledger, str]:
    """(the ledger as it stands, read without writing; where it is): the channel's, else every channel's."""
    if ledger_path:
        paths = [Path(ledger_path)]
    elif channel_id:
        paths = [channel_ledger(channel_id)]
    else:  # channel not known yet: every channel's ledger counts
        paths = sorted(ledger_dir().glob("*.jsonl")) or [channel_ledger("unknown")]
    legacy = _legacy_ledger(replies_path)
    ledger = Ledger.read(*paths, *([legacy] if legacy.exists() else []))
    return ledger, str(paths[0]) if len(paths) == 1 else str(ledger_dir())


def _legacy_ledger(replies_path: Path) -> Path:
    return replies_path.with_name(replies_path.name + ".ledger")


def _resolve_channel(client: YouTubeClient, channel_id: str | None) -> tuple[str, bool]:
    """(channel id, whether channels.list was called for it)."""
    if channel_id:
        return channel_id, False
    try:
        mine = client.my_channel()
    except YouTubeError as exc:
        raise UserError(f"could not read the channel of this login ({exc.status} {exc.reason}); pass --channel-id "
                        "or run `responder login` again") from exc
    if not mine or not mine.get("id"):
        raise UserError("this login has no YouTube channel; log in with the channel's account (`responder login`)")
    return str(mine["id"]), True


def post_replies(replies_path: Path | str, *, yes: bool = False, take_all: bool = False,
                 budget: int = DEFAULT_DAILY_BUDGET, api_base: str = DEFAULT_API_BASE,
                 token: Token | None = None, channel_id: str | None = None, retries: int = 5,
                 backoff_s: float = 1.0, ledger_path: Path | str | None = None, sign_off: str = "",
                 on_progress: Callable[[str], None] | None = None,
                 on_planned: Callable[[int], None] | None = None) -> PostSummary:
    if not yes:
        return dry_run(replies_path, take_all=take_all, budget=budget, channel_id=channel_id,
                       ledger_path=ledger_path, sign_off=sign_off)
    replies_path = Path(replies_path).expanduser()
    selection = read_replies(replies_path, take_all, sign_off)
    summary = PostSummary(not_approved=selection.not_approved, not_postable=selection.not_postable, budget=budget)
    if not token:
        raise UserError("posting needs a YouTube login: run `responder login` (or set YOUTUBE_ACCESS_TOKEN), or "
                        "run without --yes for a dry run")
    client = YouTubeClient(token, api_base)
    try:
        channel_id, looked_up = _resolve_channel(client, channel_id)
        ledger = Ledger(Path(ledger_path) if ledger_path else channel_ledger(channel_id)).open()
    except BaseException:
        client.close()
        raise
    summary.ledger = str(ledger.path)
    if looked_up:
        ledger.append("channel", "", units=UNITS_PER_CHECK, channel_id=channel_id)
    ledger.import_legacy(_legacy_ledger(replies_path))
    todo = [i for i in selection.approved if ledger.state(i.comment_id) not in ("posted", "failed")]
    summary.already_posted = sum(ledger.state(i.comment_id) == "posted" for i in selection.approved)
    summary.failed_before = sum(ledger.state(i.comment_id) == "failed" for i in selection.approved)
    if on_planned:
        on_planned(len(todo))
    poster = _Poster(ledger, client, budget, retries, backoff_s, channel_id, summary)
    try:
        for item in todo:
            poster.post(item)
            if on_progress:
                on_progress(item.comment_id)
    except Stop as stop:
        summary.stopped = str(stop)
    finally:
        client.close()
        summary.units_today = ledger.units_on(quota_day())
        summary.pending_left = sum(ledger.state(i.comment_id) == "pending" for i in selection.approved)
        ledger.close()
    return summary


class _Poster:
    def __init__(self, ledger: Ledger, client: YouTubeClient, budget: int, retries: int, backoff_s: float,
                 channel_id: str | None, summary: PostSummary) -> None:
        self.ledger, self.client, self.budget = ledger, client, budget
        self.retries, self.backoff_s, self.channel_id, self.summary = retries, backoff_s, channel_id, summary

    def spend(self, units: int) -> None:
        """Stop before a call that would take today's spending over the budget."""
        used = self.ledger.units_on(quota_day())
        if used + units > self.budget:
            raise Stop(f"daily quota budget reached: {used} of {self.budget} units used this quota day (it ends at "
                       f"midnight Pacific time) and the next call needs {units}; run again after it or raise "
                       "--quota-budget")

    def post(self, item: ToPost) -> None:
        cid = item.comment_id
        if self.ledger.state(cid) == "pending" and self.already_there(item):
            return
        self.spend(UNITS_PER_REPLY)
        self.ledger.append("intent", cid, units=UNITS_PER_REPLY, text_chars=len(item.text))
        for attempt in range(self.retries + 1):
            try:
                created = self.client.insert_reply(cid, item.text)
            except Ambiguous as exc:
                log.warning("%s: %s; checking before any retry", cid, exc)
                if attempt == self.retries:
                    raise Stop(f"YouTube failed {self.retries + 1} times in a row ({exc}); run again later "
                               "(the interrupted reply is checked before it is posted again)")
                self.sleep(attempt)
                if self.already_there(item):
                    return
                self.retry(cid)
                continue
            except YouTubeError as exc:
                if exc.status == 429 or exc.reason in ("rateLimitExceeded", "userRateLimitExceeded", "connectError"):
                    if attempt == self.retries:
                        self.ledger.append("not-posted", cid, reason=exc.reason)
                        raise Stop(f"YouTube kept refusing ({exc.reason}); nothing more posted, run again later")
                    self.sleep(attempt)
                    self.retry(cid)
                    continue
                self.refused(cid, exc)
                return
            sn = created.get("snippet") or {}
            channel = (sn.get("authorChannelId") or {}).get("value")
            self.channel_id = self.channel_id or channel
            self.ledger.append("posted", cid, reply_id=created.get("id"), channel_id=channel)
            self.summary.posted += 1
            return

    def retry(self, cid: str) -> None:
        self.spend(UNITS_PER_REPLY)
        self.ledger.append("retry", cid, units=UNITS_PER_REPLY)

    def sleep(self, attempt: int) -> None:
        time.sleep(self.backoff_s * 2 ** attempt)

    def refused(self, cid: str, exc: YouTubeError) -> None:
        if exc.reason in ("quotaExceeded", "dailyLimitExceeded"):
            self.ledger.append("not-posted", cid, reason=exc.reason)
            raise Stop("YouTube says the project's daily quota is used up (quotaExceeded); nothing more "
                       "posted, run again after the quota resets (midnight Pacific Time)")
        if exc.status == 401 or exc.reason in ("authError", "unauthorized", "insufficientPermissions"):
            self.ledger.append("not-posted", cid, reason=exc.reason)
            raise Stop(f"YouTube refused the access token ({exc.status} {exc.reason}); run `responder login` "
                       "again (or set a fresh YOUTUBE_ACCESS_TOKEN with the youtube.force-ssl scope)")
        log.warning("%s: %s", cid, exc)
        self.ledger.append("failed", cid, reason=exc.reason, status=exc.status, message=exc.message[:200])
        self.summary.failed[exc.reason] += 1

    def already_there(self, item: ToPost) -> bool:
        """Check YouTube for the reply an interrupted run may have posted; record it if found."""
        self.spend(UNITS_PER_CHECK)
        self.ledger.append("check", item.comment_id, units=UNITS_PER_CHECK)
        try:
            found = reply_exists(self.client.list_replies(item.comment_id), self.channel_id, item.text)
        except YouTubeError as exc:
            raise Stop(f"could not check comment {item.comment_id} for an earlier reply ({exc}); nothing "
                       "re-posted, run again later") from exc
        if found is None:
            return False
        channel = ((found.get("snippet") or {}).get("authorChannelId") or {}).get("value")
        self.ledger.append("posted", item.comment_id, reply_id=found.get("id"), channel_id=channel, recovered=True)
        self.summary.recovered += 1
        return True


def summary_rows(summary: PostSummary, dry_run: bool) -> list[tuple[str, str]]:
    """The post summary as (label, count) rows: the CLI's table and the review page show the same."""
    rows = [("would be posted", str(summary.would_post))] if dry_run else [("posted", str(summary.posted))]
    if not dry_run and summary.recovered:
        rows.append(("found already posted by an interrupted run", str(summary.recovered)))
    rows.append(("already posted (ledger)", str(summary.already_posted)))
    rows += [(f"failed: {reason}", str(n)) for reason, n in sorted(summary.failed.items())]
    if summary.failed_before:
        rows.append(("failed in an earlier run", str(summary.failed_before)))
    rows += [(f"not postable: {reason}", str(n)) for reason, n in sorted(summary.not_postable.items())]
    rows.append(("not approved", str(summary.not_approved)))
    if summary.pending_left:
        rows.append(("unsure (checked before re-posting next run)", str(summary.pending_left)))
    rows.append(("quota used today (Pacific day)", f"{summary.units_today} / {summary.budget}"))
    return rows
