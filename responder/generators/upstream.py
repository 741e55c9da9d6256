"""One request to a generation server (a JSON answer or a stream of events), and what its failures
mean to the service.

Unreachable, refused or timed out: `UpstreamError` 503 (the service answers 503, `batch --server`
retries or stops). A 5xx or an answer that is not JSON: `UpstreamError` 502. A 4xx is about our
request (a wrong model name or key, a prompt too long): `UserError`, except 408/429 (the server is
busy), which are 503. Shared by the OpenAI-compatible and the llama.cpp generators.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, Callable, Iterator

from base.errors import UpstreamError, UserError


def post_json(client: Any, url: str, body: dict[str, Any], hints: dict[int, str] | None = None,
              down: Callable[[], str] | None = None) -> Any:
    """The server's JSON answer to `body`; `hints` add a fix to a 4xx, `down()` what to do when it is down."""
    with _failures(url, down):
        response = client.post(url, json=body)
    check_status(url, response.status_code, response.text, hints)
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamError(f"generation server {url} answered 200 without JSON: {snippet(response.text)}",
                            status=502) from exc


def stream_events(client: Any, url: str, body: dict[str, Any], down: Callable[[], str] | None = None) -> Iterator[Any]:
    """The server-sent events of a streamed answer, as JSON; closing the iterator closes the
    connection, which tells the server to stop generating."""
    with _failures(url, down), client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            check_status(url, response.status_code, response.read().decode("utf-8", "replace"))
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            try:
                event = json.loads(line[len("data: "):])
            except ValueError as exc:
                raise UpstreamError(f"generation server {url} streamed a line that is not JSON: {snippet(line)}",
                                    status=502) from exc
            if isinstance(event, dict) and "error" in event:
                raise UpstreamError(f"generation server {url} failed mid-answer: {snippet(str(event['error']))}",
                                    status=502)
            yield event


@contextlib.contextmanager
def _failures(url: str, down: Callable[[], str] | None) -> Iterator[None]:
    """Transport failures as `UpstreamError`."""
    import httpx

    try:
        yield
    except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
        why = down() if down else "check that the server is running"
        raise UpstreamError(f"generation server {url} unreachable ({exc or type(exc).__name__}); {why}",
                            status=503) from exc
    except httpx.HTTPError as exc:
        raise UpstreamError(f"generation server {url} failed to answer ({type(exc).__name__}: {exc})",
                            status=502) from exc


def check_status(url: str, status: int, text: str, hints: dict[int, str] | None = None) -> None:
    """Nothing for a 200; otherwise the error the status means."""
    if status in (408, 429):
        raise UpstreamError(f"generation server {url} is busy ({status}): {snippet(text)}", status=503)
    if 400 <= status < 500:
        raise UserError(f"generation server {url} refused the request ({status}): "
                        f"{snippet(text)}{(hints or {}).get(status, '')}")
    if status != 200:
        raise UpstreamError(f"generation server {url} answered {status}: {snippet(text)}",
                            status=503 if status == 503 else 502)


def snippet(text: str) -> str:
    """A server's answer on one line, short enough for an error message."""
    return " ".join(text.split())[:200]
