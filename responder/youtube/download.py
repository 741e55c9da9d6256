"""Reading from YouTube into files: a video's threads (what `batch` reads), a channel's threads or
its reply pairs (what `finetune run` trains on). The workflows `responder fetch` and
`responder batch --video` share; the API calls themselves are `fetch.py`'s.

A threads file also holds, under "videos", each video's title and description (videos.list), which
`batch` passes with every comment so retrieval can use the video it is under.

Reads with YOUTUBE_API_KEY when set (public comments), else the OAuth login (`responder login`) or
YOUTUBE_ACCESS_TOKEN. Output files are written atomically once everything was read: a refusal
from YouTube (bad key, unknown video, comments off, quota) is a `UserError` and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


def reading_client(api_base: str):
    """(client, credential name) for reading comments; a `UserError` naming the two ways to get one."""
    from base.errors import UserError
    from responder.youtube.auth import youtube_access
    from responder.youtube.client import YouTubeClient

    access = youtube_access(os.environ)
    if access.api_key:
        return YouTubeClient(api_key=access.api_key, base_url=api_base), "API key"
    if access.token is None:
        raise UserError("reading comments needs YOUTUBE_API_KEY (an API key from the Google Cloud console) or a "
                        "YouTube login: set the key, or run `responder login`")
    return YouTubeClient(access.token, api_base), f"OAuth token ({access.source})"


def fetch_video(video: str, output: Path | None, since: str | None, max_threads: int | None,
                api_base: str) -> Path:
    """Fetch one video's threads into `output` (default VIDEO_ID.threads.json); prints what it spent."""
    from base.fileio import write_text_atomic
    from responder.youtube.fetch import fetch_threads, parse_since, video_id

    vid = video_id(video)
    since_at = parse_since(since) if since else None
    client, credential = reading_client(api_base)
    try:
        fetched = fetch_threads(client, {"videoId": vid}, since=since_at, max_threads=max_threads,
                                what=f"video '{vid}'", credential=credential,
                                on_page=lambda f: click.echo(f"  page {f.pages}: {len(f.items)} threads", err=True))
        videos = _videos(client, fetched, credential)
    finally:
        client.close()
    output = output or Path(f"{vid}.threads.json")
    _write_json(output, fetched.as_export(videos), write_text_atomic)
    older = f", {fetched.older_skipped} older than --since left out" if fetched.older_skipped else ""
    click.echo(f"Fetched {fetched.pages} page(s): {len(fetched.items)} comments ({fetched.replies} replies under "
               f"them){older}; {fetched.units} quota unit(s) -> {output}")
    return output


def _videos(client, fetched, credential: str) -> dict[str, dict[str, str]]:
    """The title and description of every video the threads are under (videos.list), said in a line;
    a refusal is a warning: the threads are written without them."""
    from responder.youtube.fetch import fetch_videos

    ids = fetched.video_ids()
    if not ids:
        return {}
    videos = fetch_videos(client, ids, credential)
    if videos.found:
        click.echo(f"Read the title and description of {len(videos.found)} video(s); {videos.units} quota unit(s)",
                   err=True)
    if videos.problem:
        click.echo(f"Warning: {videos.problem}. The threads are written without those titles: retrieval then "
                   "searches their comments without the video; fetch again later to add them", err=True)
    return videos.found


def _write_json(path: Path, data, write) -> None:
    import json

    from base.errors import UserError

    if path.is_dir():
        raise UserError(f"output '{path}' is a folder; pass a file name such as threads.json")
    write(path, json.dumps(data, ensure_ascii=False, indent=1) + "\n")


def _channel_id(client, channel: str, credential: str) -> tuple[str, int]:
    """(channel id, units spent): a handle costs one channels.list call."""
    from base.errors import UserError
    from responder.youtube.client import YouTubeError
    from responder.youtube.fetch import channel_ref, explain

    kind, value = channel_ref(channel)
    if kind == "id":
        return value, 0
    try:
        found = client.channel_for_handle(value)
    except YouTubeError as exc:
        raise explain(exc, f"channel '{value}'", credential) from exc
    if not found:
        raise UserError(f"no YouTube channel has the handle '{value}'; check it, or pass the channel id (UC...)")
    return found, 1


def fetch_channel(channel: str, output: Path | None, pairs_path: Path | None, since: str | None,
                  max_n: int | None, api_base: str) -> None:
    """Every thread on the channel's videos (threads file), or its reply pairs (--pairs CSV)."""
    from responder.youtube.fetch import parse_since

    since_at = parse_since(since) if since else None
    client, credential = reading_client(api_base)
    try:
        cid, units = _channel_id(client, channel, credential)
        if pairs_path is None:
            _channel_threads(client, cid, units, output, since_at, max_n, credential)
        else:
            _channel_pairs(client, cid, units, pairs_path, since_at, max_n, credential)
    finally:
        client.close()


def _channel_threads(client, cid: str, units: int, output: Path | None, since_at, max_n: int | None,
                     credential: str) -> None:
    from base.fileio import write_text_atomic
    from responder.youtube.fetch import fetch_threads

    fetched = fetch_threads(client, {"allThreadsRelatedToChannelId": cid}, since=since_at, max_threads=max_n,
                            what=f"channel '{cid}'", credential=credential)
    videos = _videos(client, fetched, credential)
    output = output or Path(f"{cid}.threads.json")
    _write_json(output, fetched.as_export(videos), write_text_atomic)
    click.echo(f"Fetched {fetched.pages} page(s): {len(fetched.items)} comments on the channel's videos; "
               f"{fetched.units + units} quota unit(s) -> {output}")


def _channel_pairs(client, cid: str, units: int, pairs_path: Path, since_at, max_n: int | None,
                   credential: str) -> None:
    from responder.youtube.fetch import fetch_pairs

    pairs = fetch_pairs(client, cid, since=since_at, max_pairs=max_n, credential=credential,
                        on_page=lambda p: click.echo(f"  page {p.pages}: {len(p.pairs)} pairs", err=True))
    _write_pairs(pairs_path, pairs.pairs)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(pairs.skipped.items())) or "none"
    click.echo(f"Read {pairs.threads} threads on {pairs.pages} page(s) ({pairs.units + units} quota units): "
               f"{len(pairs.pairs)} comment/reply pairs -> {pairs_path}; skipped: {skipped}")
    click.echo(f"Train on them with `finetune run --data {pairs_path}`.")


def _write_pairs(path: Path, pairs: list[tuple[str, str]]) -> None:
    import csv
    import io

    from base.errors import UserError
    from base.fileio import write_text_atomic

    if path.is_dir():
        raise UserError(f"--pairs '{path}' is a folder; pass a file name such as pairs.csv")
    if not pairs:
        raise UserError("the channel has no threads with a reply of its own to learn from (see the counts above); "
                        "nothing written")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["comment", "reply"])
    writer.writerows(pairs)
    write_text_atomic(path, buf.getvalue())
