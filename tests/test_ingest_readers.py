"""Readers and the chunker: pure code on small inputs (the real tokenizer for the size limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.chunker import chunk_document, chunk_id
from ingest.readers import Block, Document, Skip, read_document
from tests.support import make_pdf


ARTICLE = """---
title: "Window Functions in SQL"
url: https://example.test/blog/window
date: 2026-01-02
---

# Window Functions in SQL

Intro with an ![a chart](chart.png) image and <span class="x">inline html</span> and a [link](http://x).

<div class="newsletter">Subscribe to my newsletter!</div>

## Running totals

Use `SUM() OVER (ORDER BY day)` for a running total.

```sql
SELECT day, SUM(amount) OVER (ORDER BY day) FROM sales;
```

### The frame clause

- ROWS counts rows
- RANGE counts values

## LAG

| function | meaning |
|---|---|
| LAG | previous row |
"""


def test_markdown_keeps_text_code_and_sections_and_drops_noise(tmp_path):
    doc = read_document(tmp_path / "window.md", ARTICLE.encode())
    assert (doc.title, doc.url, doc.date) == ("Window Functions in SQL", "https://example.test/blog/window",
                                              "2026-01-02")
    text = "\n".join(b.text for b in doc.blocks)
    assert "chart.png" not in text and "a chart" not in text  # image dropped
    assert "<span" not in text and "Subscribe" not in text  # HTML tags and HTML blocks dropped
    assert "Intro with an image and inline html and a link." in text  # text of links and spans kept
    code = [b for b in doc.blocks if b.code]
    assert code and "SELECT day, SUM(amount) OVER (ORDER BY day) FROM sales;" in code[0].text
    assert code[0].section == ("Running totals",)
    sections = {b.section for b in doc.blocks}
    assert ("Running totals", "The frame clause") in sections
    assert ("LAG",) in sections
    assert any("LAG | previous row" in b.text for b in doc.blocks)
    assert doc.blocks[0].section == ()  # the H1 equal to the title is not a section


def test_html_reads_main_content_not_navigation(tmp_path):
    html = """<html><head><title>Groupby speed</title></head><body>
    <nav><a href="/">Home</a> <a href="/about">About me and my newsletter</a></nav>
    <article><h1>Groupby speed</h1>
    <p>Categorical keys with observed=True make pandas groupby much faster on large frames of data.</p>
    <h2>Transform</h2><p>Transform keeps the shape of the frame and is vectorised, unlike apply with a lambda.</p>
    </article><footer>Copyright 2026, all rights reserved, cookie settings</footer></body></html>"""
    doc = read_document(tmp_path / "groupby.html", html.encode())
    text = " ".join(b.text for b in doc.blocks)
    assert doc.title == "Groupby speed"
    assert "observed=True" in text and "Transform keeps the shape" in text
    assert "About me" not in text and "cookie" not in text
    assert any(b.section == ("Transform",) for b in doc.blocks)


def test_pdf_keeps_page_numbers(tmp_path):
    data = make_pdf(["Bootstrap resamples with replacement.", "BCa corrects bias and skew."], title="Bootstrap")
    doc = read_document(tmp_path / "boot.pdf", data)
    assert doc.title == "Bootstrap"
    assert [(b.page, b.text) for b in doc.blocks] == [(1, "Bootstrap resamples with replacement."),
                                                      (2, "BCa corrects bias and skew.")]


def test_pdf_writer_junk_titles_fall_back_to_the_file_name(tmp_path):
    doc = read_document(tmp_path / "pca-intuition.pdf", make_pdf(["Text."], title="Microsoft Word - draft3.docx"))
    assert doc.title == "Pca intuition"


@pytest.mark.parametrize("name,data,reason", [
    ("empty.md", b"", "empty file"),
    ("blank.txt", b"  \n\n ", "empty file"),
    ("latin1.md", "caf\u00e9 na\u00efve".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 3)"),
    ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary content"),
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "unreadable PDF"),
    ("notes.docx", b"PK\x03\x04", "unsupported file type .docx"),
    ("only-image.md", b"# T\n\n![x](y.png)\n", "no text found"),
])
def test_bad_files_are_skipped_with_a_reason(tmp_path, name, data, reason):
    with pytest.raises(Skip) as info:
        read_document(tmp_path / name, data)
    assert reason in str(info.value)


def _words(text: str) -> int:
    return len(text.split())


def test_chunks_follow_sections_and_pages():
    doc = Document(Path("a.md"), "Title", blocks=[
        Block("one two three", ("A",)), Block("four five", ("A",)),
        Block("six seven", ("A", "B")), Block("eight", ("A", "B"), page=2)])
    chunks = chunk_document(doc, _words, max_tokens=256, chunk_tokens=100)
    assert [(c.section, c.page, c.text) for c in chunks] == [
        ("A", None, "one two three\n\nfour five"), ("A > B", None, "six seven"), ("A > B", 2, "eight")]
    assert chunks[1].embed_text == "Title\nA > B\n\nsix seven"


def test_long_sections_split_at_paragraphs_with_overlap():
    paragraphs = [" ".join(f"P{p}w{i}." for i in range(30)) for p in range(6)]
    doc = Document(Path("a.md"), "T", blocks=[Block(p, ("S",)) for p in paragraphs])
    chunks = chunk_document(doc, _words, max_tokens=256, chunk_tokens=70, overlap_tokens=10)
    assert len(chunks) >= 3
    assert all(_words(c.text) <= 70 for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split()[-1] in b.text  # consecutive chunks share text
    joined = " ".join(c.text for c in chunks)
    assert all(f"P{p}w{i}." in joined for p in range(6) for i in range(30))  # nothing lost
    assert all(c.text.startswith("P") and c.text.endswith(".") for c in chunks)  # cut between sentences


def test_every_embedded_text_fits_the_real_embedder_window():
    from transformers import AutoTokenizer

    from knowledge.embedder import embedded_embedder_dir

    tok = AutoTokenizer.from_pretrained(str(embedded_embedder_dir()))

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    long_prose = " ".join("Gradient boosting overfits when the learning rate is high." for _ in range(80))
    code = "```python\n" + "\n".join(f"df_{i} = df.groupby('key_{i}').agg(total=('x', 'sum'))" for i in range(60)) + "\n```"
    blob = "x" * 2000  # one "word" longer than the window
    doc = Document(Path("a.md"), "A fairly long article title about tuning " * 3,
                   blocks=[Block(long_prose, ("Section one", "Sub")), Block(code, ("Code",), code=True),
                           Block(blob, ("Blob",))])
    chunks = chunk_document(doc, count, max_tokens=256, chunk_tokens=200, overlap_tokens=32)
    assert len(chunks) > 5
    assert max(len(tok(c.embed_text)["input_ids"]) for c in chunks) <= 256


def test_chunk_ids_are_content_addressed():
    a = chunk_id("/a.md", "emb", "text", 0)
    assert a == chunk_id("/a.md", "emb", "text", 0)
    assert len({a, chunk_id("/b.md", "emb", "text", 0), chunk_id("/a.md", "other", "text", 0),
                chunk_id("/a.md", "emb", "text!", 0), chunk_id("/a.md", "emb", "text", 1)}) == 5


def test_a_canonical_front_matter_key_gives_the_article_its_url(tmp_path):
    doc = read_document(tmp_path / "post.md", b"---\ntitle: Post\ncanonical: https://blog.test/post\n---\n\nBody text.\n")
    assert doc.url == "https://blog.test/post"
