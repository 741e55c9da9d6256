"""The lexical side of hybrid retrieval: BM25 (the `bm25s` library) over the store's own documents.

An embedding blurs the words a viewer's question turns on when they are rare: a function name
(`groupby`), an acronym (CUPED, BCa), a library (polars). BM25 scores exactly those, by how rare
they are among the stored chunks. The index is built from the documents the store returns, so it
serves the embedded store and a Chroma server alike; words are lower-cased, English stop words
dropped and stemmed (Snowball), so "tuning" finds "tune".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

# Question words and chat words every comment has: BM25 would score them as if they were topics.
_QUESTION_WORDS = ["what", "whats", "how", "why", "when", "where", "which", "who", "does", "do", "did", "can",
                   "could", "should", "would", "im", "ive", "dont", "doesnt", "isnt", "pls", "please", "lol",
                   "thanks", "thank", "video", "vid", "hey", "hi", "hello", "exactly", "actually", "really"]


def _stemmer() -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer("english").stemWords


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s
    from bm25s.stopwords import STOPWORDS_EN

    return bm25s.tokenize(list(texts), stopwords=list(STOPWORDS_EN) + _QUESTION_WORDS, stemmer=_stemmer(),
                          return_ids=False, show_progress=False)


class LexicalIndex:
    """BM25 over a fixed list of documents; `scores(query)` gives one score per document (0: no word shared)."""

    def __init__(self, documents: Sequence[str]) -> None:
        import bm25s

        logging.getLogger("bm25s").setLevel(logging.WARNING)  # its import sets DEBUG: a line per index build

        self.size = len(documents)
        self._bm25 = bm25s.BM25()
        self._bm25.index(tokenize(documents), show_progress=False)

    def scores(self, query: str) -> Any:
        import numpy as np

        tokens = tokenize([query])[0]
        if not tokens or self.size == 0:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)
