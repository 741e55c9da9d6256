"""Triage: what a comment needs, before anyone drafts a reply to it.

Every comment gets one intent from `INTENTS` with a confidence:
- the exact rules of `knowledge.triage_rules` decide first (chat-template tags, orders to the bot in
  any language, phone numbers, wallet addresses, messenger contacts, link drops, self-promotion),
  with confidence 1.0 and the rule's name in `Triage.rule`;
- every other comment goes to a small classifier: scikit-learn's LogisticRegression over the
  knowledge embedder's vector of the comment plus a few word features (question marks, question
  and request openers, thanks and complaint words) that a mean-pooled vector blurs when a
  greeting comes first. One embedder call classifies a whole batch.

The classifier is fitted from the labelled comments shipped in the package
(`knowledge/data/triage_train.csv`, the same file as `samples/triage/train.csv`) on first use,
offline, and cached under the model cache (`RESPONDER_MODEL_CACHE`, folder `triage/`) keyed by a
hash of the training file, the embedder and the feature version: later processes load it in
milliseconds. Measured in `benchmarks/triage_bench.py` (README, "Triage").
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from base.errors import UserError
from knowledge.triage_rules import emoji_intent, match_rule, normalise

if TYPE_CHECKING:
    from knowledge.embedder import Embedder

INTENTS = ("question", "request", "thanks", "criticism", "spam", "instructions", "other")
# Intents whose comments are never drafted: orders to the bot must not reach the model, spam gets no reply.
NEVER_DRAFTED = frozenset({"instructions", "spam"})
TRAINING_FILE = Path(__file__).resolve().parent / "data" / "triage_train.csv"
# Bump when the features change: the cache key includes it, so an old fitted model is not reused.
FEATURE_VERSION = 1
# A comment whose question + request probability reaches this is treated as one that asks, even
# when another intent scores higher: a missed question costs the creator more than a thanks drafted
# as a question (chosen by cross-validation on the training file, see benchmarks/triage_bench.py).
ANSWER_THRESHOLD = 0.35
# The classifier says `spam` only when this sure: spam is skipped without a draft, and the exact rules
# catch the spam that matters (links, contacts, wallets, self-promotion); every held-out comment the
# classifier alone called spam was a viewer's (0.26-0.44). An unsure spam verdict falls to the next intent.
SURE_SPAM = 0.8
# Likewise the classifier says `instructions` only at this confidence: the exact rules catch orders to
# the bot in any language (34 of the 35 held-out ones), the classifier alone caught the last at 0.85,
# and its unsure verdicts were viewers' jokes and questions with code in them ("my regex .* eats the
# whole line" at 0.37, "regex: now I have two problems" at 0.34), which would be skipped undrafted.
SURE_INSTRUCTIONS = 0.5
# Weight of the word features beside the unit-length embedding (cross-validated on the training file).
WORD_FEATURE_WEIGHT = 0.5
C = 4.0


@dataclass(frozen=True)
class Triage:
    """The intent of one comment; `rule` names the exact rule that decided, None for the classifier."""

    intent: str
    confidence: float
    rule: str | None


# --- word features -------------------------------------------------------------------------------


def asks(text: str) -> bool:
    """The comment asks something: a question mark, or a question word opening a sentence."""
    return "?" in text or _ASKS.search(text.lower()) is not None


_ASKS = re.compile(r"(?:^|[.!?\n]\s*|\b(?:q|question|so|and|also|but|btw|ok|hey|hi|hello)[:,]?\s+)"
                   r"(?:how|what|what's|whats|why|when|where|which|who|whose|is|are|was|were|does|do|did|can|could|"
                   r"should|would|will|has|have|any idea|anyone|isn't|doesn't|don't|wait|so)\b")
_REQUESTS = re.compile(r"\b(?:(?:can|could|would|will) you(?: please| pls)? (?:make|do|cover|share|upload|post|"
                       r"consider|add|explain|show|put|redo|talk|review|create|film)|please|pls|plz|pleas+e|"
                       r"video (?:on|about|idea)|next video|follow[- ]?up|part 2|would love|i'd love|id love|"
                       r"would be (?:great|awesome|amazing|nice)|suggestion|request\w*|you should (?:do|make|cover))\b")
_THANKS = re.compile(r"\b(?:thank\w*|thanks|thx|ty|grac\w+|danke|merci|obrigad\w|shukriya|dhanyavaad|love|loved|great|"
                     r"awesome|amazing|best|helpful|helped|subscribed|brilliant|excellent|perfect|clear|underrated|"
                     r"appreciate\w*|legend|gold)\b")
_COMPLAINS = re.compile(r"\b(?:wrong|incorrect|mistake\w*|bad|too (?:fast|slow|long|quiet|loud|small|many|much|basic)|"
                        r"annoying|disappoint\w*|misleading|clickbait|bug|hate|worse|unsubscrib\w*|confusing|"
                        r"distracting|outdated|sloppy|stop|not helpful|blurry|rushed|boring|fluff)\b")
_TIMESTAMP = re.compile(r"\b\d{1,2}:\d{2}\b")


def word_features(text: str) -> list[float]:
    """Nine numbers a person would read first: does it ask, request, thank, complain, and how long."""
    norm = normalise(text)
    words = re.findall(r"[^\W_]+", norm)
    letters = [ch for ch in norm if ch.isalpha()]
    return [
        1.0 if "?" in norm else 0.0,
        min(norm.count("?"), 3) / 3,
        1.0 if _ASKS.search(norm) else 0.0,
        1.0 if _REQUESTS.search(norm) else 0.0,
        min(len(_THANKS.findall(norm)), 3) / 3,
        min(len(_COMPLAINS.findall(norm)), 3) / 3,
        1.0 if _TIMESTAMP.search(norm) else 0.0,
        math.log1p(len(words)) / 4,
        sum(not ch.isascii() for ch in letters) / len(letters) if letters else 0.0,
    ]


def features(vectors: Sequence[Sequence[float]], texts: Sequence[str]) -> Any:
    """(N, 384 + 9): the embedding of each text beside its weighted word features."""
    import numpy as np

    words = np.array([word_features(t) for t in texts], dtype=np.float32) * WORD_FEATURE_WEIGHT
    return np.hstack([np.asarray(vectors, dtype=np.float32).reshape(len(texts), -1), words])


# --- labelled files ------------------------------------------------------------------------------


def read_labelled(path: Path | str) -> list[tuple[str, str]]:
    """(comment, label) rows of a CSV with `comment` and `label` columns; bad input is one UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read labelled file '{path}' ({exc}); pass a UTF-8 CSV with 'comment' and "
                        "'label' columns") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or not {"comment", "label"} <= {f.strip().lower() for f in reader.fieldnames}:
        raise UserError(f"labelled file '{path}' needs 'comment' and 'label' columns (found: "
                        f"{', '.join(reader.fieldnames or []) or 'none'}); add a header row comment,label")
    rows = []
    for row in reader:
        row = {k.strip().lower(): v for k, v in row.items() if k}
        label = (row.get("label") or "").strip().lower()
        if label not in INTENTS:
            raise UserError(f"labelled file '{path}' line {reader.line_num}: label {label!r} is not one of "
                            f"{', '.join(INTENTS)}; fix that label")
        rows.append((row.get("comment") or "", label))
    if not rows:
        raise UserError(f"labelled file '{path}' has no rows; add comment,label rows under the header")
    return rows


# --- the classifier ------------------------------------------------------------------------------


def decide(probabilities: Sequence[float], classes: Sequence[str]) -> tuple[str, float]:
    """The intent and its probability, leaning towards question/request (see ANSWER_THRESHOLD), and
    away from an unsure spam or instructions verdict (SURE_SPAM, SURE_INSTRUCTIONS)."""
    scores = dict(zip(classes, (float(p) for p in probabilities)))
    unsure = {c for c, floor in (("spam", SURE_SPAM), ("instructions", SURE_INSTRUCTIONS)) if scores.get(c, 0.0) < floor}
    best = max((c for c in scores if c not in unsure), key=scores.__getitem__, default=max(scores, key=scores.__getitem__))
    asks = scores.get("question", 0.0) + scores.get("request", 0.0)
    if best not in ("question", "request") and asks >= ANSWER_THRESHOLD:
        best = "question" if scores.get("question", 0.0) >= scores.get("request", 0.0) else "request"
    return best, scores[best]


def fit_model(embedder: Embedder, rows: Sequence[tuple[str, str]]) -> Any:
    """A LogisticRegression fitted on the (comment, label) rows."""
    from sklearn.linear_model import LogisticRegression

    texts = [text for text, _ in rows]
    model = LogisticRegression(C=C, max_iter=2000, class_weight="balanced")
    model.fit(features(embedder.embed(texts), texts), [label for _, label in rows])
    return model


_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


def _cache_key(training: bytes, embedder_name: str) -> str:
    import sklearn

    h = hashlib.sha256(training)
    h.update(f"\x1f{embedder_name}\x1f{FEATURE_VERSION}\x1f{C}\x1f{WORD_FEATURE_WEIGHT}\x1f{sklearn.__version__}"
             .encode())
    return h.hexdigest()[:24]


def _default_cache_dir() -> Path:
    from base.settings import load_settings

    return Path(load_settings().model_cache) / "triage"


def _load_or_fit(embedder: Embedder, training_file: Path, cache_dir: Path | None) -> Any:
    """The fitted model: from this process, else from the cache folder, else fitted now (and cached)."""
    import joblib

    training = training_file.read_bytes()
    key = _cache_key(training, embedder.name)
    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        folder = cache_dir if cache_dir is not None else _default_cache_dir()
        cached = folder / f"triage-{key}.joblib"
        model = None
        if cached.exists():
            try:
                model = joblib.load(cached)
            except Exception:  # noqa: BLE001 - a damaged or foreign cache file is refitted, not fatal
                model = None
        if model is None:
            model = fit_model(embedder, read_labelled(training_file))
            _save(model, folder, cached)
        _MODELS[key] = model
        return model


def _save(model: Any, folder: Path, target: Path) -> None:
    """Write the fitted model atomically; a read-only cache only costs a refit next time."""
    import joblib

    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        joblib.dump(model, tmp)
        os.replace(tmp, target)
    except OSError:
        return


class TriageClassifier:
    """Rules first, then the fitted classifier; safe to share across threads."""

    def __init__(self, embedder: Embedder, model: Any) -> None:
        self.embedder = embedder
        self.model = model
        self.classes = [str(c) for c in model.classes_]

    @classmethod
    def load(cls, embedder: Embedder | None = None, training_file: Path | str | None = None,
             cache_dir: Path | str | None = None) -> TriageClassifier:
        """The classifier over `embedder` (None: the default embedder), fitted once and cached."""
        if embedder is None:
            from base.settings import DEFAULT_EMBEDDER
            from knowledge.embedder import load_embedder

            embedder = load_embedder(DEFAULT_EMBEDDER)
        training = Path(training_file) if training_file is not None else TRAINING_FILE
        if not training.exists():
            raise UserError(f"triage training file '{training}' is missing; reinstall the package "
                            "(it ships knowledge/data/triage_train.csv)")
        folder = Path(cache_dir) if cache_dir is not None else None
        return cls(embedder, _load_or_fit(embedder, training, folder))

    def classify(self, texts: Sequence[str]) -> list[Triage]:
        """One Triage per text, in order: rules first, then one embedder call for the rest."""
        out: list[Triage | None] = []
        pending: list[int] = []
        for i, text in enumerate(texts):
            decided = rule_triage(text)
            out.append(decided)
            if decided is None:
                pending.append(i)
        if pending:
            batch = [texts[i] for i in pending]
            probabilities = self.model.predict_proba(features(self.embedder.embed(batch), batch))
            for i, row in zip(pending, probabilities):
                intent, confidence = decide(row, self.classes)
                out[i] = Triage(intent, round(confidence, 4), None)
        return [t for t in out if t is not None]

    def classify_one(self, text: str) -> Triage:
        return self.classify([text])[0]


def rule_triage(text: str) -> Triage | None:
    """The verdict of the exact rules alone (empty and emoji-only comments included), or None."""
    if not text or not text.strip():
        return Triage("other", 1.0, "empty")
    rule = match_rule(text)
    if rule is not None:
        return Triage(rule.intent, 1.0, rule.name)
    by_emoji = emoji_intent(text)
    if by_emoji is not None:
        return Triage(by_emoji, 1.0, "emoji_only")
    return None
