"""Request and response models of the HTTP API (`responder.service`).

Limits a caller meets are in the field descriptions (and so in /docs); responses carry names and
relative paths, never a path of the server's filesystem.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator
from pydantic_core import PydanticCustomError

from base.errors import UserError
from knowledge.triage import Triage
from base.prompt import (
    MAX_AUTHOR_CHARS,
    MAX_COMMENT_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    CommentInput,
    Passage,
)
from base.video import parse_video_id
from responder.responder import DEFAULT_MAX_COMMENT_TOKENS, Reply, source_record, unencodable, validate_comment
from responder.service.state import public_name


def _checked_comment(value: str) -> str:
    try:
        return validate_comment(value)
    except UserError as exc:  # the message as is, without pydantic's "Value error, " prefix
        raise PydanticCustomError("comment", str(exc)) from None


def _encodable(value: object, name: str) -> object:
    """Before pydantic's own string check, so that a lone surrogate gets our message."""
    problem = unencodable(value) if isinstance(value, str) else None
    if problem:
        raise PydanticCustomError("text", f"{name} {problem}")
    return value


COMMENT_HELP = (f"The comment's text: at most {MAX_COMMENT_CHARS} characters (YouTube's limit) and, after "
                f"cleaning (NFC; control and invisible characters removed), at most {DEFAULT_MAX_COMMENT_TOKENS} "
                "model tokens (RESPONDER_MAX_COMMENT_TOKENS; 422 above). The whole body is at most 1 MiB "
                "(RESPONDER_MAX_BODY_BYTES; 413 above).")


VIDEO_ID_HELP = ("The video the comment is under (its 11-character id or URL): the articles linked to it "
                 "(front matter video:, ingest --videos) are preferred; an id nothing links to changes nothing.")
VIDEO_DESCRIPTION_HELP = "The video's description: the articles it links to are preferred."


def _video_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    found = parse_video_id(value)
    if found is None:
        raise ValueError("is not a YouTube video id or URL; give the 11-character id (as in watch?v=dQw4w9WgXcQ)")
    return found


class RespondRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"comment": "how big does my A/B test need to be to spot a 1 point lift?",
         "video_title": "A/B testing without tears", "author": "@sam", "use_context": True, "top_k": 3}]})

    comment: str = Field(description=COMMENT_HELP)
    video_title: str | None = Field(None, max_length=500, description=(
        f"Title of the video; the prompt keeps its first {MAX_TITLE_CHARS} characters, on one line."))
    video_id: str | None = Field(None, max_length=200, description=VIDEO_ID_HELP)
    video_description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS, description=VIDEO_DESCRIPTION_HELP)
    author: str | None = Field(None, max_length=200, description=(
        f"The commenter's name; the prompt keeps its first {MAX_AUTHOR_CHARS} characters, on one line."))
    use_context: bool = Field(True, description="Retrieve passages from the creator's articles.")
    top_k: int | None = Field(None, ge=1, le=20, description="Passages to retrieve (default: server's).")

    @field_validator("comment")
    @classmethod
    def _check_comment(cls, value: str) -> str:
        return _checked_comment(value)

    @field_validator("comment", "video_title", "video_description", "author", mode="before")
    @classmethod
    def _check_text(cls, value: object, info) -> object:
        return _encodable(value, info.field_name)

    @field_validator("video_id")
    @classmethod
    def _check_video_id(cls, value: str | None) -> str | None:
        return _video_id(value)

    def to_core(self) -> CommentInput:
        return CommentInput(self.comment, self.video_title, self.author, use_context=self.use_context, top_k=self.top_k,
                            video_id=self.video_id, video_description=self.video_description)


class RespondBatchRequest(RootModel[list[RespondRequest]]):
    """A JSON array of respond requests, answered in the same order: at most RESPONDER_QUEUE_SIZE
    (64) items (413 above, before any item is validated)."""


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(description=f"The text to find passages for (at most {MAX_COMMENT_CHARS} characters).")
    video_title: str | None = Field(None, max_length=500, description=(
        "Title of the video the comment is under: a comment that asks is searched with it."))
    video_id: str | None = Field(None, max_length=200, description=VIDEO_ID_HELP)
    video_description: str | None = Field(None, max_length=MAX_DESCRIPTION_CHARS, description=VIDEO_DESCRIPTION_HELP)
    top_k: int | None = Field(None, ge=1, le=20)

    @field_validator("comment", "video_title", "video_description", mode="before")
    @classmethod
    def _check_text(cls, value: object, info) -> object:
        return _encodable(value, info.field_name)

    @field_validator("video_id")
    @classmethod
    def _check_video_id(cls, value: str | None) -> str | None:
        return _video_id(value)

    @field_validator("comment")
    @classmethod
    def _check_comment(cls, value: str) -> str:
        return _checked_comment(value)


class Source(BaseModel):
    title: str
    section: str
    source: str = Field(description="The article's file, relative to the folder that was ingested.")
    url: str
    similarity: float
    cited: bool = Field(False, description="The reply's citation line names this passage's article.")

    @classmethod
    def of(cls, p: Passage, cited: bool = False) -> "Source":
        return cls(**source_record(p, cited))


class PassageOut(Source):
    text: str
    page: int | None = None

    @classmethod
    def of(cls, p: Passage) -> "PassageOut":
        return cls(**source_record(p), text=p.text)


class Timings(BaseModel):
    retrieve_ms: float
    generate_ms: float


class RespondResponse(BaseModel):
    reply: str
    sources: list[Source]
    used_context: bool
    model: str
    adapter: str | None
    timings: Timings
    intent: str | None = Field(None, description=(
        "What the comment is (question, request, thanks, criticism, spam, instructions, other), by "
        "triage; null only when the server has no classifier loaded and no exact rule decided."))
    confidence: float | None = Field(None, description="Triage's confidence in `intent`, 0 to 1.")
    needs_creator: bool = Field(False, description=(
        "The triage policy flags this comment for the creator: criticism, an order to the bot, or a "
        "question or request that no passage answers confidently; or its reply is `weak`."))
    screened: str | None = Field(None, description=(
        "Why no reply was generated, in fixed words that never quote the comment; null when one was."))
    citation: str | None = Field(None, description=(
        "The citation line the reply holds (composed by code from the cited article, never generated); "
        "null when nothing was cited."))
    weak: str | None = Field(None, description=(
        "Why the reply is still no answer after redrafting (a question answered with thanks, nothing "
        "from the comment or its passages, a reply given to another comment), in fixed words; such a "
        "reply needs the creator. Null when it is fine or redrafting is off."))

    @classmethod
    def of(cls, r: Reply, verdict: Triage | None = None, needs_creator: bool = False) -> "RespondResponse":
        return cls(reply=r.reply, sources=[Source.of(p, p is r.cited) for p in r.sources], used_context=r.used_context,
                   model=public_name(r.model), adapter=public_name(r.adapter) or None,
                   timings=Timings(retrieve_ms=r.timings.get("retrieve_ms", 0.0),
                                   generate_ms=r.timings.get("generate_ms", 0.0)),
                   intent=verdict.intent if verdict else None, confidence=verdict.confidence if verdict else None,
                   needs_creator=needs_creator or bool(r.weak), citation=r.citation or None, weak=r.weak)

    @classmethod
    def skipped(cls, model: str, adapter: str | None, verdict: Triage, reason: str,
                needs_creator: bool = False) -> "RespondResponse":
        """The answer to a comment the policy does not draft: no reply, no model call."""
        return cls(reply="", sources=[], used_context=False, model=public_name(model),
                   adapter=public_name(adapter) or None, timings=Timings(retrieve_ms=0.0, generate_ms=0.0),
                   intent=verdict.intent, confidence=verdict.confidence, needs_creator=needs_creator,
                   screened=reason)


RespondBatchResponse = RootModel[list[RespondResponse]]


class RetrieveResponse(BaseModel):
    passages: list[PassageOut]


class Health(BaseModel):
    """Open to anyone: names only; a loading error says where to look (the server log), not what."""

    status: Annotated[str, Field(description="'ok', or 'error' when loading the model failed")]
    ready: bool
    model: str
    adapter: str
    quantization: str
    backend: str
    knowledge_base: str
    queue_depth: int
    generating: bool
    error: str | None = None
