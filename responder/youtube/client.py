"""A small YouTube Data API v3 client: commentThreads.list, comments.list/insert, channels.list.

Authentication is an API key (`key=`, reading public data only) or an OAuth access token
(`Authorization: Bearer`). A token may be a callable, called before each request, so a login
refreshes its hour-long access token by itself during a long run (`responder.youtube.auth`).
Errors come back as `YouTubeError` with YouTube's own reason (`error.errors[0].reason`).
"""

from __future__ import annotations

from typing import Any, Callable

DEFAULT_API_BASE = "https://www.googleapis.com"
DEFAULT_DAILY_QUOTA = 10_000  # units a Google Cloud project gets per day unless it asked for more

Token = str | Callable[[], str]


class YouTubeError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Ambiguous(Exception):
    """The call may have reached YouTube and been carried out (5xx, dropped connection)."""


class YouTubeClient:
    def __init__(self, token: Token | None = None, base_url: str = DEFAULT_API_BASE, timeout_s: float = 30.0,
                 api_key: str | None = None) -> None:
        import httpx

        if not token and not api_key:
            raise ValueError("YouTubeClient needs an OAuth token or an API key")
        self.base_url = base_url.rstrip("/")
        self.base = self.base_url + "/youtube/v3"
        self.token, self.api_key = token, api_key
        self.client = httpx.Client(timeout=timeout_s)

    def _auth(self, params: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
        """(headers, params) for one call: the API key when there is one, else the bearer token."""
        if self.api_key:
            return {}, {**params, "key": self.api_key}
        token = self.token() if callable(self.token) else self.token
        return {"Authorization": f"Bearer {token}"}, params

    def get(self, resource: str, params: dict[str, Any]) -> dict[str, Any]:
        """GET /youtube/v3/RESOURCE: the JSON answer, or YouTubeError (status 0: YouTube not reached)."""
        import httpx

        headers, params = self._auth(params)
        try:
            response = self.client.get(f"{self.base}/{resource}", params=params, headers=headers)
        except httpx.TransportError as exc:
            raise YouTubeError(0, "connectError", f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise _error(response)
        try:
            data = response.json()
        except ValueError as exc:
            raise YouTubeError(response.status_code, "badResponse", response.text[:200]) from exc
        if not isinstance(data, dict):
            raise YouTubeError(response.status_code, "badResponse", f"a JSON {type(data).__name__}")
        return data

    def insert_reply(self, parent_id: str, text: str) -> dict[str, Any]:
        """comments.insert; the new comment resource, or YouTubeError / Ambiguous."""
        import httpx

        headers, params = self._auth({"part": "snippet"})
        body = {"snippet": {"parentId": parent_id, "textOriginal": text}}
        try:
            response = self.client.post(f"{self.base}/comments", params=params, json=body, headers=headers)
        except httpx.ConnectError as exc:  # never reached the server: nothing was posted
            raise YouTubeError(0, "connectError", str(exc)) from exc
        except httpx.TransportError as exc:
            raise Ambiguous(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise Ambiguous(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise _error(response)
        return response.json()

    def list_replies(self, parent_id: str) -> list[dict[str, Any]]:
        """comments.list?parentId=...: every reply under the parent (all pages, 1 unit a page)."""
        items: list[dict[str, Any]] = []
        params = {"part": "snippet", "parentId": parent_id, "maxResults": 100, "textFormat": "plainText"}
        for _ in range(50):
            data = self.get("comments", params)
            items.extend(data.get("items") or [])
            if not data.get("nextPageToken"):
                break
            params["pageToken"] = data["nextPageToken"]
        return items

    def my_channel(self) -> dict[str, Any] | None:
        """channels.list?mine=true (1 unit): the channel of the OAuth login, or None."""
        items = self.get("channels", {"part": "id,snippet", "mine": "true"}).get("items") or []
        return items[0] if items else None

    def channel_for_handle(self, handle: str) -> str | None:
        """channels.list?forHandle=@name (1 unit): the channel id, or None when there is none."""
        items = self.get("channels", {"part": "id", "forHandle": handle}).get("items") or []
        return str(items[0]["id"]) if items else None

    def close(self) -> None:
        self.client.close()


def _error(response: Any) -> YouTubeError:
    reason, message = f"http{response.status_code}", response.text[:200]
    try:
        err = response.json().get("error") or {}
        if isinstance(err, str):  # OAuth-style {"error": "invalid_token"}
            return YouTubeError(response.status_code, err, message)
        message = err.get("message") or message
        errors = err.get("errors") or []
        if errors and errors[0].get("reason"):
            reason = errors[0]["reason"]
    except (ValueError, AttributeError):
        pass
    return YouTubeError(response.status_code, reason, message)


def author_id(item: dict[str, Any]) -> str:
    """The author's channel id of a comment resource ("" when YouTube gives none)."""
    value = (item.get("snippet") or {}).get("authorChannelId")
    return str(value.get("value") or "") if isinstance(value, dict) else str(value or "")


def reply_exists(replies: list[dict[str, Any]], channel_id: str | None, text: str) -> dict[str, Any] | None:
    """The channel's reply among `replies` (or one with exactly our text), if there is one."""
    for item in replies:
        sn = item.get("snippet") or {}
        if (channel_id and author_id(item) == channel_id) or (sn.get("textOriginal") or "").strip() == text.strip():
            return item
    return None
