"""The reply figures: does a set of generated replies answer, or hand out stock phrases?

The reply checks (`base.replychecks`) judge one reply at a time: a loop, an echo, an empty reply,
an invented link. A fine-tuned small model fails in a way none of them sees: it gives the same
polite sentence ("Thanks for the question! I hope this helps.") to many comments, questions
included. The figures here look across replies and at what a reply shares with its comment and
passages. Pure text (and intents someone else computed) in, 0-1 shares out; nothing loads a model.

Each figure is computed on the generated text before any citation is added (a citation composed
by code must not make a stock reply look grounded), with the sign-off removed. A figure whose
denominator is empty (no question with passages, say) is None, not 0 or 1.

Definitions (README, "Reply quality"):
- distinct_rate: distinct replies (case, spacing and punctuation ignored) among the replies to
  different comments (a comment that occurs twice counts once);
- stock_rate: replies that are stock, i.e. the same reply was given to three or more different
  comments, or (for a comment that asks: intent question or request) it shares no content word
  with its comment and the comment's passages. A reply to thanks shares no word with "great
  video!" by nature, so the second rule only judges replies to comments that ask;
- misfit_rate: among replies to comments triaged question or request, the share whose own text
  the triage classifier labels thanks;
- grounded_rate: among replies to questions that had passages in their prompt, the share that
  carry at least two content words of the passages found in neither the comment nor the persona;
- cited_rate: among replies with a confident passage, the share that carry the citation.

Content words (one definition, `content_words`): the words of `base.replychecks.words`, lower
case, without the stop words below (function words, and the conversational words every reply
and comment uses: thanks, great, video, question, hope, help...), numbers kept, words of one
letter dropped, each reduced to its Snowball (Porter2) English stem, so "passages" and
"passage" match.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

import snowballstemmer

from base.replychecks import without_sign_off, words

ASKING = frozenset({"question", "request"})
STOCK_REPEATS = 3  # the same reply to this many different comments or more is a stock phrase
GROUNDED_WORDS = 2  # passage words (in neither comment nor persona) a grounded reply carries
# A grounded reply answers its question when it also shares a content word with the question, or
# takes this many passage words (an answer in the article's own terms, "fix the learning rate and let
# early stopping pick n_estimators", need not repeat the question's). Two passage words alone pass
# phrases any article holds: "That's a good rule of thumb." to a bootstrap question, "That's the order
# I've settled on." to an xgboost one (the demo adapter's replies, session 12).
ANSWER_PASSAGE_WORDS = 4

# Function words (pronouns, articles, auxiliaries, prepositions, conjunctions, common adverbs).
_FUNCTION_WORDS = """
a about above after again against all almost also although always am among an and another any
anyone anything are aren't around as at be because been before being below between both but by
can can't cannot could couldn't did didn't do does doesn't doing don't done down during each
either else enough even ever every few first for from further get gets getting got had hadn't has
hasn't have haven't having he he's her here here's hers herself him himself his how how's i i'd
i'll i'm i've if in into is isn't it it's its itself just least less let let's like many may me
might mine more most much must mustn't my myself neither never no nor not now of off often on
once one only onto or other others otherwise our ours ourselves out over own per perhaps quite
rather really same shall shan't she she'd she'll she's should shouldn't since so some something
still such than that that's the their theirs them themselves then there there's these they
they'd they'll they're they've thing things this those though through thus to too toward
towards under until up upon us very via was wasn't we we'd we'll we're we've were weren't what
what's when when's where where's whether which while who who's whom whose why why's will with
within without won't would wouldn't yes yet you you'd you'll you're you've your yours yourself
yourselves
""".split()
# What every comment and reply says whatever the topic: greetings, thanks, praise, filler.
_CONVERSATIONAL = """
hi hello hey dear thanks thank thx ty cheers welcome please sorry great good nice awesome
amazing cool love loved lovely glad happy kind wonderful excellent best brilliant fantastic
perfect super wow lol haha ha oh ok okay sure yeah yep well video videos channel content
tutorial explanation explain explained question questions ask asked asking answer hope hoping
helps help helped helpful useful comment comments feedback idea ideas know think guess want
make made see look lot lots bit way keep post
""".split()
STOP_WORDS = frozenset(w.replace("’", "'") for w in _FUNCTION_WORDS + _CONVERSATIONAL)


_STEMMER = snowballstemmer.stemmer("english")
# Stems of the stop words too, so "helping" and "questions" are stop words like "help".
_STOP_STEMS = frozenset(_STEMMER.stemWord(w) for w in STOP_WORDS)


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball (Porter2) English stem of a lower-case word; numbers stay as they are."""
    return word if word.isdigit() else _STEMMER.stemWord(word)


def content_words(text: str) -> set[str]:
    """The stems of the text's content words (see the module docstring)."""
    out = set()
    for w in words(text):
        if w in STOP_WORDS or (len(w) < 2 and not w.isdigit()):
            continue
        s = stem(w)
        if s not in _STOP_STEMS:
            out.add(s)
    return out


def reply_key(reply: str, sign_off: str = "") -> str:
    """The reply as compared for sameness: sign-off removed, lower case, words only."""
    return " ".join(words(without_sign_off(reply, sign_off)))


def comment_key(comment: str) -> str:
    return " ".join(words(comment))


# --- per-reply predicates (the review page's screening uses these) ------------------------------


def repeat_counts(replies: Sequence[str], comments: Sequence[str], sign_off: str = "") -> list[int]:
    """For each reply, how many different comments got the same reply (itself included)."""
    by_reply: dict[str, set[str]] = {}
    keys = [reply_key(r, sign_off) for r in replies]
    for key, comment in zip(keys, comments):
        if key:
            by_reply.setdefault(key, set()).add(comment_key(comment))
    return [len(by_reply.get(key, ())) for key in keys]


def shared_content_words(reply: str, comment: str, passages: Iterable[str] = (), sign_off: str = "") -> set[str]:
    """The content words the reply shares with its comment and passages."""
    known = content_words(comment)
    for passage in passages:
        known |= content_words(passage)
    return content_words(without_sign_off(reply, sign_off)) & known


def stock_reason(reply: str, comment: str, passages: Iterable[str] = (), *, repeats: int = 1,
                 asks: bool = True, sign_off: str = "") -> str | None:
    """Why the reply is stock, in words for a reviewer, or None when it is not.

    `repeats`: how many different comments got this same reply (`repeat_counts`); `asks`: the
    comment asks something (triage question or request), so a reply should share a word with it.
    """
    if not reply_key(reply, sign_off):
        return None  # empty: the empty check says so
    if repeats >= STOCK_REPEATS:
        return f"stock: the same reply went to {repeats} different comments"
    if asks and not shared_content_words(reply, comment, passages, sign_off):
        return "stock: shares no content word with the comment or its passages"
    return None


def misfit_reason(comment_intent: str | None, reply_intent: str | None) -> str | None:
    """Why the reply does not fit the comment, in words, or None: a question answered with thanks."""
    if comment_intent in ASKING and reply_intent == "thanks":
        return f"misfit: the comment is a {comment_intent}, the reply only thanks"
    return None


def grounding_words(reply: str, comment: str, passages: Iterable[str], persona: str = "",
                    sign_off: str = "") -> set[str]:
    """Content words the reply took from the passages: in a passage, in neither comment nor persona."""
    from_passages: set[str] = set()
    for passage in passages:
        from_passages |= content_words(passage)
    from_passages -= content_words(comment) | content_words(persona)
    return content_words(without_sign_off(reply, sign_off)) & from_passages


def is_grounded(reply: str, comment: str, passages: Iterable[str], persona: str = "", sign_off: str = "") -> bool:
    """At least `GROUNDED_WORDS` content words of the passages that comment and persona lack."""
    return len(grounding_words(reply, comment, passages, persona, sign_off)) >= GROUNDED_WORDS


def answers_question(reply: str, comment: str, passages: Iterable[str], persona: str = "",
                     sign_off: str = "") -> bool:
    """Grounded, and bearing on the question: a content word of the question, or
    `ANSWER_PASSAGE_WORDS` passage words."""
    taken = grounding_words(reply, comment, passages, persona, sign_off)
    if len(taken) < GROUNDED_WORDS:
        return False
    on_question = content_words(without_sign_off(reply, sign_off)) & content_words(comment)
    return bool(on_question) or len(taken) >= ANSWER_PASSAGE_WORDS


# --- the figures ---------------------------------------------------------------------------------


def _share(flags: Iterable[bool]) -> float | None:
    flags = list(flags)
    return sum(flags) / len(flags) if flags else None


def distinct_rate(replies: Sequence[str], comments: Sequence[str], sign_off: str = "") -> float | None:
    """Distinct replies among the replies to different comments (the first reply per comment)."""
    first: dict[str, str] = {}
    for reply, comment in zip(replies, comments):
        first.setdefault(comment_key(comment), reply_key(reply, sign_off))
    if not first:
        return None
    return len(set(first.values())) / len(first)


def stock_flags(replies: Sequence[str], comments: Sequence[str], passages: Sequence[Sequence[str]],
                intents: Sequence[str | None], sign_off: str = "") -> list[bool]:
    """For each reply, whether it is stock (`stock_reason`); `intents` are the comments' triage."""
    repeats = repeat_counts(replies, comments, sign_off)
    return [stock_reason(r, c, p, repeats=n, asks=i in ASKING, sign_off=sign_off) is not None
            for r, c, p, n, i in zip(replies, comments, passages, repeats, intents)]


def stock_rate(replies: Sequence[str], comments: Sequence[str], passages: Sequence[Sequence[str]],
               intents: Sequence[str | None], sign_off: str = "") -> float | None:
    """Share of replies that are stock (see `stock_reason`)."""
    return _share(stock_flags(replies, comments, passages, intents, sign_off))


def misfit_rate(comment_intents: Sequence[str | None], reply_intents: Sequence[str | None]) -> float | None:
    """Among replies to comments that ask (question, request), the share triaged as thanks."""
    return _share(r == "thanks" for c, r in zip(comment_intents, reply_intents) if c in ASKING)


def grounded_rate(replies: Sequence[str], comments: Sequence[str], passages: Sequence[Sequence[str]],
                  intents: Sequence[str | None], persona: str = "", sign_off: str = "") -> float | None:
    """Among replies to questions whose prompt held passages, the share that is grounded."""
    return _share(is_grounded(r, c, p, persona, sign_off)
                  for r, c, p, i in zip(replies, comments, passages, intents) if i == "question" and p)


def answered_rate(replies: Sequence[str], comments: Sequence[str], passages: Sequence[Sequence[str]],
                  intents: Sequence[str | None], persona: str = "", sign_off: str = "") -> float | None:
    """Among replies to questions whose prompt held passages, the share that answers (`answers_question`)."""
    return _share(answers_question(r, c, p, persona, sign_off)
                  for r, c, p, i in zip(replies, comments, passages, intents) if i == "question" and p)


def cited_rate(confident: Sequence[bool], cited: Sequence[bool]) -> float | None:
    """Among replies with a confident passage, the share that carry the citation."""
    return _share(bool(c) for k, c in zip(confident, cited) if k)


@dataclass(frozen=True)
class ReplyCase:
    """One generated reply with what the figures need to judge it."""

    comment: str
    reply: str  # the generation, before any citation
    passages: tuple[str, ...] = ()
    intent: str | None = None  # the comment's triage intent
    reply_intent: str | None = None  # the reply's own text, triaged
    confident: bool = False  # a passage above the confident similarity was retrieved
    cited: bool = False  # the served reply carries the citation


FIGURES = ("distinct_rate", "stock_rate", "misfit_rate", "grounded_rate", "answered_rate", "cited_rate")


def reply_figures(cases: Sequence[ReplyCase], persona: str = "", sign_off: str = "") -> dict[str, float | None]:
    """All the figures of a set of replies."""
    replies = [c.reply for c in cases]
    comments = [c.comment for c in cases]
    passages = [c.passages for c in cases]
    intents = [c.intent for c in cases]
    return {
        "distinct_rate": distinct_rate(replies, comments, sign_off),
        "stock_rate": stock_rate(replies, comments, passages, intents, sign_off),
        "misfit_rate": misfit_rate(intents, [c.reply_intent for c in cases]),
        "grounded_rate": grounded_rate(replies, comments, passages, intents, persona, sign_off),
        "answered_rate": answered_rate(replies, comments, passages, intents, persona, sign_off),
        "cited_rate": cited_rate([c.confident for c in cases], [c.cited for c in cases]),
    }


def repeated_replies(replies: Sequence[str], comments: Sequence[str], sign_off: str = "") -> list[tuple[str, int]]:
    """The replies given to more than one different comment, most frequent first (for reports)."""
    counts = Counter()
    text: dict[str, str] = {}
    for reply, n in zip(replies, repeat_counts(replies, comments, sign_off)):
        key = reply_key(reply, sign_off)
        if n > 1 and key not in text:
            text[key] = reply.strip()
            counts[key] = n
    return [(text[k], n) for k, n in counts.most_common()]
