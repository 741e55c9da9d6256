"""`finetune eval`: how good are the replies, measured the way a creator would judge them.

Held-out comment/reply pairs are answered in up to three modes, each exactly as serving answers
(the same prompt, `engine.generation.LocalGenerator`, the same decoding and cleaning):
- `base`: the base model, no adapter, no passages;
- `tuned`: the adapter, no passages;
- `tuned+passages`: the adapter, with the passages the knowledge base returns for the comment
  (the same search, top-k and threshold as serving).
Per mode: the reply-token loss against the reference replies (with the mode's prompt), the rates
of the reply checks (`base.replychecks`), reply lengths, the embedding similarity of reply to
reference, and the reply figures (`base.reply_figures`: distinct, stock, misfit, grounded and cited
rates), which see what the checks cannot: one polite sentence handed to many comments, a question
answered with thanks, a reply that takes nothing from its passages. A check counts when it fires
on the raw generation or on the cleaned reply, so cleaning cannot hide a loop, an echo or an empty
reply from the figure. Comments and replies are triaged (`knowledge.triage`) when a classifier is
given; without one, the figures that need intents read None.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from base.citation import cite
from base.prompt import CommentInput, Passage, PromptStyle, clean_comment, clean_reply
from base.redraft import Drafter
from base.reply_figures import (ASKING, FIGURES, ReplyCase, answers_question, is_grounded, misfit_reason,
                                repeat_counts, reply_figures, stock_reason)
from base.replychecks import check_reply, is_loop, without_sign_off, words
from engine.decoding import Decoding, is_short_remark
from knowledge.config import CONFIDENT_SIMILARITY
from knowledge.triage import asks as comment_asks

MODES = ("base", "tuned", "tuned+passages")
RATES = ("loop_rate_raw", "loop_rate", "echo_rate", "empty_rate", "invented_link_rate", "redrafted_rate",
         "distinct_rate", "stock_rate", "misfit_rate", "grounded_rate", "answered_rate", "cited_rate")


@dataclass
class EvalSetup:
    """A loaded PEFT model (adapter on), its tokenizer and prompt style, and optional retrieval."""

    model: Any
    tokenizer: Any
    style: PromptStyle
    decoding: Decoding
    device: str
    model_name: str = "base"
    retriever: Any = None  # anything with search(text, top_k) -> list[Passage], at its own threshold
    top_k: int = 3
    embed: Callable[[list[str]], Any] | None = None  # texts -> unit vectors (N, D)
    triage: Callable[[list[str]], list[Any]] | None = None  # texts -> one Triage each (knowledge.triage)
    citation: str = ""  # serving's citation template (base.citation); "" composes none
    only: tuple[str, ...] = ()  # the modes to run (empty: every mode this setup can run)
    max_length: int = 2048
    batch_size: int = 8
    progress: Callable[[str, int], None] = field(default=lambda mode, n: None)

    def modes(self) -> list[str]:
        available = list(MODES) if self.retriever is not None else list(MODES[:2])
        return [m for m in available if m in self.only] if self.only else available

    @property
    def adapter_mode(self) -> str:
        """How the adapter is served: with passages when there is a knowledge base."""
        return "tuned+passages" if self.retriever is not None else "tuned"


def evaluate_replies(setup: EvalSetup, pairs: Sequence[Any]) -> dict[str, Any]:
    """`{"modes": {mode: metrics}, "replies": [row, ...]}` for held-out `pairs` (comment, reply)."""
    comments = [clean_comment(p.comment) for p in pairs]
    references = [p.reply for p in pairs]
    passages = _retrieve(setup, comments) if setup.retriever is not None else None
    intents = _intents(setup, comments)
    result: dict[str, Any] = {"modes": {}, "replies": []}
    for mode in setup.modes():
        items = [CommentInput(c, passages=passages[n] if mode == "tuned+passages" else ())
                 for n, c in enumerate(comments)]
        raws, drafts = _generate(setup, mode, items)
        rows = [{**_row(mode, item, ref, raw, setup.style.sign_off, setup.citation), "drafts": n}
                for item, ref, raw, n in zip(items, references, raws, drafts)]
        judge(rows, intents, _intents(setup, [without_sign_off(generated(r), setup.style.sign_off) for r in rows]),
              setup.style)
        loss = _reply_loss(setup, mode, items, references)
        result["modes"][mode] = summarize(rows, loss, _similarities(setup, rows), setup.style)
        result["replies"] += rows
    return result


SELECTION_FIGURES = ("stock_rate", "misfit_rate", "distinct_rate", "grounded_rate")


def selection_badness(eval_loss: float, first_eval_loss: float | None, figures: dict[str, Any] | None) -> float:
    """How bad an epoch's adapter is, lower better: what `finetune run` keeps the best of.

    The eval loss relative to the untouched model's, plus the share of stock replies, of misfits
    and of repeated replies (1 - distinct_rate), plus the share of replies to questions with
    passages that took nothing from them (1 - grounded_rate): each a 0-1 share, weighted alike, so a
    falling loss cannot buy a stock phrase. A figure with nothing to judge (None) adds nothing.
    Without figures (`samples.select_by: loss`), the eval loss alone.
    """
    if figures is None:
        return eval_loss
    badness = eval_loss / first_eval_loss if first_eval_loss else eval_loss
    for name in SELECTION_FIGURES:
        value = figures.get(name)
        if value is not None:
            badness += (1 - value) if name in ("distinct_rate", "grounded_rate") else value
    return badness


def _classifier(setup: EvalSetup) -> Callable[[list[str]], list[str | None]] | None:
    """Texts -> intents, for redrafting (None without a triage classifier)."""
    return (lambda texts: _intents(setup, texts)) if setup.triage is not None else None


def _intents(setup: EvalSetup, texts: list[str]) -> list[str | None]:
    if setup.triage is None:
        return [None] * len(texts)
    return [t.intent for t in setup.triage(texts)]


def judge(rows: list[dict[str, Any]], intents: Sequence[str | None], reply_intents: Sequence[str | None],
          style: PromptStyle) -> None:
    """Each row's own verdicts, for a reader of eval.json: the comment's and the reply's intent,
    why the reply is stock or a misfit (None when it is not), and whether it is grounded (None when
    the comment asks nothing or had no passages)."""
    replies = [generated(r) for r in rows]  # the figures judge what the model wrote, never the citation
    repeats = repeat_counts(replies, [r["comment"] for r in rows], style.sign_off)
    for row, reply, intent, reply_intent, n in zip(rows, replies, intents, reply_intents, repeats):
        texts = [p["text"] for p in row["passages"]]
        asks = intent in ASKING if intent is not None else True
        row.update(intent=intent, reply_intent=reply_intent,
                   stock=stock_reason(reply, row["comment"], texts, repeats=n, asks=asks, sign_off=style.sign_off),
                   misfit=misfit_reason(intent, reply_intent),
                   grounded=is_grounded(reply, row["comment"], texts, style.persona, style.sign_off)
                   if texts and intent == "question" else None,
                   answered=answers_question(reply, row["comment"], texts, style.persona, style.sign_off)
                   if texts and intent == "question" else None,
                   confident=comment_asks(row["comment"])
                   and any(p["similarity"] >= CONFIDENT_SIMILARITY for p in row["passages"]),
                   cited=bool(row.get("citation")))


def _retrieve(setup: EvalSetup, comments: list[str]) -> list[tuple[Passage, ...]]:
    return [tuple(setup.retriever.search(c, top_k=setup.top_k))
            for c in comments]


def _adapter_off(model: Any, mode: str) -> Any:
    import contextlib

    return model.disable_adapter() if mode == "base" and hasattr(model, "disable_adapter") else contextlib.nullcontext()


def _generate(setup: EvalSetup, mode: str, items: list[CommentInput]) -> tuple[list[str], list[int]]:
    from engine.generation import LocalGenerator

    generator = LocalGenerator(setup.model, setup.tokenizer, setup.model_name, decoding=setup.decoding)
    drafter = Drafter(lambda batch: generator.generate(batch, setup.style), _classifier(setup),
                      setup.decoding.redrafts, setup.style.persona, setup.style.sign_off)
    raws: list[str] = []
    # Shortest prompts together: less padding, and replies of one batch tend to end together.
    order = sorted(range(len(items)), key=lambda i: len(items[i].comment) + sum(len(p.text) for p in items[i].passages))
    with _adapter_off(setup.model, mode):
        setup.model.eval()
        by_index: dict[int, str] = {}
        drafts: dict[int, int] = {}  # drafts written per comment (base.redraft)
        for start in range(0, len(order), setup.batch_size):
            chunk = order[start:start + setup.batch_size]
            for i, raw, n in zip(chunk, drafter.draft([items[i] for i in chunk]), drafter.last_drafts):
                by_index[i], drafts[i] = raw, n
            setup.progress(mode, len(by_index))
        raws = [by_index[i] for i in range(len(items))]
    return raws, [drafts[i] for i in range(len(items))]


def generated(row: dict[str, Any]) -> str:
    """The row's reply as generated (cleaned), without the citation line code added to it."""
    reply = row["reply"]
    return reply.replace("\n" + row["citation"], "", 1) if row.get("citation") else reply


def _row(mode: str, item: CommentInput, reference: str, raw: str, sign_off: str, citation: str = "") -> dict[str, Any]:
    reply = clean_reply(raw, sign_off)
    cited = cite(reply, item.passages if comment_asks(item.comment) else (), citation, CONFIDENT_SIMILARITY, sign_off)
    sources = [p.text for p in item.passages]
    raw_body = raw.split(sign_off)[0] if sign_off and sign_off in raw else raw
    on_raw = check_reply(raw_body, item.comment, sources, sign_off)
    on_reply = check_reply(reply, item.comment, sources, sign_off)
    return {"mode": mode, "comment": item.comment, "reference": reference, "raw": raw, "reply": cited.reply,
            "citation": cited.line or None,
            "passages": [{**p.to_dict(), "text": p.text} for p in item.passages],
            "loop_raw": is_loop(raw), "loop": on_reply.loop,
            "echo": on_raw.echo or on_reply.echo, "empty": on_raw.empty or on_reply.empty,
            "invented_link": on_raw.invented_link or on_reply.invented_link,
            "words": len(words(without_sign_off(reply, sign_off))),
            "reference_words": len(words(without_sign_off(reference, sign_off))),
            "thanks": is_short_remark(item.comment)}


def _reply_loss(setup: EvalSetup, mode: str, items: list[CommentInput], references: list[str]) -> float:
    from base.prompt import encode_training_example
    from finetune.data import Example
    from finetune.loss import evaluate

    examples = []
    for item, reference in zip(items, references):
        ids, labels = encode_training_example(setup.tokenizer, setup.style, item, reference)
        examples.append(Example(ids[:setup.max_length], labels[:setup.max_length], "", item.comment, reference))
    pad = setup.tokenizer.pad_token_id if setup.tokenizer.pad_token_id is not None else setup.tokenizer.eos_token_id
    with _adapter_off(setup.model, mode):
        return evaluate(setup.model, examples, 4, pad, setup.device)


def _similarities(setup: EvalSetup, rows: list[dict[str, Any]]) -> list[float]:
    if setup.embed is None:
        return []
    sign_off = setup.style.sign_off
    replies = setup.embed([without_sign_off(r["reply"], sign_off) or "-" for r in rows])
    refs = setup.embed([without_sign_off(r["reference"], sign_off) or "-" for r in rows])
    return [sum(x * y for x, y in zip(a, b)) for a, b in zip(replies, refs)]  # unit vectors: cosine


def summarize(rows: list[dict[str, Any]], reply_loss: float, similarities: list[float],
              style: PromptStyle | None = None) -> dict[str, Any]:
    """The figures of one mode from its reply rows (judged rows also get the reply figures)."""
    n = max(1, len(rows))

    def rate(key: str) -> float:
        return round(sum(1 for r in rows if r[key]) / n, 4)

    thanks = [r["words"] for r in rows if r["thanks"]]
    return {
        "count": len(rows),
        "reply_loss": round(reply_loss, 4),
        "loop_rate_raw": rate("loop_raw"),
        "loop_rate": rate("loop"),
        "echo_rate": rate("echo"),
        "empty_rate": rate("empty"),
        "invented_link_rate": rate("invented_link"),
        "median_words": statistics.median([r["words"] for r in rows]) if rows else 0,
        "median_words_reference": statistics.median([r["reference_words"] for r in rows]) if rows else 0,
        "median_words_thanks": statistics.median(thanks) if thanks else None,
        "similarity": round(statistics.fmean(similarities), 4) if similarities else None,
        "redrafted_rate": round(sum(1 for r in rows if r.get("drafts", 1) > 1) / n, 4),
        **_figures(rows, style or PromptStyle()),
    }


def _figures(rows: list[dict[str, Any]], style: PromptStyle) -> dict[str, float | None]:
    if not rows or "intent" not in rows[0]:
        return {name: None for name in FIGURES}
    cases = [ReplyCase(r["comment"], generated(r), tuple(p["text"] for p in r["passages"]), r["intent"],
                       r["reply_intent"], r["confident"], r["cited"]) for r in rows]
    figures = reply_figures(cases, style.persona, style.sign_off)
    return {k: round(v, 4) if v is not None else None for k, v in figures.items()}


METRIC_LABELS = [
    ("reply_loss", "reply-token loss (lower is better)"),
    ("loop_rate_raw", "loop rate, raw generation"),
    ("loop_rate", "loop rate, cleaned reply"),
    ("echo_rate", "echo rate"),
    ("empty_rate", "empty rate (sign-off only)"),
    ("invented_link_rate", "invented link / @mention rate"),
    ("median_words", "median words per reply"),
    ("median_words_reference", "median words, reference replies"),
    ("median_words_thanks", "median words, replies to thanks"),
    ("similarity", "similarity to reference (cosine)"),
    ("redrafted_rate", "redrafted: replies drafted more than once"),
    ("distinct_rate", "distinct replies (higher is better)"),
    ("stock_rate", "stock replies (one sentence to 3+ comments, or nothing from comment/passages)"),
    ("misfit_rate", "misfit: a question answered with thanks"),
    ("grounded_rate", "grounded: replies to questions that use their passages"),
    ("answered_rate", "answered: grounded and bearing on the question"),
    ("cited_rate", "cited, where a confident passage exists"),
]


def format_value(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in RATES:
        return f"{value:.0%}"
    if key.startswith("median"):
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(result: dict[str, Any]) -> str:
    """The metrics as a Markdown table, modes as columns (for samples.md)."""
    modes = list(result["modes"])
    lines = ["| metric | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for key, label in METRIC_LABELS:
        lines.append(f"| {label} | " + " | ".join(format_value(key, result["modes"][m].get(key)) for m in modes) + " |")
    return "\n".join(lines) + "\n"
