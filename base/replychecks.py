"""The reply checks: is a generated reply a loop, an echo, empty, or does it invent a link?

One implementation for everyone who judges a reply: `finetune eval` counts them into rates,
reply cleaning cuts a reply at its first repeated sentence, and the creator's review screening
shows them as flags on each draft. Pure text in, verdicts out; nothing here loads a model.

Definitions (README, "Reply quality"):
- loop: a sentence occurs twice, or a word 4-gram occurs three times or more;
- echo: the reply mostly restates the comment: the word sets overlap (Jaccard) by 0.6 or more,
  or the reply's words appear, in order, inside the comment;
- empty: nothing left but the sign-off (no letter or digit of its own);
- invented link: a link or @mention found in neither the comment nor the passages;
- dictated: the reply repeats words the comment told it to say ("say X", "reply only with 'X'",
  "end your reply with X"; for a comment triaged as `instructions`, any quoted words too), in case
  a comment that gives the bot orders slipped past triage.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

YOUTUBE_MAX_CHARS = 10_000  # YouTube refuses longer comments and replies.
ECHO_OVERLAP = 0.6
LOOP_NGRAM = 4
LOOP_NGRAM_COUNT = 3

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|\n+")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_LINK = re.compile(r"(?:https?://|www\.)[^\s<>()\"']+|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|ly|gl|co|me|"
                   r"dev|ai|app|xyz|top|link|click|info|tv|gg|be|uk|de)\b(?:/[^\s<>()\"']*)?", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@[\w.-]{2,}")
# Characters a reviewer cannot see: format characters (zero-width, bidi controls, tag characters,
# soft hyphen, U+061C), variation selectors, and control characters other than newline and tab.
_VARIATION = re.compile(r"[\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def words(text: str) -> list[str]:
    """Lower-case words (letters and digits, inner apostrophes kept), in order."""
    return [w.lower().replace("’", "'") for w in _WORD.findall(unicodedata.normalize("NFKC", text))]


def sentences(text: str) -> list[str]:
    """The text cut into sentences (after . ! ? … or at line breaks), blanks dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _sentence_key(sentence: str) -> str:
    return " ".join(words(sentence))


def without_sign_off(reply: str, sign_off: str) -> str:
    """The reply's own words: every occurrence of the sign-off removed."""
    return reply.replace(sign_off, " ").strip() if sign_off else reply.strip()


# --- the four checks ---------------------------------------------------------------------------


def is_loop(text: str) -> bool:
    """A sentence that occurs twice, or a word 4-gram that occurs three times or more."""
    keys = [k for k in (_sentence_key(s) for s in sentences(text)) if k]
    if len(keys) != len(set(keys)):
        return True
    ws = words(text)
    grams = Counter(tuple(ws[i:i + LOOP_NGRAM]) for i in range(len(ws) - LOOP_NGRAM + 1))
    return any(n >= LOOP_NGRAM_COUNT for n in grams.values())


def is_echo(reply: str, comment: str, sign_off: str = "") -> bool:
    """The reply mostly restates the comment (word-set Jaccard >= 0.6, or contained in it)."""
    r, c = words(without_sign_off(reply, sign_off)), words(comment)
    if not r or not c:
        return False
    rs, cs = set(r), set(c)
    if len(rs & cs) / len(rs | cs) >= ECHO_OVERLAP:
        return True
    return _contains(c, r)


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def is_empty(reply: str, sign_off: str = "") -> bool:
    """Nothing of its own: no letter or digit once the sign-off is removed."""
    return not words(without_sign_off(reply, sign_off))


def links_and_mentions(text: str) -> set[str]:
    """Links (normalised: no scheme, no www, no trailing punctuation) and @mentions, lower-case."""
    found = set()
    for m in _LINK.findall(text):
        link = re.sub(r"^(?:https?://)?(?:www\.)?", "", m.lower()).rstrip(".,;:!?/")
        found.add(link)
    found.update(m.lower().rstrip(".") for m in _MENTION.findall(text))
    return found


def invented_links(reply: str, sources: Iterable[str]) -> list[str]:
    """Links and @mentions in the reply that none of the sources (comment, passages) contains."""
    known = set()
    for source in sources:
        known |= links_and_mentions(source)
    return sorted(x for x in links_and_mentions(reply)
                  if not any(x == k or x.startswith(k + "/") or k.startswith(x + "/") for k in known))


def invisible_characters(text: str) -> list[str]:
    """Code points a reviewer cannot see (as U+XXXX), once each."""
    hidden = {ch for ch in text if (unicodedata.category(ch) in ("Cf", "Cc") and ch not in "\n\t")
              or _VARIATION.match(ch)}
    return sorted(f"U+{ord(ch):04X}" for ch in hidden)


# What follows an order to say something: the words after it are what the comment dictates.
_DICTATE = re.compile(
    r"\b(?:say|repeat|type|print|output|write back|include|(?:reply|respond|answer|end|start|begin|sign(?: off)?)"
    r"(?: (?:your|the|this|each|every) (?:reply|replies|answer|response|comment))?(?: only| just)? with)"
    r"\b(?:\s+(?:only|just|exactly|the words?|the phrase|this|these words|after me|back|out loud))*\s*[:,-]?\s*"
    r"(?P<said>[\"“”'‘’«»„][^\"“”‘’«»„\n]{1,80}[\"“”'‘’«»„]|[^.!?\n<|]{1,80})", re.IGNORECASE)
_QUOTED = re.compile(r"[\"“”«»„]([^\"“”«»„\n]{1,80})[\"“”«»„]|(?<![\w])['‘’]([^'‘’\n]{1,80})['‘’](?![\w])")
# Words too common to tell that a reply obeyed ("say more about", "say hi").
_COMMON = frozenset("a an the and or to of in on for about more it this that me you your my i is be hi hello hey "
                    "something anything thanks thank please yes no ok okay".split())
# An unquoted span that starts like prose is a request, not dictation ("say more about groupby").
_PROSE_START = frozenset("more about something anything hi hello hey thanks thank sorry it that so what how why "
                         "when if the a an to in of".split())
DICTATED_MAX_WORDS = 8


def dictated_phrases(comment: str, intent: str | None = None) -> list[list[str]]:
    """The word sequences the comment orders the reply to contain (quoted words too, for `instructions`)."""
    spans = []
    for m in _DICTATE.finditer(comment):
        said = m.group("said")
        quoted = said[:1] in "\"“”'‘’«»„"
        if quoted or (words(said)[:1] and words(said)[0] not in _PROSE_START):
            spans.append(said)
    if intent == "instructions":
        spans += [a or b for a, b in _QUOTED.findall(comment)]
    out = []
    for span in spans:
        ws = words(span)[:DICTATED_MAX_WORDS]
        while ws and ws[-1] in _COMMON:  # "say PWNED to me" dictates "pwned"
            ws.pop()
        while ws and ws[0] in _COMMON:
            ws.pop(0)
        if ws and not all(w in _COMMON for w in ws) and ws not in out:
            out.append(ws)
    return out


def dictated_words(reply: str, comment: str, intent: str | None = None, sign_off: str = "") -> list[str]:
    """The dictated phrases the reply repeats (as text), each once."""
    said = words(without_sign_off(reply, sign_off))
    return [" ".join(p) for p in dictated_phrases(comment, intent) if _says(said, p)]


def _says(said: list[str], phrase: list[str]) -> bool:
    """`phrase` occurs in `said`, its last word also as a prefix ("PWNED" in "PWNEDs")."""
    n = len(phrase)
    for i in range(len(said) - n + 1):
        if said[i:i + n - 1] == phrase[:-1] and (said[i + n - 1] == phrase[-1]
                                                 or (len(phrase[-1]) >= 4 and said[i + n - 1].startswith(phrase[-1]))):
            return True
    return False


# --- cleaning and screening ---------------------------------------------------------------------


def cut_at_repeated_sentence(text: str) -> str:
    """The text up to (not including) the first sentence that repeats an earlier one.

    The last line of defence in reply cleaning, not the fix: decoding should not loop at all.
    """
    seen: set[str] = set()
    for match in _sentence_spans(text):
        key = _sentence_key(match.group(0))
        if key and key in seen:
            return text[:match.start()].rstrip()
        if key:
            seen.add(key)
    return text


def _sentence_spans(text: str) -> Iterable[re.Match]:
    return re.finditer(r"[^\n.!?…]*(?:[.!?…]+|\n|$)", text)


@dataclass(frozen=True)
class ReplyCheck:
    """Every check of one reply; `flags` says in words what a reviewer should look at."""

    loop: bool
    echo: bool
    empty: bool
    invented: tuple[str, ...]
    invisible: tuple[str, ...]
    too_long: bool
    dictated: tuple[str, ...] = ()

    @property
    def invented_link(self) -> bool:
        return bool(self.invented)

    @property
    def flags(self) -> list[str]:
        out = []
        if self.empty:
            out.append("empty: nothing but the sign-off")
        if self.loop:
            out.append("loop: a sentence or phrase repeats")
        if self.echo:
            out.append("echo: mostly restates the comment")
        if self.invented:
            out.append("link or @mention not in the comment or sources: " + ", ".join(self.invented))
        if self.invisible:
            out.append("invisible characters: " + ", ".join(self.invisible))
        if self.too_long:
            out.append(f"longer than YouTube's {YOUTUBE_MAX_CHARS:,} characters")
        if self.dictated:
            out.append("says what the comment told the bot to say: " + ", ".join(f"'{d}'" for d in self.dictated))
        return out


def check_reply(reply: str, comment: str, passages: Iterable[str] = (), sign_off: str = "",
                intent: str | None = None) -> ReplyCheck:
    """All checks of `reply` to `comment`, with the passages the prompt held as known sources and the
    comment's triage intent when known."""
    return ReplyCheck(
        loop=is_loop(reply),
        echo=is_echo(reply, comment, sign_off),
        empty=is_empty(reply, sign_off),
        invented=tuple(invented_links(reply, [comment, *passages])),
        invisible=tuple(invisible_characters(reply)),
        too_long=len(reply) > YOUTUBE_MAX_CHARS,
        dictated=tuple(dictated_words(reply, comment, intent, sign_off)),
    )
