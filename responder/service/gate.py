"""The gate: what every request passes before any parsing, routing or model work (pure ASGI).

In this order, each refusal a one-line JSON `detail` and a count in `responder_refused_total`:
1. body size: a Content-Length over `max_body_bytes` is 413 at once, the body never read (the
   server discards it); a body without one (chunked) is counted as it streams and refused at the
   limit, before anything parses it;
2. the API key, when one is set: every path but /healthz and /readyz (so /docs, /openapi.json and
   /metrics too) is 401 without `Authorization: Bearer <key>`, compared in constant time;
3. shutdown: once the grace period after SIGTERM has begun, a new request is 503.

Being pure ASGI (no request object, no task, no body read), a refusal costs a header scan.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Awaitable, Callable

from fastapi import HTTPException

from base.errors import UserError
from base.settings import Settings

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
UNAUTHORIZED = "missing or wrong API key; send 'Authorization: Bearer <key>'"

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def check_api_key(settings: Settings) -> None:
    """A set but blank key would compare equal to a missing header: refuse to start with it."""
    if settings.api_key is not None and not settings.api_key.get_secret_value().strip():
        raise UserError("RESPONDER_API_KEY is set but blank (an unset ${VAR} in a compose file or .env gives "
                        "this); set a real key, e.g. `export RESPONDER_API_KEY=$(openssl rand -hex 32)`, or "
                        "unset it to serve on loopback without one")


def too_large(limit: int) -> str:
    return (f"request body is over {limit} bytes (RESPONDER_MAX_BODY_BYTES); send less (split a "
            "/respond/batch), or raise the limit on the server")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit; FastAPI answers it as is (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large(limit))


class Gate:
    """ASGI middleware: body size, then API key, then shutdown; see the module docstring."""

    def __init__(self, app: App, state: Any) -> None:
        self.app = app
        self.state = state  # ServiceState: settings, metrics, draining
        key = state.settings.api_key
        self.key = key.get_secret_value().encode() if key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])  # names are lower-case bytes
        refusal = self._refusal(scope["path"], headers)
        if refusal is not None:
            status, reason, detail, extra = refusal
            self.state.metrics.refused.labels(reason).inc()
            await send_json(send, status, detail, extra)
            return
        if b"content-length" in headers:
            await self.app(scope, receive, send)  # the server reads no more than Content-Length
            return
        await self._counted(scope, receive, send)

    def _refusal(self, path: str, headers: dict[bytes, bytes]) -> tuple[int, str, str, dict[str, str]] | None:
        limit = self.state.settings.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return 413, "body_too_large", too_large(limit), {}
        if self.key is not None and path not in OPEN_PATHS and not self._key_ok(headers.get(b"authorization", b"")):
            return 401, "unauthorized", UNAUTHORIZED, {"WWW-Authenticate": "Bearer"}
        if self.state.draining and path not in OPEN_PATHS:
            return 503, "shutting_down", "the server is shutting down; retry shortly", {"Retry-After": "5"}
        return None

    def _key_ok(self, header: bytes) -> bool:
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.key or b"")

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass a body of unknown length on while it stays under the limit."""
        limit = self.state.settings.max_body_bytes
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    self.state.metrics.refused.labels("body_too_large").inc()
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, watching_send)
        except BodyTooLarge as exc:  # read outside a route (nothing turned it into a response)
            if started:
                raise
            await send_json(send, 413, exc.detail, {})


async def send_json(send: Send, status: int, detail: str, headers: dict[str, str]) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
