"""The YouTube login: Google's installed-app OAuth flow, a stored refresh token, fresh access tokens.

`responder login` runs google-auth-oauthlib's `InstalledAppFlow` (a browser consent page that
redirects to a one-shot server on loopback, scope youtube.force-ssl) and stores the refresh token
in the user's config directory (`$XDG_CONFIG_HOME/comment-responder/youtube-login.json`, mode
0600, written atomically). `post`, `fetch` and the review page then get access tokens from it with
google-auth, refreshing them when they expire (they last an hour). `YOUTUBE_ACCESS_TOKEN` still
wins when set; `YOUTUBE_API_KEY` is enough for reading public comments.

Endpoints come from the client secrets file (`token_uri`, `auth_uri`); `YOUTUBE_TOKEN_URI` and
`YOUTUBE_REVOKE_URI` override them (tests point them at a fake on loopback).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

from base.errors import UserError

SCOPE = "https://www.googleapis.com/auth/youtube.force-ssl"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
APP_DIR = "comment-responder"
CONSOLE_HELP = ("create one in the Google Cloud console (APIs & Services > Credentials > Create OAuth client "
                "ID > Desktop app) and download its JSON")


# ------------------------------------------------------------------------------------- places

def config_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / APP_DIR


def data_dir(env: Mapping[str, str] = os.environ) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / APP_DIR


def login_path(env: Mapping[str, str] = os.environ) -> Path:
    return config_dir(env) / "youtube-login.json"


# -------------------------------------------------------------------------------- the login file

@dataclass
class Login:
    refresh_token: str
    client_id: str
    client_secret: str
    token_uri: str = GOOGLE_TOKEN_URI
    scopes: tuple[str, ...] = (SCOPE,)
    channel_id: str = ""
    channel_title: str = ""
    saved_at: str = ""


def read_login(path: Path | None = None) -> Login | None:
    """The stored login, None when there is none; a damaged file is a `UserError`."""
    path = path or login_path()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        login = Login(**{k: v for k, v in data.items() if k in Login.__dataclass_fields__})
        login.scopes = tuple(login.scopes)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"the YouTube login '{path}' cannot be read ({exc}); run `responder logout` then "
                        "`responder login`") from exc
    if not login.refresh_token:
        raise UserError(f"the YouTube login '{path}' holds no refresh token; run `responder login` again")
    return login


def save_login(login: Login, path: Path | None = None) -> Path:
    """Write the login atomically, readable by its owner only (0600, in a 0700 folder)."""
    path = path or login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mkstemp: 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(login), f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------------------------- logging in

def read_client_config(path: Path, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """The client secrets file as google-auth-oauthlib wants it, with env overrides applied."""
    if not path.is_file():
        raise UserError(f"client secrets file '{path}' does not exist; {CONSOLE_HELP}, then pass "
                        "--client-secrets FILE or set YOUTUBE_CLIENT_SECRETS")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"client secrets file '{path}' is not JSON ({exc}); download it again") from exc
    if not isinstance(config, dict) or "installed" not in config:
        kind = next(iter(config), "unknown") if isinstance(config, dict) else "unknown"
        raise UserError(f"client secrets file '{path}' is for a '{kind}' client, not a Desktop app; {CONSOLE_HELP}")
    installed = config["installed"]
    missing = [k for k in ("client_id", "client_secret", "auth_uri") if not installed.get(k)]
    if missing:
        raise UserError(f"client secrets file '{path}' lacks {', '.join(missing)}; download it again")
    installed.setdefault("token_uri", GOOGLE_TOKEN_URI)
    if env.get("YOUTUBE_TOKEN_URI"):
        installed["token_uri"] = env["YOUTUBE_TOKEN_URI"]
    return config


def _allow_http_on_loopback(*urls: str) -> None:
    """oauthlib insists on https; a token endpoint on loopback (a test, a local proxy) is plain http."""
    if any(urlparse(u).hostname in ("127.0.0.1", "localhost", "::1") for u in urls if u.startswith("http://")):
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


def run_login_flow(client_config: dict[str, Any], on_url: Callable[[str], None], timeout_s: float = 300.0):
    """Google's installed-app flow: consent in a browser, redirect to a one-shot loopback server.

    `on_url(url)` shows (or opens) the consent page. Returns google-auth `Credentials`.
    """
    from google_auth_oauthlib.flow import InstalledAppFlow

    class Flow(InstalledAppFlow):
        def authorization_url(self, **kwargs: Any):
            url, state = super().authorization_url(**kwargs)
            on_url(url)
            return url, state

    installed = client_config["installed"]
    _allow_http_on_loopback(installed["token_uri"])
    flow = Flow.from_client_config(client_config, scopes=[SCOPE])
    try:
        return flow.run_local_server(host="localhost", port=0, open_browser=False,
                                     authorization_prompt_message=None, timeout_seconds=timeout_s,
                                     access_type="offline", prompt="consent",
                                     success_message="Logged in: you can close this tab and go back to the terminal.")
    except Exception as exc:  # oauthlib's errors name the OAuth error; the user needs one line
        if type(exc).__name__ == "WSGITimeoutError":
            raise UserError(f"no answer from the browser within {timeout_s:.0f} s; run `responder login` again "
                            "and finish the consent page") from exc
        raise UserError(f"the Google login failed ({type(exc).__name__}: {exc}); run `responder login` again, "
                        "and check the client secrets file") from exc


def login_from_credentials(credentials: Any, channel: dict[str, Any] | None) -> Login:
    if not credentials.refresh_token:
        raise UserError("Google gave no refresh token; remove the app's access at "
                        "myaccount.google.com/permissions, then run `responder login` again")
    snippet = (channel or {}).get("snippet") or {}
    return Login(refresh_token=credentials.refresh_token, client_id=credentials.client_id,
                 client_secret=credentials.client_secret, token_uri=credentials.token_uri,
                 scopes=tuple(credentials.scopes or (SCOPE,)), channel_id=str((channel or {}).get("id") or ""),
                 channel_title=str(snippet.get("title") or ""),
                 saved_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def revoke(login: Login, env: Mapping[str, str] = os.environ, timeout_s: float = 10.0) -> bool:
    """Ask Google to revoke the refresh token (best effort): True when it said yes."""
    import httpx

    uri = env.get("YOUTUBE_REVOKE_URI") or GOOGLE_REVOKE_URI
    try:
        response = httpx.post(uri, data={"token": login.refresh_token}, timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


# ------------------------------------------------------------------------------- access tokens

class LoginTokens:
    """Fresh access tokens from a stored login (google-auth refreshes them when they expire)."""

    def __init__(self, login: Login, env: Mapping[str, str] = os.environ) -> None:
        from google.oauth2.credentials import Credentials

        self.login = login
        self.token_uri = env.get("YOUTUBE_TOKEN_URI") or login.token_uri
        self.credentials = Credentials(None, refresh_token=login.refresh_token, token_uri=self.token_uri,
                                       client_id=login.client_id, client_secret=login.client_secret,
                                       scopes=list(login.scopes))
        self._lock = threading.Lock()

    def __call__(self) -> str:
        from google.auth.exceptions import RefreshError, TransportError
        from google.auth.transport.requests import Request

        with self._lock:
            if not self.credentials.valid:
                try:
                    self.credentials.refresh(Request())
                except RefreshError as exc:
                    raise UserError(f"Google refused the saved YouTube login ({_oauth_reason(exc)}): it was revoked "
                                    "or has expired; run `responder login` again") from exc
                except TransportError as exc:
                    raise UserError(f"cannot reach Google's token endpoint {self.token_uri} ({exc}); check the "
                                    "network and try again") from exc
            return str(self.credentials.token)


def _oauth_reason(exc: Exception) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.split(":", 1)[0].strip() or "refused"


@dataclass
class Access:
    """How this run talks to YouTube: an API key (reading only), an OAuth token, or both."""

    token: str | Callable[[], str] | None = None
    api_key: str | None = None
    source: str = ""  # "YOUTUBE_ACCESS_TOKEN" | "login" | ""
    channel_id: str = ""  # the login's channel, when known


def youtube_access(env: Mapping[str, str] = os.environ) -> Access:
    """YOUTUBE_ACCESS_TOKEN first, then the stored login; the API key when YOUTUBE_API_KEY is set."""
    api_key = (env.get("YOUTUBE_API_KEY") or "").strip() or None
    token = (env.get("YOUTUBE_ACCESS_TOKEN") or "").strip()
    if token:
        return Access(token, api_key, "YOUTUBE_ACCESS_TOKEN")
    login = read_login(login_path(env))
    if login is not None:
        return Access(LoginTokens(login, env), api_key, "login", login.channel_id)
    return Access(None, api_key)


def post_token(env: Mapping[str, str] = os.environ) -> Access:
    """The access for posting; a `UserError` saying how to log in when there is none."""
    access = youtube_access(env)
    if access.token is None:
        raise UserError("posting needs a YouTube login: run `responder login` (or set YOUTUBE_ACCESS_TOKEN to an "
                        "OAuth token with the youtube.force-ssl scope), or run without --yes for a dry run")
    if callable(access.token):
        access.token()  # a revoked login is one clear line now, before anything is posted
    return access
