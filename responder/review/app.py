"""The review app: `create_app(ReviewConfig)` wires the page, the draft actions and posting.

Security: the CLI binds to 127.0.0.1 and then only accepts loopback Host headers (no DNS
rebinding); any other host needs an API key, given once as `/?key=...` (kept in an HttpOnly,
SameSite=Strict cookie) or as `Authorization: Bearer`. Every change is a POST with a custom header
and a JSON body, which a cross-site form or link cannot send. Untrusted text (comments, replies,
author names, sources) is escaped by Jinja's autoescape.
"""

from __future__ import annotations

import hmac

from responder.review.review import HERE, Review, ReviewConfig

COOKIE = "review_key"
CSRF_HEADER = "x-review"


def create_app(config: ReviewConfig):
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    app = FastAPI(title="responder review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = Review(config)
    if config.allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=config.allowed_hosts)
    _add_security(app, config)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    from responder.review.routes import router

    app.include_router(router)
    return app


def _add_security(app, config: ReviewConfig) -> None:
    from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse

    @app.middleware("http")
    async def guard(request, call_next):
        if config.api_key:
            given = request.query_params.get("key") if request.url.path == "/" else None
            if given is not None and hmac.compare_digest(given, config.api_key):
                response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, config.api_key, httponly=True, samesite="strict")
                return response
            auth = request.headers.get("authorization", "")
            sent = request.cookies.get(COOKIE) or (auth[7:] if auth.lower().startswith("bearer ") else "")
            if not hmac.compare_digest(sent, config.api_key):
                return PlainTextResponse("This review page needs its key: open the URL `responder review` printed "
                                         "(it ends in ?key=...).", status_code=401)
        if request.method not in ("GET", "HEAD") and request.headers.get(CSRF_HEADER) != "1":
            return JSONResponse({"detail": "changes come from the review page only"}, status_code=403)
        return await call_next(request)


