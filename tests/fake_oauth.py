"""A local fake of Google's OAuth endpoints: consent page, token endpoint, revocation (real HTTP, loopback).

- GET /auth: the consent page, already "clicked": redirects to `redirect_uri?code=...&state=...`
  (the installed-app flow's loopback server). It checks client_id, the scope and PKCE.
- POST /token: `authorization_code` (needs the code, the client's secret, the redirect_uri and the
  PKCE verifier) and `refresh_token` grants. A revoked refresh token answers 400 invalid_grant,
  as Google does. Access tokens it issues are added to `accepts` (a FakeYouTube's `tokens`).
- POST /revoke: revokes a refresh token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

SCOPE = "https://www.googleapis.com/auth/youtube.force-ssl"


class FakeOAuth:
    def __init__(self, accepts: set[str] | None = None, client_id: str = "fake-client.apps.googleusercontent.com",
                 client_secret: str = "fake-secret") -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.accepts = accepts if accepts is not None else set()
        self.code = "fake-auth-code"
        self.challenge = ""
        self.refresh_tokens: set[str] = set()
        self.revoked: set[str] = set()
        self.grants: list[str] = []  # grant types, in order
        self.problems: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeOAuth":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client_secrets(self, path: Path) -> Path:
        """A Desktop-app client secrets file pointing at this fake."""
        path.write_text(json.dumps({"installed": {
            "client_id": self.client_id, "client_secret": self.client_secret, "project_id": "fake",
            "auth_uri": f"{self.url}/auth", "token_uri": f"{self.url}/token",
            "redirect_uris": ["http://localhost"]}}))
        return path

    def revoke_all(self) -> None:
        self.revoked |= self.refresh_tokens

    def issue(self, refresh: bool) -> dict[str, Any]:
        access = "ya29." + secrets.token_urlsafe(12)
        self.accepts.add(access)
        out = {"access_token": access, "expires_in": 3599, "scope": SCOPE, "token_type": "Bearer"}
        if refresh:
            out["refresh_token"] = "1//" + secrets.token_urlsafe(16)
            self.refresh_tokens.add(out["refresh_token"])
        return out


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOAuth  # set by _handler
    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # the consent page, answered "allow" at once
        url = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path != "/auth" or q.get("client_id") != self.fake.client_id or SCOPE not in q.get("scope", "").split():
            self.fake.problems.append(f"bad consent request {self.path}")
            self._json(400, {"error": "invalid_request"})
            return
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            self.fake.problems.append("no PKCE challenge")
        self.fake.challenge = q.get("code_challenge", "")
        target = q["redirect_uri"] + "?" + urlencode({"code": self.fake.code, "state": q.get("state", ""),
                                                      "scope": SCOPE})
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0))
                                              .decode()).items()}
        path = urlparse(self.path).path
        if path == "/revoke":
            self.fake.revoked.add(form.get("token", ""))
            self._json(200, {})
            return
        if path != "/token":
            self._json(404, {"error": "not_found"})
            return
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = self.headers.get("Authorization") or ""
        if basic.startswith("Basic "):
            client_id, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        if client_id != self.fake.client_id or secret != self.fake.client_secret:
            self._json(401, {"error": "invalid_client", "error_description": "The OAuth client was not found."})
            return
        grant = form.get("grant_type", "")
        self.fake.grants.append(grant)
        self._grant(grant, form)

    def _grant(self, grant: str, form: dict[str, str]) -> None:
        if grant == "authorization_code":
            if form.get("code") != self.fake.code or not form.get("redirect_uri"):
                self._json(400, {"error": "invalid_grant", "error_description": "Malformed auth code."})
            elif self.fake.challenge and _challenge(form.get("code_verifier", "")) != self.fake.challenge:
                self._json(400, {"error": "invalid_grant", "error_description": "code_verifier mismatch."})
            else:
                self._json(200, self.fake.issue(refresh=True))
        elif grant == "refresh_token":
            token = form.get("refresh_token", "")
            if token not in self.fake.refresh_tokens or token in self.fake.revoked:
                self._json(400, {"error": "invalid_grant",
                                 "error_description": "Token has been expired or revoked."})
            else:
                self._json(200, self.fake.issue(refresh=False))
        else:
            self._json(400, {"error": "unsupported_grant_type"})


def _handler(fake: FakeOAuth) -> type:
    return type("Handler", (_Handler,), {"fake": fake})
