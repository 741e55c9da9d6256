"""`responder post`: publish the approved replies of a replies file, never twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from responder.youtube.options import API_BASE_OPTION, CHANNEL_ID_OPTION, QUOTA_BUDGET_OPTION


@click.command("post")
@click.argument("replies_path", metavar="REPLIES", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Really post (without it: a dry run that shows what would be posted).")
@click.option("--all", "take_all", is_flag=True,
              help='Post every answered reply, not only those with "approved": true (asks first, unless --yes).')
@QUOTA_BUDGET_OPTION
@CHANNEL_ID_OPTION
@API_BASE_OPTION
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Retries (exponential backoff) on 429 and 5xx answers.")
@click.option("--backoff", type=click.FloatRange(min=0), default=1.0, hidden=True)
def post(replies_path: Path, yes: bool, take_all: bool, quota_budget: int, channel_id: str | None,
         api_base: str, retries: int, backoff: float) -> None:
    """Post the approved replies of REPLIES with comments.insert, never twice.

    Login: `responder login` (or YOUTUBE_ACCESS_TOKEN, scope youtube.force-ssl). One ledger per
    channel in your data folder records each post before and after the call: no comment is
    answered twice, from this file or any other, even after a crash. A reply with flags (a link,
    a loop, an echo...) is posted only once approved on the review page. Stops cleanly before
    going over the daily quota budget (YouTube's day ends at midnight Pacific time).
    """
    from rich.console import Console

    from responder.jobs.posting import UNITS_PER_REPLY, dry_run
    from responder.jobs.screening import sign_off_hint
    from responder.youtube.auth import youtube_access

    sign_off = sign_off_hint()
    if not yes:
        channel = channel_id or youtube_access(os.environ).channel_id or None
        summary = dry_run(replies_path, take_all=take_all, budget=quota_budget, channel_id=channel,
                          sign_off=sign_off)
        out = Console()
        _print_post_summary(out, summary, replies_path, dry_run=True)
        left = max(0, quota_budget - summary.units_today)
        noun = "reply" if summary.would_post == 1 else "replies"
        out.print(f"Dry run: nothing posted. {summary.would_post} {noun} would be posted "
                  f"({summary.would_post * UNITS_PER_REPLY} units; {left} left in today's budget). Add --yes to post.")
        if not (take_all and summary.would_post):
            return
        if not click.confirm(f"Post all {summary.would_post} answered {noun}, approved or not?", default=False,
                             err=True):
            click.echo("Nothing posted.", err=True)
            return
    _post(replies_path, take_all, quota_budget, channel_id, api_base, retries, backoff, sign_off)


def _post(replies_path: Path, take_all: bool, quota_budget: int, channel_id: str | None, api_base: str,
          retries: int, backoff: float, sign_off: str) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from responder.jobs.posting import post_replies, read_replies
    from responder.youtube.auth import post_token

    console = Console(stderr=True)
    # Problems the user must fix come first, as one line, before any progress bar.
    read_replies(replies_path, take_all, sign_off)
    access = post_token(os.environ)
    with Progress(TextColumn("[bold]Posting"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("post", total=None)
        summary = post_replies(replies_path, yes=True, take_all=take_all, budget=quota_budget, api_base=api_base,
                               token=access.token, channel_id=channel_id or access.channel_id or None,
                               retries=retries, backoff_s=backoff, sign_off=sign_off,
                               on_planned=lambda n: progress.update(task, total=n),
                               on_progress=lambda _: progress.update(task, advance=1))
    _print_post_summary(Console(), summary, replies_path, dry_run=False)
    if summary.stopped:
        console.print(f"[bold red]Stopped:[/bold red] {summary.stopped}")
        sys.exit(1)


def _print_post_summary(console, summary, replies_path: Path, dry_run: bool) -> None:
    from rich.table import Table

    from responder.jobs.posting import summary_rows

    table = Table(title=f"responder post {replies_path}" + (" (dry run)" if dry_run else ""))
    table.add_column("replies")
    table.add_column("count", justify="right")
    for label, n in summary_rows(summary, dry_run):
        table.add_row(label, n)
    console.print(table)
    if summary.ledger:
        console.print(f"Ledger: {summary.ledger}")


COMMANDS: list[click.Command] = [post]
