"""`HttpResponder`: the batch job's answerer when the replies come from a running `responder serve`."""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from base.errors import UserError
from base.prompt import CommentInput, Passage
from responder.responder import CommentFailed, Reply

log = logging.getLogger(__name__)


class HttpResponder:
    """`respond_many` through a running `responder serve`: POST {url}/respond/batch."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    def respond_many(self, requests: Sequence[CommentInput]) -> list[Reply]:
        import httpx

        body = []
        for r in requests:
            item: dict[str, Any] = {"comment": r.comment}
            if r.video_title:
                item["video_title"] = r.video_title
            if r.author:
                item["author"] = r.author
            body.append(item)
        endpoint = f"{self.url}/respond/batch"
        for attempt in range(self.retries + 1):
            try:
                response = self.client.post(endpoint, json=body)
            except httpx.TransportError as exc:
                raise UserError(f"cannot reach the responder service at {self.url} ({exc}); start it with "
                                "`responder serve` or check --server") from exc
            status = response.status_code
            if status == 200:
                break
            if status in (401, 403):
                raise UserError(f"the responder service at {self.url} refused the request ({status}); set "
                                "RESPONDER_API_KEY to the service's API key")
            if status == 404:
                raise UserError(f"{endpoint} does not exist (404); is --server the responder service's URL?")
            if status == 413:
                raise UserError(f"the responder service at {self.url} takes fewer comments per request "
                                f"({_detail(response)}); pass a smaller --batch-size")
            if status in (400, 422):  # this comment (or one in the batch) was refused
                raise CommentFailed("rejected", _detail(response))
            if (status in (429, 503) or status >= 500) and attempt < self.retries:
                wait = _retry_after(response) or self.backoff_s * 2 ** attempt
                log.info("service answered %d; retrying in %.1fs", status, wait)
                time.sleep(wait)
                continue
            raise CommentFailed(f"server-{status}", response.text[:200])
        data = response.json()
        if not isinstance(data, list) or len(data) != len(requests):
            raise RuntimeError(f"{endpoint} returned {type(data).__name__} for {len(requests)} comments")
        return [Reply(reply=str(d.get("reply") or ""), sources=[Passage.from_dict(p) for p in d.get("sources") or []],
                      used_context=bool(d.get("used_context")), model=str(d.get("model") or ""),
                      adapter=d.get("adapter"), timings=d.get("timings") or {}) for d in data]

    def close(self) -> None:
        self.client.close()


def _detail(response: Any) -> str:
    try:
        return str(response.json().get("detail"))[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def _retry_after(response: Any) -> float | None:
    try:
        return min(float(response.headers.get("Retry-After", "")), 60.0)
    except ValueError:
        return None
