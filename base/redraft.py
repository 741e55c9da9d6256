"""Redrafting: a draft that does not answer its comment is written again, opening differently.

A small fine-tuned model decoding greedily lets its most likely opener win: "Thanks for the
question!" is the likeliest start of a reply to a question, and once written, the rest of the reply
often follows it into thanks ("I hope this helps."). The figures of `base.reply_figures` see such a
draft (a misfit, a stock reply, a reply to a question that takes nothing from its passages); here the
same verdicts act before anyone reads it: a weak draft is decoded again with the first tokens of the
drafts before it banned at its first position (`CommentInput.avoid_openings`), so the model takes its
next most likely way in, up to `redrafts` times. A draft that repeats a reply already given to
another comment is redrafted too (`Drafter`). Of the drafts, the first that is not weak is kept;
when all are weak, the least weak (the earliest of those). Decoding stays deterministic; a reply can
depend on the comments answered before it (of two comments drafted one reply, the second is
redrafted), never on chance.

Only what the verdicts need is here; the generator (`engine`) bans the openings and triage (the
`classify` callable, texts -> intents) says what a comment and a reply are, so this module loads
nothing. A comment with no intent (no classifier) is not judged.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Sequence

from base.prompt import CommentInput, clean_reply
from base.reply_figures import (ASKING, answers_question, comment_key, misfit_reason, reply_key,
                                stock_reason)
from base.replychecks import check_reply, without_sign_off

# How weak a draft is, worst last: a draft with fewer faults wins when every draft is weak.
FINE, REPEATED, UNGROUNDED, NO_ANSWER = 0, 1, 1, 2


@dataclass(frozen=True)
class Verdict:
    weakness: int  # FINE, REPEATED / UNGROUNDED or NO_ANSWER
    reason: str | None = None  # in words, for a log or a reviewer; None when fine


FINE_VERDICT = Verdict(FINE)


def judge_draft(raw: str, item: CommentInput, intent: str | None, reply_intent: str | None,
                persona: str = "", sign_off: str = "") -> Verdict:
    """How weak the raw draft `raw` of a reply to `item` is (its comment triaged `intent`, its own
    cleaned text triaged `reply_intent`): one rule set for every comment that asks."""
    if intent not in ASKING:
        return FINE_VERDICT
    reply = clean_reply(raw, sign_off)
    passages = [p.text for p in item.passages]
    check = check_reply(reply, item.comment, passages, sign_off)
    if check.empty or check.loop or check.echo or check.invented:
        problem = ("is empty" if check.empty else "is a loop" if check.loop else "is an echo" if check.echo
                   else "has an invented link")
        return Verdict(NO_ANSWER, f"the draft {problem}")
    reason = misfit_reason(intent, reply_intent) or stock_reason(reply, item.comment, passages, asks=True,
                                                                 sign_off=sign_off)
    if reason:
        return Verdict(NO_ANSWER, reason)
    if intent == "question" and passages and not answers_question(reply, item.comment, passages, persona, sign_off):
        return Verdict(UNGROUNDED, "the draft takes nothing from its passages that bears on the question")
    return FINE_VERDICT


class Drafter:
    """Drafts replies with `generate` (items -> raw completions, one batch), redrafting weak ones.

    `classify` triages texts (texts -> intents, None where unknown); `redrafts` is how many more
    drafts a weak one may get (0: one draft, as generated). The drafter remembers the replies it
    gave (the last `MEMORY` distinct ones): a draft that is a reply it already gave to another
    comment is redrafted too. An answer is the answer to its question, and a thanks copied under
    a video's comments reads like a bot (three copies make a stock phrase, `base.reply_figures`)."""

    MEMORY = 2000

    def __init__(self, generate: Callable[[Sequence[CommentInput]], list[str]],
                 classify: Callable[[list[str]], list[str | None]] | None, redrafts: int,
                 persona: str = "", sign_off: str = "") -> None:
        self.generate, self.classify, self.redrafts = generate, classify, redrafts
        self.persona, self.sign_off = persona, sign_off
        self.drafts_written = 0  # drafts beyond the first, for a log or a benchmark
        self.last_drafts: list[int] = []  # drafts written per item by the last `draft` call
        self.last_verdicts: list[Verdict] = []  # the verdict of each reply the last `draft` call kept
        self._given: OrderedDict[str, set[str]] = OrderedDict()  # reply key -> the comments that got it
        self._given_lock = threading.Lock()  # the service's lanes and the review page may share a drafter

    @property
    def active(self) -> bool:
        return self.redrafts > 0 and self.classify is not None

    def intents(self, items: Sequence[CommentInput]) -> list[str | None]:
        """The triage of each comment (None for all without a classifier)."""
        return list(self.classify([item.comment for item in items])) if self.classify and items else [None] * len(items)

    def judge(self, items: Sequence[CommentInput], raws: Sequence[str],
              intents: Sequence[str | None]) -> list[Verdict]:
        """A verdict per draft; the replies' own text is triaged only for comments that ask."""
        asking = [i for i, intent in enumerate(intents) if intent in ASKING]
        reply_intents: list[str | None] = [None] * len(raws)
        if asking and self.classify is not None:
            texts = [without_sign_off(clean_reply(raws[i], self.sign_off), self.sign_off) or "-" for i in asking]
            for i, found in zip(asking, self.classify(texts)):
                reply_intents[i] = found
        return [judge_draft(raw, item, intent, reply_intent, self.persona, self.sign_off)
                for raw, item, intent, reply_intent in zip(raws, items, intents, reply_intents)]

    def draft(self, items: Sequence[CommentInput]) -> list[str]:
        """One raw reply per item: the first draft, or a better redraft of a weak or repeated one.
        Comments are answered in order, so the third of three comments given one reply is redrafted."""
        raws = list(self.generate(items)) if items else []
        self.last_drafts, self.last_verdicts = [1] * len(raws), [FINE_VERDICT] * len(raws)
        if not self.active or not items:
            return raws
        intents = self.intents(items)
        drafts = [[(verdict, raw)] for verdict, raw in zip(self.judge(items, raws, intents), raws)]
        current, chosen = list(items), [None] * len(items)
        kept: list[Verdict] = [FINE_VERDICT] * len(items)
        while True:
            weak = []
            for i, item in enumerate(items):
                if chosen[i] is None:
                    if self.settled(drafts[i], item.comment):
                        kept[i], chosen[i] = self.choose(drafts[i], item.comment)
                    else:
                        weak.append(i)
            if not weak:
                self.last_drafts, self.last_verdicts = [len(tried) for tried in drafts], kept
                return chosen
            for i in weak:
                current[i] = self.again(current[i], drafts[i][-1][1])
            again = [current[i] for i in weak]
            raws_again = self.generate(again)
            self.drafts_written += len(weak)
            for i, verdict, raw in zip(weak, self.judge(again, raws_again, [intents[i] for i in weak]), raws_again):
                drafts[i].append((verdict, raw))

    # --- one comment's drafts, for a caller that decodes them one at a time (the continuous batch) ---
    def settled(self, drafts: list[tuple[Verdict, str]], comment: str) -> bool:
        """No more drafts: one is fine (and not a repeat: see the class), or the redrafts are spent.
        A fine draft found repeated is marked so (weakness REPEATED) in `drafts`."""
        for n, (verdict, raw) in enumerate(drafts):
            if verdict.weakness == FINE:
                given = self.repeats(raw, comment)
                if not given:
                    return True
                others = f"{given} other comment{'s' * (given > 1)}"
                drafts[n] = (Verdict(REPEATED, f"the same reply already went to {others}"), raw)
        return len(drafts) > self.redrafts

    def repeats(self, raw: str, comment: str) -> int:
        """How many other comments already got this reply from this drafter."""
        key = self._key(raw)
        with self._given_lock:
            return len(self._given.get(key, set()) - {comment_key(comment)})

    def choose(self, drafts: Sequence[tuple[Verdict, str]], comment: str) -> tuple[Verdict, str]:
        """The least weak draft (its verdict, its text), the earliest of equals, remembered as given
        to `comment`."""
        verdict, raw = min(enumerate(drafts), key=lambda pair: (pair[1][0].weakness, pair[0]))[1]
        key = self._key(raw)
        if key:
            with self._given_lock:
                self._given.setdefault(key, set()).add(comment_key(comment))
                self._given.move_to_end(key)
                while len(self._given) > self.MEMORY:
                    self._given.popitem(last=False)
        return verdict, raw

    @staticmethod
    def again(item: CommentInput, raw: str) -> CommentInput:
        """The item to decode once more: it may not open like `raw` or any draft before it."""
        return replace(item, avoid_openings=(*item.avoid_openings, raw))

    def _key(self, raw: str) -> str:
        return reply_key(clean_reply(raw, self.sign_off), self.sign_off)
