"""Dependencies of the routes, read as types: `state: StateDep`, `batcher: BatcherDep`, ...

`Protected` goes on every route that needs the API key (when one is set); /healthz, /readyz and
/metrics stay open.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from responder.responder import Responder
from responder.service.batcher import Batcher
from responder.service.state import ServiceState

_bearer = HTTPBearer(auto_error=False)


def get_state(request: Request) -> ServiceState:
    return request.app.state.responder_state


StateDep = Annotated[ServiceState, Depends(get_state)]


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


Protected = [Depends(require_api_key)]


def get_responder(state: StateDep) -> Responder:
    """The loaded responder; 503 (with the loading error, if loading failed) until there is one."""
    if state.responder is None or state.batcher is None:
        raise HTTPException(503, state.error or "the model is still loading; retry shortly",
                            headers={"Retry-After": "5"})
    return state.responder


ResponderDep = Annotated[Responder, Depends(get_responder)]


def get_batcher(state: StateDep, _: ResponderDep) -> Batcher:
    assert state.batcher is not None
    return state.batcher


BatcherDep = Annotated[Batcher, Depends(get_batcher)]
