"""`responder triage FILE`: what each comment needs (question, request, thanks, ... instructions).

Reads a commentThreads export, a CSV or JSONL file with a comment column, or a text file with one
comment per line. With a `label` column it also scores the triage against the labels: per-intent
precision and recall and a confusion matrix.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click


def read_rows(path: Path) -> tuple[list[str], list[str] | None]:
    """(comments, labels or None), one entry per input row in input order."""
    from base.errors import UserError

    if not path.exists():
        raise UserError(f"input '{path}' does not exist; pass an export, a CSV/JSONL with a 'comment' "
                        "column or a text file with one comment per line")
    if path.suffix.lower() == ".txt":
        comments = [line.strip() for line in _text(path).splitlines() if line.strip()]
        labels = None
    elif path.suffix.lower() == ".csv" and _csv_has_label(path):
        from knowledge.triage import read_labelled

        rows = read_labelled(path)
        comments, labels = [c for c, _ in rows], [label for _, label in rows]
    else:
        from responder.youtube.export import load_comments

        comments, labels = [c.text for c in load_comments(path)], None
    if not comments:
        raise UserError(f"input '{path}' holds no comments; add at least one comment")
    return comments, labels


def _text(path: Path) -> str:
    from base.errors import UserError

    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read input '{path}' ({exc}); pass a UTF-8 text file") from None


def _csv_has_label(path: Path) -> bool:
    header = next(csv.reader(io.StringIO(_text(path), newline="")), [])
    return "label" in {h.strip().lower() for h in header}


def metrics(labels: list[str], predicted: list[str]) -> dict:
    """Per-intent precision/recall/support and a confusion matrix (rows: label, columns: predicted)."""
    from knowledge.triage import INTENTS

    per_intent = {}
    for intent in INTENTS:
        hits = sum(1 for want, got in zip(labels, predicted) if want == got == intent)
        said = sum(1 for got in predicted if got == intent)
        support = sum(1 for want in labels if want == intent)
        per_intent[intent] = {"precision": round(hits / said, 4) if said else None,
                              "recall": round(hits / support, 4) if support else None, "support": support}
    confusion = {want: {got: sum(1 for w, g in zip(labels, predicted) if w == want and g == got) for got in INTENTS}
                 for want in INTENTS}
    accuracy = sum(w == g for w, g in zip(labels, predicted)) / len(labels)
    return {"accuracy": round(accuracy, 4), "intents": per_intent, "confusion": confusion}


def _print_table(rows: list[tuple[int, str, object]], policy, scores: dict | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("#", "intent", "confidence", "by", "batch", "comment")
    for n, comment, result in rows:
        text = " ".join(comment.split())
        table.add_row(str(n), result.intent, f"{result.confidence:.2f}", result.rule or "classifier",
                      ACTION_WORDS[policy.action(result.intent)], text if len(text) <= 90 else text[:89] + "…")
    console.print(table)
    if scores is None:
        return
    from knowledge.triage import INTENTS

    quality = Table("intent", "precision", "recall", "support", title=f"accuracy {scores['accuracy']:.2f}")
    for intent, row in scores["intents"].items():
        quality.add_row(intent, *(f"{row[k]:.2f}" if row[k] is not None else "-" for k in ("precision", "recall")),
                        str(row["support"]))
    console.print(quality)
    confusion = Table("label \\ triaged", *INTENTS, title="confusion matrix")
    for want, row in scores["confusion"].items():
        confusion.add_row(want, *(str(row[got]) for got in INTENTS))
    console.print(confusion)


# What `responder batch` does with each intent under the policy (knowledge/triage_policy.py).
ACTION_WORDS = {"draft": "drafted", "flag": "drafted, needs you", "skip": "skipped"}


@click.command("triage")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: every comment's intent (+ metrics).")
@click.option("--only", "only", multiple=True, metavar="INTENTS",
              help="List only the comments of these intents (comma-separated); metrics still cover every row.")
def triage(file: Path, as_json: bool, only: tuple[str, ...]) -> None:
    """Give each comment in FILE one intent (question, request, thanks, criticism, spam, instructions,
    other) with a confidence, and what `responder batch` does with it under RESPONDER_TRIAGE_POLICY;
    with a `label` column, precision, recall and a confusion matrix too."""
    from base.settings import load_settings
    from knowledge.embedder import load_embedder
    from knowledge.triage import TriageClassifier
    from knowledge.triage_policy import TriagePolicy, parse_only

    intents = parse_only(only)
    settings = load_settings()
    policy = TriagePolicy.parse(settings.triage_policy)
    comments, labels = read_rows(file.expanduser())
    results = TriageClassifier.load(load_embedder(settings.embedder)).classify(comments)
    scores = metrics(labels, [r.intent for r in results]) if labels is not None else None
    rows = [(n, c, r) for n, (c, r) in enumerate(zip(comments, results), 1) if intents is None or r.intent in intents]
    if not as_json:
        _print_table(rows, policy, scores)
        return
    out: dict = {"comments": [{"comment": c, "intent": r.intent, "confidence": r.confidence} for _, c, r in rows]}
    if scores is not None:
        out["metrics"] = scores
    click.echo(json.dumps(out, ensure_ascii=False))


COMMANDS = [triage]
