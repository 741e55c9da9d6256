"""`HttpResponder`: the batch job's answerer when the replies come from a running `responder serve`.

What an answer from the service means for the run:
- 200: the replies.
- 400/422: the service refused a comment: `CommentFailed("rejected")`, and the batch runner finds
  which comment it was; only that comment is marked `failed:rejected`.
- 429, 5xx, a refused connection, a timeout: the service is busy, restarting or down. Retried
  with backoff (honouring Retry-After); when the retries run out, `UpstreamError` stops the run.
  No comment is marked failed for it: the ones not answered yet stay out of the replies file, and
  running the same command again picks them up.
- 401/403/404/413 and other 4xx: a setting to fix (`UserError`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, Passage
from responder.responder import CommentFailed, Reply

log = logging.getLogger(__name__)

RETRIED = (429, 500, 502, 503, 504)


class HttpResponder:
    """`respond_many` through a running `responder serve`: POST {url}/respond/batch."""

    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 600.0, retries: int = 4,
                 backoff_s: float = 1.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.endpoint = f"{self.url}/respond/batch"
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(timeout=timeout_s, headers=headers)

    def respond_many(self, requests: Sequence[CommentInput]) -> list[Reply]:
        response = self._post([_request_body(r) for r in requests])
        try:
            data = response.json()
            if not isinstance(data, list) or len(data) != len(requests):
                raise TypeError(f"{type(data).__name__} for {len(requests)} comments")
            return [_reply(d) for d in data]
        except (ValueError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"{self.endpoint} did not answer with replies ({exc}); is --server the responder "
                                "service's URL?", status=502) from exc

    def _post(self, body: list[dict[str, Any]]) -> Any:
        """The 200 response, after retrying what a busy or restarting service answers."""
        import httpx

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.client.post(self.endpoint, json=body)
            except httpx.TransportError as exc:  # refused, reset, timed out
                if last:
                    why = str(exc) or type(exc).__name__
                    raise UpstreamError(f"cannot reach the responder service at {self.url} ({why}; {attempt + 1} "
                                        "tries); start it with `responder serve` or check --server, then run the "
                                        "same command again", status=503) from exc
                self._wait(attempt, None, f"cannot reach the service ({type(exc).__name__})")
                continue
            status = response.status_code
            if status == 200:
                return response
            if status not in RETRIED:
                self._refused(response)
            if last:
                raise UpstreamError(f"the responder service at {self.url} answered {status} {attempt + 1} times "
                                    f"in a row ({_detail(response)}); run the same command again later: the "
                                    "comments not answered yet are answered then",
                                    status=503 if status in (429, 503, 504) else 502)
            self._wait(attempt, _retry_after(response), f"the service answered {status}")
        raise AssertionError("unreachable")

    def _refused(self, response: Any) -> None:
        """A non-retried answer other than 200: which setting to fix, or which comment was refused."""
        status = response.status_code
        if status in (400, 422):  # this comment (or one in the batch) was refused
            raise CommentFailed("rejected", _detail(response))
        if status in (401, 403):
            raise UserError(f"the responder service at {self.url} refused the request ({status}); set "
                            "RESPONDER_API_KEY to the service's API key")
        if status == 404:
            raise UserError(f"{self.endpoint} does not exist (404); is --server the responder service's URL?")
        if status == 413:
            raise UserError(f"the responder service at {self.url} takes fewer comments per request "
                            f"({_detail(response)}); pass a smaller --batch-size")
        raise UserError(f"{self.endpoint} answered {status} ({_detail(response)}); is --server the responder "
                        "service's URL?")

    def _wait(self, attempt: int, retry_after: float | None, why: str) -> None:
        wait = retry_after if retry_after is not None else self.backoff_s * 2 ** attempt
        log.info("%s; retrying in %.1fs (%d of %d)", why, wait, attempt + 1, self.retries)
        time.sleep(wait)

    def close(self) -> None:
        self.client.close()


def _request_body(request: CommentInput) -> dict[str, Any]:
    item: dict[str, Any] = {"comment": request.comment}
    for key in ("video_title", "video_id", "video_description"):
        if getattr(request, key):
            item[key] = getattr(request, key)
    if request.author:
        item["author"] = request.author
    return item


def _reply(data: dict[str, Any]) -> Reply:
    records = [p for p in data.get("sources") or [] if isinstance(p, dict)]
    sources = [Passage.from_dict(p) for p in records]
    cited = next((s for s, p in zip(sources, records) if p.get("cited")), None)
    return Reply(reply=str(data.get("reply") or ""), sources=sources, used_context=bool(data.get("used_context")),
                 model=str(data.get("model") or ""), adapter=data.get("adapter"), timings=data.get("timings") or {},
                 cited=cited, citation=str(data.get("citation") or ""),
                 weak=str(data["weak"]) if data.get("weak") else None)


def _detail(response: Any) -> str:
    try:
        detail = str(response.json().get("detail"))
    except (ValueError, AttributeError):
        detail = response.text
    return " ".join(detail.split())[:200]


def _retry_after(response: Any) -> float | None:
    try:
        return max(0.0, min(float(response.headers.get("Retry-After", "")), 60.0))
    except ValueError:
        return None
