"""`responder login` / `logout` and token refresh, against fake Google OAuth endpoints on loopback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import webbrowser
from pathlib import Path

import pytest
from click.testing import CliRunner

from base.errors import UserError
from responder.cli import cli
from responder.youtube.auth import Login, LoginTokens, login_path, read_login, save_login, youtube_access
from tests.fake_oauth import FakeOAuth
from tests.fake_youtube import FakeYouTube

RESPONDER = str(Path(sys.executable).parent / "responder")


@pytest.fixture(autouse=True)
def user_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "")  # login sets it for loopback; restored after
    for name in ("YOUTUBE_ACCESS_TOKEN", "YOUTUBE_API_KEY", "YOUTUBE_CHANNEL_ID", "YOUTUBE_TOKEN_URI",
                 "YOUTUBE_CLIENT_SECRETS", "YOUTUBE_REVOKE_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def yt():
    fake = FakeYouTube().start()
    yield fake
    fake.stop()


@pytest.fixture
def google(yt):
    fake = FakeOAuth(accepts=yt.tokens).start()
    yield fake
    fake.stop()


def browser_that_consents(monkeypatch) -> list[str]:
    """webbrowser.open replaced by a client that follows the consent page's redirect (in a thread,
    as a real browser would, while the flow's loopback server waits)."""
    import httpx

    opened: list[str] = []

    def open_(url, new=0, autoraise=True):
        opened.append(url)
        threading.Thread(target=lambda: httpx.get(url, follow_redirects=True, timeout=10), daemon=True).start()
        return True

    monkeypatch.setattr(webbrowser, "open", open_)
    return opened


def logged_in(google: FakeOAuth, channel_id: str = "") -> Login:
    refresh = google.issue(refresh=True)["refresh_token"]
    login = Login(refresh, google.client_id, google.client_secret, f"{google.url}/token", channel_id=channel_id)
    save_login(login)
    return login


def test_login_runs_the_installed_app_flow_and_keeps_the_refresh_token_private(tmp_path, yt, google, monkeypatch):
    opened = browser_that_consents(monkeypatch)
    secrets = google.client_secrets(tmp_path / "client_secret.json")
    result = CliRunner().invoke(cli, ["login", "--client-secrets", str(secrets), "--timeout", "30"],
                                env={"YOUTUBE_API_BASE": yt.url}, standalone_mode=False)
    assert result.exit_code == 0, (result.output, result.exception)
    assert google.problems == [] and google.grants == ["authorization_code"]
    assert "youtube.force-ssl" in opened[0] and "redirect_uri=http%3A%2F%2Flocalhost%3A" in opened[0]
    assert "Logged in as Nadia Does Data (UCnadiaDoesData000000001)" in result.stdout
    path = login_path()
    assert path == tmp_path / "config" / "comment-responder" / "youtube-login.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = read_login()
    assert saved.refresh_token in google.refresh_tokens and saved.channel_id == yt.channel_id
    assert [p.name for p in path.parent.iterdir()] == ["youtube-login.json"]  # no temporary file left


def test_post_and_fetch_refresh_access_tokens_from_the_login(tmp_path, yt, google):
    logged_in(google, yt.channel_id)
    access = youtube_access(os.environ)
    assert access.source == "login" and access.channel_id == yt.channel_id
    token = access.token()
    assert token in yt.tokens and google.grants == ["refresh_token"]
    assert access.token() == token and google.grants == ["refresh_token"]  # still valid: no second refresh
    yt.add_thread("dQw4w9WgXcQ", "Ugw1", "hello?")
    result = CliRunner().invoke(cli, ["fetch", "dQw4w9WgXcQ", "-o", str(tmp_path / "t.json")],
                                env={"YOUTUBE_API_BASE": yt.url}, standalone_mode=False)
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "t.json").exists() and google.grants == ["refresh_token", "refresh_token"]


def test_the_token_uri_can_be_pointed_elsewhere(tmp_path, yt, google, monkeypatch):
    login = logged_in(google)
    login.token_uri = "https://oauth2.googleapis.com/token"  # what a real login stores
    monkeypatch.setenv("YOUTUBE_TOKEN_URI", f"{google.url}/token")
    assert LoginTokens(login)() in yt.tokens


def test_a_revoked_login_is_one_clear_line(tmp_path, yt, google):
    logged_in(google, yt.channel_id)
    google.revoke_all()
    replies = tmp_path / "r.jsonl"
    replies.write_text(json.dumps({"comment_id": "Ugx1", "comment": "q?", "reply": "Answer.", "status": "answered",
                                   "approved": True}) + "\n")
    env = {**os.environ, "YOUTUBE_API_BASE": yt.url}
    result = subprocess.run([RESPONDER, "post", str(replies), "--yes"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "Error: Google refused the saved YouTube login (invalid_grant): it was revoked or has expired; run "
        "`responder login` again"]
    assert yt.calls == []


def test_access_token_in_the_environment_still_wins(yt, google, monkeypatch):
    logged_in(google)
    monkeypatch.setenv("YOUTUBE_ACCESS_TOKEN", "from-env")
    access = youtube_access(os.environ)
    assert access.token == "from-env" and access.source == "YOUTUBE_ACCESS_TOKEN"


def test_logout_revokes_and_removes_the_login(tmp_path, yt, google, monkeypatch):
    login = logged_in(google)
    monkeypatch.setenv("YOUTUBE_REVOKE_URI", f"{google.url}/revoke")
    result = CliRunner().invoke(cli, ["logout"], standalone_mode=False)
    assert result.exit_code == 0, result.output
    assert "revoked at Google" in result.stdout and login.refresh_token in google.revoked
    assert not login_path().exists()
    again = CliRunner().invoke(cli, ["logout"], standalone_mode=False)
    assert "Not logged in" in again.stdout


def test_client_secrets_problems_are_one_line(tmp_path):
    with pytest.raises(UserError, match="client secrets file '.*nope.json' does not exist; create one"):
        CliRunner().invoke(cli, ["login", "--client-secrets", str(tmp_path / "nope.json")], standalone_mode=False,
                           catch_exceptions=False)
    web = tmp_path / "web.json"
    web.write_text(json.dumps({"web": {"client_id": "x"}}))
    with pytest.raises(UserError, match="is for a 'web' client, not a Desktop app"):
        CliRunner().invoke(cli, ["login", "--client-secrets", str(web)], standalone_mode=False,
                           catch_exceptions=False)
