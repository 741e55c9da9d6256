"""Readers: one article file in, a `Document` out (title, url, date and blocks of text by section).

Markdown (front matter title/url/date/video; images and HTML dropped; code kept), HTML (main content via
trafilatura, then read as markdown), plain text, and PDF (text per page, page numbers kept).
Anything a reader cannot use raises `Skip` with the reason shown in the ingest report.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from base.video import parse_video_id

log = logging.getLogger(__name__)

MARKDOWN = {".md", ".markdown", ".mdx"}
HTML = {".html", ".htm"}
TEXT = {".txt", ".text", ".rst"}
PDF = {".pdf"}
SUPPORTED = MARKDOWN | HTML | TEXT | PDF


class Skip(Exception):
    """This file is not ingested; the message says why (shown to the user)."""


@dataclass(frozen=True)
class Block:
    text: str
    section: tuple[str, ...] = ()
    page: int | None = None
    code: bool = False


@dataclass
class Document:
    source: Path
    title: str
    url: str = ""
    date: str = ""
    blocks: list[Block] = field(default_factory=list)
    videos: tuple[str, ...] = ()  # ids of the creator's videos about this article (front matter `video:`)


def title_from_stem(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize() or path.name


def decode_text(data: bytes, path: Path) -> str:
    if b"\x00" in data[:8192]:
        raise Skip(f"binary content (NUL bytes) in a {path.suffix or 'text'} file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Skip(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                   "save it as UTF-8") from None


def read_document(path: Path, data: bytes) -> Document:
    """The document in `data` (the bytes of `path`); raises `Skip` when it has nothing to ingest."""
    suffix = path.suffix.lower()
    if not data.strip():
        raise Skip("empty file")
    if suffix in MARKDOWN:
        doc = read_markdown(path, decode_text(data, path))
    elif suffix in HTML:
        doc = read_html(path, decode_text(data, path))
    elif suffix in TEXT:
        doc = read_text(path, decode_text(data, path))
    elif suffix in PDF:
        doc = read_pdf(path, data)
    else:
        raise Skip(f"unsupported file type {suffix or '(no extension)'}")
    if not any(b.text.strip() for b in doc.blocks):
        raise Skip("no text found")
    return doc


# --- markdown ---------------------------------------------------------------------------------

def _inline_text(token) -> str:
    """Inline markdown as plain text: link text kept, images and inline HTML dropped."""
    out: list[str] = []
    for child in token.children or []:
        if child.type == "text":
            out.append(child.content)
        elif child.type == "code_inline":
            out.append(f"`{child.content}`")
        elif child.type == "softbreak":
            out.append(" ")
        elif child.type == "hardbreak":
            out.append("\n")
        # image, html_inline, link_open/close, em/strong markers: nothing to keep
    return re.sub(r"[ \t]+", " ", "".join(out)).strip()


def markdown_blocks(text: str, title: str | None) -> tuple[str | None, list[Block]]:
    """(first H1 text, blocks) of markdown `text`; an H1 equal to `title` is not a section."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[Block] = []
    stack: list[tuple[int, str]] = []  # (heading level, heading text)
    first_h1: str | None = None
    in_item = 0
    row: list[str] = []
    table: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        section = tuple(t for _, t in stack)
        if tok.type == "heading_open":
            level = int(tok.tag[1])
            heading = _inline_text(tokens[i + 1])
            if level == 1 and first_h1 is None:
                first_h1 = heading
            if level == 1 and (title is None or heading.casefold() == title.casefold()):
                stack = []
            else:
                while stack and stack[-1][0] >= level:
                    stack.pop()
                if heading:
                    stack.append((level, heading))
            i += 3
            continue
        if tok.type == "list_item_open":
            in_item += 1
        elif tok.type == "list_item_close":
            in_item -= 1
        elif tok.type == "inline" and tokens[i - 1].type == "paragraph_open":
            body = _inline_text(tok)
            if body:
                blocks.append(Block(f"- {body}" if in_item else body, section))
        elif tok.type in ("fence", "code_block"):
            lang = (tok.info or "").strip().split(" ")[0]
            code = tok.content.rstrip("\n")
            if code.strip():
                blocks.append(Block(f"```{lang}\n{code}\n```", section, code=True))
        elif tok.type == "inline" and tokens[i - 1].type in ("th_open", "td_open"):
            row.append(_inline_text(tok))
        elif tok.type == "tr_close":
            table.append(" | ".join(row))
            row = []
        elif tok.type == "table_close":
            blocks.append(Block("\n".join(table), section))
            table = []
        # html_block, hr, blockquote markers: dropped (layout or noise, not article text)
        i += 1
    return first_h1, blocks


def read_markdown(path: Path, text: str, meta: dict | None = None) -> Document:
    import frontmatter

    if meta is None:
        try:
            post = frontmatter.loads(text)
        except Exception as exc:  # yaml errors come in several types
            raise Skip(f"front matter is not valid YAML ({str(exc).splitlines()[0]})") from None
        meta, text = dict(post.metadata), post.content
    title = str(meta.get("title") or "").strip() or None
    first_h1, blocks = markdown_blocks(text, title)
    url = str(meta.get("url") or meta.get("canonical") or meta.get("canonical_url") or "").strip()
    return Document(path, title or first_h1 or title_from_stem(path), url, str(meta.get("date") or ""), blocks,
                    front_matter_videos(path, meta))


VIDEO_KEYS = ("video", "videos", "youtube")


def front_matter_videos(path: Path, meta: dict) -> tuple[str, ...]:
    """The video ids under front matter `video:` (or `videos:`, `youtube:`): an id or URL, or a list."""
    found: list[str] = []
    for key in VIDEO_KEYS:
        value = meta.get(key)
        for item in value if isinstance(value, list) else [value] if value else []:
            vid = parse_video_id(str(item))
            if vid is None:
                log.warning("%s: front matter %s: %r is not a YouTube video id or URL; left out", path, key, item)
            elif vid not in found:
                found.append(vid)
    return tuple(found)


# --- HTML, text, PDF ----------------------------------------------------------------------------

def read_html(path: Path, html: str) -> Document:
    import trafilatura

    body = trafilatura.extract(html, output_format="markdown", include_formatting=True,
                               include_links=False, include_images=False, include_comments=False,
                               include_tables=True, favor_recall=True)
    if not body or not body.strip():
        raise Skip("no main content found in the HTML")
    meta = trafilatura.extract_metadata(html)
    values = {"title": meta.title if meta else None, "url": meta.url if meta else None,
              "date": meta.date if meta else None}
    return read_markdown(path, body, values)


def _paragraphs(text: str) -> list[str]:
    text = re.sub(r"-\n(?=[a-z])", "", text)  # words hyphenated across lines
    return [re.sub(r"\s*\n\s*", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def read_text(path: Path, text: str) -> Document:
    return Document(path, title_from_stem(path), blocks=[Block(p) for p in _paragraphs(text)])


def read_pdf(path: Path, data: bytes) -> Document:
    import io
    import logging

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it warns about every odd object
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise Skip("PDF is encrypted; save a copy without a password")
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str((reader.metadata or {}).get("/Title") or "").strip()
        url = _pdf_url(reader)
    except Skip:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise Skip(f"unreadable PDF ({type(exc).__name__}: {str(exc)[:80]})") from None
    blocks = [Block(p, page=n) for n, text in enumerate(pages, 1) for p in _paragraphs(text)]
    # PDF writers often leave "Untitled" or the source file's name ("Microsoft Word - a.docx").
    if re.search(r"^untitled|\.(docx?|odt|pages|tex|md|html?)$", title, re.IGNORECASE):
        title = ""
    return Document(path, title or title_from_stem(path), url, blocks=blocks)


def _pdf_url(reader) -> str:
    """Where the PDF lives, from its metadata: a /URL (or /Canonical) entry of the document info, or an
    http(s) dc:identifier or dc:source in its XMP; "" when it names none."""
    info = reader.metadata or {}
    found = [info.get(key) for key in ("/URL", "/Url", "/url", "/Canonical", "/canonical")]
    try:
        xmp = reader.xmp_metadata
    except Exception:  # noqa: BLE001 - malformed XMP: the document info is enough
        xmp = None
    if xmp is not None:
        for field in ("dc_identifier", "dc_source"):
            value = getattr(xmp, field, None)
            found.extend(value if isinstance(value, list) else [value])
    return next((str(v).strip() for v in found if v and re.match(r"https?://\S+$", str(v).strip())), "")
