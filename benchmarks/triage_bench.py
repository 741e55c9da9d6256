"""Triage (issue 22): quality on held-out labelled comments, and the time to triage 1,000 comments.

    .venv/bin/python benchmarks/triage_bench.py [--heldout samples/triage/heldout.csv] [--comments 1000]

Quality: `responder triage HELDOUT --json` (the real CLI in a child process) against the labels
of the held-out comments (written the way viewers write: greetings, typos, several questions,
emoji; orders to the bot and spam in several languages). None of them is in the training set.
Goals: recall of question + request (one class: "needs an answer") >= 0.95 at precision >= 0.85;
precision of thanks >= 0.90; every `instructions` comment caught.

Speed: `responder triage FILE --json` on 1,000 comments (the sample comments of every file in
samples/, cycled) timed from the process start to its last byte, the embedder's load included;
once with the fitted classifier cached (every run after the first) and once with an empty cache
(the first use on a machine: the classifier is fitted from knowledge/data/triage_train.csv).
Goal: under 10 s with the cache. The load average is printed with the figures: on a shared
machine, read the timings with it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ASKS = {"question", "request"}


def triage_cli(path: Path, env: dict[str, str] | None = None) -> tuple[dict, float]:
    """(`responder triage PATH --json`'s output, seconds from process start to exit)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from responder.cli import main; main()", "triage", str(path),
                           "--json"], cwd=ROOT, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"responder triage failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout), seconds


def read_labelled(path: Path) -> list[tuple[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as f:
            return [(r["comment"], r["label"]) for r in csv.DictReader(f)]
    except (OSError, KeyError) as exc:
        print(f"Error: held-out file '{path}' cannot be read as comment,label CSV ({exc}); pass --heldout FILE",
              file=sys.stderr)
        raise SystemExit(2) from None


def sample_comments(n: int) -> list[str]:
    """`n` comments cycled from every sample file (triage sets, training pairs), one per line."""
    texts: list[str] = []
    for path in [*(ROOT / "samples" / "triage").glob("*.csv"), *(ROOT / "samples" / "pairs").glob("*.csv")]:
        with path.open(newline="", encoding="utf-8") as f:
            texts += [" ".join(r["comment"].split()) for r in csv.DictReader(f) if r["comment"].strip()]
    return [texts[i % len(texts)] for i in range(n)]


def quality(rows: list[tuple[str, str]], got: list[str]) -> dict:
    labels = [label for _, label in rows]
    asked = [g for w, g in zip(labels, got) if w in ASKS]
    said_asks = [w for w, g in zip(labels, got) if g in ASKS]
    said_thanks = [w for w, g in zip(labels, got) if g == "thanks"]
    orders = [g for w, g in zip(labels, got) if w == "instructions"]
    return {
        "asks_recall": sum(g in ASKS for g in asked) / len(asked),
        "asks_precision": sum(w in ASKS for w in said_asks) / max(1, len(said_asks)),
        "thanks_precision": sum(w == "thanks" for w in said_thanks) / max(1, len(said_thanks)),
        "instructions_caught": sum(g == "instructions" for g in orders), "instructions": len(orders),
        "accuracy": sum(w == g for w, g in zip(labels, got)) / len(labels),
        "misses": [(c, w, g) for (c, w), g in zip(rows, got) if w != g],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heldout", type=Path, default=ROOT / "samples" / "triage" / "heldout.csv")
    p.add_argument("--comments", type=int, default=1000)
    args = p.parse_args()
    rows = read_labelled(args.heldout)
    load_before = os.getloadavg()[0]

    report, _ = triage_cli(args.heldout)
    got = [c["intent"] for c in report["comments"]]
    q = quality(rows, got)

    with tempfile.TemporaryDirectory() as tmp:
        many = Path(tmp) / "comments.txt"
        many.write_text("\n".join(sample_comments(args.comments)) + "\n", encoding="utf-8")
        triage_cli(many)  # the classifier is in the user's cache from here on
        _, cached_s = triage_cli(many)
        _, cold_s = triage_cli(many, env={"RESPONDER_MODEL_CACHE": str(Path(tmp) / "empty-cache")})
    print_report(q, report["metrics"], args.comments, cached_s, cold_s, load_before, os.getloadavg()[0])


def print_report(q: dict, metrics: dict, n: int, cached_s: float, cold_s: float, load_before: float,
                 load_after: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    per_intent = Table("intent", "precision", "recall", "support", title=f"Held-out triage (accuracy {q['accuracy']:.2f})")
    for intent, row in metrics["intents"].items():
        per_intent.add_row(intent, *(f"{row[k]:.2f}" if row[k] is not None else "-" for k in ("precision", "recall")),
                           str(row["support"]))
    console.print(per_intent)
    goals = Table("goal", "figure", "result", title="Goals")
    for name, figure, met in [
        ("question + request recall >= 0.95", f"{q['asks_recall']:.3f}", q["asks_recall"] >= 0.95),
        ("question + request precision >= 0.85", f"{q['asks_precision']:.3f}", q["asks_precision"] >= 0.85),
        ("thanks precision >= 0.90", f"{q['thanks_precision']:.3f}", q["thanks_precision"] >= 0.90),
        ("every instructions comment caught", f"{q['instructions_caught']}/{q['instructions']}",
         q["instructions_caught"] == q["instructions"]),
        (f"{n:,} comments < 10 s (embedder load included, classifier cached)", f"{cached_s:.1f} s", cached_s < 10),
        (f"{n:,} comments, first use (fits the classifier)", f"{cold_s:.1f} s", True),
    ]:
        goals.add_row(name, figure, "MET" if met else "[red]missed[/red]")
    console.print(goals)
    misses = Table("label", "triaged", "comment", title=f"Misread held-out comments ({len(q['misses'])})")
    for comment, want, got in q["misses"]:
        misses.add_row(want, got, comment if len(comment) <= 90 else comment[:89] + "…")
    console.print(misses)
    console.print(f"load average before {load_before:.2f}, after {load_after:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
