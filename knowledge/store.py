"""The knowledge base: Chroma (the only module that imports chromadb) plus the embedder.

Embedded `PersistentClient` in `settings.store` by default; `HttpClient` to a Chroma server when
`settings.chroma_url` is set (several service workers need the server: the embedded client is not
multi-process safe). The collection uses cosine space and records the embedder's name and
dimension; opening it with another embedder is refused instead of mixing vectors. `lock_store`
keeps one writer (ingest) away from other users of an embedded store.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence
from urllib.parse import urlparse

import numpy as np

from base.errors import UserError
from base.prompt import Passage, has_words
from base.settings import Settings
from base.video import Video
from knowledge.config import RetrievalConfig

from .embedder import Embedder, load_embedder, resolve_embedder
from .lexical import LexicalIndex
from .query import search_queries
from .calibration import GENERIC_VIDEO_TITLES, calibrate, calibrated_link_threshold
from .search import DEFAULT_MIN_SIMILARITY, resolve_min_similarity, to_passages
from .triage import asks
from .video_links import DEFAULT_LINK_SIMILARITY, Link, VideoLinks, title_text

# Cosine space; a wider search beam than Chroma's default (100), which measurably lost
# recall@3 at 10k+ chunks in benchmarks/ingest_bench.py.
HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 200, "hnsw:search_ef": 200}
# Up to this many chunks, search scores every stored vector exactly (NumPy) instead of Chroma's
# approximate HNSW index: many near-identical vectors can crowd an article's own chunks out of an
# HNSW search entirely (seen with 1,000 copies of one block beside it). Measured per query
# (benchmarks/ingest_bench.py --sizes, 384 dims, 2 cores): exact 0.45 / 1.9 / 4.5 / 7.3 ms at 5k /
# 20k / 50k / 100k chunks, HNSW 2.2 / 3.5 / 3.1 / 2.6 ms with recall@3 0.995 / 0.962 / 0.892 / 0.818:
# exact is the faster up to about 35k chunks and the only one that finds everything; at 50k it costs
# 1.4 ms more than HNSW for a tenth more of the right passages (the vectors take 77 MB).
EXACT_SEARCH_MAX = 50_000
# A comment that asks is searched with its video's title beside it (a viewer's "what is CUPED
# exactly?" under an A/B-testing video means that video's CUPED), and a passage found so must also
# be this close to the comment alone, so the title cannot pull in its article for an off-topic
# question ("what mic do you use?"). Measured on samples/retrieval_real_style.jsonl: README.
VIDEO_COMMENT_FLOOR = 0.15
# Reciprocal rank fusion (Cormack et al. 2009): a chunk scores 1/(RRF_K + its embedder rank) plus
# LEXICAL_WEIGHT/(RRF_K + its BM25 rank). At weight 1.0, BM25's ranks, which shift with the store's
# average chunk length, cost two written questions their top passage in a store crowded with short
# code chunks; 0.7 kept every gain and lost none, on the plain and the crowded sample store alike
# (benchmarks/retrieval_bench.py, README "Hybrid retrieval").
RRF_K = 60
LEXICAL_WEIGHT = 0.7
# BM25 votes only for chunks whose cosine similarity is within this of the best passing chunk's: it
# reorders what the embedder finds about as close (names, code, rare terms the embedder blurs), but
# cannot lift a chunk the embedder puts far below ("how do I keep only the newest row per user?" found
# its ROW_NUMBER section at 0.48 and BM25's "row"s put running totals, at 0.33, first). On the sample
# sets (retrieval_bench, P@3 written / real-style with the video / without): no margin 0.852 / 0.955 /
# 0.841, 0.1 0.840 / 0.970 / 0.866, 0.05 0.846 / 0.965 / 0.851 (and hit@1 0.985 -> 0.970); hit@1 and
# hit@3 unchanged at 0.1.
LEXICAL_MARGIN = 0.1
# Above EXACT_SEARCH_MAX, how many chunks HNSW and BM25 each propose per query for exact re-scoring.
HNSW_CANDIDATES = 50
# The chunks of the articles a comment's video is about (knowledge.video_links) get this extra vote
# in the fusion, as much as a ranking that put them first with this weight: a preference, not a
# filter (a comment about something else still finds its article, and the threshold still applies).
# On samples/retrieval_real_style.jsonl, 0 / 0.1 / 0.25 / 0.5 gave passages from the expected
# article (precision@3) 0.945 / 0.955 / 0.965 / 0.970, and from 0.25 up the one off-topic question
# under another article's video lost its article from the top 3: README "Video-aware retrieval".
VIDEO_BOOST = 0.1


@dataclass
class _Index:
    """What search reads of a store: every chunk's id, document and metadata, its vectors when the
    store is small enough to score exactly, and the BM25 index over the documents (built on first use)."""

    count: int
    ids: list[str]
    documents: list[str]
    metadatas: list[dict[str, Any]]
    vectors: Any  # (count, dimension) float32, or None above EXACT_SEARCH_MAX
    _lexical: LexicalIndex | None = None
    _links: VideoLinks | None = None

    def __post_init__(self) -> None:
        self.position = {chunk_id: row for row, chunk_id in enumerate(self.ids)}
        self.linked: dict[tuple, tuple[Link, ...]] = {}  # each video's links, found once per store state

    def lexical(self) -> LexicalIndex:
        if self._lexical is None:
            self._lexical = LexicalIndex(self.documents)
        return self._lexical

    def links(self) -> VideoLinks:
        if self._links is None:
            self._links = VideoLinks(self.metadatas)
        return self._links


@dataclass(frozen=True)
class _Plan:
    """How one comment is searched: its queries (knowledge.query), each also with the video's title
    when the comment asks and a title was given, and the articles its video is about."""

    queries: list[str]
    video_title: str | None
    links: tuple[Link, ...] = ()

    @property
    def alone(self) -> int:
        """How many of `texts` are the comment's own queries: all of them, or with a title only the
        whole ask, which the VIDEO_COMMENT_FLOOR check needs (each text embedded costs ~10 ms)."""
        return 1 if self.video_title else len(self.queries)

    @property
    def texts(self) -> list[str]:
        if not self.video_title:
            return self.queries
        return self.queries[:1] + [f"{q}\n{self.video_title}" for q in self.queries]


def _plan(text: str, video: Video | None, focus: bool, links: tuple[Link, ...], index: _Index) -> _Plan:
    """A video known by its id alone is searched as the title of the article it is linked to."""
    title = video.title if video is not None else None
    if not title and links:
        title = index.links().titles.get(links[0].source)
    return _Plan(search_queries(text) if focus else [text], title if title and asks(text) else None, links)


def _ranks(scores: Any) -> Any:
    """1-based rank of each score, highest first."""
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, len(scores) + 1)
    return ranks


__all__ = ["DEFAULT_MIN_SIMILARITY", "KnowledgeBase", "SourceState", "StoreLock", "check_workers", "lock_store",
           "open_knowledge_base"]


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse several service workers on one embedded store, saying why and what to do."""
    if workers > 1 and not settings.chroma_url:
        raise UserError(
            f"{workers} workers cannot share the embedded Chroma store at {settings.store}: its "
            "PersistentClient is not multi-process safe (workers would hang or corrupt the index); "
            f"run a Chroma server (`chroma run --path {settings.store} --port 8001`) and set "
            "--chroma-url http://127.0.0.1:8001 (or RESPONDER_CHROMA_URL), or use --workers 1")


# --- the store lock: one writer, or any number of readers, per embedded store ---------------------

LOCK_FILE = ".responder.lock"


class StoreLock:
    """An flock on the store's lock file, held until `release()` (or the process ends: the kernel
    drops it, so a killed ingest never leaves a stale lock)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> "StoreLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_store(settings: Settings | RetrievalConfig, exclusive: bool) -> StoreLock:
    """Lock the embedded store: `exclusive` for `ingest` (the only writer), shared for a process that
    reads it (`responder serve`). A conflict is a `UserError` pointing to a Chroma server. Nothing is
    locked in server mode (the Chroma server serialises access) or where flock does not exist."""
    settings = RetrievalConfig.of(settings)
    if settings.chroma_url:
        return StoreLock(None)
    try:
        import fcntl
    except ImportError:  # not POSIX
        return StoreLock(None)
    store = settings.store.expanduser()
    try:
        store.mkdir(parents=True, exist_ok=True)
        fd = os.open(store / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"cannot open the store at {store} ({exc.strerror or exc}); "
                        "give --store a writable directory") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        who = "another `ingest` or a running `responder serve`" if exclusive else "an `ingest`"
        raise UserError(
            f"the store at {store} is in use by {who}, and the embedded Chroma store is not safe across "
            "processes; wait for it to finish (or stop it), or run a Chroma server (`chroma run --path "
            f"{store} --port 8001`) and pass --chroma-url http://127.0.0.1:8001 to ingest and serve") from None
    return StoreLock(fd)


@dataclass
class SourceState:
    """What the store holds for one source file."""

    ids: set[str] = field(default_factory=set)
    fingerprints: set[str] = field(default_factory=set)
    expected: int = 0  # chunk count recorded at write time

    def is_complete(self, fingerprint: str) -> bool:
        return self.fingerprints == {fingerprint} and len(self.ids) == self.expected


def shared_lock(settings: Settings | RetrievalConfig) -> StoreLock:
    """A shared lock on the embedded store while a process reads it (`ingest` cannot write it
    meanwhile); nothing to lock for a Chroma server or a store not ingested yet."""
    config = RetrievalConfig.of(settings)
    return lock_store(config, exclusive=False) if config.embedded_store_here else StoreLock(None)


def _client(settings: RetrievalConfig) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url if "://" in settings.chroma_url else f"http://{settings.chroma_url}")
        if not url.hostname:
            raise UserError(f"Chroma URL {settings.chroma_url!r} has no host; use http://HOST:PORT")
        try:
            return chromadb.HttpClient(host=url.hostname, port=url.port or (443 if url.scheme == "https" else 8000),
                                       ssl=url.scheme == "https", settings=chroma_settings)
        except Exception as exc:  # connection errors come from several libraries
            raise UserError(
                f"cannot reach the Chroma server at {settings.chroma_url} ({str(exc).splitlines()[0][:120]}); "
                "start it with `chroma run --path DIR --port N` or unset --chroma-url") from None
    store = settings.store.expanduser()
    if store.exists() and not store.is_dir():
        raise UserError(f"store {store} is a file, not a directory; give --store a directory")
    try:
        store.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(store), settings=chroma_settings)
    except OSError as exc:
        raise UserError(f"cannot open the store at {store} ({exc.strerror or exc}); "
                        "give --store a writable directory") from None


class KnowledgeBase:
    """Search and write access to one collection; the embedder is loaded on first use, once."""

    def __init__(self, client: Any, config: RetrievalConfig) -> None:
        self.client = client
        self.config = config
        self.collection_name = config.collection
        self.embedder_name, _ = resolve_embedder(config.embedder)
        self.location = config.location
        self._embedder: Embedder | None = None
        self._collection: Any = None
        self._batch_size: int | None = None
        self._lock = threading.Lock()
        self._stored: _Index | None = None  # what search reads, cached by chunk count

    # --- parts --------------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    self._embedder = load_embedder(self.config.embedder, self.config.device)
        return self._embedder

    def _check(self, collection: Any) -> Any:
        meta = collection.metadata or {}
        if meta.get("embedder") != self.embedder_name:
            raise UserError(
                f"the knowledge base at {self.location} was built with embedder {meta.get('embedder')!r} "
                f"({meta.get('dimension')} dimensions), not {self.embedder_name!r}; use the same --embedder, "
                "or ingest into a new --store (mixing vectors of two embedders breaks search)")
        if self._embedder is not None and meta.get("dimension") != self._embedder.dimension:
            raise UserError(
                f"the knowledge base at {self.location} holds {meta.get('dimension')}-dimension vectors "
                f"but {self.embedder_name!r} makes {self._embedder.dimension}; ingest into a new --store")
        return collection

    def collection(self, create: bool = False) -> Any | None:
        """The collection, checked against the embedder; None when it does not exist yet."""
        if self._collection is not None:
            return self._collection
        from chromadb.errors import NotFoundError

        try:
            found = self.client.get_collection(self.collection_name)
        except (NotFoundError, ValueError):
            found = None
        if found is None and create:
            found = self.client.create_collection(
                self.collection_name, embedding_function=None,
                metadata={**HNSW, "embedder": self.embedder_name, "dimension": self.embedder.dimension})
        if found is not None:
            self._collection = self._check(found)
        return self._collection

    def count(self) -> int:
        col = self.collection()
        return col.count() if col is not None else 0

    # --- reading --------------------------------------------------------------------------------
    def search(self, text: str, top_k: int = 3, min_similarity: float | None = None,
               video: Video | None = None) -> list[Passage]:
        """The passages closest to `text`, in retrieval's order, none below the similarity threshold;
        with the video's title when the comment asks something (see VIDEO_COMMENT_FLOOR), and the
        video's own articles preferred (VIDEO_BOOST)."""
        if top_k < 1 or not has_words(text, min_chars=2) or self.collection() is None:
            return []
        return self.search_many([text], top_k, self.threshold(min_similarity), [video])[0]

    def search_many(self, texts: Sequence[str], top_k: int, threshold: float,
                    videos: Sequence[Video | None] | None = None, fused: bool = True) -> list[list[Passage]]:
        """`search` for several comments in one embedding batch, at a given threshold.

        Each comment is searched with its ask and each of its questions (knowledge.query); a chunk
        counts with its best query's cosine similarity, the threshold applies to that, and the
        chunks that pass are ordered by reciprocal rank fusion of that similarity's rank and BM25's
        rank for the ask (knowledge.lexical), or by similarity alone with `hybrid` (or `fused`) off."""
        col = self.collection()
        if col is None or not texts or col.count() == 0:
            return [[] for _ in texts]
        index = self._index(col)
        plans, vectors = self._embed_plans(col, index, texts, videos)
        if self._embedder is not None and col.metadata.get("dimension") != self._embedder.dimension:
            self._check(col)
        found, start = [], 0
        for plan in plans:
            found.append(self._rank(col, index, plan, vectors[start:start + len(plan.texts)], top_k, threshold, fused))
            start += len(plan.texts)
        return found

    def _embed_plans(self, col: Any, index: _Index, texts: Sequence[str], videos: Sequence[Video | None] | None
                     ) -> tuple[list[_Plan], Any]:
        """Each comment's search plan, and the vectors of every plan's texts in one embedding batch."""
        videos = list(videos) if videos is not None else [None] * len(texts)
        plans = [_plan(text, video, self.config.focus, self._links(col, index, video), index)
                 for text, video in zip(texts, videos)]
        return plans, np.asarray(self.embedder.embed([q for plan in plans for q in plan.texts]), dtype=np.float32)

    # --- the articles a video is about (knowledge.video_links) ------------------------------------
    def video_links(self, video: Video | None) -> list[Link]:
        """The stored articles `video` is about: linked by its description's URLs or the creator's
        mapping, else the one most similar to its title above the store's link threshold."""
        col = self.collection()
        if col is None or col.count() == 0:
            return []
        return list(self._links(col, self._index(col), video))

    def _links(self, col: Any, index: _Index, video: Video | None) -> tuple[Link, ...]:
        if video is None:
            return ()
        threshold = self.link_threshold()
        key = (video, threshold)
        if key not in index.linked:
            links = index.links().explicit(video)
            text = title_text(video)
            if not links and text:
                vector = np.asarray(self.embedder.embed([text]), dtype=np.float32)
                rows, stored = self._candidates(col, index, vector, None, HNSW_CANDIDATES)
                best = index.links().most_similar(rows, stored @ vector[0])
                if best is not None and best[1] >= threshold:
                    links = [Link(best[0], "title", round(best[1], 4))]
            with self._lock:
                index.linked[key] = tuple(links)
        return index.linked[key]

    def link_threshold(self) -> float:
        """How similar a video's title must be to an article to link them: this store's calibrated one."""
        col = self.collection()
        calibrated = (col.metadata or {}).get("video_link_similarity") if col is not None else None
        return float(calibrated) if calibrated is not None else DEFAULT_LINK_SIMILARITY

    def _rank(self, col: Any, index: _Index, plan: _Plan, vectors: Any, top_k: int, threshold: float,
              fused: bool = True) -> list[Passage]:
        ranked = self._ranked(col, index, plan, vectors, top_k, threshold, fused)
        return to_passages([index.documents[r] for r, _ in ranked], [index.metadatas[r] for r, _ in ranked],
                           [1.0 - s for _, s in ranked], threshold, ordered=True)

    def _ranked(self, col: Any, index: _Index, plan: _Plan, vectors: Any, top_k: int,
                threshold: float, fused: bool = True) -> list[tuple[int, float]]:
        """(row in `index`, cosine similarity) of the `top_k` chunks retrieval gives, in its order."""
        alone = vectors[:plan.alone]
        searched = vectors[plan.alone:] if plan.video_title else alone
        lexical = index.lexical().scores(plan.queries[0]) if self.config.hybrid and fused else None
        rows, stored = self._candidates(col, index, searched, lexical, top_k)
        if not len(rows):
            return []
        similarity = (searched @ stored.T).max(axis=0)
        passes = similarity >= threshold
        if plan.video_title:  # the title must not pull in its article for a question about something else
            passes &= (alone @ stored.T).max(axis=0) >= VIDEO_COMMENT_FLOOR
        fused = 1.0 / (RRF_K + _ranks(similarity))
        if lexical is not None:
            words = lexical[rows]
            near = similarity >= similarity[passes].max(initial=-1.0) - LEXICAL_MARGIN
            fused += np.where((words > 0) & near, LEXICAL_WEIGHT / (RRF_K + _ranks(words)), 0.0)
        if plan.links and VIDEO_BOOST:
            fused += np.where(index.links().mask(rows, plan.links), VIDEO_BOOST / (RRF_K + 1), 0.0)
        order = sorted(np.flatnonzero(passes), key=lambda i: (-fused[i], -similarity[i]))[:top_k]
        return [(int(rows[i]), float(similarity[i])) for i in order]

    def _candidates(self, col: Any, index: _Index, searched: Any, lexical: Any, top_k: int) -> tuple[Any, Any]:
        """(row numbers in `index`, their vectors): every stored chunk up to EXACT_SEARCH_MAX (scored
        exactly, NumPy); above it, HNSW's nearest per query plus BM25's best, their vectors fetched."""
        if index.vectors is not None:
            return np.arange(len(index.ids)), index.vectors
        n = max(HNSW_CANDIDATES, top_k * 4)
        hits = col.query(query_embeddings=searched, n_results=n, include=["embeddings"])
        vectors = {i: e for ids, embs in zip(hits["ids"], hits["embeddings"]) for i, e in zip(ids, embs)}
        if lexical is not None:
            extra = [index.ids[r] for r in np.argsort(-lexical)[:n] if lexical[r] > 0 and index.ids[r] not in vectors]
            if extra:
                got = col.get(ids=extra, include=["embeddings"])
                vectors.update(zip(got["ids"], got["embeddings"]))
        ids = [i for i in vectors if i in index.position]
        rows = np.array([index.position[i] for i in ids], dtype=np.int64)
        return rows, np.asarray([vectors[i] for i in ids], dtype=np.float32).reshape(len(ids), -1)

    def recall_against_exact(self, texts: Sequence[str], videos: Sequence[Video | None], k: int = 10
                             ) -> tuple[float, float]:
        """(recall@k of the search in use, recall@k of Chroma's HNSW index alone): the share of the
        chunks exact scoring of every stored vector ranks in its top `k` (threshold off) that each
        also returns, averaged over `texts`. Reads every stored vector: an evaluation, not a search."""
        col = self.collection()
        if col is None or col.count() == 0 or not texts:
            return 1.0, 1.0
        index = self._index(col)
        exact = index if index.vectors is not None else self._read_index(col, with_vectors=True)
        plans, vectors = self._embed_plans(col, index, texts, videos)
        in_use, hnsw, start = [], [], 0
        for plan in plans:
            own = vectors[start:start + len(plan.texts)]
            start += len(plan.texts)
            truth = {exact.ids[r] for r, _ in self._ranked(col, exact, plan, own, k, -1.0)}
            if not truth:
                continue
            got = {index.ids[r] for r, _ in self._ranked(col, index, plan, own, k, -1.0)}
            in_use.append(len(truth & got) / len(truth))
            first = own[plan.alone:][:1] if plan.video_title else own[:1]
            dense_truth = {exact.ids[i] for i in np.argsort(-(exact.vectors @ first[0]))[:k]}
            approximate = set(col.query(query_embeddings=first, n_results=k, include=[])["ids"][0])
            hnsw.append(len(dense_truth & approximate) / len(dense_truth))
        mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else 1.0  # noqa: E731
        return mean(in_use), mean(hnsw)

    def lexical_search(self, text: str, top_k: int = 10) -> list[Passage]:
        """BM25 alone over the stored chunks, for measurement (benchmarks/retrieval_bench.py): the
        chunks sharing words with the comment's ask, best first, with no threshold (BM25 cannot
        tell an off-topic comment from a question); `similarity` holds the BM25 score."""
        col = self.collection()
        if col is None or col.count() == 0 or not has_words(text, min_chars=2):
            return []
        index = self._index(col)
        scores = index.lexical().scores(search_queries(text)[0] if self.config.focus else text)
        best = [int(r) for r in np.argsort(-scores)[:top_k] if scores[r] > 0]
        return to_passages([index.documents[r] for r in best], [index.metadatas[r] for r in best],
                           [1.0 - float(scores[r]) for r in best], min_similarity=-np.inf, ordered=True)

    def _index(self, col: Any) -> _Index:
        """What search reads, read once and again only when the chunk count changed (or this process
        wrote to the store): vectors included up to EXACT_SEARCH_MAX chunks."""
        count = col.count()
        with self._lock:
            if self._stored is None or self._stored.count != count:
                self._stored = self._read_index(col, with_vectors=count <= EXACT_SEARCH_MAX)
            return self._stored

    @staticmethod
    def _read_index(col: Any, with_vectors: bool, page: int = 5000) -> _Index:
        """Every stored chunk's id, document and metadata, and its vector when `with_vectors`."""
        include = ["documents", "metadatas"] + (["embeddings"] if with_vectors else [])
        ids: list[str] = []
        docs: list[str] = []
        metas: list[dict[str, Any]] = []
        vectors = []
        count = col.count()
        for offset in range(0, count, page):
            rows = col.get(include=include, limit=page, offset=offset)
            ids += rows["ids"]
            docs += rows["documents"]
            metas += rows["metadatas"]
            if with_vectors:
                vectors.append(np.asarray(rows["embeddings"], dtype=np.float32).reshape(len(rows["ids"]), -1))
        return _Index(count, ids, docs, metas, np.vstack(vectors) if vectors else None)

    def threshold(self, explicit: float | None = None) -> float:
        """The similarity threshold in use: explicit, configured, this store's calibrated one, or the default."""
        col = self.collection()
        calibrated = (col.metadata or {}).get("min_similarity") if col is not None else None
        return resolve_min_similarity(explicit, self.config.min_similarity, calibrated)

    def threshold_is_stale(self) -> bool:
        """True when the store holds chunks but no calibrated threshold (made before calibration)."""
        col = self.collection()
        meta = col.metadata or {} if col is not None else {}
        return col is not None and col.count() > 0 and not {"min_similarity", "video_link_similarity"} <= set(meta)

    def calibrate(self) -> tuple[float, float]:
        """Set this store's threshold above what generic off-topic comments reach; (threshold, their best)."""
        col = self.collection()
        if col is None or col.count() == 0:
            return DEFAULT_MIN_SIMILARITY, 0.0

        def best_match(comments: Sequence[str]) -> list[float]:
            # The most similar chunk, by cosine alone: BM25 may put a less similar one first, and the
            # threshold must sit above what any generic comment can reach.
            found = self.search_many(comments, 1, threshold=-1.0, fused=False)
            return [p[0].similarity if p else 0.0 for p in found]

        threshold, best = calibrate(best_match, DEFAULT_MIN_SIMILARITY)
        link = calibrated_link_threshold(self._best_article_similarity(col, GENERIC_VIDEO_TITLES),
                                         DEFAULT_LINK_SIMILARITY)
        # Chroma refuses metadata that restates the HNSW settings fixed at creation: keep the rest.
        meta = {k: v for k, v in (col.metadata or {}).items() if not k.startswith("hnsw:")}
        col.modify(metadata={**meta, "min_similarity": threshold, "generic_best_similarity": best,
                             "video_link_similarity": link})
        self._collection = None
        return threshold, best

    def _best_article_similarity(self, col: Any, titles: Sequence[str]) -> list[float]:
        """For each video title, the similarity of the stored chunk most similar to it."""
        index = self._index(col)
        vectors = np.asarray(self.embedder.embed(list(titles)), dtype=np.float32)
        best = []
        for vector in vectors:
            rows, stored = self._candidates(col, index, vector[None, :], None, HNSW_CANDIDATES)
            best.append(float((stored @ vector).max()) if len(rows) else 0.0)
        return best

    def random_passages(self, count: int, exclude_sources: set[str], seed: int) -> list[Passage]:
        """`count` stored chunks from sources other than `exclude_sources`, chosen with `seed`."""
        import random

        col = self.collection()
        if col is None or count < 1:
            return []
        got = col.get(include=["metadatas"])
        candidates = sorted(i for i, m in zip(got["ids"], got["metadatas"])
                            if str(m.get("source", "")) not in exclude_sources)
        picked = random.Random(seed).sample(candidates, min(count, len(candidates)))
        if not picked:
            return []
        rows = col.get(ids=picked, include=["documents", "metadatas"])
        return to_passages(rows["documents"], rows["metadatas"], [1.0] * len(rows["ids"]), min_similarity=-1.0)

    def manifest(self, page: int = 5000) -> dict[str, SourceState]:
        """Every stored source file with its chunk ids and fingerprints."""
        col = self.collection()
        states: dict[str, SourceState] = {}
        if col is None:
            return states
        offset = 0
        while True:
            got = col.get(include=["metadatas"], limit=page, offset=offset)
            for chunk_id, meta in zip(got["ids"], got["metadatas"]):
                state = states.setdefault(str(meta.get("source", "")), SourceState())
                state.ids.add(chunk_id)
                state.fingerprints.add(str(meta.get("fingerprint", "")))
                state.expected = int(meta.get("n_chunks", 0))
            if len(got["ids"]) < page:
                return states
            offset += page

    def sources_of_texts(self, hashes: Sequence[str], page: int = 500) -> dict[str, set[str]]:
        """For each chunk-text hash the store holds (metadata `text_hash`, set at ingest), its sources."""
        col = self.collection()
        found: dict[str, set[str]] = {}
        unique = sorted(set(hashes))
        if col is None or not unique:
            return found
        for start in range(0, len(unique), page):
            got = col.get(where={"text_hash": {"$in": unique[start:start + page]}}, include=["metadatas"])
            for meta in got["metadatas"]:
                found.setdefault(str(meta.get("text_hash")), set()).add(str(meta.get("source", "")))
        return found

    # --- writing (batched by the server's limit) ----------------------------------------------
    def _batches(self, n: int) -> Iterable[slice]:
        if self._batch_size is None:  # a server round trip in server mode: ask once
            self._batch_size = max(1, int(self.client.get_max_batch_size()))
        size = self._batch_size
        for start in range(0, n, size):
            yield slice(start, start + size)

    def add(self, ids: Sequence[str], embeddings: Sequence[Sequence[float]], documents: Sequence[str],
            metadatas: Sequence[dict[str, Any]]) -> None:
        col = self.collection(create=True)
        self._stored = None
        for s in self._batches(len(ids)):
            col.upsert(ids=list(ids[s]), embeddings=np.asarray(embeddings[s], dtype=np.float32),
                       documents=list(documents[s]), metadatas=list(metadatas[s]))

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        col = self.collection(create=True)
        self._stored = None
        for s in self._batches(len(ids)):
            col.update(ids=list(ids[s]), metadatas=list(metadatas[s]))

    def delete(self, ids: Iterable[str]) -> None:
        ids = sorted(ids)
        col = self.collection()
        if col is None or not ids:
            return
        self._stored = None
        for s in self._batches(len(ids)):
            col.delete(ids=ids[s])


def open_knowledge_base(settings: Settings | RetrievalConfig) -> KnowledgeBase:
    """The knowledge base that the settings or retrieval config point at (embedded store, or a Chroma
    server), resolved once into its `RetrievalConfig`."""
    config = RetrievalConfig.of(settings)
    return KnowledgeBase(_client(config), config)
