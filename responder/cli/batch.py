"""`responder batch` (answer a video's comments into a replies file) and `responder post`.

The work lives in responder.youtube (reading and choosing comments) and responder.jobs (the
resumable runner, the replies file, the service client); this module parses options and shows
progress and summaries. Heavy modules are imported inside the commands. A service or generation
server that stays down (`UpstreamError`) ends the run with one `Error: ...` line and exit code 1;
the comments not answered yet stay unanswered, so the same command resumes later.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from base.clikit import store_options

# Failures that say something about one comment or one reply, not about the setup.
PER_COMMENT_FAILURES = {"empty-reply", "invalid-comment", "rejected"}


def _default_output(input_path: Path, fmt: str | None) -> Path:
    stem = input_path.name if input_path.is_dir() else input_path.stem
    return Path(f"{stem}.replies.{fmt or 'jsonl'}")


@click.command("batch")
@click.argument("input_path", metavar="[INPUT]", type=click.Path(path_type=Path), required=False)
@click.option("--video", default=None, metavar="VIDEO",
              help="Fetch this video's comments first (id or URL; as `responder fetch VIDEO`) into "
                   "VIDEO_ID.threads.json, then answer them.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Replies file (JSONL, or CSV with --format csv); re-running with it resumes. "
                   "[default: INPUT_NAME.replies.jsonl]")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default=None,
              help="Output format [default: from the output's extension, else jsonl].")
@click.option("--server", metavar="URL", default=None,
              help="Use a running `responder serve` (POST URL/respond/batch) instead of loading the model; "
                   "API key from RESPONDER_API_KEY.")
@click.option("--adapter", type=click.Path(path_type=Path), default=None,
              help="LoRA adapter directory (finetune output) [env RESPONDER_ADAPTER].")
@click.option("--quantization", type=click.Choice(["nf4", "none"]), default=None,
              help="nf4: 4-bit base; none: float weights, adapter merged (faster on a CPU) "
                   "[env RESPONDER_QUANTIZATION].")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Answer at most N comments this run; the rest wait for the next run.")
@click.option("--min-length", type=click.IntRange(min=0), default=0, help="Skip comments shorter than N characters.")
@click.option("--max-age", "max_age", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Skip comments older than DAYS.")
@click.option("--keep-empty", is_flag=True, help="Answer emoji-only comments too (blank ones are always skipped).")
@click.option("--channel-id", default=None, metavar="ID",
              help="Your channel id, for 'already answered' and 'own comment' [default: from the export's "
                   "snippet.channelId].")
@click.option("--video-title", default=None, help="Video title given to the model for every comment.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Comments per generate call [default: RESPONDER_MAX_BATCH_SIZE, 16].")
@click.option("--only", "only", multiple=True, metavar="INTENTS",
              help="Draft only comments of these intents (comma-separated: question,request,thanks,criticism,"
                   "other); the others wait for a later run. See `responder triage`.")
@click.option("--retry-failed", is_flag=True, help="Answer again the comments that failed in earlier runs.")
@click.option("--backoff", type=click.FloatRange(min=0), default=1.0, hidden=True)
@store_options
def batch(input_path: Path | None, video: str | None, output: Path | None, fmt: str | None, server: str | None,
          adapter: Path | None, quantization: str | None, limit: int | None, min_length: int,
          max_age: float | None, keep_empty: bool, channel_id: str | None, video_title: str | None,
          batch_size: int | None, only: tuple[str, ...], retry_failed: bool, backoff: float, store: str | None,
          chroma_url: str | None) -> None:
    """Answer the comments of a video (a commentThreads.list export, CSV or JSONL) into a replies file.

    INPUT is a file from `responder fetch` (or any export); `--video VIDEO` fetches it first.
    Skips threads the channel already answered, the channel's own comments, blank and emoji-only
    comments, held or likely-spam comments and duplicates. Every other comment is triaged
    (question, request, thanks, criticism, spam, instructions, other): orders to the bot and spam
    are never drafted, questions are drafted first, and RESPONDER_TRIAGE_POLICY says what each
    intent gets. Resumable: re-run with the same -o. Then `responder review REPLIES` to approve,
    edit or reject the drafts, and post them.
    """
    from rich.console import Console

    from base.errors import UpstreamError
    from base.settings import load_settings
    from responder.youtube.export import load_comments
    from knowledge.triage_policy import TriagePolicy, parse_only
    from responder.youtube.selection import Filters, infer_channel_id, select

    only_intents = parse_only(only)
    input_path, output = _input_of(input_path, video, output, fmt)
    comments = load_comments(input_path)  # every input problem surfaces here, before any write
    channel = channel_id or infer_channel_id(comments)
    selected = select(comments, Filters(channel_id=channel, keep_empty=keep_empty, min_length=min_length,
                                        max_age_days=max_age))
    output = output or _default_output(input_path, fmt)
    settings = load_settings(store=store, chroma_url=chroma_url, adapter=adapter, quantization=quantization)
    policy = TriagePolicy.parse(settings.triage_policy)
    run = _Run(selected, settings, server, batch_size or settings.max_batch_size, limit, video_title, backoff,
               policy, only_intents)
    try:
        summary = run.answer_into(output, fmt, retry_failed)
    except UpstreamError as exc:  # not the user's input: exit 1, and the next run resumes
        raise click.ClickException(f"{exc} (stopped; the replies written so far stay in {output})") from exc
    _print_batch_summary(Console(), summary, output, channel)
    errors = sum(n for reason, n in summary.failed.items() if reason not in PER_COMMENT_FAILURES)
    if errors and not summary.answered:  # a broken setup (a crashing model) must not pass for a finished run
        Console(stderr=True).print(f"[bold red]Every comment failed ({errors} with an error);[/bold red] nothing "
                                   "to review. Fix the cause, then re-run with --retry-failed.")
        raise SystemExit(1)


def _input_of(input_path: Path | None, video: str | None, output: Path | None,
              fmt: str | None) -> tuple[Path, Path | None]:
    """(INPUT, output): with --video, the threads file `responder fetch` writes, and a matching output."""
    from base.errors import UserError

    if bool(input_path) == bool(video):
        raise UserError("pass an INPUT file (from `responder fetch`) or --video VIDEO, not both and not neither; "
                        "see `responder batch --help`")
    if input_path is not None:
        return input_path, output
    from responder.youtube.client import DEFAULT_API_BASE
    from responder.youtube.download import fetch_video

    fetched = fetch_video(video or "", None, None, None, os.environ.get("YOUTUBE_API_BASE") or DEFAULT_API_BASE)
    return fetched, output or Path(fetched.name.replace(".threads.json", f".replies.{fmt or 'jsonl'}"))


class _Run:
    """One `responder batch`: the replies file opened, the answerer chosen, progress shown."""

    def __init__(self, selected, settings, server: str | None, size: int, limit: int | None,
                 video_title: str | None, backoff: float, policy, only: frozenset[str] | None) -> None:
        from rich.console import Console

        self.selected, self.settings, self.server, self.size = selected, settings, server, size
        self.limit, self.video_title, self.backoff = limit, video_title, backoff
        self.policy, self.only = policy, only
        self.console = Console(stderr=True)

    def answer_into(self, output: Path, fmt: str | None, retry_failed: bool):
        from responder.jobs.batch_run import plan
        from responder.jobs.reply_log import ReplyLog, output_format

        with ReplyLog(output, output_format(output, fmt)) as replies:
            if retry_failed:
                dropped = replies.drop_failed()
                if dropped:
                    self.console.print(f"Retrying {dropped} comment(s) that failed before.")
            triage = self._triage(replies.done_ids)
            planned = plan(self.selected, replies.done_ids, self.limit, triage, self.policy, self.only)
            answerer = self._answerer(bool(planned.todo))
            try:
                return self._run(replies, answerer, planned, triage)
            finally:
                if hasattr(answerer, "close"):
                    answerer.close()

    def _triage(self, done: set[str]):
        """The triage classifier's `classify`, loaded only when some comment still needs answering."""
        if not any(reason is None and c.comment_id not in done for c, reason in self.selected):
            return None
        from knowledge.embedder import load_embedder
        from knowledge.triage import TriageClassifier

        with self.console.status("Triaging the comments..."):
            classifier = TriageClassifier.load(load_embedder(self.settings.embedder))
        return classifier.classify

    def _answerer(self, needed: bool):
        """A client of the running service, the in-process responder (loaded only when needed), or None."""
        from responder.factory import build_answerer

        if self.server:
            key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
            return build_answerer(self.settings, self.server, key, timeout_s=self.settings.request_timeout_s,
                                  backoff_s=self.backoff)
        if not needed:
            return None
        with self.console.status("Loading the model and the knowledge base..."):
            return build_answerer(self.settings)

    def _run(self, replies, answerer, planned, triage):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from responder.jobs.batch_run import run_plan

        total = len(planned.todo)
        with Progress(TextColumn("[bold]Answering"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=self.console) as progress:
            task = progress.add_task("answer", total=total, rate="")
            start, done = time.perf_counter(), [0]

            def advance(n: int) -> None:
                done[0] += n
                per_minute = done[0] / max(time.perf_counter() - start, 1e-9) * 60
                progress.update(task, advance=n, rate=f"{per_minute:.1f}/min")

            try:
                return run_plan(planned, answerer, replies, batch_size=self.size, video_title=self.video_title,
                                policy=self.policy, on_progress=advance, triage=triage)
            except BaseException:
                progress.live.transient = True  # the error line alone, without a half-full bar above it
                raise


def _print_batch_summary(console, summary, output: Path, channel: str | None) -> None:
    from rich.table import Table

    table = Table(title=f"responder batch -> {output}", show_header=True)
    table.add_column("comments")
    table.add_column("count", justify="right")
    table.add_row("answered", str(summary.answered))
    if summary.needs_creator:
        table.add_row("  of which need you (criticism, no confident passage)", str(summary.needs_creator))
    for reason, n in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", str(n))
    for reason, n in sorted(summary.failed.items()):
        table.add_row(f"[red]failed: {reason}[/red]", str(n))
    if summary.already_done:
        table.add_row("already in the output (earlier runs)", str(summary.already_done))
    if summary.not_selected:
        table.add_row("left for a later run (--only)", str(summary.not_selected))
    if summary.left_for_later:
        table.add_row("left for the next run (--limit)", str(summary.left_for_later))
    table.add_row("comments per minute", f"{summary.per_minute:.1f}")
    console.print(table)
    if summary.repaired_bytes:
        console.print(f"Repaired {output}: dropped an incomplete last line ({summary.repaired_bytes} bytes) "
                      "left by an interrupted run; its comment was answered again.")
    if not channel:
        console.print("[yellow]No channel id (pass --channel-id): threads you already answered and your own "
                      "comments could not be recognised.[/yellow]")
    if summary.answered:
        console.print(f"Review the drafts: `responder review {output}` (approve, edit, reject, then post).")


COMMANDS: list[click.Command] = [batch]
