"""`responder retrieve` and `responder eval-retrieval`: what the knowledge base gives a comment."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from base.clikit import store_options


def _open(store: str | None, chroma_url: str | None, min_similarity: float | None):
    from base.errors import UserError
    from base.settings import load_settings
    from knowledge.store import open_knowledge_base

    settings = load_settings(store=store, chroma_url=chroma_url, min_similarity=min_similarity)
    kb = open_knowledge_base(settings)
    if kb.count() == 0:
        raise UserError(f"the knowledge base at {kb.location} is empty; run `ingest ARTICLES_FOLDER` "
                        "with the same --store/--chroma-url first")
    return settings, kb


def _threshold_origin(settings, kb) -> str:
    if settings.min_similarity is not None:
        return "set by --min-similarity or RESPONDER_MIN_SIMILARITY"
    if "min_similarity" in (kb.collection().metadata or {}):
        return "calibrated for this store at ingest"
    return "default; re-run `ingest` to calibrate this store"


_MIN_SIM = click.option("--min-similarity", type=click.FloatRange(-1.0, 1.0), default=None,
                        help="Drop passages below this cosine similarity [default: calibrated].")


@click.command("retrieve")
@click.argument("comment")
@click.option("--top-k", type=click.IntRange(1, 20), default=None, help="Passages at most [default: 3].")
@_MIN_SIM
@click.option("--video-title", default=None, help="Title of the video the comment is under (helps a question).")
@click.option("--video-id", default=None, metavar="ID|URL",
              help="The video the comment is under: its articles (front matter video:, ingest --videos) come first.")
@click.option("--json", "as_json", is_flag=True, help="Print the passages as JSON.")
@store_options
def retrieve(comment: str, top_k: int | None, min_similarity: float | None, video_title: str | None,
             video_id: str | None, as_json: bool, store: str | None, chroma_url: str | None) -> None:
    """Show the passages the responder would inject for COMMENT (none for off-topic comments)."""
    from base.video import Video
    from responder.responder import validate_comment
    from responder.youtube.fetch import video_id as parse_id

    video = Video.of(parse_id(video_id) if video_id else None, video_title)
    settings, kb = _open(store, chroma_url, min_similarity)
    passages = kb.search(validate_comment(comment), top_k=top_k or settings.top_k, video=video)
    threshold = kb.threshold()
    if as_json:
        click.echo(json.dumps([asdict(p) for p in passages], indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.panel import Panel

    console = Console()
    console.print(f"Similarity threshold in use: {threshold:.2f} ({_threshold_origin(settings, kb)})")
    if video is not None:
        links = kb.video_links(video)
        console.print("The video is about: " + (", ".join(_link_words(link) for link in links) if links else
                                                "no stored article (its comments are searched without a preference)"))
    if not passages:
        console.print("No passage is close enough: the comment gets no context.")
    for n, p in enumerate(passages, 1):
        where = " > ".join(x for x in (p.title, p.section) if x)
        origin = p.source + (f" (page {p.page})" if p.page else "") + (f"  {p.url}" if p.url else "")
        console.print(Panel(p.text, title=f"[{n}] {where}  similarity {p.similarity:.3f}",
                            subtitle=origin, title_align="left", subtitle_align="left"))


def _link_words(link) -> str:
    how = (f"title similarity {link.similarity:.2f}" if link.how == "title" else
           {"description": "linked in its description", "mapping": "your mapping"}[link.how])
    return f"{link.source} ({how})"


@click.command("eval-retrieval")
@click.argument("questions", type=click.Path(dir_okay=False, path_type=Path))
@_MIN_SIM
@click.option("--json", "as_json", is_flag=True, help="Print scores and every outcome as JSON.")
@store_options
def eval_retrieval(questions: Path, min_similarity: float | None, as_json: bool,
                   store: str | None, chroma_url: str | None) -> None:
    """Score retrieval on QUESTIONS, a JSONL file of {"comment": ..., "expect": [file stems]}.

    An empty "expect" list means the comment should get no context. Prints hit@1, hit@3,
    MRR@10 and the share of off-topic comments left without context.
    """
    from knowledge.evaluation import evaluate, load_questions

    items = load_questions(questions)
    settings, kb = _open(store, chroma_url, min_similarity)
    search = lambda text, k, video: kb.search(text, top_k=k, video=video)  # noqa: E731
    scores = evaluate(items, search, recall=kb.recall_against_exact)
    without = (evaluate(items, search, with_video=False, recall=kb.recall_against_exact)
               if any(q.video for q in items) else None)
    threshold = kb.threshold()
    if as_json:
        extra = {"without_video": {k: v for k, v in without.as_dict().items() if k != "outcomes"}} if without else {}
        click.echo(json.dumps({"min_similarity": threshold, **scores.as_dict(), **extra}, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"retrieval on {questions} (min similarity {threshold:.2f})", title_justify="left")
    table.add_column("metric")
    table.add_column("with the video" if without else "value", justify="right")
    columns = [scores, without] if without else [scores]
    if without:
        table.add_column("without it", justify="right")
    table.add_row("on-topic comments", *(str(s.on_topic) for s in columns))
    for label, key in (("hit@1", "hit_at_1"), ("hit@3", "hit_at_3"), ("MRR@10", "mrr_at_10"),
                       ("on-topic without a passage", "on_topic_no_context"),
                       ("recall@10 against exact", "recall_at_10"), ("HNSW alone: recall@10", "hnsw_recall_at_10")):
        table.add_row(label, *(f"{getattr(s, key):.3f}" if getattr(s, key) is not None else "-" for s in columns))
    table.add_row("off-topic comments", *(str(s.off_topic) for s in columns))
    table.add_row("off-topic without context", *(f"{s.off_topic_no_context:.3f}" for s in columns))
    console = Console()
    console.print(table)
    misses = [o for o in scores.outcomes if (o.expect and (o.rank is None or o.rank > 3))
              or (not o.expect and o.got[:3])]
    if misses:
        detail = Table(title="misses", title_justify="left")
        detail.add_column("comment", overflow="fold")
        detail.add_column("expected")
        detail.add_column("got (similarity)", overflow="fold")
        for o in misses:
            got = ", ".join(f"{s} ({v:.2f})" for s, v in zip(o.got[:3], o.similarities)) or "nothing"
            detail.add_row(o.comment, ", ".join(o.expect) or "nothing", got)
        console.print(detail)


COMMANDS: list[click.Command] = [retrieve, eval_retrieval]
