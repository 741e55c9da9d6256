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
from knowledge.config import RetrievalConfig

from .embedder import Embedder, load_embedder, resolve_embedder
from .calibration import calibrate
from .search import DEFAULT_MIN_SIMILARITY, resolve_min_similarity, to_passages
from .triage import asks

# Cosine space; a wider search beam than Chroma's default (100), which measurably lost
# recall@3 at 10k+ chunks in benchmarks/ingest_bench.py.
HNSW = {"hnsw:space": "cosine", "hnsw:construction_ef": 200, "hnsw:search_ef": 200}
# Up to this many chunks, search scores every stored vector exactly (NumPy, a few ms per comment)
# instead of Chroma's approximate HNSW index: many near-identical vectors can crowd an article's
# own chunks out of an HNSW search entirely (seen with 1,000 copies of one block beside it).
EXACT_SEARCH_MAX = 20_000
# A comment that asks is searched with its video's title beside it (a viewer's "what is CUPED
# exactly?" under an A/B-testing video means that video's CUPED), and a passage found so must also
# be this close to the comment alone, so the title cannot pull in its article for an off-topic
# question ("what mic do you use?"). Measured on samples/retrieval_real_style.jsonl: README.
VIDEO_COMMENT_FLOOR = 0.15

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
        self._exact: tuple[int, Any, list[str], list[dict[str, Any]]] | None = None  # (count, vectors, docs, metas)

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
               video_title: str | None = None) -> list[Passage]:
        """The passages closest to `text`, best first, none below the similarity threshold; with the
        video's title when the comment asks something (see VIDEO_COMMENT_FLOOR)."""
        if top_k < 1 or not has_words(text, min_chars=2):
            return []
        col = self.collection()
        if col is None:
            return []
        threshold = self.threshold(min_similarity)
        if not (video_title and video_title.strip() and asks(text)):
            return self.search_many([text], top_k, threshold)[0]
        alone, with_title = self.embedder.embed([text, f"{text}\n{video_title.strip()}"])
        docs, metas, sims, vectors = self._nearest(col, [with_title], top_k * 4)[0]
        near = [i for i in range(len(docs)) if float(np.dot(vectors[i], alone)) >= VIDEO_COMMENT_FLOOR][:top_k]
        return to_passages([docs[i] for i in near], [metas[i] for i in near], [1.0 - sims[i] for i in near],
                           threshold)

    def search_many(self, texts: Sequence[str], top_k: int, threshold: float) -> list[list[Passage]]:
        """`search` for several texts in one embedding batch and one query, at a given threshold."""
        col = self.collection()
        if col is None or not texts:
            return [[] for _ in texts]
        vectors = self.embedder.embed(list(texts))
        if self._embedder is not None and col.metadata.get("dimension") != self._embedder.dimension:
            self._check(col)
        return [to_passages(docs, metas, [1.0 - s for s in sims], threshold)
                for docs, metas, sims, _ in self._nearest(col, vectors, top_k)]

    def _nearest(self, col: Any, vectors: Sequence[Sequence[float]], n: int) -> list[tuple[list, list, list, Any]]:
        """Per query vector, the `n` nearest chunks: (documents, metadatas, cosine similarities,
        their vectors), best first. Exact up to EXACT_SEARCH_MAX chunks, HNSW above."""
        count = col.count()
        if count == 0:
            return [([], [], [], np.zeros((0, 0), dtype=np.float32)) for _ in vectors]
        if count > EXACT_SEARCH_MAX:
            result = col.query(query_embeddings=vectors, n_results=n,
                               include=["documents", "metadatas", "distances", "embeddings"])
            return [(docs, metas, [1.0 - float(d) for d in dists], np.asarray(embs, dtype=np.float32))
                    for docs, metas, dists, embs in zip(result["documents"], result["metadatas"],
                                                        result["distances"], result["embeddings"])]
        _, stored, docs, metas = self._stored(col, count)
        out = []
        for row in np.asarray(vectors, dtype=np.float32) @ stored.T:
            best = np.argsort(-row)[:n]
            out.append(([docs[i] for i in best], [metas[i] for i in best], [float(row[i]) for i in best], stored[best]))
        return out

    def _stored(self, col: Any, count: int) -> tuple[int, Any, list[str], list[dict[str, Any]]]:
        """Every stored vector, document and metadata, read once and again only when the chunk count
        changed (or this process wrote to the store)."""
        with self._lock:
            if self._exact is None or self._exact[0] != count:
                rows = col.get(include=["embeddings", "documents", "metadatas"])
                self._exact = (count, np.asarray(rows["embeddings"], dtype=np.float32).reshape(len(rows["ids"]), -1),
                               list(rows["documents"]), list(rows["metadatas"]))
            return self._exact

    def threshold(self, explicit: float | None = None) -> float:
        """The similarity threshold in use: explicit, configured, this store's calibrated one, or the default."""
        col = self.collection()
        calibrated = (col.metadata or {}).get("min_similarity") if col is not None else None
        return resolve_min_similarity(explicit, self.config.min_similarity, calibrated)

    def threshold_is_stale(self) -> bool:
        """True when the store holds chunks but no calibrated threshold (made before calibration)."""
        col = self.collection()
        return col is not None and col.count() > 0 and "min_similarity" not in (col.metadata or {})

    def calibrate(self) -> tuple[float, float]:
        """Set this store's threshold above what generic off-topic comments reach; (threshold, their best)."""
        col = self.collection()
        if col is None or col.count() == 0:
            return DEFAULT_MIN_SIMILARITY, 0.0

        def best_match(comments: Sequence[str]) -> list[float]:
            found = self.search_many(comments, 1, threshold=-1.0)
            return [p[0].similarity if p else 0.0 for p in found]

        threshold, best = calibrate(best_match, DEFAULT_MIN_SIMILARITY)
        # Chroma refuses metadata that restates the HNSW settings fixed at creation: keep the rest.
        meta = {k: v for k, v in (col.metadata or {}).items() if not k.startswith("hnsw:")}
        col.modify(metadata={**meta, "min_similarity": threshold, "generic_best_similarity": best})
        self._collection = None
        return threshold, best

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
        self._exact = None
        for s in self._batches(len(ids)):
            col.upsert(ids=list(ids[s]), embeddings=np.asarray(embeddings[s], dtype=np.float32),
                       documents=list(documents[s]), metadatas=list(metadatas[s]))

    def update_metadata(self, ids: Sequence[str], metadatas: Sequence[dict[str, Any]]) -> None:
        col = self.collection(create=True)
        self._exact = None
        for s in self._batches(len(ids)):
            col.update(ids=list(ids[s]), metadatas=list(metadatas[s]))

    def delete(self, ids: Iterable[str]) -> None:
        ids = sorted(ids)
        col = self.collection()
        if col is None or not ids:
            return
        self._exact = None
        for s in self._batches(len(ids)):
            col.delete(ids=ids[s])


def open_knowledge_base(settings: Settings | RetrievalConfig) -> KnowledgeBase:
    """The knowledge base that the settings or retrieval config point at (embedded store, or a Chroma
    server), resolved once into its `RetrievalConfig`."""
    config = RetrievalConfig.of(settings)
    return KnowledgeBase(_client(config), config)
