"""The HTTP service: FastAPI app factory, nothing built at import time.

`create_app(settings)` loads the model in a background thread after startup, so `/healthz` and
`/readyz` answer at once (`/readyz` is 503 until the model is loaded). Requests to `/respond` and
`/respond/batch` go through the dynamic batcher (`responder.batching`): one batched generate for
whatever arrived together, off the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any, Sequence

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from base.errors import UserError
from base.prompt import CommentInput
from base.settings import Settings
from responder.responder import Reply, Responder
from responder.service.batcher import Batcher, QueueFull
from responder.service.schemas import (
    Health,
    PassageOut,
    RespondBatchRequest,
    RespondRequest,
    RespondResponse,
    RetrieveRequest,
    RetrieveResponse,
)

log = logging.getLogger(__name__)

SETTINGS_ENV = "RESPONDER_SERVE_SETTINGS_JSON"  # how `serve --workers N` hands settings to workers


class _Metrics:
    """Prometheus metrics in the app's own registry (two apps in one process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("responder_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("responder_request_latency_seconds", "Request latency by route", ["route"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320),
                                 registry=self.registry)
        self.batch_size = Histogram("responder_batch_size", "Comments per batched generate",
                                    buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.batch_seconds = Histogram("responder_batch_seconds", "Seconds per batched generate",
                                       buckets=(0.1, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160),
                                       registry=self.registry)
        self.queue_depth = Gauge("responder_queue_depth", "Requests waiting for a batch",
                                 registry=self.registry)
        self.rejected = Counter("responder_rejected", "Requests refused because the queue was full",
                                registry=self.registry)


class _State:
    def __init__(self, settings: Settings, responder: Responder | None) -> None:
        self.settings = settings
        self.responder = responder
        self.error: str | None = None
        self.metrics = _Metrics()
        self.batcher: Batcher | None = None
        self.model = settings.base_model
        self.adapter = str(settings.adapter) if settings.adapter else "no adapter"
        self.quantization = settings.quantization
        self.knowledge_base = "unknown"


def _process(responder: Responder) -> Any:
    def process(requests: Sequence[CommentInput]) -> list[Reply | Exception]:
        try:
            return list(responder.respond_many(requests))
        except Exception as exc:  # noqa: BLE001 - one failure answers the whole batch
            return [exc] * len(requests)
    return process


# --- dependencies (module level: routes read as types) ---------------------------------------------

_bearer = HTTPBearer(auto_error=False)


def get_state(request: Request) -> _State:
    return request.app.state.responder_state


StateDep = Annotated[_State, Depends(get_state)]


def require_api_key(
    state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    if state.settings.api_key is None:
        return
    expected = state.settings.api_key.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    if not hmac.compare_digest(given, expected):
        raise HTTPException(401, "missing or wrong API key; send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})


def get_responder(state: StateDep) -> Responder:
    if state.responder is None or state.batcher is None:
        raise HTTPException(503, state.error or "the model is still loading; retry shortly",
                            headers={"Retry-After": "5"})
    return state.responder


ResponderDep = Annotated[Responder, Depends(get_responder)]


def get_batcher(state: StateDep, _: ResponderDep) -> Batcher:
    assert state.batcher is not None
    return state.batcher


BatcherDep = Annotated[Batcher, Depends(get_batcher)]


def create_app(settings: Settings, responder: Responder | None = None) -> FastAPI:
    """The service. Without `responder`, one is built from `settings` in the background."""
    state = _State(settings, responder)

    async def load() -> None:
        from responder.factory import build_responder, describe_knowledge_base, plan_serving

        try:
            plan = await asyncio.to_thread(plan_serving, settings)
            state.model, state.adapter, state.quantization = plan.base_model, plan.adapter_label, plan.quantization
            state.knowledge_base = describe_knowledge_base(settings)
            state.responder = await asyncio.to_thread(build_responder, settings)
            _start_batcher()
            log.warning("Model loaded: %s + %s (%s)", state.model, state.adapter, state.quantization)
        except UserError as exc:
            state.error = str(exc)
            log.error("Error: %s", exc)
        except Exception as exc:  # noqa: BLE001 - reported in /healthz and /readyz, not swallowed
            state.error = f"loading the model failed: {exc.__class__.__name__}: {exc}"
            log.exception("loading the model failed")

    def _start_batcher() -> None:
        assert state.responder is not None
        gen = state.responder.generator
        state.model = getattr(gen, "model_name", state.model)
        state.adapter = getattr(gen, "adapter_name", None) or state.adapter
        if state.knowledge_base == "unknown":
            state.knowledge_base = "attached" if state.responder.retriever is not None else "none"

        def on_batch(size: int, seconds: float) -> None:
            state.metrics.batch_size.observe(size)
            state.metrics.batch_seconds.observe(seconds)

        state.batcher = Batcher(_process(state.responder), settings.max_batch_size, settings.max_wait_ms,
                                settings.queue_size, settings.request_timeout_s, on_batch)
        state.batcher.start()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = None
        if state.responder is not None:
            _start_batcher()
        else:
            loader = asyncio.create_task(load())
        yield
        if loader is not None and not loader.done():
            loader.cancel()
        if state.batcher is not None:
            await state.batcher.stop()

    app = FastAPI(title="Comment responder", version="0.1.0", lifespan=lifespan,
                  description="Answers YouTube comments in the creator's voice, with facts from "
                              "their own articles.")
    app.state.responder_state = state

    # --- errors ---------------------------------------------------------------------------------

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One short line per problem, naming where it is: `body.comment: comment is empty; ...`.
        lines = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()))
            lines.append(f"{where}: {err.get('msg')}")
        return JSONResponse({"detail": "; ".join(lines)}, status_code=422)

    # --- metrics middleware ---------------------------------------------------------------------

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            name = getattr(route, "path", "unmatched")
            state.metrics.requests.labels(name, str(status)).inc()
            state.metrics.latency.labels(name).observe(time.perf_counter() - start)

    protected = [Depends(require_api_key)]

    async def answer(batcher: Batcher, requests: list[CommentInput]) -> list[Reply]:
        try:
            return await batcher.submit_many(requests)
        except QueueFull as exc:
            state.metrics.rejected.inc()
            raise HTTPException(503, f"server busy: {exc}", headers={"Retry-After": str(exc.retry_after_s)})
        except asyncio.TimeoutError:
            raise HTTPException(504, f"no reply within {settings.request_timeout_s:g} s; retry later "
                                     "or raise RESPONDER_REQUEST_TIMEOUT_S") from None
        finally:
            state.metrics.queue_depth.set(batcher.depth)

    # --- routes ---------------------------------------------------------------------------------

    @app.post("/respond", response_model=RespondResponse, dependencies=protected,
              summary="Answer one comment")
    async def respond(body: RespondRequest, batcher: BatcherDep) -> RespondResponse:
        state.metrics.queue_depth.set(batcher.depth + 1)
        return RespondResponse.of((await answer(batcher, [body.to_core()]))[0])

    @app.post("/respond/batch", response_model=list[RespondResponse], dependencies=protected,
              summary="Answer a list of comments, in order")
    async def respond_batch(body: RespondBatchRequest, batcher: BatcherDep) -> list[RespondResponse]:
        items = body.root
        if len(items) > settings.queue_size:
            raise HTTPException(413, f"batch has {len(items)} comments; this server takes at most "
                                     f"{settings.queue_size} per request (RESPONDER_QUEUE_SIZE); split it")
        if not items:
            return []
        state.metrics.queue_depth.set(batcher.depth + len(items))
        return [RespondResponse.of(r) for r in await answer(batcher, [i.to_core() for i in items])]

    @app.post("/retrieve", response_model=RetrieveResponse, dependencies=protected,
              summary="The article passages a comment would get, without generating")
    async def retrieve(body: RetrieveRequest, responder: ResponderDep) -> RetrieveResponse:
        request = CommentInput(body.comment, top_k=body.top_k)
        passages = await asyncio.to_thread(responder.retrieve, request)
        return RetrieveResponse(passages=[PassageOut.of(p) for p in passages])

    @app.get("/healthz", response_model=Health, summary="Always open; answers while a batch generates")
    async def healthz(st: StateDep) -> Health:
        return Health(status="error" if st.error else "ok", ready=st.batcher is not None,
                      model=st.model, adapter=st.adapter, quantization=st.quantization,
                      backend=settings.backend, knowledge_base=st.knowledge_base,
                      queue_depth=st.batcher.depth if st.batcher else 0,
                      generating=bool(st.batcher and st.batcher.busy), error=st.error)

    @app.get("/readyz", summary="503 until the model is loaded")
    async def readyz(st: StateDep) -> JSONResponse:
        if st.batcher is None:
            return JSONResponse({"ready": False, "detail": st.error or "the model is loading"},
                                status_code=503, headers={"Retry-After": "5"})
        return JSONResponse({"ready": True})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(st: StateDep) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        st.metrics.queue_depth.set(st.batcher.depth if st.batcher else 0)
        return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)

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
