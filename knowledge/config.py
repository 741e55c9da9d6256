"""Retrieval configured in one place: where the articles are, how they are embedded and searched.

`RetrievalConfig` is what `knowledge/` opens a store with (`open_knowledge_base`) and resolves
once: the store, or a Chroma server, the collection, the embedder, top-k and the similarity
threshold (None: the store's calibrated one), and the one "confident" similarity that triage and
citations share.

Serving builds it from the settings; training builds it from its preset and command line only
(no environment variable changes what a fine-tune retrieves) and records it in the adapter's
`responder.json`. `for_adapter` reads that record back: the setup an adapter was trained with is
what it is served with by default, and a setting given explicitly that differs is honoured with a
one-line warning (a creator who moved the store or wants a stricter threshold is not blocked, and
is told what changed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from base.settings import DEFAULT_COLLECTION, DEFAULT_EMBEDDER

# A passage at or above this similarity is taken to answer the comment: its article is cited, and a
# question whose best passage stays under it is marked `needs_creator` (knowledge/triage_policy.py).
# Above every store's calibrated threshold (capped at 0.45); the passages real questions were answered
# from scored 0.48-0.71. On the sample store's 220 searches (written and real-style questions, with
# and without their video), the best passage's article was right for 141 of 142 at or above 0.48
# (recall 0.75), 132 of 133 at 0.50 (0.70), and 150 of 154 at 0.45: 0.48 is where wrong ones begin.
CONFIDENT_SIMILARITY = 0.48
DEFAULT_TOP_K = 3

# The fields a trained adapter records, in the order a warning names them.
RECORDED = ("store", "chroma_url", "collection", "embedder", "top_k", "min_similarity", "hybrid", "focus")


@dataclass(frozen=True)
class RetrievalConfig:
    store: Path
    chroma_url: str | None = None
    collection: str = DEFAULT_COLLECTION
    embedder: str = DEFAULT_EMBEDDER
    top_k: int = DEFAULT_TOP_K
    min_similarity: float | None = None  # None: the store's calibrated threshold
    device: str = "auto"
    confident_similarity: float = CONFIDENT_SIMILARITY
    hybrid: bool = True  # BM25 beside the embedder, fused by rank (knowledge/lexical.py)
    focus: bool = True  # search with the part of the comment that asks (knowledge/query.py)

    @classmethod
    def of(cls, settings: Any) -> RetrievalConfig:
        """The retrieval part of `base.settings.Settings` (or of anything with the same fields)."""
        if isinstance(settings, RetrievalConfig):
            return settings
        return cls(store=Path(settings.store).expanduser(), chroma_url=settings.chroma_url or None,
                   collection=settings.collection, embedder=settings.embedder, top_k=settings.top_k,
                   min_similarity=settings.min_similarity, device=getattr(settings, "device", "auto"),
                   hybrid=getattr(settings, "hybrid", True), focus=getattr(settings, "focus", True))

    @property
    def location(self) -> str:
        return self.chroma_url or str(self.store)

    @property
    def embedded_store_here(self) -> bool:
        """An embedded store exists at `store` (and no Chroma server is used instead)."""
        return not self.chroma_url and self.store.is_dir()

    def record(self, threshold: float) -> dict[str, Any]:
        """What an adapter's responder.json keeps of the setup it was trained with."""
        return {"store": str(self.store.resolve()) if not self.chroma_url else "", "chroma_url": self.chroma_url,
                "collection": self.collection, "embedder": self.embedder, "top_k": self.top_k,
                "min_similarity": threshold, "hybrid": self.hybrid, "focus": self.focus}


def for_adapter(configured: RetrievalConfig, explicit: set[str], recorded: Mapping[str, Any] | None
                ) -> tuple[RetrievalConfig, list[str]]:
    """(the config to serve an adapter with, one-line notes saying what differs from its training).

    `explicit` names the settings the user gave (command line or environment); those win, with a
    note. The others follow the adapter's record. A recorded store that is not on this machine is
    left for the configured one, with a note.
    """
    if not recorded:
        return configured, []
    config, notes = configured, []
    for name in RECORDED:
        if name not in recorded:
            continue
        trained, now = _normalised(name, recorded[name]), _normalised(name, getattr(configured, name))
        if trained == now or (name == "store" and not trained):  # "": trained against a Chroma server
            continue
        if name in explicit:
            notes.append(f"retrieval: {name} is {_shown(now)} as set, but the adapter was trained with "
                         f"{_shown(trained)}; its replies may differ from its evaluation")
        elif name == "store" and not Path(trained).is_dir():
            notes.append(f"retrieval: the adapter was trained on the store {trained}, which is not here; "
                         f"serving with {configured.store}")
        else:
            config = replace(config, **{name: Path(trained) if name == "store" else trained})
    return config, notes


def _normalised(name: str, value: Any) -> Any:
    if name == "store":
        return str(Path(value).expanduser().resolve()) if value else ""
    if name == "min_similarity" and value is not None:
        return round(float(value), 4)
    return value or None if name == "chroma_url" else value


def _shown(value: Any) -> str:
    return "none" if value in (None, "") else str(value)
