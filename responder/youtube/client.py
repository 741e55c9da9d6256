"""A small YouTube Data API v3 client: comments.insert and comments.list, with the API's errors."""

from __future__ import annotations

from typing import Any

DEFAULT_API_BASE = "https://www.googleapis.com"


class YouTubeError(Exception):
    def __init__(self, status: int, reason: str, message: str = "") -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Ambiguous(Exception):
    """The call may have reached YouTube and been carried out (5xx, dropped connection)."""


class YouTubeClient:
    def __init__(self, token: str, base_url: str = DEFAULT_API_BASE, timeout_s: float = 30.0) -> None:
        import httpx

        self.base = base_url.rstrip("/") + "/youtube/v3"
        self.client = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})

    def insert_reply(self, parent_id: str, text: str) -> dict[str, Any]:
        """comments.insert; the new comment resource, or YouTubeError / Ambiguous."""
        import httpx

        body = {"snippet": {"parentId": parent_id, "textOriginal": text}}
        try:
            response = self.client.post(f"{self.base}/comments", params={"part": "snippet"}, json=body)
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
        """comments.list?parentId=...: every reply under the parent (all pages)."""
        import httpx

        items: list[dict[str, Any]] = []
        params = {"part": "snippet", "parentId": parent_id, "maxResults": 100, "textFormat": "plainText"}
        for _ in range(50):
            try:
                response = self.client.get(f"{self.base}/comments", params=params)
            except httpx.TransportError as exc:
                raise YouTubeError(0, "connectError", str(exc)) from exc
            if response.status_code != 200:
                raise _error(response)
            data = response.json()
            items.extend(data.get("items") or [])
            if not data.get("nextPageToken"):
                break
            params["pageToken"] = data["nextPageToken"]
        return items

    def close(self) -> None:
        self.client.close()


def _error(response: Any) -> YouTubeError:
    reason, message = f"http{response.status_code}", response.text[:200]
    try:
        err = response.json().get("error") or {}
        message = err.get("message") or message
        errors = err.get("errors") or []
        if errors and errors[0].get("reason"):
            reason = errors[0]["reason"]
    except (ValueError, AttributeError):
        pass
    return YouTubeError(response.status_code, reason, message)


def reply_exists(replies: list[dict[str, Any]], channel_id: str | None, text: str) -> dict[str, Any] | None:
    """The channel's reply among `replies` (or one with exactly our text), if there is one."""
    for item in replies:
        sn = item.get("snippet") or {}
        author = (sn.get("authorChannelId") or {}).get("value")
        if (channel_id and author == channel_id) or (sn.get("textOriginal") or "").strip() == text.strip():
            return item
    return None
