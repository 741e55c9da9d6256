"""`responder login` and `responder logout`: the YouTube OAuth login (responder.youtube.auth)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from responder.youtube.options import API_BASE_OPTION


@click.command("login")
@click.option("--client-secrets", type=click.Path(path_type=Path), default=None, envvar="YOUTUBE_CLIENT_SECRETS",
              metavar="FILE", help="OAuth client of type Desktop app, downloaded from the Google Cloud console "
                                   "[env YOUTUBE_CLIENT_SECRETS; default: client_secret.json in the config folder].")
@click.option("--no-browser", is_flag=True, help="Only print the consent page's URL; open it yourself.")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Seconds to wait for the browser to come back.")
@API_BASE_OPTION
def login(client_secrets: Path | None, no_browser: bool, timeout: float, api_base: str) -> None:
    """Log in to YouTube (scope youtube.force-ssl) and keep the refresh token for post and fetch.

    Opens Google's consent page; it redirects to a one-shot server on this machine. The refresh
    token is saved in your config folder, readable by you only; `responder logout` removes it.
    """
    from responder.youtube.auth import (
        config_dir,
        login_from_credentials,
        login_path,
        read_client_config,
        run_login_flow,
        save_login,
    )

    secrets = client_secrets or config_dir() / "client_secret.json"
    config = read_client_config(Path(secrets).expanduser(), os.environ)

    def show(url: str) -> None:
        click.echo(f"Open this page to log in (waiting up to {timeout:.0f} s):\n  {url}", err=True)
        if not no_browser:
            import webbrowser

            webbrowser.open(url, new=1)

    credentials = run_login_flow(config, show, timeout_s=timeout)
    channel = _my_channel(credentials.token, api_base)
    path = save_login(login_from_credentials(credentials, channel), login_path())
    if channel:
        title = (channel.get("snippet") or {}).get("title") or ""
        click.echo(f"Logged in as {title} ({channel.get('id')}). Login saved in {path} (readable by you only).")
    else:
        click.echo(f"Logged in. Login saved in {path} (readable by you only). The channel could not be read; "
                   "pass --channel-id to `responder post` if it asks.")


def _my_channel(token: str, api_base: str) -> dict | None:
    from responder.youtube.client import YouTubeClient, YouTubeError

    client = YouTubeClient(token, api_base)
    try:
        return client.my_channel()
    except YouTubeError as exc:
        click.echo(f"Warning: could not read your channel ({exc.reason})", err=True)
        return None
    finally:
        client.close()


@click.command("logout")
def logout() -> None:
    """Forget the YouTube login: revoke the refresh token at Google (best effort) and delete it."""
    from responder.youtube.auth import login_path, read_login, revoke

    path = login_path()
    if not path.exists():
        click.echo(f"Not logged in ({path} does not exist); nothing to do.")
        return
    try:
        saved = read_login(path)
    except Exception:  # noqa: BLE001 - a damaged file is deleted all the same
        saved = None
    revoked = bool(saved) and revoke(saved, os.environ)
    path.unlink()
    note = "revoked at Google" if revoked else "could not be revoked at Google (remove the app's access at " \
                                               "myaccount.google.com/permissions)"
    click.echo(f"Logged out: deleted {path}; the token {note}.")


COMMANDS: list[click.Command] = [login, logout]
