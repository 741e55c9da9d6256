"""GET /healthz (always answers, even mid-batch) and /readyz (503 until the model is loaded). Open."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from responder.service.deps import StateDep
from responder.service.schemas import Health

router = APIRouter()


@router.get("/healthz", response_model=Health, summary="Always open; answers while a batch generates")
async def healthz(state: StateDep) -> Health:
    batcher = state.batcher
    return Health(status="error" if state.error else "ok", ready=batcher is not None,
                  model=state.model, adapter=state.adapter, quantization=state.quantization,
                  backend=state.settings.backend, knowledge_base=state.knowledge_base,
                  queue_depth=batcher.depth if batcher else 0,
                  generating=bool(batcher and batcher.busy), error=state.error)


@router.get("/readyz", summary="503 until the model is loaded")
async def readyz(state: StateDep) -> JSONResponse:
    if state.batcher is None:
        return JSONResponse({"ready": False, "detail": state.error or "the model is loading"},
                            status_code=503, headers={"Retry-After": "5"})
    return JSONResponse({"ready": True})
