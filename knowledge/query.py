"""What retrieval searches with: the part of a comment that asks.

Real comments open with greetings and praise ("Hey Nadia!! love the channel"), point at the video
("at 4:12 you..."), link things, and ask two or three things at once. A mean-pooled embedding of the
whole comment is diluted by all of it, so search uses:
1. the comment without its greeting and praise sentences, timestamps, links, @mentions and emoji:
   the whole ask, its context sentences kept ("I use xgboost. Why does it overfit?" needs both);
2. when it asks several things, each asking sentence on its own as well, so the second question is
   not drowned by the first (the store merges: a passage counts with its best query).
Pure text in, queries out; nothing here loads a model.
"""

from __future__ import annotations

import re

from knowledge.triage import asks

# Questions searched one by one, at most: real comments ask two or three things; a wall of questions
# must not cost a hundred embeddings.
MAX_QUESTIONS = 4
_TIMESTAMP = re.compile(r"\b(?:at\s+|around\s+|@)?\d{1,2}:\d{2}(?::\d{2})?\b", re.IGNORECASE)
_LINK = re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@[\w.-]+")
# Anything that is not a letter, digit, blank or the punctuation a question is read with.
_SYMBOLS = re.compile(r"[^\w\s.,;:!?'\"()\[\]{}<>=+\-*/%#&|^~`$\\]", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# A greeting with the creator's name after it ("Hey Nadia", "hi sam,").
_GREETING = re.compile(r"^\s*(?:hey|hi|hello|hiya|yo|dear|greetings|good (?:morning|evening|day))\b[\s,!]*"
                       r"(?:there|guys|all|everyone|man|bro|sir|ma'?am|(?-i:[A-Z][\w'-]*))?[\s,!.]*", re.IGNORECASE)
# Words a praise or greeting sentence is made of; a sentence that does not ask and keeps at most
# two other words once these are gone carries nothing to search for.
_FILLER = frozenset("""
a an the and or but so just really very super so much many too also as always ever again all
i im i'm me my we our you your you're youre u ur it its it's this that these those here there
is are was were be been being am do does did have has had will would can could
of to for in on at by with from about like lol lmao haha omg wow tho though btw pls plz
hey hi hello yo dear thanks thank thx ty cheers much lot lots great good nice cool awesome amazing
love loved loving best excellent brilliant perfect helpful useful clear clearly well done
keep up work job content video videos vid vids channel tutorial tutorials series explanation
explanations explained explaining stuff man bro sir guys everyone please subscribed subscribe
sub new first time comment commenting watching watched binging binge fan big huge gem gold
underrated legend quality top notch fantastic wonderful incredible beautiful simple easy calm
as always one again appreciate appreciated appreciation learned learning learnt much thanks
""".split())


def clean(comment: str) -> str:
    """The comment without timestamps, links, @mentions and emoji, blanks collapsed."""
    text = _LINK.sub(" ", comment)
    text = _TIMESTAMP.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = _SYMBOLS.sub(" ", text)
    return "\n".join(" ".join(line.split()) for line in text.splitlines() if line.strip())


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s and s.strip()]


def content_words(sentence: str) -> list[str]:
    """The words of `sentence` other than its greeting and the words praise is made of."""
    rest = _GREETING.sub(" ", sentence)
    return [w for w in re.findall(r"[^\W_]+(?:'[^\W_]+)?", rest.lower()) if w not in _FILLER]


def is_filler(sentence: str) -> bool:
    """A sentence that greets or praises and asks nothing: "Hey Nadia!!", "great vid.", "This is gold."."""
    return not asks(sentence) and len(content_words(sentence)) <= 2


def search_queries(comment: str) -> list[str]:
    """The texts to search for `comment`: the ask first (greeting and praise sentences dropped), then
    each asking sentence alone when there are two or more. The comment itself when nothing is left."""
    parts = [s for s in sentences(clean(comment)) if s]
    kept = [s for s in parts if not is_filler(s)]
    if not kept:
        return [comment.strip()]
    queries = [" ".join(kept)]
    # "1000? 10000? does it matter" is one question: a sub-query needs words of its own to search with.
    asking = [s for s in kept if asks(s) and len(content_words(s)) >= 3]
    if len(asking) > 1:
        queries.extend([s for s in asking if s not in queries][:MAX_QUESTIONS])
    return queries
