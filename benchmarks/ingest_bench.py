"""Ingest and search figures: `.venv/bin/python benchmarks/ingest_bench.py [--sizes 10000,100000]`.

1. First ingest of samples/articles into a fresh store (embedder loaded beforehand and timed
   apart): chunks/s.
2. Re-ingest of the unchanged corpus: seconds, embeddings (goal: 0) and its share of the first
   ingest's time (goal: under 5%).
3. Search latency p50/p95 at each size of stored chunks (synthetic clustered unit vectors, 384
   dims, in a real Chroma collection) next to an exact brute-force numpy search over the same
   vectors, with the recall@3 of Chroma's approximate index against it. Plus the latency of a
   full `KnowledgeBase.search` (embedding the comment included) on the sample store.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from base.settings import Settings  # noqa: E402
from ingest.pipeline import ingest  # noqa: E402
from knowledge.embedder import load_embedder  # noqa: E402
from knowledge.store import open_knowledge_base  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def ms(values: list[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:7.2f} ms  p95 {pct(values, 95) * 1000:7.2f} ms"


def bench_ingest(articles: Path, tmp: Path) -> None:
    t = time.perf_counter()
    load_embedder("all-MiniLM-L6-v2")
    print(f"embedder load:            {time.perf_counter() - t:6.2f} s (once per process)")
    settings = Settings(store=tmp / "sample-store")
    first = ingest([articles], open_knowledge_base(settings))
    print(f"first ingest:             {first.seconds:6.2f} s  {first.added} files  {first.chunks_embedded} chunks  "
          f"{first.chunks_embedded / first.seconds:6.1f} chunks/s")
    again = ingest([articles], open_knowledge_base(settings))
    share = again.seconds / first.seconds
    print(f"re-ingest (unchanged):    {again.seconds:6.2f} s  {again.unchanged} unchanged  "
          f"{again.chunks_embedded} embeddings  {share:.1%} of the first ingest "
          f"({'meets' if share < 0.05 and again.chunks_embedded == 0 else 'MISSES'} the goal: <5%, 0 embeddings)")
    kb = open_knowledge_base(settings)
    comments = ["how do I compute month over month growth in postgres", "first!",
                "does knn need scaled inputs", "my docker build reinstalls every package"]
    kb.search(comments[0])
    times = []
    for i in range(100):
        t = time.perf_counter()
        kb.search(comments[i % len(comments)], top_k=3)
        times.append(time.perf_counter() - t)
    print(f"KnowledgeBase.search on the sample store ({kb.count()} chunks, embedding included): {ms(times)}")


def synthetic(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors around 500 topic centres: closer to real text embeddings than pure noise."""
    centres = rng.standard_normal((500, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 500, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def bench_scale(n: int, tmp: Path, queries: int) -> None:
    kb = open_knowledge_base(Settings(store=tmp / f"scale-{n}"))  # the product's own write path
    dim = kb.embedder.dimension
    rng = np.random.default_rng(n)
    vectors = synthetic(n, dim, rng)
    t = time.perf_counter()
    kb.add([str(i) for i in range(n)], vectors, [f"synthetic chunk {i}" for i in range(n)],
           [{"source": f"/synthetic/{i // 20}.md", "chunk": i % 20} for i in range(n)])
    load_s = time.perf_counter() - t
    col = kb.collection()
    picks = rng.integers(0, n, queries)
    qs = vectors[picks] + 0.3 * rng.standard_normal((queries, dim)).astype(np.float32)
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    col.query(query_embeddings=qs[:1], n_results=3)  # warm the index
    chroma_t, exact_t, recall, recall1 = [], [], [], []
    for q in qs:
        t = time.perf_counter()
        got = col.query(query_embeddings=q[None, :], n_results=3, include=["distances", "metadatas", "documents"])
        chroma_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        sims = vectors @ q                                # (N,)
        top = np.argpartition(-sims, 3)[:3]
        top = top[np.argsort(-sims[top])]
        exact_t.append(time.perf_counter() - t)
        recall.append(len({int(i) for i in got["ids"][0]} & {int(i) for i in top}) / 3)
        recall1.append(int(got["ids"][0][0]) == int(top[0]))
    print(f"{n:>7} chunks  write {load_s:6.1f} s ({n / load_s:7.0f}/s)  chroma {ms(chroma_t)}  "
          f"numpy exact {ms(exact_t)}  ratio p50 {pct(chroma_t, 50) / pct(exact_t, 50):5.2f}x  "
          f"recall@3 {statistics.mean(recall):.3f}  top-1 agreement {statistics.mean(recall1):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=Path, default=ROOT / "samples" / "articles")
    parser.add_argument("--sizes", default="10000,100000", help="stored chunk counts for the search figures")
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_ingest(args.articles, Path(tmp))
        for n in (int(x) for x in args.sizes.split(",") if x):
            bench_scale(n, Path(tmp), args.queries)


if __name__ == "__main__":
    main()
