"""Scoring retrieval on lines of {"comment": "...", "expect": ["<file stem>", ...]}.

An empty `expect` means the comment should get no context at all. Ranks are over the passages the
responder would inject (threshold applied), so a right article filtered out by the threshold
counts as a miss.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from base.errors import UserError
from base.fileio import read_jsonl
from base.prompt import Passage
from base.video import Video


@dataclass(frozen=True)
class Question:
    comment: str
    expect: tuple[str, ...]
    video_title: str | None = None  # the title of the video the comment was posted under
    video_id: str | None = None
    video_description: str | None = None

    @property
    def video(self) -> Video | None:
        return Video.of(self.video_id, self.video_title, self.video_description)


@dataclass
class Outcome:
    comment: str
    expect: list[str]
    got: list[str]          # file stems of the returned passages, best first
    similarities: list[float]
    rank: int | None        # 1-based rank of the first expected stem (None: not found)


@dataclass
class Scores:
    questions: int
    on_topic: int
    off_topic: int
    hit_at_1: float
    hit_at_3: float
    mrr_at_10: float
    off_topic_no_context: float
    on_topic_no_context: float = 0.0  # answerable comments left without any passage
    # Of the 10 chunks exact scoring of every stored vector ranks first, the share the search in use
    # returns, and the share Chroma's HNSW index alone returns (`KnowledgeBase.recall_against_exact`).
    # Mean over answerable comments of the best similarity an expected article's passage reached (0:
    # none returned): the margin over the threshold, which decides on a harder corpus.
    expected_similarity: float = 0.0
    # Of the passages the responder injects (the top 3) for answerable comments, the share from an
    # expected article: what the model reads, beside hit@k's "was the article found at all".
    precision_at_3: float = 0.0
    recall_at_10: float | None = None
    hnsw_recall_at_10: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def load_questions(path: Path) -> list[Question]:
    name = f"questions file {path}"
    shape = '{"comment": "...", "expect": ["stem", ...]}'
    questions = []
    for n, row in read_jsonl(path, name, f"make it {shape}"):
        comment, expect = (row.get("comment"), row.get("expect")) if isinstance(row, dict) else (None, None)
        if not isinstance(comment, str) or not isinstance(expect, list):
            raise UserError(f"{name} line {n} is not {shape}; fix that line")
        title, vid, description = (str(row.get(key) or "").strip() or None
                                   for key in ("video_title", "video_id", "video_description"))
        questions.append(Question(comment, tuple(str(x) for x in expect), title, vid, description))
    if not questions:
        raise UserError(f"{name} has no questions; add lines of {{\"comment\": ..., \"expect\": [...]}}")
    return questions


def stem_of(passage: Passage) -> str:
    return Path(passage.source).stem


def evaluate(questions: Sequence[Question], search: Callable[[str, int, Video | None], list[Passage]],
             with_video: bool = True,
             recall: Callable[[list[str], list[Video | None]], tuple[float, float]] | None = None) -> Scores:
    """Scores for `questions`; `search(comment, top_k, video)` applies the threshold under test;
    `with_video=False` searches every comment without its video (id, title, description);
    `recall(comments, videos)` gives (recall@10 of the search, of HNSW alone) against exact scoring."""
    outcomes = []
    for q in questions:
        passages = search(q.comment, 10, q.video if with_video else None)
        got = [stem_of(p) for p in passages]
        rank = next((i for i, stem in enumerate(got, 1) if stem in q.expect), None)
        outcomes.append(Outcome(q.comment, list(q.expect), got, [p.similarity for p in passages], rank))
    on = [o for o in outcomes if o.expect]
    off = [o for o in outcomes if not o.expect]

    def share(items, keep) -> float:
        return round(sum(1 for o in items if keep(o)) / len(items), 4) if items else 0.0

    recall_at_10 = hnsw_recall = None
    if recall is not None and on:
        asked = [q for q in questions if q.expect]
        recall_at_10, hnsw_recall = recall([q.comment for q in asked],
                                           [q.video if with_video else None for q in asked])
    return Scores(
        recall_at_10=recall_at_10, hnsw_recall_at_10=hnsw_recall,
        expected_similarity=round(sum(max((v for g, v in zip(o.got, o.similarities) if g in o.expect), default=0.0)
                                      for o in on) / len(on), 4) if on else 0.0,
        precision_at_3=round(sum(sum(g in o.expect for g in o.got[:3]) / len(o.got[:3]) if o.got else 0.0
                                 for o in on) / len(on), 4) if on else 0.0,
        questions=len(outcomes), on_topic=len(on), off_topic=len(off),
        hit_at_1=share(on, lambda o: o.rank == 1),
        hit_at_3=share(on, lambda o: o.rank is not None and o.rank <= 3),
        mrr_at_10=round(sum(1 / o.rank for o in on if o.rank) / len(on), 4) if on else 0.0,
        # "no context" as the responder injects it: nothing among its top 3 passages.
        off_topic_no_context=share(off, lambda o: not o.got[:3]),
        on_topic_no_context=share(on, lambda o: not o.got),
        outcomes=outcomes)
