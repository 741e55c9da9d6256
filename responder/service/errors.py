"""Exception handlers: every error answer is `{"detail": "<one short line>"}`.

- `UserError` (something the caller can fix): 400.
- `UpstreamError` (the generation server is down: 503, or answered badly: 502); a 503 carries
  Retry-After, like the service's own 503s.
- request validation: 422, one `where: what` per problem, e.g. `body.comment: comment is empty; ...`.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from base.errors import UpstreamError, UserError

log = logging.getLogger(__name__)

UPSTREAM_RETRY_AFTER_S = 5


async def user_error(_: Request, exc: UserError) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=400)


async def upstream_error(_: Request, exc: UpstreamError) -> JSONResponse:
    log.warning("upstream error (%d): %s", exc.status, exc)
    headers = {"Retry-After": str(UPSTREAM_RETRY_AFTER_S)} if exc.status == 503 else None
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)


async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    lines = []
    for err in exc.errors():
        where = ".".join(str(x) for x in err.get("loc", ()))
        lines.append(f"{where}: {err.get('msg')}")
    return JSONResponse({"detail": "; ".join(lines)}, status_code=422)


HANDLERS = {UserError: user_error, UpstreamError: upstream_error, RequestValidationError: validation_error}
