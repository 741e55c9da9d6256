"""`responder post`: publish the approved replies of a replies file, never twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click


@click.command("post")
@click.argument("replies_path", metavar="REPLIES", type=click.Path(path_type=Path))
@click.option("--yes", is_flag=True, help="Really post (without it: a dry run that shows what would be posted).")
@click.option("--all", "take_all", is_flag=True, help='Post every answered reply, not only those with "approved": true.')
@click.option("--quota-budget", type=click.IntRange(min=0), default=10_000, show_default=True,
              envvar="YOUTUBE_QUOTA_BUDGET", help="Daily YouTube API units this command may spend (50 per reply) "
                                                 "[env YOUTUBE_QUOTA_BUDGET].")
@click.option("--channel-id", default=None, envvar="YOUTUBE_CHANNEL_ID", metavar="ID",
              help="Your channel id, to recognise your replies when checking an interrupted post.")
@click.option("--api-base", default="https://www.googleapis.com", envvar="YOUTUBE_API_BASE", show_default=True,
              help="YouTube Data API base URL [env YOUTUBE_API_BASE].")
@click.option("--retries", type=click.IntRange(min=0), default=5, show_default=True,
              help="Retries (exponential backoff) on 429 and 5xx answers.")
@click.option("--backoff", type=click.FloatRange(min=0), default=1.0, hidden=True)
def post(replies_path: Path, yes: bool, take_all: bool, quota_budget: int, channel_id: str | None,
         api_base: str, retries: int, backoff: float) -> None:
    """Post the approved replies of REPLIES with comments.insert, never twice.

    Token: YOUTUBE_ACCESS_TOKEN (OAuth, scope youtube.force-ssl). A ledger next to REPLIES
    (REPLIES.ledger) records each post before and after the call; a second run posts nothing
    twice, even after a crash. Stops cleanly before going over the daily quota budget.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from base.errors import UserError
    from responder.jobs.posting import UNITS_PER_REPLY, post_replies, read_replies

    console = Console(stderr=True)
    token = os.environ.get("YOUTUBE_ACCESS_TOKEN")
    if not yes:
        summary = post_replies(replies_path, take_all=take_all, budget=quota_budget)
        out = Console()
        _print_post_summary(out, summary, replies_path, dry_run=True)
        left = max(0, quota_budget - summary.units_today)
        noun = "reply" if summary.would_post == 1 else "replies"
        out.print(f"Dry run: nothing posted. {summary.would_post} {noun} would be posted "
                      f"({summary.would_post * UNITS_PER_REPLY} units; {left} left in today's budget). "
                      "Add --yes to post.")
        return
    # Problems the user must fix come first, as one line, before any progress bar.
    if not token:
        raise UserError("posting needs an OAuth access token with the youtube.force-ssl scope: set "
                        "YOUTUBE_ACCESS_TOKEN (or run without --yes for a dry run)")
    read_replies(replies_path, take_all)
    with Progress(TextColumn("[bold]Posting"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
        task = progress.add_task("post", total=None)
        summary = post_replies(replies_path, yes=True, take_all=take_all, budget=quota_budget,
                               api_base=api_base, token=token, channel_id=channel_id, retries=retries,
                               backoff_s=backoff,
                               on_planned=lambda n: progress.update(task, total=n),
                               on_progress=lambda _: progress.update(task, advance=1))
    _print_post_summary(Console(), summary, replies_path, dry_run=False)
    if summary.stopped:
        console.print(f"[bold red]Stopped:[/bold red] {summary.stopped}")
        sys.exit(1)


def _print_post_summary(console, summary, replies_path: Path, dry_run: bool) -> None:
    from rich.table import Table

    table = Table(title=f"responder post {replies_path}" + (" (dry run)" if dry_run else ""))
    table.add_column("replies")
    table.add_column("count", justify="right")
    if dry_run:
        table.add_row("would be posted", str(summary.would_post))
    else:
        table.add_row("posted", str(summary.posted))
        if summary.recovered:
            table.add_row("found already posted by an interrupted run", str(summary.recovered))
    table.add_row("already posted (ledger)", str(summary.already_posted))
    for reason, n in sorted(summary.failed.items()):
        table.add_row(f"[red]failed: {reason}[/red]", str(n))
    if summary.failed_before:
        table.add_row("failed in an earlier run", str(summary.failed_before))
    for reason, n in sorted(summary.not_postable.items()):
        table.add_row(f"not postable: {reason}", str(n))
    table.add_row("not approved", str(summary.not_approved))
    if summary.pending_left:
        table.add_row("[yellow]unsure (checked before re-posting next run)[/yellow]", str(summary.pending_left))
    table.add_row("quota used today (UTC)", f"{summary.units_today} / {summary.budget}")
    console.print(table)
COMMANDS: list[click.Command] = [post]
