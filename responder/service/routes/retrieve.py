"""POST /retrieve: the article passages a comment would get, without generating."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from base.prompt import CommentInput
from responder.service.deps import Protected, ResponderDep
from responder.service.schemas import PassageOut, RetrieveRequest, RetrieveResponse

router = APIRouter(dependencies=Protected)


@router.post("/retrieve", response_model=RetrieveResponse,
             summary="The article passages a comment would get, without generating")
async def retrieve(body: RetrieveRequest, responder: ResponderDep) -> RetrieveResponse:
    request = CommentInput(body.comment, top_k=body.top_k)
    passages = await asyncio.to_thread(responder.retrieve, request)
    return RetrieveResponse(passages=[PassageOut.of(p) for p in passages])
