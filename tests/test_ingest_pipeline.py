"""Ingest end to end on a small corpus: real embedder, real embedded Chroma, real files.

Incremental behaviour (unchanged / edited / deleted), the bad-file cases of the issue, and
crash safety (a write interrupted before stale chunks are deleted; `kill -9` of the CLI).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from base.settings import Settings
from ingest.pipeline import ingest
from knowledge.store import open_knowledge_base
from tests.support import CORPUS
from tests.support import assert_consistent, chunks_by_source, make_pdf

pytestmark = pytest.mark.integration


def settings_for(store: Path) -> Settings:
    return Settings(store=store)


def test_first_ingest_then_unchanged_then_edit_then_delete(tmp_path, articles):
    kb = open_knowledge_base(settings_for(tmp_path / "store"))

    first = ingest([articles], kb)
    assert (first.seen, first.added, first.unchanged, first.skipped) == (3, 3, 0, [])
    assert first.chunks_embedded == first.chunks_stored == 5

    again = ingest([articles], open_knowledge_base(settings_for(tmp_path / "store")))
    assert (again.added, again.updated, again.unchanged, again.chunks_embedded) == (0, 0, 3, 0)

    before = chunks_by_source(kb)
    (articles / "docker.md").write_text(CORPUS["docker.md"].replace(
        "--gpus all so torch can see the GPU", "--gpus all; check it with nvidia-smi inside the container"))
    edited = ingest([articles], kb)
    assert (edited.updated, edited.unchanged, edited.chunks_embedded) == (1, 2, 1)
    after = chunks_by_source(kb)
    for name in ("sql-window.md", "bootstrap.md"):  # other articles untouched
        assert {r["id"] for r in after[name]} == {r["id"] for r in before[name]}
    old_ids, new_ids = {r["id"] for r in before["docker.md"]}, {r["id"] for r in after["docker.md"]}
    assert len(old_ids & new_ids) == 1 and len(new_ids) == 2  # the unchanged section kept its vector
    assert any("nvidia-smi" in r["text"] for r in after["docker.md"])
    assert not any("torch can see" in r["text"] for r in after["docker.md"])
    assert_consistent(kb)

    (articles / "bootstrap.md").unlink()
    kept = ingest([articles], kb, prune=False)
    assert kept.removed == 0 and "bootstrap.md" in chunks_by_source(kb)
    pruned = ingest([articles], kb)
    assert pruned.removed == 1 and "bootstrap.md" not in chunks_by_source(kb)
    assert pruned.chunks_stored == 4


def test_bad_files_are_skipped_and_everything_else_is_ingested(tmp_path, articles):
    (articles / "latin1.md").write_bytes("# Caf\u00e9\n\nna\u00efve text".encode("latin-1"))
    (articles / "photo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (articles / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj garbage")
    (articles / "empty.md").write_bytes(b"")
    with open(articles / "huge.md", "wb") as f:  # 50 MB (sparse: the size check comes before reading)
        f.truncate(50 * 2**20)
    (articles / "loop").symlink_to(articles, target_is_directory=True)
    (articles / "a-link.md").symlink_to(articles / "b-link.md")
    (articles / "b-link.md").symlink_to(articles / "a-link.md")
    (articles / "paper.pdf").write_bytes(make_pdf(["Page one text about PCA loadings.", "Page two on scree plots."]))
    (articles / "notes.txt").write_text("Plain notes about k-means and the elbow method.\n\nSecond paragraph.")

    kb = open_knowledge_base(settings_for(tmp_path / "store"))
    report = ingest([articles], kb)
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(reasons) == {"latin1.md", "photo.md", "corrupt.pdf", "empty.md", "huge.md", "loop",
                            "a-link.md", "b-link.md"}
    assert "not UTF-8" in reasons["latin1.md"] and "binary" in reasons["photo.md"]
    assert "unreadable PDF" in reasons["corrupt.pdf"] and reasons["empty.md"] == "empty file"
    assert "50.0 MB is over the 10 MB limit" in reasons["huge.md"]
    assert "symlink loop" in reasons["loop"] and "symlink loop" in reasons["a-link.md"]
    assert report.added == 5
    pages = {r["page"] for r in chunks_by_source(kb)["paper.pdf"]}
    assert pages == {1, 2}

    # A stored article that turns bad keeps what the store already has for it.
    (articles / "docker.md").write_bytes(b"\xff\xfe broken now")
    again = ingest([articles], kb)
    assert "docker.md" in {Path(p).name for p, _ in again.skipped}
    assert len(chunks_by_source(kb)["docker.md"]) == 2


def test_interrupted_replace_is_completed_by_the_next_run(tmp_path, articles):
    kb = open_knowledge_base(settings_for(tmp_path / "store"))
    ingest([articles], kb)
    (articles / "sql-window.md").write_text(CORPUS["sql-window.md"].replace("running total", "cumulative sum"))

    class Crash(Exception):
        pass

    def crash(ids):
        raise Crash  # the process dies after writing the new chunks, before deleting the old ones

    real_delete, kb.delete = kb.delete, crash
    with pytest.raises(Crash):
        ingest([articles], kb)
    kb.delete = real_delete
    texts = [r["text"] for r in chunks_by_source(kb)["sql-window.md"]]
    assert len(texts) == 3  # old and new chunk of the edited section, side by side

    report = ingest([articles], kb)
    assert report.updated == 1 and report.chunks_embedded == 0  # the new chunk was already there
    assert_consistent(kb)
    texts = [r["text"] for r in chunks_by_source(kb)["sql-window.md"]]
    assert any("cumulative sum" in t for t in texts) and not any("running total" in t for t in texts)


# The CLI in a child process, killed with SIGKILL from inside when it starts writing the 4th
# article: three are stored, nine are not (a kill that waited on log lines would land wherever the
# machine's speed put the run).
_KILL_AT_4TH_WRITE = """
import os, signal
from knowledge.store import KnowledgeBase
from ingest.cli import main
real_add, writes = KnowledgeBase.add, []
def add(self, *args, **kwargs):
    writes.append(1)
    if len(writes) == 4:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_add(self, *args, **kwargs)
KnowledgeBase.add = add
main()
"""


def test_kill_9_mid_ingest_then_ingest_again_ends_consistent(tmp_path):
    articles = tmp_path / "articles"
    articles.mkdir()
    for i in range(12):
        paragraphs = "\n\n".join(f"Paragraph {j} of article {i} explains topic {i * 7 + j} in detail."
                                 for j in range(6))
        text = f"# Article {i}\n\n## Part one\n{paragraphs}\n\n## Part two\n{paragraphs}\n"
        (articles / f"a{i:02d}.md").write_text(text)
    store = tmp_path / "store"
    cmd = [sys.executable, "-c", _KILL_AT_4TH_WRITE, str(articles), "--store", str(store)]
    killed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "120"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    kb = open_knowledge_base(settings_for(store))
    report = ingest([articles], kb)
    assert (report.unchanged, report.added, report.updated) == (3, 9, 0)
    assert_consistent(kb)
    assert set(chunks_by_source(kb)) == {f"a{i:02d}.md" for i in range(12)}
    again = ingest([articles], kb)
    assert (again.unchanged, again.chunks_embedded) == (12, 0)
