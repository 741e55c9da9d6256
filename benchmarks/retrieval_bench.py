"""Retrieval side by side: `.venv/bin/python benchmarks/retrieval_bench.py [--data FILE]... [--store DIR] [--json]`.

Sides, on the same store and the same comments:
- `dense`         the embedder alone, the whole comment as the query;
- `dense+focus`   the embedder, searched with the part of the comment that asks (knowledge/query.py);
- `lexical`       BM25 alone (knowledge/lexical.py), no threshold: it cannot say "nothing fits";
- `hybrid`        the embedder and BM25 fused by reciprocal rank, the whole comment;
- `hybrid+focus`  both, the video's own articles not preferred (VIDEO_BOOST 0);
- `default`       both, and the video's articles preferred (knowledge/video_links.py).
Per side and questions file: hit@1, hit@3, MRR@10, P@3 (the share of the top 3 passages, what the
model reads, from an expected article), answerable comments left without a passage, off-topic
comments left without context, with each line's video and without it, and the search latency per
comment (p50/p95, embedding included, after warm-up), and `exp.sim`: the mean best similarity of an
expected article's passage (the margin over the threshold; lexical: BM25 score). For the default,
also each way the video can be known: its title alone (linked by similarity), its id alone (linked
by the creator's mapping, samples/videos.csv), both.

Without `--store`, the sample articles are ingested into a fresh store, and a second store holds
them beside a file whose one block repeats 1,000 times and another with 1,000 near-identical
copies of it, one number changed in each (a crowd that is stored): each article's own written
questions must still find it there (hit@3, recall@10 against exact scoring of every stored vector,
and what Chroma's HNSW index alone would find). With `--data`/`--store` it runs on anyone's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from base.settings import Settings  # noqa: E402
from ingest.pipeline import ingest  # noqa: E402
import knowledge.store  # noqa: E402
from base.video import Video  # noqa: E402
from knowledge.config import RetrievalConfig  # noqa: E402
from knowledge.evaluation import Scores, evaluate, load_questions  # noqa: E402
from knowledge.store import open_knowledge_base  # noqa: E402

BOOST = knowledge.store.VIDEO_BOOST
SIDES = {"dense": {"hybrid": False, "focus": False}, "dense+focus": {"hybrid": False, "focus": True},
         "lexical": {"hybrid": True, "focus": True}, "hybrid": {"hybrid": True, "focus": False},
         "hybrid+focus": {"hybrid": True, "focus": True, "boost": 0.0},
         "default": {"hybrid": True, "focus": True}}
# The ways a comment's video can be known, for the default side.
VIDEO_AS = {"title": lambda q: Video.of(None, q.video_title), "id": lambda q: Video.of(q.video_id),
            "id+title": lambda q: q.video}
CROWD_COPIES = 1000
CROWD_BLOCK = ("```python\nfrom mylib import helpers\nhelpers.setup_logging(level='INFO')\n"
               "df = helpers.load('data{n}.csv')\n```")


def figures(scores: Scores) -> dict:
    keep = ("hit_at_1", "hit_at_3", "mrr_at_10", "precision_at_3", "on_topic_no_context", "off_topic_no_context",
            "expected_similarity", "recall_at_10", "hnsw_recall_at_10")
    return {k: getattr(scores, k) for k in keep}


def known_as(search, questions: list, make):
    """`search` given each comment's video as `make` makes it from the line (title only, id only...)."""
    videos = {q.comment: make(q) for q in questions}
    return lambda text, k, video: search(text, k, videos[text])


def run_side(store: Path, name: str, questions: list, recall: bool) -> dict:
    side = dict(SIDES[name])
    knowledge.store.VIDEO_BOOST = side.pop("boost", BOOST)
    kb = open_knowledge_base(replace(RetrievalConfig.of(Settings(store=store)), **side))
    if name == "lexical":
        search = lambda text, k, video: kb.lexical_search(text, k)  # noqa: E731
    else:
        search = lambda text, k, video: kb.search(text, top_k=k, video=video)  # noqa: E731
    search("warm up the embedder and the index", 3, None)
    times: list[float] = []

    def timed(text, k, video):
        t = time.perf_counter()
        found = search(text, k, video)
        times.append(time.perf_counter() - t)
        return found

    gauge = kb.recall_against_exact if recall and name != "lexical" else None
    with_video = evaluate(questions, timed, recall=gauge)
    out = {"with_video": figures(with_video), "latency_ms": {"p50": round(float(np.percentile(times, 50)) * 1000, 1),
                                                            "p95": round(float(np.percentile(times, 95)) * 1000, 1)}}
    if any(q.video for q in questions):
        out["without_video"] = figures(evaluate(questions, search, with_video=False, recall=gauge))
        if name == "default":
            out["video_as"] = {way: figures(evaluate(questions, known_as(search, questions, make)))
                               for way, make in VIDEO_AS.items() if any(make(q) for q in questions)}
    knowledge.store.VIDEO_BOOST = BOOST
    return out


def crowded_store(articles: Path, tmp: Path) -> tuple[Path, dict]:
    folder = tmp / "crowded-articles"
    shutil.copytree(articles, folder)
    same = "\n\n".join(f"## Setup {i}\n\n{CROWD_BLOCK.format(n='')}" for i in range(CROWD_COPIES))
    (folder / "helpers-everywhere.md").write_text(f"# Helpers everywhere\n\n{same}\n", encoding="utf-8")
    # The same block with one number changed: 1,000 distinct, near-identical chunks that are stored.
    near = "\n\n".join(f"## Part {i}\n\n{CROWD_BLOCK.format(n=i)}" for i in range(CROWD_COPIES))
    (folder / "helpers-numbered.md").write_text(f"# Helpers, numbered\n\n{near}\n", encoding="utf-8")
    store = tmp / "crowded-store"
    report = ingest([folder], open_knowledge_base(Settings(store=store)))
    return store, {"chunks_stored": report.chunks_stored, "left_out": dict(report.left_out),
                   "min_similarity": report.min_similarity}


def print_table(title: str, rows: dict, video: bool) -> None:
    print(f"\n{title}")
    head = f"{'side':14} {'hit@1':>6} {'hit@3':>6} {'MRR':>6} {'P@3':>6} {'no pass.':>8} {'off none':>8} {'exp.sim':>7}"
    if video:
        head += f" | {'no video: hit@1':>15} {'hit@3':>6} {'no pass.':>8} {'off none':>8}"
    print(head + f" | {'p50 ms':>7} {'p95 ms':>7}")
    for name, r in rows.items():
        w = r["with_video"]
        line = (f"{name:14} {w['hit_at_1']:6.3f} {w['hit_at_3']:6.3f} {w['mrr_at_10']:6.3f} {w['precision_at_3']:6.3f} "
                f"{w['on_topic_no_context']:8.3f} {w['off_topic_no_context']:8.3f} {w['expected_similarity']:7.3f}")
        if video:
            n = r["without_video"]
            line += (f" | {n['hit_at_1']:15.3f} {n['hit_at_3']:6.3f} {n['on_topic_no_context']:8.3f} "
                     f"{n['off_topic_no_context']:8.3f}")
        print(line + f" | {r['latency_ms']['p50']:7.1f} {r['latency_ms']['p95']:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, action="append",
                        help="questions file (JSONL of comment, expect, video_title); repeatable "
                             "[default: samples/retrieval_questions.jsonl and samples/retrieval_real_style.jsonl]")
    parser.add_argument("--store", type=Path, help="an ingested store [default: the sample articles, ingested fresh]")
    parser.add_argument("--articles", type=Path, default=ROOT / "samples" / "articles")
    parser.add_argument("--videos", type=Path, default=ROOT / "samples" / "videos.csv",
                        help="the video -> article mapping the fresh sample store is ingested with")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args()
    files = args.data or [ROOT / "samples" / "retrieval_questions.jsonl", ROOT / "samples" / "retrieval_real_style.jsonl"]
    result: dict = {"files": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = args.store
        if store is None:
            store = tmp / "store"
            t = time.perf_counter()
            report = ingest([args.articles], open_knowledge_base(Settings(store=store)), videos_file=args.videos)
            result["ingest"] = {"seconds": round(time.perf_counter() - t, 1), "chunks": report.chunks_stored}
        for path in files:
            questions = load_questions(path)
            result["files"][str(path)] = {name: run_side(store, name, questions, recall=name == "default")
                                          for name in SIDES}
        if args.store is None:
            crowded, made = crowded_store(args.articles, tmp)
            written = load_questions(files[0])
            result["crowd"] = {**made, "copies": CROWD_COPIES,
                               "default": run_side(crowded, "default", written, recall=True)["with_video"]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    if "ingest" in result:
        print(f"sample store: {result['ingest']['chunks']} chunks, ingested in {result['ingest']['seconds']} s")
    for path, rows in result["files"].items():
        video = all("without_video" in r for r in rows.values())
        shown = "with each line's video title | without it" if video else "no video titles"
        print_table(f"{path} ({shown})", rows, video)
        best = rows["default"]["with_video"]
        print(f"  recall@10 against exact (default): {best['recall_at_10']}  "
              f"HNSW alone: {best['hnsw_recall_at_10']}")
        for way, w in rows["default"].get("video_as", {}).items():
            print(f"  default, the video known by its {way:8}: hit@1 {w['hit_at_1']:.3f}  hit@3 {w['hit_at_3']:.3f}  "
                  f"P@3 {w['precision_at_3']:.3f}  no passage {w['on_topic_no_context']:.3f}  "
                  f"off-topic none {w['off_topic_no_context']:.3f}")
    if "crowd" in result:
        c = result["crowd"]
        w = c["default"]
        print(f"\ncrowd: the sample articles beside one block repeated {c['copies']} times and {c['copies']} "
              f"near-identical copies: {c['chunks_stored']} chunks "
              f"stored, left out {c['left_out']}, threshold {c['min_similarity']}")
        print(f"  written questions: hit@1 {w['hit_at_1']:.3f}  hit@3 {w['hit_at_3']:.3f}  "
              f"recall@10 against exact {w['recall_at_10']}  HNSW alone {w['hnsw_recall_at_10']}")


if __name__ == "__main__":
    main()
