"""GET /metrics: Prometheus metrics (behind the API key when one is set, like everything but health)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from responder.service.deps import Protected, StateDep

router = APIRouter(dependencies=Protected)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(state: StateDep) -> Response:
    state.metrics.queue_depth.set(state.batcher.depth if state.batcher else 0)
    counts = getattr(getattr(state.responder, "generator", None), "stats", None)
    if counts is not None:
        state.metrics.observe_tokens(counts)
    body, content_type = state.metrics.exposition()
    return Response(body, media_type=content_type)
