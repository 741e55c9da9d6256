"""Dependencies of the routes, read as types: `state: StateDep`, `batcher: BatcherDep`, ...

The API key is checked by the gate (`gate.py`) before a body is read; `Protected` only tells the
OpenAPI schema (and the "Authorize" button of /docs) that a route takes a bearer key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPBearer

from responder.responder import Responder
from responder.service.batcher import Batcher
from responder.service.state import LOAD_FAILED, ReplyLane, ServiceState

Protected = [Security(HTTPBearer(auto_error=False, description="RESPONDER_API_KEY, when the server sets one"))]


def get_state(request: Request) -> ServiceState:
    return request.app.state.responder_state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_responder(state: StateDep) -> Responder:
    """The loaded responder; 503 until there is one."""
    if state.responder is None or state.batcher is None or state.retrieval is None:
        raise HTTPException(503, LOAD_FAILED if state.error else "the model is still loading; retry shortly",
                            headers={"Retry-After": "5"})
    return state.responder


ResponderDep = Annotated[Responder, Depends(get_responder)]


def get_batcher(state: StateDep, _: ResponderDep) -> ReplyLane:
    assert state.batcher is not None
    return state.batcher


BatcherDep = Annotated[ReplyLane, Depends(get_batcher)]


def get_retrieval(state: StateDep, _: ResponderDep) -> Batcher:
    assert state.retrieval is not None
    return state.retrieval


RetrievalDep = Annotated[Batcher, Depends(get_retrieval)]
