"""Context-aware fine-tuning (RAFT, Zhang et al. 2024): passages in the training prompts.

An adapter trained on bare comments and served with article passages in the prompt meets a
prompt it never saw, and replies collapse (the bare sign-off) or copy the articles. So with
`--store`, each training comment gets the passages serving would retrieve for it, with the same
search, top-k and threshold, rendered by the same prompt module. A share of the examples that
retrieve something gets distractors instead (passages from other articles) and a share gets
none, so the adapter learns to keep the creator's voice with or without passages and to use a
passage only when it answers the comment. Comments that retrieve nothing keep no passages, as in
serving. Evaluation examples always get what serving would give them.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from base.prompt import Passage, clean_comment


@dataclass(frozen=True)
class ContextRecipe:
    top_k: int = 3
    min_similarity: float | None = None  # None: the store's calibrated threshold
    distractor_share: float = 0.2
    none_share: float = 0.1
    seed: int = 42


def serving_passages(kb: Any, comments: Sequence[str], top_k: int, threshold: float) -> list[tuple[Passage, ...]]:
    """What serving would inject for each comment (one embedding batch)."""
    cleaned = [clean_comment(c) for c in comments]
    return [tuple(found) for found in kb.search_many(cleaned, top_k, threshold)]


def training_passages(kb: Any, comments: Sequence[str], recipe: ContextRecipe,
                      threshold: float) -> tuple[list[tuple[Passage, ...]], Counter]:
    """Passages for each training comment (relevant, distractors or none) and how many of each."""
    retrieved = serving_passages(kb, comments, recipe.top_k, threshold)
    rng = random.Random(recipe.seed)
    out: list[tuple[Passage, ...]] = []
    kinds: Counter = Counter()
    for n, found in enumerate(retrieved):
        draw = rng.random()
        if not found:
            kind, passages = "no passage retrieved", ()
        elif draw < recipe.distractor_share:
            sources = {p.source for p in found}
            kind, passages = "distractors", tuple(kb.random_passages(len(found), sources, recipe.seed * 100_003 + n))
        elif draw < recipe.distractor_share + recipe.none_share:
            kind, passages = "passages left out", ()
        else:
            kind, passages = "retrieved passages", found
        kinds[kind] += 1
        out.append(passages)
    return out, kinds


def describe(kinds: Counter) -> str:
    order = ("retrieved passages", "distractors", "passages left out", "no passage retrieved")
    return ", ".join(f"{kinds[k]} {k}" for k in order if kinds.get(k))
