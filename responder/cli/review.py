"""`responder review`: the review page over a replies file (responder.review)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from responder.youtube.options import API_BASE_OPTION, CHANNEL_ID_OPTION, QUOTA_BUDGET_OPTION

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _api_key_for(host: str) -> str | None:
    """None on loopback; elsewhere the RESPONDER_API_KEY, which must not be blank."""
    from base.errors import UserError

    if host in LOOPBACK:
        return None
    key = os.environ.get("RESPONDER_API_KEY")
    if key is None:
        raise UserError(f"--host {host} opens the review page to other machines: set RESPONDER_API_KEY to a long "
                        "random key first (python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    if not key.strip():
        raise UserError("RESPONDER_API_KEY is blank; set it to a long random key (python -c 'import secrets; "
                        "print(secrets.token_urlsafe(24))') or serve on 127.0.0.1")
    return key.strip()


def _check_port(host: str, port: int) -> None:
    from base.errors import UserError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port") from exc


@click.command("review")
@click.argument("replies_path", metavar="REPLIES", type=click.Path(path_type=Path))
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any other than loopback needs RESPONDER_API_KEY.")
@click.option("--server", metavar="URL", default=None,
              help="Regenerate with a running `responder serve` instead of loading the model here.")
@click.option("--adapter", type=click.Path(path_type=Path), default=None,
              help="LoRA adapter for Regenerate in-process [env RESPONDER_ADAPTER].")
@CHANNEL_ID_OPTION
@QUOTA_BUDGET_OPTION
@API_BASE_OPTION
def review(replies_path: Path, port: int, host: str, server: str | None, adapter: Path | None,
           channel_id: str | None, quota_budget: int, api_base: str) -> None:
    """Review the drafts of REPLIES in a web page: approve, edit, reject, regenerate, then post.

    Starts in a second (no model is loaded until you press Regenerate). Every change is saved to
    REPLIES at once. "Post approved" shows the dry run first, then posts through the same ledger
    as `responder post`: no comment is answered twice.
    """
    import uvicorn

    from responder.jobs.screening import sign_off_hint
    from responder.review.app import ReviewConfig, create_app

    from responder.jobs.drafts import Drafts

    Drafts(replies_path).check()
    key = _api_key_for(host)
    _check_port(host, port)
    server_key = os.environ.get("RESPONDER_API_KEY") or None
    config = ReviewConfig(replies=replies_path.expanduser(), api_key=key,
                          allowed_hosts=list(LOOPBACK) if host in LOOPBACK else None, server=server,
                          server_key=server_key, settings_overrides={"adapter": adapter} if adapter else {},
                          api_base=api_base, channel_id=channel_id, budget=quota_budget, sign_off=sign_off_hint())
    app = create_app(config)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?key={key}" if key else "")
    click.echo(f"Reviewing {replies_path} at {url}  (Ctrl+C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


COMMANDS: list[click.Command] = [review]
