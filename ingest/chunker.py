"""Chunking that follows the structure: pure code, blocks in, chunks out.

Chunks never cross a section (heading) or a PDF page. Inside a section, paragraphs are packed
into chunks of at most `chunk_tokens` word pieces of the embedder, breaking at paragraph
boundaries when a chunk is at least half full and at sentence (or code line) boundaries
otherwise; consecutive chunks of one section share up to `overlap_tokens` of text. What is
embedded is "title\\nsection path\\n\\ntext", and it always fits the embedder's window.

A chunk is also at most `max_chars` characters: the embedder's tokenizer counts a long "word" (a
2 MB minified line) as one unknown word piece, so a token budget alone would let it through whole,
and every prompt that retrieved it would carry it. Long runs are cut at a space, or anywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from .readers import Block, Document

CHUNKER_VERSION = "3"  # bump when chunking changes, so re-ingest re-chunks every file
DEFAULT_CHUNK_TOKENS = 160
DEFAULT_OVERLAP_TOKENS = 32
DEFAULT_MAX_CHUNK_CHARS = 2000  # 160 word pieces of prose are about 800 characters
MAX_HEADING_CHARS = 300  # a title or section name longer than this is cut (metadata and prompt)


def clip(text: str, limit: int = MAX_HEADING_CHARS) -> str:
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _char_split(text: str, max_chars: int) -> list[str]:
    """Pieces of at most `max_chars` characters, cut at the last space of each when there is one."""
    pieces: list[str] = []
    while len(text) > max_chars:
        cut = text.rfind(" ", max_chars // 2, max_chars + 1)
        cut = cut if cut > 0 else max_chars
        pieces.append(text[:cut].rstrip())
        text = text[cut:].lstrip(" ")
    return pieces + ([text] if text else [])

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+(?=[\"'(\[A-Z0-9*`-])")


@dataclass(frozen=True)
class Chunk:
    text: str          # the passage as shown and injected into the prompt
    embed_text: str    # what is embedded: title and section path, then the text
    section: str       # "Heading > Subheading"
    page: int | None
    index: int         # position in the document


def text_key(text: str) -> str:
    """A chunk's text as compared for repeats: blanks collapsed, case folded."""
    return " ".join(text.split()).casefold()


def text_hash(text: str) -> str:
    """What the store records of a chunk's text, so a repeat in another file is found by a metadata query."""
    return hashlib.sha256(text_key(text).encode("utf-8")).hexdigest()[:24]


REPEATS_ANOTHER_FILE = "repeats a chunk of another file"


def storable(chunks: list[Chunk]) -> tuple[list[Chunk], Counter[str]]:
    """The chunks worth storing, renumbered, and what was left out, by reason.

    A chunk identical to an earlier one of the same document (a code cell repeated 1,000 times, a
    footer after every section) is stored once: a thousand identical vectors crowd an article's
    own chunks out of an approximate (HNSW) search. A degenerate chunk (no words, or one word
    repeated) answers nothing and is left out too.
    """
    kept: list[Chunk] = []
    left_out: Counter[str] = Counter()
    seen: set[str] = set()
    for chunk in chunks:
        key = text_key(chunk.text)
        words = re.findall(r"[^\W_]+", key)
        if not words or (len(words) >= 4 and len(set(words)) == 1):
            left_out["degenerate (no words, or one word repeated)"] += 1
        elif key in seen:
            left_out["repeats a chunk of the same file"] += 1
        else:
            seen.add(key)
            kept.append(replace(chunk, index=len(kept)))
    return kept, left_out


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    para: int    # index of the paragraph this unit belongs to
    joiner: str  # what joins it to the previous unit of the same chunk


def _hard_split(text: str, limit: int, count: Callable[[str], int]) -> list[str]:
    """Pieces of `text` with at most `limit` tokens each: by words, then by characters."""
    pieces: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if count(candidate) <= limit:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while count(word) > limit:  # one "word" longer than the window (a minified line)
            cut = max(1, len(word) * limit // max(count(word), 1))
            while cut > 1 and count(word[:cut]) > limit:
                cut = cut * 3 // 4
            pieces.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        pieces.append(current)
    return pieces


def _units(blocks: Iterable[Block], limit: int, count: Callable[[str], int], max_chars: int) -> list[_Unit]:
    units: list[_Unit] = []
    for para, block in enumerate(blocks):
        if block.code:
            parts, joiner = block.text.split("\n"), "\n"
        else:
            # Sentences, so that overlap and splits of long paragraphs fall between sentences.
            parts, joiner = _SENTENCE_END.split(block.text), " "
        first = True
        for part in (p for long in parts for p in _char_split(long, max_chars)):
            for piece in ([part] if count(part) <= limit else _hard_split(part, limit, count)):
                units.append(_Unit(piece, count(piece), para, "\n\n" if first else joiner))
                first = False
    return units


def _pack(units: list[_Unit], budget: int, overlap: int, max_chars: int) -> list[str]:
    """Greedy packing with overlap; every unit is at most `budget` tokens and `max_chars` characters."""
    chunks: list[str] = []
    start = 0
    while start < len(units):
        total, chars, end = 0, 0, start
        while end < len(units):
            unit = units[end]
            if total + unit.tokens > budget or (end > start and chars + len(unit.joiner + unit.text) > max_chars):
                break
            # Prefer a paragraph boundary when the whole next paragraph will not fit.
            if end > start and unit.para != units[end - 1].para and total >= budget // 2:
                rest = sum(u.tokens for u in units[end:] if u.para == unit.para)
                if total + rest > budget:
                    break
            total += unit.tokens
            chars += len(unit.text) + (len(unit.joiner) if end > start else 0)
            end += 1
        end = max(end, start + 1)
        text = units[start].text
        for unit in units[start + 1:end]:
            text += unit.joiner + unit.text
        chunks.append(text)
        if end >= len(units):
            break
        back, carried = end, 0
        while back - 1 > start and carried + units[back - 1].tokens <= overlap:
            back -= 1
            carried += units[back].tokens
        start = back
    return chunks


def chunk_document(doc: Document, count_tokens: Callable[[str], int], max_tokens: int = 256,
                   chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                   overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
                   max_chars: int = DEFAULT_MAX_CHUNK_CHARS) -> list[Chunk]:
    """Chunks of `doc`; `count_tokens` counts word pieces without special tokens and
    `max_tokens` is the embedder's window with them (2 are kept for [CLS] and [SEP]); no chunk's
    text is longer than `max_chars` characters."""
    groups: list[tuple[tuple[str, ...], int | None, list[Block]]] = []
    for block in doc.blocks:
        if groups and groups[-1][0] == block.section and groups[-1][1] == block.page:
            groups[-1][2].append(block)
        else:
            groups.append((block.section, block.page, [block]))
    chunks: list[Chunk] = []
    title = clip(doc.title)
    for section_path, page, blocks in groups:
        section = clip(" > ".join(section_path))
        prefix = f"{title}\n{section}\n\n" if section else f"{title}\n\n"
        room = max_tokens - 2 - count_tokens(prefix)
        if room < 32:  # absurdly long headings: keep only the title's first words
            prefix = " ".join(title.split()[:16]) + "\n\n"
            room = max_tokens - 2 - count_tokens(prefix)
        budget = max(16, min(chunk_tokens, room))
        for text in _pack(_units(blocks, budget, count_tokens, max_chars), budget, overlap_tokens, max_chars):
            chunks.append(Chunk(text, prefix + text, section, page, len(chunks)))
    return chunks


def chunk_id(source: str, embedder: str, embed_text: str, occurrence: int) -> str:
    """Content-addressed id: the same text of the same file with the same embedder, same id."""
    key = "\0".join((source, embedder, embed_text, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
