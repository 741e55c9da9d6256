"""The responder: retrieve passages for a comment, build the prompt, generate, clean the reply.

Built from collaborators (a retriever and a generator) so that the HTTP service, the batch command
and the tests all call the same object with whatever parts they need.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Protocol, Sequence

from base.errors import UserError
from base.prompt import MAX_COMMENT_CHARS, CommentInput, Passage, PromptStyle, clean_comment, clean_reply


class Retriever(Protocol):
    def search(self, text: str, top_k: int = 3, min_similarity: float | None = None) -> list[Passage]: ...


class Generator(Protocol):
    """Turns prompts into raw completions; one call is one batch."""

    model_name: str
    adapter_name: str | None

    def generate(self, items: Sequence[CommentInput], style: PromptStyle) -> list[str]: ...


@dataclass
class Reply:
    reply: str
    sources: list[Passage]
    used_context: bool
    model: str
    adapter: str | None
    timings: dict[str, float] = field(default_factory=dict)


def validate_comment(text: str) -> str:
    """The cleaned comment, or a `UserError` saying what is wrong with it."""
    if len(text) > MAX_COMMENT_CHARS:
        raise UserError(f"comment is {len(text)} characters; YouTube's limit is {MAX_COMMENT_CHARS}")
    cleaned = clean_comment(text)
    if not cleaned:
        raise UserError("comment is empty; send the comment's text")
    return cleaned


class Responder:
    def __init__(self, generator: Generator, style: PromptStyle, retriever: Retriever | None = None,
                 top_k: int = 3, min_similarity: float | None = None) -> None:
        self.generator = generator
        self.style = style
        self.retriever = retriever
        self.top_k = top_k
        self.min_similarity = min_similarity

    def retrieve(self, request: CommentInput) -> list[Passage]:
        return self._passages(validate_comment(request.comment), request)

    def _passages(self, comment: str, request: CommentInput) -> list[Passage]:
        """Passages for an already validated comment; none when context is off or there is no store."""
        if not request.use_context or self.retriever is None:
            return []
        return self.retriever.search(comment, top_k=request.top_k or self.top_k,
                                     min_similarity=self.min_similarity)

    def respond(self, request: CommentInput) -> Reply:
        return self.respond_many([request])[0]

    def respond_many(self, requests: Sequence[CommentInput]) -> list[Reply]:
        """Replies for several comments; generation runs as one batch."""
        start = time.perf_counter()
        items = []
        for request in requests:
            comment = validate_comment(request.comment)
            items.append(replace(request, comment=comment, passages=tuple(self._passages(comment, request))))
        retrieved = time.perf_counter()
        raw = self.generator.generate(items, self.style) if items else []
        done = time.perf_counter()
        timings = {"retrieve_ms": round((retrieved - start) * 1000, 1),
                   "generate_ms": round((done - retrieved) * 1000, 1)}
        return [
            Reply(clean_reply(text, self.style.sign_off), list(item.passages), bool(item.passages),
                  self.generator.model_name, self.generator.adapter_name, dict(timings))
            for item, text in zip(items, raw)
        ]


class CommentFailed(Exception):
    """One comment could not be answered; `reason` becomes `failed:<reason>` in the output."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
