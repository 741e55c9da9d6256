"""The HTTP service: the app factory, nothing built at import time.

`create_app(settings)` only wires: the shared state (`state.py`), its start and stop (the
lifespan), the gate every request passes first (`gate.py`: body size, API key, shutdown), the
exception handlers (`errors.py`), the request metrics (`metrics.py`) and the routers (`routes/`,
one module per resource, their dependencies in `deps.py`). Requests to `/respond` and
`/respond/batch` go through the dynamic batcher (`batcher.py`): one batched generate for whatever
arrived together, off the event loop; `/retrieve` has a queue of its own.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from responder.factory import ServingPlan
from responder.responder import Responder
from responder.service.errors import HANDLERS
from responder.service.gate import Gate, check_api_key
from responder.service.metrics import RequestCounter
from responder.service.routes import api_router
from responder.service.settings import ServiceSettings
from responder.service.state import ServiceState, Triager

SETTINGS_ENV = "RESPONDER_SERVE_SETTINGS_JSON"  # how `serve --workers N` hands settings to workers


def create_app(settings: ServiceSettings, responder: Responder | None = None, triage: Triager | None = None,
               plan: ServingPlan | None = None) -> FastAPI:
    """The service. Without `responder`, one is built from `settings` in the background, and the
    triage classifier with it; with one given and no `triage`, comments are triaged by exact rules.
    `plan`: the serving plan `serve` made after checking everything (the key included)."""
    if plan is None:
        check_api_key(settings)
    state = ServiceState(settings, responder, triage, plan)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app = FastAPI(title="Comment responder", version="0.1.0", lifespan=lifespan, description=DESCRIPTION)
    app.state.responder_state = state
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.add_middleware(RequestCounter, metrics=state.metrics)
    app.add_middleware(Gate, state=state)  # added last: outermost, before anything reads the body
    app.include_router(api_router)
    return app


DESCRIPTION = """Answers YouTube comments in the creator's voice, with facts from their own articles.

Limits (server settings, environment `RESPONDER_*`): request body at most 1 MiB (`MAX_BODY_BYTES`,
413); a comment at most 10,000 characters and 3,072 model tokens after cleaning (`MAX_COMMENT_TOKENS`,
422); `/respond/batch` at most 64 items (`QUEUE_SIZE`, 413); replies' queue 64 (`QUEUE_SIZE`, 503),
`/retrieve`'s own queue 8 (`RETRIEVE_QUEUE_SIZE`, 503). With `RESPONDER_API_KEY` set, every route
but /healthz and /readyz (these docs and /metrics included) needs `Authorization: Bearer <key>`."""


# --- settings hand-over for `serve --workers N` ---------------------------------------------------


def settings_to_env(settings: ServiceSettings) -> str:
    """ServiceSettings as JSON, secrets included (only ever put in the environment of our own workers)."""
    data = settings.model_dump(mode="json", exclude_unset=False)
    for name in ("api_key", "openai_api_key"):
        secret = getattr(settings, name)
        data[name] = secret.get_secret_value() if secret is not None else None
    data["_set"] = sorted(settings.model_fields_set)
    return json.dumps(data)


def settings_from_env() -> ServiceSettings:
    data = json.loads(os.environ[SETTINGS_ENV])
    explicit = set(data.pop("_set", []))
    # Only the fields the user set count as set (plan_serving lets unset ones follow the adapter).
    return ServiceSettings(**{k: v for k, v in data.items() if k in explicit})


def app_from_env() -> FastAPI:
    """Uvicorn factory for `serve --workers N` (each worker process builds its own app)."""
    return create_app(settings_from_env())
