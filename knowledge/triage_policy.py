"""What happens to a comment of each intent: drafted, drafted and flagged for the creator, or skipped.

One policy for `responder batch`, `POST /respond` and `responder post`:
- `draft`: a reply is drafted and reviewed as usual;
- `flag`: a reply is drafted and marked `needs_creator` (the review page shows it first);
- `skip`: no reply is generated; the status says why.

Defaults: questions, requests, thanks and other comments are drafted; criticism is drafted and
flagged; spam is skipped; orders to the bot (`instructions`) are skipped and flagged, and can never
be drafted: a small model cannot be trusted to refuse them. A question or request is also flagged
when no passage reached the confident similarity (`needs_creator`): the reply then rests on the
model alone, and the creator knows the answer better.

The policy is set as `RESPONDER_TRIAGE_POLICY="criticism=skip,thanks=flag"` (intents not named keep
their default); `responder batch --only question,request` drafts only those intents this run and
leaves the others for a later run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from base.errors import UserError
from knowledge.triage import INTENTS, Triage
from knowledge.triage_rules import RULES_BY_NAME

ACTIONS = ("draft", "flag", "skip")
DEFAULT_ACTIONS: Mapping[str, str] = MappingProxyType({
    "question": "draft", "request": "draft", "thanks": "draft", "other": "draft",
    "criticism": "flag", "spam": "skip", "instructions": "skip",
})
# The order drafts are written in: what needs an answer first, thank-yous last.
DRAFT_ORDER = ("question", "request", "criticism", "other", "thanks", "spam", "instructions")
# The status reason of a skipped intent (spam keeps the name the selection rules already use).
SKIP_REASONS: Mapping[str, str] = MappingProxyType({"spam": "likely-spam"})
# Skipped intents the creator should still see (a comment that gives the bot orders may be an attack).
FLAGGED_SKIPS = frozenset({"instructions"})
ASKING = frozenset({"question", "request"})


def _intent(name: str, where: str) -> str:
    intent = name.strip().lower()
    if intent not in INTENTS:
        raise UserError(f"{where}: unknown intent {name.strip()!r}; use one of {', '.join(INTENTS)}")
    return intent


def parse_only(text: str | Iterable[str] | None, where: str = "--only") -> frozenset[str] | None:
    """The intents of `--only question,request` (repeatable or comma-separated), None for all."""
    if text is None:
        return None
    parts = [text] if isinstance(text, str) else list(text)
    names = [p for part in parts for p in part.split(",") if p.strip()]
    if not names:
        return None
    return frozenset(_intent(name, where) for name in names)


@dataclass(frozen=True)
class TriagePolicy:
    actions: Mapping[str, str] = field(default_factory=lambda: DEFAULT_ACTIONS)

    @classmethod
    def parse(cls, text: str | None, where: str = "RESPONDER_TRIAGE_POLICY") -> TriagePolicy:
        """`intent=action` pairs separated by commas; intents not named keep their default."""
        actions = dict(DEFAULT_ACTIONS)
        for pair in (text or "").split(","):
            if not pair.strip():
                continue
            name, sep, action = pair.partition("=")
            if not sep:
                raise UserError(f"{where}: {pair.strip()!r} is not intent=action; write for example "
                                "'criticism=skip,thanks=flag'")
            intent, action = _intent(name, where), action.strip().lower()
            if action not in ACTIONS:
                raise UserError(f"{where}: action {action!r} for {intent} is not one of {', '.join(ACTIONS)}")
            if intent == "instructions" and action != "skip":
                raise UserError(f"{where}: 'instructions' comments give the bot orders and are never drafted; "
                                f"remove instructions={action} (they stay skipped and flagged)")
            actions[intent] = action
        return cls(MappingProxyType(actions))

    def action(self, intent: str | None) -> str:
        return self.actions.get(intent or "other", "draft")

    def drafts(self, intent: str | None) -> bool:
        return self.action(intent) != "skip"

    def skip_reason(self, intent: str | None) -> str | None:
        """The status reason when this intent is not drafted, None when it is."""
        if self.drafts(intent):
            return None
        return SKIP_REASONS.get(intent or "", intent or "other")

    def screened(self, verdict: Triage | None) -> str | None:
        """Why a comment is not drafted, in fixed words that never quote it; None when it is drafted."""
        if verdict is None or self.drafts(verdict.intent):
            return None
        rule = RULES_BY_NAME.get(verdict.rule or "")
        if rule is not None and rule.intent == verdict.intent:
            return rule.reason
        return f"screened: triage took the comment for {verdict.intent}, which the policy does not draft"

    def needs_creator(self, intent: str | None, best_similarity: float | None = None,
                      confident: float | None = None) -> bool:
        """Flagged by the policy, a skipped order to the bot, or a question without a confident passage."""
        if self.action(intent) == "flag" or (intent in FLAGGED_SKIPS):
            return True
        if intent in ASKING and confident is not None:
            return best_similarity is None or best_similarity < confident
        return False


def draft_rank(intent: str | None) -> int:
    """Position of an intent in the drafting order (unknown intents just before thanks)."""
    return DRAFT_ORDER.index(intent) if intent in DRAFT_ORDER else DRAFT_ORDER.index("other")
