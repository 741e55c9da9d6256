"""The HTTP service: the app factory, nothing built at import time.

`create_app(settings)` only wires: the shared state (`state.py`), its start and stop (the
lifespan), the exception handlers (`errors.py`), the request metrics (`metrics.py`) and the routers
(`routes/`, one module per resource, their dependencies in `deps.py`). Requests to `/respond` and
`/respond/batch` go through the dynamic batcher (`batcher.py`): one batched generate for whatever
arrived together, off the event loop.
"""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from base.settings import Settings
from responder.responder import Responder
from responder.service.errors import HANDLERS
from responder.service.metrics import request_counter
from responder.service.routes import api_router
from responder.service.state import ServiceState

SETTINGS_ENV = "RESPONDER_SERVE_SETTINGS_JSON"  # how `serve --workers N` hands settings to workers


def create_app(settings: Settings, responder: Responder | None = None) -> FastAPI:
    """The service. Without `responder`, one is built from `settings` in the background."""
    state = ServiceState(settings, responder)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app = FastAPI(title="Comment responder", version="0.1.0", lifespan=lifespan,
                  description="Answers YouTube comments in the creator's voice, with facts from "
                              "their own articles.")
    app.state.responder_state = state
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)
    app.middleware("http")(request_counter(state.metrics))
    app.include_router(api_router)
    return app


# --- settings hand-over for `serve --workers N` ---------------------------------------------------


def settings_to_env(settings: Settings) -> str:
    """Settings as JSON, secrets included (only ever put in the environment of our own workers)."""
    data = settings.model_dump(mode="json", exclude_unset=False)
    for name in ("api_key", "openai_api_key"):
        secret = getattr(settings, name)
        data[name] = secret.get_secret_value() if secret is not None else None
    data["_set"] = sorted(settings.model_fields_set)
    return json.dumps(data)


def settings_from_env() -> Settings:
    data = json.loads(os.environ[SETTINGS_ENV])
    explicit = set(data.pop("_set", []))
    # Only the fields the user set count as set (plan_serving lets unset ones follow the adapter).
    return Settings(**{k: v for k, v in data.items() if k in explicit})


def app_from_env() -> FastAPI:
    """Uvicorn factory for `serve --workers N` (each worker process builds its own app)."""
    return create_app(settings_from_env())
