"""Request and response models of the HTTP API (`responder.service`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator
from pydantic_core import PydanticCustomError

from base.errors import UserError
from base.prompt import MAX_COMMENT_CHARS, CommentInput, Passage
from responder.responder import Reply, validate_comment


def _checked_comment(value: str) -> str:
    try:
        return validate_comment(value)
    except UserError as exc:  # the message as is, without pydantic's "Value error, " prefix
        raise PydanticCustomError("comment", str(exc)) from None


class RespondRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"comment": "how big does my A/B test need to be to spot a 1 point lift?",
         "video_title": "A/B testing without tears", "author": "@sam", "use_context": True, "top_k": 3}]})

    comment: str = Field(description=f"The comment's text (at most {MAX_COMMENT_CHARS} characters; "
                                     "control characters are stripped).")
    video_title: str | None = Field(None, max_length=500)
    author: str | None = Field(None, max_length=200)
    use_context: bool = Field(True, description="Retrieve passages from the creator's articles.")
    top_k: int | None = Field(None, ge=1, le=20, description="Passages to retrieve (default: server's).")

    @field_validator("comment")
    @classmethod
    def _check_comment(cls, value: str) -> str:
        return _checked_comment(value)

    def to_core(self) -> CommentInput:
        return CommentInput(self.comment, self.video_title, self.author, use_context=self.use_context, top_k=self.top_k)


class RespondBatchRequest(RootModel[list[RespondRequest]]):
    """A JSON array of respond requests; answered in the same order."""


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str = Field(description="The text to find passages for.")
    top_k: int | None = Field(None, ge=1, le=20)

    @field_validator("comment")
    @classmethod
    def _check_comment(cls, value: str) -> str:
        return _checked_comment(value)


class Source(BaseModel):
    title: str
    section: str
    source: str
    url: str
    similarity: float

    @classmethod
    def of(cls, p: Passage) -> "Source":
        return cls(**p.to_dict())


class PassageOut(Source):
    text: str
    page: int | None = None

    @classmethod
    def of(cls, p: Passage) -> "PassageOut":
        return cls(**p.to_dict(), text=p.text)


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

    @classmethod
    def of(cls, r: Reply) -> "RespondResponse":
        return cls(reply=r.reply, sources=[Source.of(p) for p in r.sources], used_context=r.used_context,
                   model=r.model, adapter=r.adapter,
                   timings=Timings(retrieve_ms=r.timings.get("retrieve_ms", 0.0),
                                   generate_ms=r.timings.get("generate_ms", 0.0)))


RespondBatchResponse = RootModel[list[RespondResponse]]


class RetrieveResponse(BaseModel):
    passages: list[PassageOut]


class Health(BaseModel):
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
