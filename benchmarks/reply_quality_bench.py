"""Reply quality, side by side in one run: base model, plain fine-tune, context-aware fine-tune.

    .venv/bin/python benchmarks/reply_quality_bench.py [--pairs FILE] [--heldout FILE] [--json]

Runs what a user runs, as subprocesses: `ingest` the articles, `finetune run` with the default
preset on 100 pairs (no --config) twice, without and with `--store` (context-aware training),
then `finetune eval` on held-out pairs whose replies vary the way real creators' replies do, the
context-aware adapter's replies with passages once without redrafting and once with
`RESPONDER_REDRAFTS=N` (`--redrafts`, base/redraft.py). It prints one table (base | plain tuned |
plain tuned+passages | context-aware tuned | context-aware tuned+passages, redrafts 0 | the same,
redrafts N) and the goals of the reply-quality issues (context-aware training; replies that answer),
each with its figure and MET / missed. Loop, echo and empty rates are counted on the raw generation
as well as the cleaned reply.

Takes about 40 minutes on a quiet 2-core CPU. Run it alone: two benchmarks on two cores print
wrong times. `--keep DIR` keeps (and on a re-run reuses) the store and the two runs.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GOAL_MINUTES = {"plain": 10.0, "context": 20.0}
REDRAFTED = "context tuned+passages, redrafted"


def main() -> None:
    args = parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="reply-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    pairs = hundred_pairs(Path(args.pairs), Path(args.extra), work / "pairs100.csv")
    store = work / "chroma"
    step(f"ingest {args.articles}", ["ingest", args.articles, "--store", str(store)], skip=store.exists())
    minutes = {}
    for name, extra in (("plain", []), ("context", ["--store", str(store)])):
        out = work / name
        done = (out / "adapter" / "adapter_config.json").exists()
        start = time.perf_counter()
        step(f"finetune run ({name})", ["finetune", "run", "--data", str(pairs), "--output", str(out), *extra],
             skip=done)
        minutes[name] = None if done else (time.perf_counter() - start) / 60
    evals = {name: run_eval(args.heldout, work / name, store, work / f"eval_{name}.json", redrafts=0)
             for name in ("plain", "context")}
    redrafted = run_eval(args.heldout, work / "context", store, work / f"eval_context_redrafts{args.redrafts}.json",
                         redrafts=args.redrafts, modes=["tuned+passages"])
    columns = {"base": evals["plain"]["modes"]["base"],
               "plain tuned": evals["plain"]["modes"]["tuned"],
               "plain tuned+passages": evals["plain"]["modes"]["tuned+passages"],
               "context tuned": evals["context"]["modes"]["tuned"],
               "context tuned+passages": evals["context"]["modes"]["tuned+passages"],
               REDRAFTED: redrafted["modes"]["tuned+passages"]}
    goals = check_goals(columns, minutes) + check_answer_goals(columns)
    report = {"columns": columns, "goals": goals, "minutes": minutes, "work_dir": str(work),
              "load_before": load_before, "load_after": os.getloadavg()}
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default=str(ROOT / "samples/pairs/train.csv"), help="training pairs")
    p.add_argument("--extra", default=str(ROOT / "samples/pairs/heldout.csv"),
                   help="pairs that top the training file up to 100")
    p.add_argument("--heldout", default=str(ROOT / "samples/pairs/heldout_varied.csv"),
                   help="held-out pairs for `finetune eval`")
    p.add_argument("--articles", default=str(ROOT / "samples/articles"))
    p.add_argument("--keep", default=None, metavar="DIR", help="work directory to keep and reuse")
    p.add_argument("--redrafts", type=int, default=2, help="RESPONDER_REDRAFTS of the last column")
    p.add_argument("--json", action="store_true", help="one JSON object on standard output")
    return p.parse_args()


def hundred_pairs(pairs: Path, extra: Path, out: Path) -> Path:
    """The training file topped up to 100 pairs from `extra` (the goal speaks of 100 pairs)."""
    rows = list(csv.DictReader(pairs.open(encoding="utf-8")))
    rows += list(csv.DictReader(extra.open(encoding="utf-8")))[: max(0, 100 - len(rows))]
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["comment", "reply"])
        writer.writeheader()
        writer.writerows({"comment": r["comment"], "reply": r["reply"]} for r in rows[:100])
    return out


def step(title: str, command: list[str], skip: bool = False) -> None:
    if skip:
        print(f"== {title}: reused", file=sys.stderr)
        return
    print(f"== {title}", file=sys.stderr)
    subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, check=True, stdout=sys.stderr)


def run_eval(heldout: str, run: Path, store: Path, saved: Path, redrafts: int, modes: list[str] = ()) -> dict:
    """`finetune eval --json` of one run (with `RESPONDER_REDRAFTS=redrafts`, only `modes` if given);
    kept in `saved` and reused while the run is unchanged."""
    adapter = run / "adapter" / "adapter_model.safetensors"
    if saved.exists() and saved.stat().st_mtime > adapter.stat().st_mtime:
        print(f"== finetune eval {run.name}: reused {saved}", file=sys.stderr)
        return json.loads(saved.read_text())
    print(f"== finetune eval {run.name}", file=sys.stderr)
    only = [arg for mode in modes for arg in ("--mode", mode)]
    done = subprocess.run([str(BIN / "finetune"), "eval", heldout, "--adapter", str(run), "--store", str(store),
                           "--json", *only], cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, "RESPONDER_REDRAFTS": str(redrafts)})
    saved.write_text(done.stdout)
    return json.loads(done.stdout)


def check_goals(c: dict, minutes: dict) -> list[dict]:
    tuned = ["plain tuned", "plain tuned+passages", "context tuned", "context tuned+passages"]
    goals = []

    def goal(name: str, figure: str, met: bool) -> None:
        goals.append({"goal": name, "figure": figure, "met": bool(met)})

    for rate in ("loop_rate_raw", "echo_rate", "empty_rate"):
        worst = max(c[k][rate] for k in ("context tuned", "context tuned+passages"))
        goal(f"{rate} 0% (context-aware adapter, with and without passages)",
             f"{worst:.0%} (base {c['base'][rate]:.0%})", worst == 0)
    ratio = c["context tuned"]["reply_loss"] / c["base"]["reply_loss"]
    goal("tuned reply loss <= 0.90 x base", f"{ratio:.3f}", ratio <= 0.90)
    for rate in ("loop_rate_raw", "echo_rate", "empty_rate"):
        goal(f"with passages {rate} no worse than without",
             f"{c['context tuned+passages'][rate]:.0%} vs {c['context tuned'][rate]:.0%}",
             c["context tuned+passages"][rate] <= c["context tuned"][rate])
    ratio = c["context tuned+passages"]["reply_loss"] / c["context tuned"]["reply_loss"]
    goal("reply loss with passages <= 1.02 x without", f"{ratio:.3f} (plain adapter: "
         f"{c['plain tuned+passages']['reply_loss'] / c['plain tuned']['reply_loss']:.3f})", ratio <= 1.02)
    thanks = max((c[k]["median_words_thanks"] or 0) for k in tuned)
    goal("median reply to thanks <= 25 words", f"{thanks:g}", thanks <= 25)
    for name, limit in GOAL_MINUTES.items():
        m = minutes.get(name)
        goal(f"finetune run on 100 pairs ({name}) <= {limit:g} min", "reused" if m is None else f"{m:.1f} min",
             m is None or m <= limit)
    return goals


def check_answer_goals(c: dict) -> list[dict]:
    """The goals of "replies that answer" (issue 23), on the context-aware adapter with passages as
    served by default (the redrafted column), today's recipe without redrafts beside each figure."""
    served, before, base = c[REDRAFTED], c["context tuned+passages"], c["base"]
    goals = []

    def share(key: str) -> str:
        return "-" if served.get(key) is None else f"{served[key]:.0%} (without redrafts " + (
            "-" if before.get(key) is None else f"{before[key]:.0%}") + ")"

    def goal(name: str, key: str, met: Any) -> None:
        goals.append({"goal": name, "figure": share(key), "met": bool(met)})

    goal("stock_rate 0", "stock_rate", served["stock_rate"] == 0)
    goal("misfit_rate <= 5%", "misfit_rate", (served["misfit_rate"] or 0) <= 0.05)
    goal("distinct_rate >= 0.95", "distinct_rate", (served["distinct_rate"] or 0) >= 0.95)
    goal("grounded_rate >= 0.6 (questions with passages)", "grounded_rate", (served["grounded_rate"] or 0) >= 0.6)
    # Stricter than the goal's figure (README "answered_rate"): held to the same bar.
    goal("answered_rate >= 0.6 (grounded and on the question)", "answered_rate",
         (served.get("answered_rate") or 0) >= 0.6)
    goal("cited_rate 1.0 (a confident passage)", "cited_rate", served["cited_rate"] in (None, 1.0))
    for rate in ("loop_rate_raw", "echo_rate", "empty_rate", "invented_link_rate"):
        goal(f"{rate} 0", rate, served[rate] == 0)
    goals.append({"goal": "similarity to the reference >= the base model's",
                  "figure": f"{served['similarity']:.3f} (without redrafts {before['similarity']:.3f}, "
                            f"base {base['similarity']:.3f})", "met": served["similarity"] >= base["similarity"]})
    thanks = served["median_words_thanks"] or 0
    goals.append({"goal": "median reply to thanks <= 25 words (with passages, redrafted)", "figure": f"{thanks:g}",
                  "met": thanks <= 25})
    return goals


def print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from finetune.evaluation import METRIC_LABELS, format_value

    console = Console(width=200)  # six columns: wider than a default 80-column pipe
    table = Table(title="Reply quality on held-out pairs")
    table.add_column("metric")
    for name in report["columns"]:
        table.add_column(name, justify="right")
    for key, label in METRIC_LABELS:
        table.add_row(label, *(format_value(key, col.get(key)) for col in report["columns"].values()))
    console.print(table)
    goals = Table(title="Goals")
    for name in ("goal", "figure", "result"):
        goals.add_column(name)
    for g in report["goals"]:
        goals.add_row(g["goal"], g["figure"], "MET" if g["met"] else "[red]missed[/red]")
    console.print(goals)
    console.print(f"load average before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}; "
                  f"runs kept in {report['work_dir']}")


if __name__ == "__main__":
    main()
