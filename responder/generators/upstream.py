"""One JSON request to a generation server, and what its failures mean to the service.

Unreachable, refused or timed out: `UpstreamError` 503 (the service answers 503, `batch --server`
retries or stops). A 5xx or an answer that is not JSON: `UpstreamError` 502. A 4xx is about our
request (a wrong model name or key, a prompt too long): `UserError`, except 408/429 (the server is
busy), which are 503. Shared by the OpenAI-compatible and the llama.cpp generators.
"""

from __future__ import annotations

from typing import Any, Callable

from base.errors import UpstreamError, UserError


def post_json(client: Any, url: str, body: dict[str, Any], hints: dict[int, str] | None = None,
              down: Callable[[], str] | None = None) -> Any:
    """The server's JSON answer to `body`; `hints` add a fix to a 4xx, `down()` what to do when it is down."""
    import httpx

    try:
        response = client.post(url, json=body)
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        why = down() if down else "check that the server is running"
        raise UpstreamError(f"generation server {url} unreachable ({exc or type(exc).__name__}); {why}",
                            status=503) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"generation server {url} failed to answer ({type(exc).__name__}: {exc})",
                            status=502) from exc
    status = response.status_code
    if status in (408, 429):
        raise UpstreamError(f"generation server {url} is busy ({status}): {snippet(response.text)}", status=503)
    if 400 <= status < 500:
        raise UserError(f"generation server {url} refused the request ({status}): "
                        f"{snippet(response.text)}{(hints or {}).get(status, '')}")
    if status != 200:
        raise UpstreamError(f"generation server {url} answered {status}: {snippet(response.text)}",
                            status=503 if status == 503 else 502)
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError(f"generation server {url} answered 200 without JSON: {snippet(response.text)}",
                            status=502) from exc


def snippet(text: str) -> str:
    """A server's answer on one line, short enough for an error message."""
    return " ".join(text.split())[:200]
