"""Article URLs for citations, resolved once at ingest: the article's own, else the creator's base URL."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from base.citation import article_url, check_base_url
from base.settings import Settings
from ingest.pipeline import ingest
from ingest.readers import read_document
from knowledge.store import open_knowledge_base
from tests.support import make_pdf


def test_the_slug_is_appended_to_the_base_url_or_fills_its_placeholder():
    assert article_url("https://blog.test/posts/", "SQL Window_functions") == "https://blog.test/posts/sql-window-functions"
    assert article_url("https://blog.test/{slug}.html", "k-means") == "https://blog.test/k-means.html"
    assert article_url(None, "anything") == ""


@pytest.mark.parametrize("bad", ["blog.test/posts", "ftp://blog.test/", "https:///x", "https://b.test/{title}"])
def test_a_base_url_that_cannot_make_links_is_refused(bad):
    with pytest.raises(ValueError, match="article base URL"):
        check_base_url(bad)


def test_a_pdf_names_its_url_in_its_metadata(tmp_path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["Resample with replacement."], title="Notes"))))
    writer.add_metadata({"/URL": "https://blog.test/bootstrap.pdf"})
    buffer = io.BytesIO()
    writer.write(buffer)
    path = tmp_path / "bootstrap.pdf"
    assert read_document(path, buffer.getvalue()).url == "https://blog.test/bootstrap.pdf"
    assert read_document(path, make_pdf(["Resample with replacement."], title="Notes")).url == ""


def _urls(kb) -> dict[str, set[str]]:
    got = kb.collection().get(include=["metadatas"])["metadatas"]
    out: dict[str, set[str]] = {}
    for meta in got:
        out.setdefault(meta["source"].split("/")[-1], set()).add(meta["url"])
    return out


@pytest.mark.integration
def test_articles_without_a_url_get_the_base_url_and_a_new_base_embeds_nothing(tmp_path, articles):
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    ingest([articles], kb, base_url="https://blog.test/posts/")
    urls = _urls(kb)
    assert urls["sql-window.md"] == {"https://blog.test/sql-window"}  # its own front matter wins
    assert urls["docker.md"] == {"https://blog.test/posts/docker"}
    again = ingest([articles], kb, base_url="https://nadia.example/{slug}/")
    assert again.chunks_embedded == 0 and again.updated == 3
    assert _urls(kb)["bootstrap.md"] == {"https://nadia.example/bootstrap/"}
    ingest([articles], kb)  # no base URL any more: the articles without their own have none
    assert _urls(kb)["docker.md"] == {""}


def test_ingest_refuses_a_bad_base_url_in_one_line(tmp_path, articles):
    done = subprocess.run([str(Path(sys.executable).with_name("ingest")), str(articles), "--store", str(tmp_path / "s"),
                           "--base-url", "blog.test/posts"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RESPONDER_ARTICLE_BASE_URL" in lines[0] and "https://" in lines[0]
    assert not (tmp_path / "s").exists()  # nothing opened before the settings were checked
