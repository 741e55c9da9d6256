"""`responder fetch`: a video's comment threads for `responder batch`, or a channel's reply pairs.

The work is `responder.youtube.download`'s (shared with `batch --video`): a refusal from YouTube is
one line, exit 2, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import click

from responder.youtube.options import API_BASE_OPTION


@click.command("fetch")
@click.argument("video", required=False)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Threads file, the format `responder batch` reads [default: VIDEO_ID.threads.json].")
@click.option("--since", default=None, metavar="TIME",
              help="Only threads newer than TIME: a date (2026-05-01), a time (2026-05-01T12:00Z) or an age (7d, 12h).")
@click.option("--max", "max_n", type=click.IntRange(min=1), default=None, metavar="N",
              help="At most N threads (with --pairs: N pairs).")
@click.option("--channel", default=None, metavar="CHANNEL",
              help="Read every video of a channel (id UC..., @handle or URL) instead of one video.")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="With --channel: write comment,reply pairs (the channel's first reply to each comment) as CSV "
                   "for `finetune run --data`.")
@API_BASE_OPTION
def fetch(video: str | None, output: Path | None, since: str | None, max_n: int | None, channel: str | None,
          pairs_path: Path | None, api_base: str) -> None:
    """Download a video's comments (VIDEO: id or URL) for `responder batch`, or a channel's reply pairs.

    \b
      responder fetch https://youtu.be/dQw4w9WgXcQ -o threads.json --since 7d
      responder fetch --channel @NadiaDoesData --pairs pairs.csv --max 200
    Costs 1 quota unit per page of 100 threads.
    """
    from base.errors import UserError
    from responder.youtube.download import fetch_channel, fetch_video

    if bool(video) == bool(channel):
        raise UserError("pass a VIDEO (id or URL) or --channel CHANNEL, not both and not neither; "
                        "see `responder fetch --help`")
    if pairs_path is not None and not channel:
        raise UserError("--pairs needs --channel: pairs come from the channel's own replies across its videos")
    if channel:
        fetch_channel(channel, output, pairs_path, since, max_n, api_base)
    else:
        fetch_video(video or "", output, since, max_n, api_base)


COMMANDS: list[click.Command] = [fetch]
