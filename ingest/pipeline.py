"""Ingest: find article files, read and chunk the changed ones, write them to the knowledge base.

Incremental and crash-safe:
- every chunk records its file's fingerprint (hash of the bytes and the chunking settings) and
  the file's chunk count, so an unchanged file is recognised without reading it into the model;
- a changed file's new chunks are written *before* its stale chunks are deleted, and ids are
  content-addressed, so a run killed at any point leaves either the old or a mixed set that the
  next run completes (mixed fingerprints or a wrong count mean "not complete": redo the file);
- a file that cannot be read is skipped and whatever the store already holds for it is kept;
  a reader that fails in a way nobody foresaw (an exception of its library) skips that file too,
  with the exception as its reason, and the run (prune included) goes on;
- a file is stored under its path relative to the folder given (`articles/post.md`), never an
  absolute path; a symlink leading outside the given folders is skipped, not followed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from base.citation import article_url
from base.errors import UserError

from .chunker import (
    CHUNKER_VERSION,
    DEFAULT_CHUNK_TOKENS,
    DEFAULT_MAX_CHUNK_CHARS,
    DEFAULT_OVERLAP_TOKENS,
    REPEATS_ANOTHER_FILE,
    chunk_document,
    chunk_id,
    clip,
    storable,
    text_hash,
)
from .readers import SUPPORTED, Skip, read_document
from .video_map import read_video_map, resolve_video_map

log = logging.getLogger(__name__)

DEFAULT_MAX_FILE_MB = 10.0


@dataclass
class IngestReport:
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    chunks_embedded: int = 0
    chunks_stored: int = 0
    left_out: Counter = field(default_factory=Counter)  # chunks not stored, by reason (chunker.storable)
    seconds: float = 0.0
    min_similarity: float | None = None  # the store's calibrated threshold after this run
    generic_best: float | None = None  # the best similarity a generic off-topic comment reached


@dataclass
class Found:
    files: list[tuple[Path, str]]  # (the file's real path, its source key)
    skipped: list[tuple[Path, str]]  # (path, reason)
    folders: list[tuple[Path, str]]  # (a given folder, resolved; the key prefix of its files)
    keys: set[str] = field(default_factory=set)  # source keys of every file seen, skipped or not


def source_key(path: Path, root: Path | None, root_key: str) -> str:
    """How the store (and every reply) names a file: relative to the folder given to ingest, led by
    that folder's name (`articles/sql/window.md`), or the file's own name when it was given itself.
    Never an absolute path: the name leaves the machine with every passage."""
    if root is None:
        return path.name
    return "/".join((root_key, *path.relative_to(root).parts))


def discover(paths: Iterable[str | Path]) -> Found:
    """Files under `paths` (folders recursively, hidden entries ignored); loops, dead links and
    symlinks leading outside the given folders reported as skipped. Raises UserError for a path
    that does not exist."""
    raws = list(paths)
    given = [Path(raw).expanduser() for raw in raws]
    for raw, path in zip(raws, given):
        if not path.exists() and not path.is_symlink():
            raise UserError(f"{raw} does not exist; give files or folders of articles")
    roots = [p.resolve() for p in given if p.is_dir()]
    found = Found([], [], [])
    real_paths: dict[Path, None] = {}
    owner: dict[str, Path] = {}
    visited: set[tuple[int, int]] = set()

    def add_file(path: Path, key: str, walked: bool) -> None:
        found.keys.add(key)
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            reason = "symlink loop" if "loop" in str(exc).lower() or isinstance(exc, RuntimeError) else (
                "broken symlink" if path.is_symlink() else f"cannot read ({exc})")
            found.skipped.append((path, reason))
            return
        if walked and not _inside(real, roots):
            found.skipped.append((path, f"symlink to {real}, outside the folders given to ingest"))
        elif real.suffix.lower() not in SUPPORTED:
            found.skipped.append((real, f"unsupported file type {real.suffix or '(no extension)'}"))
        elif owner.setdefault(key, real) != real:
            found.skipped.append((path, f"another file is already stored as {key} (two given folders with "
                                        "one name?); ingest them separately or rename one"))
        elif real not in real_paths:
            real_paths[real] = None
            found.files.append((real, key))

    def walk(folder: Path, root: Path, root_key: str) -> None:
        try:
            st = folder.stat()
        except OSError as exc:
            found.skipped.append((folder, f"cannot read folder ({exc.strerror})"))
            return
        if (st.st_dev, st.st_ino) in visited:
            found.skipped.append((folder, "symlink loop (folder already visited)"))
            return
        if not _inside(folder.resolve(), roots):
            found.skipped.append((folder, f"symlink to {folder.resolve()}, outside the folders given to ingest"))
            return
        visited.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            found.skipped.append((folder, f"cannot list folder ({exc.strerror})"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks; a looping link raises or is False
            except OSError:
                is_dir = False
            if is_dir:
                walk(path, root, root_key)
            else:
                add_file(path, source_key(path, root, root_key), walked=True)

    for path in given:
        if path.is_dir():
            root_key = path.resolve().name or "root"
            found.folders.append((path.resolve(), root_key))
            walk(path, path, root_key)
        else:
            add_file(path, source_key(path, None, ""), walked=False)
    return found


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def fingerprint(data: bytes, embedder: str, chunk_tokens: int, overlap_tokens: int,
                max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS, base_url: str | None = None,
                videos: Sequence[str] = ()) -> str:
    h = hashlib.sha256(data)
    h.update(f"\0{embedder}\0{CHUNKER_VERSION}\0{chunk_tokens}\0{overlap_tokens}\0{max_chunk_chars}".encode())
    # A new base URL or video mapping rewrites the stored metadata only: nothing is embedded again.
    if base_url:
        h.update(f"\0{base_url}".encode())
    if videos:
        h.update(f"\0videos:{' '.join(videos)}".encode())
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class ChunkSettings:
    tokens: int = DEFAULT_CHUNK_TOKENS
    overlap: int = DEFAULT_OVERLAP_TOKENS
    max_chars: int = DEFAULT_MAX_CHUNK_CHARS
    base_url: str | None = None  # where articles without their own URL live (base.citation.article_url)


def video_links(videos_file: Path | None, found: Found, base_url: str | None) -> dict[str, tuple[str, ...]]:
    """{source key: video ids} from the creator's `--videos` mapping (ingest.video_map), resolved
    against this run's files before anything is written."""
    if videos_file is None:
        return {}

    def url_of(path: Path) -> str:
        try:
            return read_document(path, path.read_bytes()).url or article_url(base_url, path.stem)
        except (OSError, Skip):
            return article_url(base_url, path.stem)

    return resolve_video_map(read_video_map(videos_file), found.files, videos_file, url_of)


def ingest(paths: Iterable[str | Path], kb, prune: bool = True,
           max_file_mb: float = DEFAULT_MAX_FILE_MB, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
           overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
           on_file: Callable[[Path, str], None] | None = None,
           on_start: Callable[[int], None] | None = None,
           max_chunk_chars: int = DEFAULT_MAX_CHUNK_CHARS, base_url: str | None = None,
           videos_file: Path | None = None) -> IngestReport:
    """Bring the knowledge base `kb` up to date with the articles under `paths`; an article with no
    URL of its own gets `base_url` plus its slug (none without a base URL); `videos_file` links
    videos to articles (ingest.video_map), beside each article's front matter `video:`."""
    start = time.perf_counter()
    found = discover(paths)
    mapped = video_links(videos_file, found, base_url)
    report = IngestReport(seen=len(found.files) + len(found.skipped))
    report.skipped = [(str(p), reason) for p, reason in found.skipped]
    manifest = kb.manifest()
    if on_start:
        on_start(len(found.files))
    limit = int(max_file_mb * 1024 * 1024)
    sizes = ChunkSettings(chunk_tokens, overlap_tokens, max_chunk_chars, base_url)
    for path, source in found.files:
        status = _ingest_file(path, source, kb, manifest.get(source), limit, sizes, report, mapped.get(source, ()))
        if status.startswith("skipped: "):
            report.skipped.append((str(path), status[len("skipped: "):]))
        else:
            setattr(report, status, getattr(report, status) + 1)
        log.info("%s: %s", source, status)
        if on_file:
            on_file(path, status)
    report.removed = _remove_stale(kb, manifest, found, prune)
    report.chunks_stored = kb.count()
    if report.added or report.updated or report.removed or kb.threshold_is_stale():
        report.min_similarity, report.generic_best = kb.calibrate()
    else:
        report.min_similarity = kb.threshold()
    report.seconds = time.perf_counter() - start
    return report


def _not_stored_elsewhere(chunks: list, source: str, kb) -> tuple[list, int]:
    """`chunks` less those whose text another file already stores (a footer, an author bio, the same
    code cell in a series: one stored copy answers as well, and a thousand would crowd search), and
    how many were left out. The file that stored a text first keeps it."""
    elsewhere = kb.sources_of_texts([text_hash(c.text) for c in chunks])
    kept = [c for c in chunks if not (elsewhere.get(text_hash(c.text), set()) - {source})]
    return [replace(c, index=i) for i, c in enumerate(kept)], len(chunks) - len(kept)


def _remove_stale(kb, manifest: dict, found: Found, prune: bool) -> int:
    """Delete what the store holds for files gone from the given folders (with `prune`), and the
    chunks a store made before sources were relative keeps under a file's absolute path (always:
    this run stored that file under its relative key)."""
    removed = 0
    real_files = {str(real) for real, _ in found.files}
    for source, state in manifest.items():
        legacy = os.path.isabs(source)
        if legacy:
            inside = any(source.startswith(str(folder) + os.sep) for folder, _ in found.folders)
            stale = source in real_files or (prune and inside and not Path(source).exists())
        else:
            stale = prune and source not in found.keys and any(
                source.startswith(key + "/") for _, key in found.folders)
        if stale:
            kb.delete(state.ids)
            removed += 1
            log.info("%s: removed", source)
    return removed


def _ingest_file(path: Path, source: str, kb, state, limit: int, sizes: ChunkSettings,
                 report: IngestReport, mapped_videos: Sequence[str] = ()) -> str:
    try:
        size = path.stat().st_size
        if size > limit:
            return f"skipped: {size / 2**20:.1f} MB is over the {limit / 2**20:.0f} MB limit (--max-file-mb)"
        data = path.read_bytes()
    except OSError as exc:
        return f"skipped: cannot read ({exc.strerror or exc})"
    fp = fingerprint(data, kb.embedder_name, sizes.tokens, sizes.overlap, sizes.max_chars, sizes.base_url,
                     mapped_videos)
    if state is not None and state.is_complete(fp):
        return "unchanged"
    embedder = kb.embedder
    try:
        doc = read_document(path, data)
        chunks, left_out = storable(chunk_document(doc, embedder.count_tokens, embedder.max_tokens, sizes.tokens,
                                                   sizes.overlap, sizes.max_chars))
    except Skip as exc:
        return f"skipped: {exc}"
    except Exception as exc:  # noqa: BLE001 - a reader's bug skips its file; the run (and prune) goes on
        log.warning("%s: reader failed", path, exc_info=True)
        first = (str(exc).splitlines() or [""])[0][:120]
        return f"skipped: the reader failed ({type(exc).__name__}: {first})"
    chunks, repeats = _not_stored_elsewhere(chunks, source, kb)
    if repeats:
        left_out[REPEATS_ANOTHER_FILE] += repeats
    report.left_out.update(left_out)
    if not chunks:
        return "skipped: nothing to store (every chunk repeats another or has no words)"
    url = clip(doc.url or article_url(sizes.base_url, path.stem))
    videos = " ".join(dict.fromkeys((*doc.videos, *mapped_videos)))  # a string: Chroma metadata is scalar
    seen: Counter[str] = Counter()
    ids, metas = [], []
    for chunk in chunks:
        ids.append(chunk_id(source, kb.embedder_name, chunk.embed_text, seen[chunk.embed_text]))
        seen[chunk.embed_text] += 1
        meta = {"source": source, "stem": path.stem, "title": clip(doc.title), "section": chunk.section,
                "url": url, "date": clip(doc.date), "chunk": chunk.index, "n_chunks": len(chunks),
                "fingerprint": fp, "text_hash": text_hash(chunk.text), "videos": videos}
        if chunk.page is not None:
            meta["page"] = chunk.page
        metas.append(meta)
    old = state.ids if state is not None else set()
    new_rows = [i for i, cid in enumerate(ids) if cid not in old]
    kept_rows = [i for i, cid in enumerate(ids) if cid in old]
    if new_rows:
        vectors = embedder.embed([chunks[i].embed_text for i in new_rows])
        kb.add([ids[i] for i in new_rows], vectors, [chunks[i].text for i in new_rows],
               [metas[i] for i in new_rows])
        report.chunks_embedded += len(new_rows)
    if kept_rows:  # same text, new fingerprint: metadata only, no embedding
        kb.update_metadata([ids[i] for i in kept_rows], [metas[i] for i in kept_rows])
    kb.delete(old - set(ids))  # last: until here the old chunks still answer searches
    return "added" if state is None else "updated"
