"""GET /healthz (always answers, even mid-batch) and /readyz (503 until the model is loaded). Open.

Both are open to anyone, so they say ok or not ok and name what is served; why loading failed
(an exception, a path) is only in the server log.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from responder.service.deps import StateDep
from responder.service.schemas import Health
from responder.service.state import LOAD_FAILED

router = APIRouter()


@router.get("/healthz", response_model=Health, summary="Always open; answers while a batch generates")
async def healthz(state: StateDep) -> Health:
    batcher = state.batcher
    return Health(status="error" if state.error else "ok", ready=batcher is not None and not state.draining,
                  model=state.model, adapter=state.adapter, quantization=state.quantization,
                  backend=state.settings.backend, knowledge_base=state.knowledge_base,
                  queue_depth=batcher.depth if batcher else 0,
                  generating=bool(batcher and batcher.busy), error=LOAD_FAILED if state.error else None)


@router.get("/readyz", summary="503 until the model is loaded (and once the server is stopping)")
async def readyz(state: StateDep) -> JSONResponse:
    if state.batcher is None or state.draining:
        detail = LOAD_FAILED if state.error else ("stopping" if state.draining else "the model is loading")
        return JSONResponse({"ready": False, "detail": detail}, status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"ready": True})
