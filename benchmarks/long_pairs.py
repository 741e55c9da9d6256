"""A realistic stand-in for real-length comment/reply pairs: samples/pairs/long_pairs.csv, long_heldout.csv.

Real channels' pairs are longer than the sample pairs (measured on real pairs: 11,295 tokens for 50
pairs, against about 3,300 for samples/pairs/train.csv): viewers paste the part of the video or post
they mean and describe their setup, the creator answers technical questions in a paragraph. The real
pairs are not in this repository, so this script lengthens the sample pairs with the creator's own
articles (samples/articles), deterministically:
- thanks and chit-chat stay as they are (short pairs stay common, as on a real channel);
- a technical comment (one that shares words with an article) gets the viewer quoting a sentence of
  that article and describing their situation; its reply gets 2 to 12 more sentences of the article,
  so lengths vary from about 45 to 600 tokens, as real ones do.
Train: the first 50 pairs of train.csv's order interleaved so technical and short ones mix; held-out:
heldout_varied.csv lengthened the same way. Regenerate with `python benchmarks/long_pairs.py`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "samples" / "pairs"
STOP = set("the a an and or of to in on for is it my i you your do does how what why which when with "
           "that this be are can should from at by as not so if use using vs about than into".split())
SITUATIONS = [
    "I'm working on a project at work with about two million rows and a deadline on Friday.",
    "For context, I'm a junior analyst and nobody on my team has done this before.",
    "I tried what the docs say but the numbers still look off to me, so I'm asking here.",
    "This is for my master's thesis and my supervisor wants a justification for every step.",
]
REPLY_SENTENCES = [5, 22, 9, 17, 11, 6, 20, 10, 14, 12]  # cycled, so reply lengths vary


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z][a-z0-9_-]+", text.lower()) if w not in STOP and len(w) > 2}


def article_sentences(path: Path) -> list[str]:
    """Prose sentences of an article: no front matter, headings, code or lists."""
    text = path.read_text(encoding="utf-8").split("---", 2)[-1]
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    prose = " ".join(line for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith(("#", "-", "*", "|", ">")) and line[0].isalpha())
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", prose) if len(s.split()) >= 6]


def load(name: str) -> list[tuple[str, str]]:
    with (PAIRS / name).open(encoding="utf-8", newline="") as f:
        return [(r["comment"], r["reply"]) for r in csv.DictReader(f)]


def lengthen(pairs: list[tuple[str, str]], articles: dict[str, list[str]], offset: int) -> list[tuple[str, str]]:
    vocab = {name: words(name.replace("-", " ") + " " + " ".join(s)) for name, s in articles.items()}
    out = []
    for n, (comment, reply) in enumerate(pairs):
        need = words(comment + " " + reply)
        name, score = max(((a, len(need & vocab[a])) for a in articles), key=lambda x: x[1])
        if score < 4:  # thanks, jokes, questions about the mic: real ones stay short
            out.append((comment, reply))
            continue
        sentences = articles[name]
        k = REPLY_SENTENCES[(n + offset) % len(REPLY_SENTENCES)]
        start = (n * 7 + offset) % max(1, len(sentences) - k)
        quote = sentences[(start + k) % len(sentences)]
        comment = f'In the video you said "{quote}" {SITUATIONS[(n + offset) % len(SITUATIONS)]} {comment}'
        reply = f"{reply} {' '.join(sentences[start:start + k])}"
        out.append((comment, reply))
    return out


def interleave(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Short and technical pairs alternating, as a channel's history mixes them."""
    short = [p for p in pairs if len(p[0]) + len(p[1]) < 300]
    long = [p for p in pairs if len(p[0]) + len(p[1]) >= 300]
    mixed = []
    for i in range(max(len(short), len(long))):
        mixed += [x[i] for x in (long, short) if i < len(x)]
    return mixed


def write(path: Path, pairs: list[tuple[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["comment", "reply"])
        w.writerows(pairs)


def main() -> None:
    articles = {p.stem: article_sentences(p) for p in sorted((ROOT / "samples" / "articles").glob("*.md"))}
    write(PAIRS / "long_pairs.csv", interleave(lengthen(load("train.csv"), articles, 0)))
    write(PAIRS / "long_heldout.csv", lengthen(load("heldout_varied.csv"), articles, 3))


if __name__ == "__main__":
    main()
