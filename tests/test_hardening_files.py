"""Hardening of ingest, the replies CSV and the image (issue 11).

Ingest on the real embedder and a real embedded Chroma store: sources relative to the folder given,
a lock against a second writer (or a writer beside a serving process), a reader that crashes skips
its file alone, symlinks out of the given folders are not followed, a 2 MB one-word line becomes
bounded chunks. The replies CSV neutralises formula cells and reads them back as written.
"""

from __future__ import annotations

import ast
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from base.settings import Settings
from ingest import pipeline
from ingest.chunker import chunk_document
from ingest.pipeline import ingest
from ingest.readers import Block, Document
from knowledge.store import lock_store, open_knowledge_base
from tests.support import CORPUS, free_port
from tests.support import assert_consistent, run_responder_cli

REPO = Path(__file__).resolve().parent.parent


def stored(kb) -> dict[str, list[dict]]:
    """Chunks by their `source` key, exactly as stored."""
    got = kb.collection().get(include=["metadatas", "documents"])
    out: dict[str, list[dict]] = {}
    for cid, meta, doc in zip(got["ids"], got["metadatas"], got["documents"]):
        out.setdefault(meta["source"], []).append({"id": cid, "text": doc, **meta})
    return out


# ------------------------------------------------------------------------- 7. relative sources


@pytest.mark.integration
def test_sources_are_relative_to_the_folder_given(tmp_path, articles):
    (articles / "deep").mkdir()
    (articles / "deep" / "pca.md").write_text("# PCA\n\nLoadings tell which variables drive a component.")
    single = tmp_path / "one-off.md"
    single.write_text("# Medians\n\nThe median resists outliers better than the mean.")
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    ingest([articles, single], kb)
    assert set(stored(kb)) == {"articles/sql-window.md", "articles/docker.md", "articles/bootstrap.md",
                               "articles/deep/pca.md", "one-off.md"}
    found = kb.search("error bars on a median by resampling", top_k=1)
    assert found[0].source == "articles/bootstrap.md"


@pytest.mark.integration
def test_a_store_made_with_absolute_sources_is_moved_to_relative_ones(tmp_path, articles):
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    legacy = str((articles / "docker.md").resolve())
    gone = str((articles / "deleted-long-ago.md").resolve())
    kb.add(["old1", "old2"], kb.embedder.embed(["x", "y"]), ["old docker text", "old text"],
           [{"source": legacy, "fingerprint": "f", "n_chunks": 1, "chunk": 0},
            {"source": gone, "fingerprint": "g", "n_chunks": 1, "chunk": 0}])
    report = ingest([articles], kb)
    assert report.added == 3 and report.removed == 2
    assert not any(os.path.isabs(source) for source in stored(kb))
    assert_consistent(kb)


# ------------------------------------------------------------ 9. readers, symlinks, the store lock


@pytest.mark.integration
def test_a_reader_that_crashes_skips_its_file_and_the_run_goes_on(tmp_path, articles, monkeypatch):
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    ingest([articles], kb)
    (articles / "docker.md").write_text(CORPUS["docker.md"] + "\nOne more line.\n")  # changed: read again
    (articles / "bootstrap.md").unlink()  # deleted: pruned
    (articles / "new.md").write_text("# New\n\nA new article about window frames.")
    real = pipeline.read_document

    def crashing(path, data):
        if path.name == "docker.md":
            raise IndexError("list index out of range")  # not a Skip: a reader bug
        return real(path, data)

    monkeypatch.setattr(pipeline, "read_document", crashing)
    report = ingest([articles], kb)
    assert [(Path(p).name, r) for p, r in report.skipped] == [
        ("docker.md", "the reader failed (IndexError: list index out of range)")]
    assert (report.added, report.removed, report.unchanged) == (1, 1, 1)
    assert len(stored(kb)["articles/docker.md"]) == 2  # what the store had is kept
    assert "articles/bootstrap.md" not in stored(kb)


@pytest.mark.integration
def test_symlinks_leading_outside_the_given_folders_are_skipped(tmp_path, articles):
    outside = tmp_path / "private"
    (outside / "more").mkdir(parents=True)
    (outside / "secret.md").write_text("# Secret\n\nThe admin password is hunter2.")
    (outside / "more" / "diary.md").write_text("# Diary\n\nDear diary.")
    (articles / "leak.md").symlink_to(outside / "secret.md")
    (articles / "leakdir").symlink_to(outside / "more", target_is_directory=True)
    (articles / "alias.md").symlink_to(articles / "docker.md")  # inside: followed (stored once)
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    report = ingest([articles], kb)
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert set(reasons) == {"leak.md", "leakdir"}
    assert reasons["leak.md"] == f"symlink to {outside / 'secret.md'}, outside the folders given to ingest"
    assert reasons["leakdir"].endswith("outside the folders given to ingest")
    assert report.added == 3 and not any("hunter2" in c["text"] for rows in stored(kb).values() for c in rows)


def test_a_2mb_one_word_line_becomes_bounded_chunks():
    line = "x" * 2_000_000
    doc = Document(Path("min.md"), "Minified", blocks=[Block(f"```js\n{line}\n```", ("Code",), code=True),
                                                       Block("A normal paragraph after it.", ("Code",))])
    chunks = chunk_document(doc, lambda text: len(text.split()), max_tokens=256, max_chars=2000)
    assert max(len(c.text) for c in chunks) <= 2000
    assert sum(c.text.count("x") for c in chunks) == 2_000_000  # nothing lost
    assert chunks[-1].text.endswith("A normal paragraph after it.")


@pytest.mark.integration
@pytest.mark.slow  # half a minute of embedding; the chunker test above checks the same cut in a second
def test_ingest_of_a_2mb_line_stores_no_chunk_over_the_cap(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "bundle.md").write_text("# Bundle\n\n```js\n" + "a" * 2_000_000 + "\n```\n")
    out = subprocess.run([sys.executable, "-c", "from ingest.cli import main; main()", str(folder),
                          "--store", str(tmp_path / "store")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    docs = open_knowledge_base(Settings(store=tmp_path / "store")).collection().get(include=["documents"])
    assert len(docs["documents"]) >= 1000 and max(len(d) for d in docs["documents"]) <= 2000


def _ingest_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from ingest.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_ingest_refuses_a_store_that_a_server_or_another_ingest_holds(tmp_path, corpus_dir):
    store = tmp_path / "store"
    settings = Settings(store=store)
    with lock_store(settings, exclusive=False):  # what `responder serve` holds while it runs
        beside_server = _ingest_cli(str(corpus_dir), "--store", str(store))
    with lock_store(settings, exclusive=True):  # another ingest
        beside_ingest = _ingest_cli(str(corpus_dir), "--store", str(store))
        serve = run_responder_cli("serve", "--store", str(store), "--port", str(free_port()))
    after = _ingest_cli(str(corpus_dir), "--store", str(store))
    for out in (beside_server, beside_ingest):
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
        assert out.stderr.startswith(f"Error: the store at {store} is in use by another `ingest` or a running "
                                     "`responder serve`")
        assert "--chroma-url http://127.0.0.1:8001" in out.stderr
    assert serve.returncode == 2 and serve.stderr.startswith(f"Error: the store at {store} is in use by an `ingest`")
    assert after.returncode == 0, after.stderr  # the kernel dropped the locks with their holders


def test_no_lock_in_server_mode(tmp_path):
    with lock_store(Settings(store=tmp_path / "s", chroma_url="http://127.0.0.1:1"), exclusive=True) as held:
        assert held.fd is None and not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- 8. the replies CSV


# (A formula comment that is not a link drop: triage's rules would skip that one before posting.)
FORMULAS = {"comment": "=SUM(A1:A3)*10 gives me #VALUE!, why?", "author": "@sam", "video_id": "-dQw4w9WgXc",
            "reply": "+1 to that: keep a holdout set and compare on it.", "comment_id": "Ugx-abc"}


def test_csv_cells_are_neutralised_and_read_back_as_written(tmp_path):
    from responder.jobs.drafts import Drafts
    from responder.jobs.posting import read_replies
    from responder.jobs.reply_log import ReplyLog

    path = tmp_path / "replies.csv"
    records = [{**FORMULAS, "sources": [], "used_context": False, "status": "answered", "approved": True},
               {"comment_id": "Ugy2", "video_id": "v", "author": "'quoted'", "comment": "\tindented",
                "reply": "-5% is within the noise here.", "sources": [], "used_context": False,
                "status": "answered", "approved": True}]
    with ReplyLog(path) as log:
        log.append(records)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    # What a spreadsheet sees: no cell starts a formula.
    assert rows[0]["comment"] == "'" + FORMULAS["comment"] and rows[0]["author"] == "'@sam"
    assert rows[0]["video_id"] == "'-dQw4w9WgXc" and rows[0]["reply"].startswith("'+1")
    assert rows[1]["author"] == "''quoted'" and rows[1]["comment"] == "'\tindented"
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for v in row.values())
    # What every reader of the file gets back: the text as written.
    loaded = Drafts(path).load()
    for record, original in zip(loaded, records):
        assert {k: record[k] for k in ("comment_id", "video_id", "author", "comment", "reply")} == \
            {k: original[k] for k in ("comment_id", "video_id", "author", "comment", "reply")}
    with ReplyLog(path) as again:  # a resumed batch sees the same ids
        assert again.done_ids == {"Ugx-abc", "Ugy2"}
    posted = read_replies(path, take_all=True)
    assert {p.comment_id: p.text for p in posted.approved} == {
        "Ugx-abc": FORMULAS["reply"], "Ugy2": "-5% is within the noise here."}  # no leading apostrophe

    # The review page rewrites the whole file on an edit: the cells stay neutralised.
    Drafts(path).change("Ugy2", lambda r: r.update(reply="=2 folds are too few for a holdout estimate.", approved=True))
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0]["comment"] == "'" + FORMULAS["comment"] and rows[1]["reply"] == "'=2 folds are too few for a holdout estimate."
    assert not any(v.startswith(("=", "+", "-", "@", "\t", "\r")) for row in rows for v in row.values())
    posted = read_replies(path, take_all=True)
    assert {p.comment_id: p.text for p in posted.approved} == {
        "Ugx-abc": FORMULAS["reply"], "Ugy2": "=2 folds are too few for a holdout estimate."}


def test_the_replies_file_holds_the_comment_as_the_model_read_it():
    from responder.jobs.reply_log import record
    from responder.youtube.export import Comment

    hidden = Comment("c1", "great video\U000E0041\U000E0042\u202e!\u00ad", author="  Sam\u200b\n" + "x" * 500)
    written = record(hidden, "skipped:test")
    assert written["comment"] == "great video!" and written["author"] == "Sam " + "x" * 96


def test_reply_sources_in_the_replies_file_carry_no_absolute_path():
    from base.prompt import Passage
    from responder.jobs.reply_log import record
    from responder.responder import Reply
    from responder.youtube.export import Comment

    sources = [Passage("t", source="/home/nadia/blog/a.md"), Passage("t", source="C:\\blog\\b.md"),
               Passage("t", source="articles/c.md")]
    comment = Comment("c1", "t", video_id="v", author="a")
    written = record(comment, "answered", Reply("r", sources, True, "m", None))
    assert [s["source"] for s in written["sources"]] == ["a.md", "b.md", "articles/c.md"]


# ---------------------------------------------------------------------------------- 10. the image


def test_the_image_checks_readiness_and_cannot_start_open():
    import re

    text = (REPO / "Dockerfile").read_text()
    healthcheck = re.findall(r"^HEALTHCHECK(?:.*\\\n)*.*$", text, re.MULTILINE)  # with its continuation lines
    assert len(healthcheck) == 1 and "/readyz" in healthcheck[0] and "/healthz" not in healthcheck[0]
    assert "COPY base base" in text  # every package the service imports is in the image
    assert "RESPONDER_HOST=0.0.0.0" in text and "RESPONDER_ALLOW_NO_AUTH" not in text  # a key is required
    assert "RESPONDER_API_KEY" in text and "RESPONDER_SHUTDOWN_GRACE_S" in text


def test_no_function_in_the_hardened_files_is_longer_than_80_lines():
    files = [*(REPO / "ingest").glob("*.py"), *(REPO / p for p in ("responder/responder.py", "responder/cli/serve.py",
             "responder/jobs/reply_log.py", "benchmarks/hostile_bench.py"))]
    too_long = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}")
    assert too_long == []
