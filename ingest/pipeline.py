"""Ingest: find article files, read and chunk the changed ones, write them to the knowledge base.

Incremental and crash-safe:
- every chunk records its file's fingerprint (hash of the bytes and the chunking settings) and
  the file's chunk count, so an unchanged file is recognised without reading it into the model;
- a changed file's new chunks are written *before* its stale chunks are deleted, and ids are
  content-addressed, so a run killed at any point leaves either the old or a mixed set that the
  next run completes (mixed fingerprints or a wrong count mean "not complete": redo the file);
- a file that cannot be read is skipped and whatever the store already holds for it is kept.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from base.errors import UserError

from .chunker import CHUNKER_VERSION, DEFAULT_CHUNK_TOKENS, DEFAULT_OVERLAP_TOKENS, chunk_document, chunk_id
from .readers import SUPPORTED, Skip, read_document

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
    seconds: float = 0.0
    min_similarity: float | None = None  # the store's calibrated threshold after this run
    generic_best: float | None = None  # the best similarity a generic off-topic comment reached


@dataclass
class Found:
    files: list[Path]
    skipped: list[tuple[Path, str]]
    folders: list[Path]


def discover(paths: Iterable[str | Path]) -> Found:
    """Files under `paths` (folders recursively, hidden entries ignored), loops and dead links
    reported as skipped. Raises UserError for a path that does not exist."""
    files: dict[Path, None] = {}
    skipped: list[tuple[Path, str]] = []
    folders: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def add_file(path: Path) -> None:
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            reason = "symlink loop" if "loop" in str(exc).lower() or isinstance(exc, RuntimeError) else (
                "broken symlink" if path.is_symlink() else f"cannot read ({exc})")
            skipped.append((path, reason))
            return
        if real.suffix.lower() not in SUPPORTED:
            skipped.append((real, f"unsupported file type {real.suffix or '(no extension)'}"))
        else:
            files.setdefault(real, None)

    def walk(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError as exc:
            skipped.append((folder, f"cannot read folder ({exc.strerror})"))
            return
        if (st.st_dev, st.st_ino) in visited:
            skipped.append((folder, "symlink loop (folder already visited)"))
            return
        visited.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder, f"cannot list folder ({exc.strerror})"))
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
                walk(path)
            else:
                add_file(path)

    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists() and not path.is_symlink():
            raise UserError(f"{raw} does not exist; give files or folders of articles")
        if path.is_dir():
            folders.append(path.resolve())
            walk(path)
        else:
            add_file(path)
    return Found(list(files), skipped, folders)


def fingerprint(data: bytes, embedder: str, chunk_tokens: int, overlap_tokens: int) -> str:
    h = hashlib.sha256(data)
    h.update(f"\0{embedder}\0{CHUNKER_VERSION}\0{chunk_tokens}\0{overlap_tokens}".encode())
    return h.hexdigest()[:32]


def ingest(paths: Iterable[str | Path], kb, prune: bool = True,
           max_file_mb: float = DEFAULT_MAX_FILE_MB, chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
           overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
           on_file: Callable[[Path, str], None] | None = None,
           on_start: Callable[[int], None] | None = None) -> IngestReport:
    """Bring the knowledge base `kb` up to date with the articles under `paths`."""
    start = time.perf_counter()
    found = discover(paths)
    report = IngestReport(seen=len(found.files) + len(found.skipped))
    report.skipped = [(str(p), reason) for p, reason in found.skipped]
    manifest = kb.manifest()
    if on_start:
        on_start(len(found.files))
    limit = int(max_file_mb * 1024 * 1024)
    for path in found.files:
        source = str(path)
        status = _ingest_file(path, source, kb, manifest.get(source), limit, chunk_tokens, overlap_tokens, report)
        if status.startswith("skipped: "):
            report.skipped.append((source, status[len("skipped: "):]))
        else:
            setattr(report, status, getattr(report, status) + 1)
        log.info("%s: %s", source, status)
        if on_file:
            on_file(path, status)
    if prune and found.folders:
        present = {str(p) for p in found.files} | {str(p) for p, _ in found.skipped}
        for source, state in manifest.items():
            inside = any(source.startswith(str(folder) + os.sep) for folder in found.folders)
            if inside and source not in present and not Path(source).exists():
                kb.delete(state.ids)
                report.removed += 1
                log.info("%s: removed", source)
    report.chunks_stored = kb.count()
    if report.added or report.updated or report.removed or kb.threshold_is_stale():
        report.min_similarity, report.generic_best = kb.calibrate()
    else:
        report.min_similarity = kb.threshold()
    report.seconds = time.perf_counter() - start
    return report


def _ingest_file(path: Path, source: str, kb, state, limit: int, chunk_tokens: int, overlap_tokens: int,
                 report: IngestReport) -> str:
    try:
        size = path.stat().st_size
        if size > limit:
            return f"skipped: {size / 2**20:.1f} MB is over the {limit / 2**20:.0f} MB limit (--max-file-mb)"
        data = path.read_bytes()
    except OSError as exc:
        return f"skipped: cannot read ({exc.strerror or exc})"
    fp = fingerprint(data, kb.embedder_name, chunk_tokens, overlap_tokens)
    if state is not None and state.is_complete(fp):
        return "unchanged"
    try:
        doc = read_document(path, data)
    except Skip as exc:
        return f"skipped: {exc}"
    embedder = kb.embedder
    chunks = chunk_document(doc, embedder.count_tokens, embedder.max_tokens, chunk_tokens, overlap_tokens)
    seen: Counter[str] = Counter()
    ids, metas = [], []
    for chunk in chunks:
        ids.append(chunk_id(source, kb.embedder_name, chunk.embed_text, seen[chunk.embed_text]))
        seen[chunk.embed_text] += 1
        meta = {"source": source, "stem": path.stem, "title": doc.title, "section": chunk.section,
                "url": doc.url, "date": doc.date, "chunk": chunk.index, "n_chunks": len(chunks),
                "fingerprint": fp}
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
