"""The responder: retrieve passages for a comment, build the prompt, generate, clean the reply.

Built from collaborators (a retriever and a generator) so that the HTTP service, the batch command
and the tests all call the same object with whatever parts they need.

Every prompt fits the model: the comment is at most `max_comment_tokens` model tokens (after the
prompt module's cleaning, so what is counted is what the model reads), and when the prompt plus
the reply budget would overflow the model's context window, the passages are cut to a smaller
token budget, or dropped. A comment that cannot be answered fails alone (`CommentFailed`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import PurePath, PureWindowsPath
from typing import Any, Callable, Protocol, Sequence

from base.citation import cite
from base.errors import UserError
from base.redraft import Drafter
from base.prompt import (
    MAX_AUTHOR_CHARS,
    MAX_COMMENT_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    CommentInput,
    Passage,
    PromptStyle,
    clean_comment,
    clean_reply,
    clean_text,
    encode_prompt,
    fit_passages,
    system_message,
)
from base.video import Video
from knowledge.config import CONFIDENT_SIMILARITY
from knowledge.triage import asks

DEFAULT_MAX_COMMENT_TOKENS = 3072  # as Settings.max_comment_tokens
# A passage longer than this many characters per token of the passage budget can never fit it:
# cut before tokenizing, so a huge stored chunk (an old store) costs nothing per prompt.
_CHARS_PER_TOKEN_BOUND = 32
_MIN_PASSAGE_BUDGET = 24


class Retriever(Protocol):
    """A knowledge base: passages for a text, above its own configured threshold (the video, its
    title and its articles, helps find what a comment that asks is about)."""

    def search(self, text: str, top_k: int = 3, video: Video | None = None) -> list[Passage]: ...


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
    cited: Passage | None = None  # the passage whose article the citation line names (base.citation)
    citation: str = ""  # that line, as it stands in `reply` ("" when nothing was cited)
    weak: str | None = None  # why the draft kept is still no answer after redrafting (base.redraft)


class CommentFailed(Exception):
    """One comment could not be answered; `reason` becomes `failed:<reason>` in the output."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


def source_record(p: Passage, cited: bool = False) -> dict[str, Any]:
    """A passage as a source in a reply (HTTP responses, the replies file): never an absolute path.
    A store ingested before sources were relative to the ingested folder holds absolute ones: those
    are cut to the file's name. `cited`: the reply's citation line names this passage's article."""
    record = p.to_dict()
    if cited:
        record["cited"] = True
    if PurePath(record["source"]).is_absolute() or PureWindowsPath(record["source"]).drive:
        record["source"] = PurePath(record["source"].replace("\\", "/")).name
    return record


def unencodable(text: str) -> str | None:
    """Why `text` cannot be encoded as UTF-8 (a lone surrogate), or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains a lone surrogate (U+{ord(text[exc.start]):04X} at character {exc.start}), "
                "which is not text; send valid UTF-8")
    return None


def validate_comment(text: str) -> str:
    """The cleaned comment, or a `UserError` saying what is wrong with it."""
    if len(text) > MAX_COMMENT_CHARS:
        raise UserError(f"comment is {len(text)} characters; YouTube's limit is {MAX_COMMENT_CHARS}")
    problem = unencodable(text)
    if problem:
        raise UserError(f"comment {problem}")
    cleaned = clean_comment(text)
    if not cleaned:
        raise UserError("comment is empty; send the comment's text")
    return cleaned


def context_window(generator: Any) -> int | None:
    """The model's context in tokens (the smaller of its config's and its tokenizer's), if known."""
    config = getattr(getattr(generator, "model", None), "config", None)
    tokenizer = getattr(generator, "tokenizer", None)
    known = [v for v in (getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None))
             if isinstance(v, int) and 0 < v < 10_000_000]  # tokenizers say 1e30 when they do not know
    return min(known) if known else None


class Responder:
    def __init__(self, generator: Generator, style: PromptStyle, retriever: Retriever | None = None,
                 top_k: int = 3, citation: str = "", confident: float = CONFIDENT_SIMILARITY,
                 max_comment_tokens: int = DEFAULT_MAX_COMMENT_TOKENS,
                 classify: Callable[[list[str]], list[str | None]] | None = None, redrafts: int = 0) -> None:
        self.generator = generator
        self.style = style
        self.retriever = retriever
        self.top_k = top_k
        self.citation, self.confident = citation, confident  # off when the template is empty
        self.max_comment_tokens = max_comment_tokens
        self.tokenizer = getattr(generator, "tokenizer", None)  # None: a generator that counts nothing
        self.context = context_window(generator)
        # Weak drafts to questions are decoded again (base.redraft) by a generator that can open differently.
        self.drafter = Drafter(lambda items: generator.generate(items, style), classify,
                               redrafts if getattr(generator, "avoids_openings", False) else 0,
                               style.persona, style.sign_off)

    # --- checks ---------------------------------------------------------------------------------
    def too_long(self, comment: str) -> str | None:
        """Why the (cleaned) comment is too long for this model, or None. Short comments are never
        tokenized: a byte-level tokenizer makes at most one token per UTF-8 byte (one more for a
        SentencePiece prefix)."""
        if self.tokenizer is None or len(comment.encode("utf-8")) < self.max_comment_tokens:
            return None
        tokens = len(self.tokenizer.encode(comment, add_special_tokens=False, split_special_tokens=True))
        if tokens <= self.max_comment_tokens:
            return None
        return (f"comment is {tokens} model tokens; this server takes at most {self.max_comment_tokens} "
                "(RESPONDER_MAX_COMMENT_TOKENS)")

    def check(self, request: CommentInput) -> CommentInput:
        """The request with its comment cleaned, or `CommentFailed` naming the problem."""
        try:
            comment = validate_comment(request.comment)
        except UserError as exc:
            raise CommentFailed("invalid-comment", str(exc)) from None
        for name, value in (("author", request.author), ("video_title", request.video_title),
                            ("video_description", request.video_description)):
            problem = unencodable(value or "")
            if problem:
                raise CommentFailed("invalid-comment", f"{name} {problem}")
        problem = self.too_long(comment)
        if problem:
            raise CommentFailed("too-long", problem)
        return replace(request, comment=comment)

    # --- retrieval ------------------------------------------------------------------------------
    def retrieve(self, request: CommentInput) -> list[Passage]:
        return self._passages(validate_comment(request.comment), request)

    def _passages(self, comment: str, request: CommentInput) -> list[Passage]:
        """Passages for an already validated comment; none when context is off or there is no store."""
        if not request.use_context or self.retriever is None:
            return []
        video = Video.of(request.video_id, clean_text(request.video_title or "", MAX_TITLE_CHARS, one_line=True),
                         clean_text(request.video_description or "", MAX_DESCRIPTION_CHARS))
        found = self.retriever.search(comment, top_k=request.top_k or self.top_k, video=video)
        limit = self.style.passage_tokens * _CHARS_PER_TOKEN_BOUND
        return [p if len(p.text) <= limit else replace(p, text=p.text[:limit]) for p in found]

    # --- the prompt fits the model --------------------------------------------------------------
    def fit_context(self, item: CommentInput) -> CommentInput:
        """`item` with passages cut or dropped so that its prompt plus the reply fits the context."""
        if self.context is None or self.tokenizer is None:
            return item
        room = self.context - int(getattr(self.generator, "max_new_tokens", 0) or 0)
        if self._upper_bound(item) <= room:
            return item  # nothing to count: even one token per byte fits
        length = len(encode_prompt(self.tokenizer, self.style, item))
        if length > room and item.passages:
            budget = self.style.passage_tokens - (length - room)
            fitted = fit_passages(self.tokenizer, item.passages, budget) if budget >= _MIN_PASSAGE_BUDGET else ()
            item = replace(item, passages=fitted)
            length = len(encode_prompt(self.tokenizer, self.style, item))
            if length > room and item.passages:
                item = replace(item, passages=())
                length = len(encode_prompt(self.tokenizer, self.style, item))
        if length > room:
            raise CommentFailed("too-long", f"the prompt is {length} tokens; with a {self.context - room}-token "
                                            f"reply it does not fit the model's {self.context}-token context")
        return item

    def _upper_bound(self, item: CommentInput) -> int:
        """More tokens than the prompt can have (at most one per byte of text, plus the template)."""
        texts = [system_message(self.style), clean_text(item.comment),
                 clean_text(item.video_title or "", MAX_TITLE_CHARS, one_line=True),
                 clean_text(item.author or "", MAX_AUTHOR_CHARS, one_line=True)]
        headings = sum(len(" > ".join((p.title, p.section)).encode("utf-8")) + 32 for p in item.passages)
        passages = self.style.passage_tokens if item.passages else 0
        return sum(len(t.encode("utf-8")) for t in texts) + headings + passages + 256

    # --- answering ------------------------------------------------------------------------------
    def respond(self, request: CommentInput) -> Reply:
        return self.respond_many([request])[0]

    def respond_many(self, requests: Sequence[CommentInput]) -> list[Reply]:
        """Replies for several comments; generation runs as one batch.

        A comment that cannot be answered (too long, unencodable) raises `CommentFailed`; callers
        answering many comments retry them one by one to fail that one alone."""
        start = time.perf_counter()
        items = [self.prepare(request) for request in requests]
        retrieved = time.perf_counter()
        raw = self.drafter.draft(items)
        done = time.perf_counter()
        timings = {"retrieve_ms": round((retrieved - start) * 1000, 1),
                   "generate_ms": round((done - retrieved) * 1000, 1)}
        return [self.reply(item, text, timings, verdict.reason)
                for item, text, verdict in zip(items, raw, self.drafter.last_verdicts)]

    def prepare(self, request: CommentInput) -> CommentInput:
        """The comment checked and cleaned, with its passages, fitted to the model's context: what
        the generator gets (a continuous batch prepares each comment as it joins)."""
        checked = self.check(request)
        item = replace(checked, passages=tuple(self._passages(checked.comment, checked)))
        return self.fit_context(item)

    def reply(self, item: CommentInput, raw: str, timings: dict[str, float], weak: str | None = None) -> Reply:
        """The cleaned reply to a prepared comment, from the generator's raw completion (`weak`: why
        the redrafts could not make it an answer, if so)."""
        # Only a comment that asks is pointed to the article: "best PCA video ever" gets thanks, not a link.
        cited = cite(clean_reply(raw, self.style.sign_off), item.passages if asks(item.comment) else (),
                     self.citation, self.confident, self.style.sign_off)
        return Reply(cited.reply, list(item.passages), bool(item.passages), self.generator.model_name,
                     self.generator.adapter_name, dict(timings), cited.passage, cited.line, weak)
