"""Pure parts of search: the calibrated threshold, query guards, and rows -> passages.

`DEFAULT_MIN_SIMILARITY` was calibrated on samples/retrieval_questions.jsonl with the default
embedder and chunker: see knowledge/README.md for the method and the numbers.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from base.prompt import Passage

# Cosine similarity under which a passage is not injected (off-topic comments get nothing). The
# floor of every store's calibrated threshold (knowledge/calibration.py).
DEFAULT_MIN_SIMILARITY = 0.30

def resolve_min_similarity(explicit: float | None, configured: float | None,
                           calibrated: float | None = None) -> float:
    """The threshold to use: the caller's, else the configured one, else the store's calibrated
    one (set at ingest), else the default."""
    for value in (explicit, configured, calibrated):
        if value is not None:
            return value
    return DEFAULT_MIN_SIMILARITY


def to_passages(documents: Sequence[str], metadatas: Sequence[Mapping[str, Any]],
                distances: Sequence[float], min_similarity: float, ordered: bool = False) -> list[Passage]:
    """Passages at or above `min_similarity` (cosine distance = 1 - similarity), most similar first,
    or in the given order when `ordered` (retrieval's fused ranking)."""
    out: list[Passage] = []
    for text, meta, distance in zip(documents, metadatas, distances):
        similarity = round(1.0 - float(distance), 4)
        if similarity < min_similarity:
            continue
        page = meta.get("page")
        out.append(Passage(text=text, title=str(meta.get("title", "")), section=str(meta.get("section", "")),
                           source=str(meta.get("source", "")), url=str(meta.get("url", "")),
                           page=int(page) if isinstance(page, int) and page > 0 else None,
                           similarity=similarity))
    if not ordered:
        out.sort(key=lambda p: -p.similarity)
    return out
