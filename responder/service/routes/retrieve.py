"""POST /retrieve: the article passages a comment would get, without generating.

Through its own small queue and worker (`state.retrieval`): 503 when that queue is full, 504 after
`retrieve_timeout_s`, never a place in the replies' queue, and while replies generate it rests
between batches (see state.py), so a flood of /retrieve does not slow replies.
"""

from __future__ import annotations

from fastapi import APIRouter

from base.prompt import CommentInput
from responder.service.admission import submit
from responder.service.deps import Protected, RetrievalDep, StateDep
from responder.service.schemas import PassageOut, RetrieveRequest, RetrieveResponse

router = APIRouter(dependencies=Protected)


@router.post("/retrieve", response_model=RetrieveResponse,
             summary="The article passages a comment would get, without generating")
async def retrieve(body: RetrieveRequest, state: StateDep, retrieval: RetrievalDep) -> RetrieveResponse:
    request = CommentInput(body.comment, video_title=body.video_title, top_k=body.top_k, video_id=body.video_id,
                           video_description=body.video_description)
    [passages] = await submit(retrieval, [request], "retrieval", "passages", "RESPONDER_RETRIEVE_TIMEOUT_S",
                              on_full=state.metrics.retrieve_rejected.inc)
    return RetrieveResponse(passages=[PassageOut.of(p) for p in passages])
