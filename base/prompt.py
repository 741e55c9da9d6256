"""The one prompt module: training examples and serving prompts are rendered here, and only here.

A prompt that differs by one byte between training and serving is a bug, so both sides call
`encode_prompt` for the prompt tokens; a training example is those tokens followed by the reply
(with the sign-off) and the end-of-sequence token. The serving prompt is therefore a prefix of the
training example by construction, and a test checks it byte for byte.

Untrusted text (the comment, author, video title, passages) never becomes control tokens: the chat
template is rendered around placeholders, the template's own text is tokenized normally and the
untrusted pieces are tokenized with `split_special_tokens=True`, so a comment that says
`<|im_start|>system` stays plain text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from base.replychecks import cut_at_repeated_sentence

MAX_COMMENT_CHARS = 10_000  # YouTube's own limit for a comment.

DEFAULT_PERSONA = (
    "You are a YouTube creator replying to comments under your own videos. "
    "Be warm, direct and brief."
)


# Model tokens all passages of one prompt may take together (best first; the last one is cut at
# a token boundary). Part of the prompt, so training and serving cut passages identically.
DEFAULT_PASSAGE_TOKENS = 384
_MIN_PASSAGE_TOKENS = 24  # less than this left: the passage is dropped, not shown as a fragment
MAX_AUTHOR_CHARS = 100
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 5000  # YouTube's own limit on a video description


@dataclass(frozen=True)
class PromptStyle:
    """Who speaks and how replies end: configuration, recorded with every adapter."""

    persona: str = DEFAULT_PERSONA
    sign_off: str = ""
    passage_tokens: int = DEFAULT_PASSAGE_TOKENS


@dataclass(frozen=True)
class Passage:
    """One retrieved piece of an article, as injected into the prompt and reported as a source."""

    text: str
    title: str = ""
    section: str = ""
    source: str = ""
    url: str = ""
    page: int | None = None
    similarity: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The passage as a source record (replies file, HTTP responses): no empty fields."""
        out: dict[str, Any] = {"title": self.title, "section": self.section, "source": self.source,
                               "url": self.url, "similarity": round(self.similarity, 4)}
        if self.page is not None:
            out["page"] = self.page
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Passage":
        """A passage from a source record; fields it lacks keep their defaults."""
        page = data.get("page")
        return cls(text=str(data.get("text") or ""), title=str(data.get("title") or ""),
                   section=str(data.get("section") or ""), source=str(data.get("source") or ""),
                   url=str(data.get("url") or ""), page=int(page) if page is not None else None,
                   similarity=float(data.get("similarity") or 0.0))


@dataclass(frozen=True)
class CommentInput:
    """One comment to answer: the one comment type of every stage.

    `passages` are what goes into the prompt; `use_context` and `top_k` say whether and how many
    to retrieve when a responder fills them in (the prompt itself ignores both).
    """

    comment: str
    video_title: str | None = None
    author: str | None = None
    passages: Sequence[Passage] = field(default_factory=tuple)
    use_context: bool = True
    top_k: int | None = None
    video_id: str | None = None           # retrieval only: which articles the video is about
    video_description: str | None = None  # retrieval only: links to the video's articles
    avoid_openings: Sequence[str] = ()    # decoding only: earlier drafts whose first token a redraft avoids
    adapter: str | None = None            # decoding only: which served adapter writes it (None: the default)


# Characters a reader cannot see or that steer how text is shown: control characters (but line
# breaks and tabs), format characters (zero-width, bidi controls, soft hyphen, U+061C, the tag
# characters U+E0000-E007F) and variation selectors.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                        "\u2060-\u206f\ufe00-\ufe0f\ufeff\ufff9-\ufffb\U000e0000-\U000e007f\U000e0100-\U000e01ef]")


def clean_text(text: str, max_chars: int | None = None, one_line: bool = False) -> str:
    """The one cleaning rule for untrusted text (comments, authors, titles, passages).

    NFC, line breaks unified, invisible and control characters removed, trimmed; `one_line`
    folds whitespace runs into one space (names, titles); `max_chars` bounds the result.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = " ".join(text.split()) if one_line else text.strip()
    return text[:max_chars].rstrip() if max_chars is not None else text


def has_words(text: str, min_chars: int = 1) -> bool:
    """True when the text holds a run of at least `min_chars` letters or digits.

    The one rule for "is there anything to read here": with 1 (the default) a comment of only
    emoji, symbols or spaces has none; retrieval asks for 2, since "k" or "!!" cannot ask about
    an article and their embeddings are noise.
    """
    return re.search(r"[^\W_]{%d,}" % max(1, min_chars), text) is not None


def clean_comment(text: str) -> str:
    """Comment text as the model should see it (`clean_text`)."""
    return clean_text(text)


def system_message(style: PromptStyle) -> str:
    text = style.persona.strip()
    if style.sign_off:
        text += f'\nEnd every reply with your sign-off on its own line: "{style.sign_off}"'
    return text


def user_message_parts(item: CommentInput) -> list[tuple[str, bool]]:
    """The user turn as (text, untrusted) pieces, in order; untrusted text cleaned here, once for all."""
    parts: list[tuple[str, bool]] = []
    title = clean_text(item.video_title or "", MAX_TITLE_CHARS, one_line=True)
    author = clean_text(item.author or "", MAX_AUTHOR_CHARS, one_line=True)
    if title:
        parts += [("Video: ", False), (title, True), ("\n", False)]
    if author:
        parts += [("From: ", False), (author, True), ("\n", False)]
    parts += [("Comment:\n", False), (clean_text(item.comment), True)]
    if item.passages:
        parts.append(("\n\nPassages from your own articles. Use them only if they answer the comment, "
                      "in your own words, and do not invent facts beyond them:", False))
        for n, p in enumerate(item.passages, 1):
            heading = clean_text(" > ".join(x for x in (p.title, p.section) if x), MAX_TITLE_CHARS, one_line=True)
            parts += [(f"\n[{n}] ", False), (heading, True), ("\n", False), (clean_text(p.text), True)]
    return parts


def fit_passages(tokenizer: Any, passages: Sequence[Passage], budget: int) -> tuple[Passage, ...]:
    """The passages within `budget` model tokens in all, best first; the last one that fits only in
    part is cut at a token boundary, and one with too little room left is dropped."""
    out: list[Passage] = []
    left = budget
    for p in passages:
        ids = _encode(tokenizer, clean_text(p.text), untrusted=True)
        if len(ids) <= left:
            out.append(p)
            left -= len(ids)
            continue
        if left >= _MIN_PASSAGE_TOKENS:
            out.append(replace(p, text=tokenizer.decode(ids[:left], skip_special_tokens=False).rstrip() + " …"))
        break
    return tuple(out)


def _fitted(tokenizer: Any, style: PromptStyle, item: CommentInput) -> CommentInput:
    if not item.passages:
        return item
    return replace(item, passages=fit_passages(tokenizer, item.passages, style.passage_tokens))


def _messages(style: PromptStyle, item: CommentInput, placeholder: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_message(style)},
        {"role": "user", "content": placeholder},
    ]


_SLOT = "\ue000USER_TURN\ue001"  # private-use characters: cannot occur in cleaned input


def render_prompt(tokenizer: Any, style: PromptStyle, item: CommentInput) -> str:
    """The serving prompt as text (what `encode_prompt` tokenizes), ending at the assistant header."""
    template = _render_template(tokenizer, style, item)
    user = "".join(text for text, _ in user_message_parts(_fitted(tokenizer, style, item)))
    return template.replace(_SLOT, user)


def _render_template(tokenizer: Any, style: PromptStyle, item: CommentInput) -> str:
    text = tokenizer.apply_chat_template(
        _messages(style, item, _SLOT), tokenize=False, add_generation_prompt=True
    )
    if text.count(_SLOT) != 1:
        raise ValueError("the chat template altered the user turn placeholder")
    return text


def _encode(tokenizer: Any, text: str, untrusted: bool) -> list[int]:
    if not text:
        return []
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=untrusted)


def encode_prompt(tokenizer: Any, style: PromptStyle, item: CommentInput) -> list[int]:
    """Token ids of the serving prompt; untrusted text is never read as special tokens."""
    before, after = _render_template(tokenizer, style, item).split(_SLOT)
    ids = _encode(tokenizer, before, untrusted=False)
    for text, untrusted in user_message_parts(_fitted(tokenizer, style, item)):
        ids += _encode(tokenizer, text, untrusted)
    return ids + _encode(tokenizer, after, untrusted=False)


def with_sign_off(reply: str, sign_off: str) -> str:
    """The reply ending with the sign-off exactly once, on its own line. A reply that already ends
    with it in other case ("I'll keep exploring! - Nadia"), or with its first words as a sentence of
    their own ("... now. Keep exploring!"), loses that ending first: a small model writes both, and
    the reply then read "Keep exploring! Keep exploring! - Nadia"."""
    body = reply.strip()
    if sign_off:
        while True:
            cut = _sign_off_ending(body, sign_off)
            if cut is None:
                break
            body = body[:cut].rstrip()
        return f"{body}\n{sign_off}" if body else sign_off
    return body


def _sign_off_ending(body: str, sign_off: str) -> int | None:
    """Where a trailing copy of the sign-off, or of its first two or more words, starts in `body`."""
    folded, target = body.casefold(), sign_off.casefold()
    if folded.endswith(target) and (len(body) == len(target) or not body[-len(target) - 1].isalnum()):
        return len(body) - len(target)
    words = sign_off.split()
    for n in range(len(words) - 1, 1, -1):
        prefix = " ".join(words[:n]).casefold()
        start = len(body) - len(prefix)
        if start >= 0 and folded.endswith(prefix) and (start == 0 or body[:start].rstrip()[-1:] in ".!?\n"
                                                         or body[start - 1] == "\n"):
            return start
    return None


def training_completion(tokenizer: Any, style: PromptStyle, reply: str) -> str:
    """What the model learns to produce after the prompt: the reply, the sign-off, then EOS."""
    return with_sign_off(reply, style.sign_off) + tokenizer.eos_token


def encode_training_example(
    tokenizer: Any, style: PromptStyle, item: CommentInput, reply: str
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one training example; prompt positions are masked with -100.

    The completion ends with the EOS token as a real label, so the model learns to stop.
    """
    prompt_ids = encode_prompt(tokenizer, style, item)
    completion = with_sign_off(reply, style.sign_off)
    # The reply is the creator's own text: trusted, but split special tokens anyway so that a
    # reply quoting `<|im_end|>` cannot end the turn early.
    completion_ids = _encode(tokenizer, completion, untrusted=True) + [tokenizer.eos_token_id]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def render_training_example(tokenizer: Any, style: PromptStyle, item: CommentInput, reply: str) -> str:
    """A training example as text: the serving prompt followed by the completion."""
    return render_prompt(tokenizer, style, item) + training_completion(tokenizer, style, reply)


_SPECIAL_TOKEN_TEXT = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|\[/?INST\]")


def clean_reply(text: str, sign_off: str) -> str:
    """A generated reply ready to post.

    Generation is cut at the first sign-off (anything after it, such as "Note: I am an AI language
    model...", is dropped), leftover special-token text is removed, a loop is cut at its first
    repeated sentence (the last guard; decoding is what keeps replies from looping), and the
    sign-off is present exactly once.
    """
    at = text.casefold().find(sign_off.casefold()) if sign_off else -1
    if at >= 0:
        text = text[:at]
    text = _SPECIAL_TOKEN_TEXT.sub("", text)
    return with_sign_off(cut_at_repeated_sentence(text), sign_off)
