"""Exception handlers: every error answer is `{"detail": "<one short line>"}`, with no file paths.

- `UserError` (something the caller can fix): 400; any absolute path in it (a store, an adapter)
  is cut to its last part in the answer, the whole message goes to the log.
- `CommentFailed` (this comment cannot be answered: too long for the model, unencodable): 422.
- `UpstreamError` (the generation server is down: 503, or answered badly: 502); a 503 carries
  Retry-After, like the service's own 503s.
- anything else (a bug): 500 `internal error; the reason is in the server log`.
- request validation: 422, one `where: what` per problem, e.g. `body.comment: comment is empty; ...`;
  a body that is not UTF-8 is 422 too (FastAPI says 400 "error parsing the body").
"""

from __future__ import annotations

import logging
import os
import re

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from base.errors import UpstreamError, UserError
from responder.responder import CommentFailed

log = logging.getLogger(__name__)

UPSTREAM_RETRY_AFTER_S = 5

# An absolute path (not the path of a URL, not a relative one): `/a/b/c` -> `c`.
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])(~?/)([^\s'\"`/]+)((?:/[^\s'\"`/]+)*)")


def redact_paths(text: str) -> str:
    """`text` with every absolute file path replaced by its last part. A path counts when its
    first folder exists here (`/home/...`, `~/...`), so API paths such as `/respond/batch` stay."""

    def last_part(m: re.Match) -> str:
        home_or_root = m.group(1) == "~/" or os.path.exists("/" + m.group(2))
        return (m.group(3) or m.group(2)).rsplit("/", 1)[-1] if home_or_root else m.group(0)

    return _ABSOLUTE_PATH.sub(last_part, text)


async def user_error(_: Request, exc: UserError) -> JSONResponse:
    log.warning("refused: %s", exc)
    return JSONResponse({"detail": redact_paths(str(exc))}, status_code=400)


async def comment_failed(_: Request, exc: CommentFailed) -> JSONResponse:
    return JSONResponse({"detail": redact_paths(str(exc))}, status_code=422)


async def upstream_error(_: Request, exc: UpstreamError) -> JSONResponse:
    log.warning("upstream error (%d): %s", exc.status, exc)
    headers = {"Retry-After": str(UPSTREAM_RETRY_AFTER_S)} if exc.status == 503 else None
    return JSONResponse({"detail": redact_paths(str(exc))}, status_code=exc.status, headers=headers)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    lines = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()))
        lines.append(f"{where}: {err.get('msg')}")
    return JSONResponse({"detail": "; ".join(lines)}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        cause = exc.__cause__
        return JSONResponse({"detail": f"body: not UTF-8 (byte 0x{cause.object[cause.start]:02x} at offset "
                                       f"{cause.start}); send UTF-8 JSON"}, status_code=422)
    return await http_exception_handler(request, exc)


async def internal_error(_: Request, exc: Exception) -> JSONResponse:
    """A bug: the traceback goes to the log, the caller gets one line without it."""
    log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return JSONResponse({"detail": "internal error; the reason is in the server log"}, status_code=500)


HANDLERS = {Exception: internal_error, UserError: user_error, CommentFailed: comment_failed,
            UpstreamError: upstream_error, RequestValidationError: validation_error,
            StarletteHTTPException: http_error}
