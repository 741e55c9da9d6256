"""`finetune eval PAIRS --adapter RUN [--store DIR] [--json]`: the reply-quality evaluation.

The shell around `finetune.evaluation`: check the inputs, load the model, adapter, store and
embedder, run the evaluation with a progress bar on standard error, then print a table (or one
JSON object on standard output with `--json`) and always write RUN/eval.json.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from base.errors import UserError


@click.command("eval")
@click.argument("pairs_path", metavar="PAIRS")
@click.option("--adapter", "adapter_path", required=True, metavar="RUN",
              help="A `finetune run` output directory (or its adapter/ folder).")
@click.option("--store", default=None, metavar="DIR",
              help="Knowledge base for the tuned+passages mode (as `ingest --store`).")
@click.option("--chroma-url", default=None, metavar="URL", help="Chroma server instead of --store.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on standard output, nothing else.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate the first N pairs only.")
@click.option("--mode", "modes", multiple=True, type=click.Choice(["base", "tuned", "tuned+passages"]),
              help="Run only this mode (repeatable) [default: every mode the setup can run].")
def eval_cmd(pairs_path: str, adapter_path: str, store: str | None, chroma_url: str | None, as_json: bool,
             limit: int | None, modes: tuple[str, ...]) -> None:
    """Generate replies to held-out PAIRS as serving does (base, tuned, tuned+passages) and score them.

    PAIRS: comment/reply pairs in any format `finetune run` reads. Reports, per mode, the
    reply-token loss, loop / echo / empty / invented-link rates, reply lengths and similarity to
    the reference replies (definitions in the README). Writes RUN/eval.json.

    Example: finetune eval samples/pairs/heldout_varied.csv --adapter runs/style-adapter --store .demo/chroma
    """
    from base.adapter_info import find_adapter_dir
    from finetune.data import load_pairs

    pairs = load_pairs(pairs_path).pairs[:limit]
    adapter_dir = find_adapter_dir(adapter_path)
    run_dir = adapter_dir.parent if adapter_dir.name == "adapter" else adapter_dir
    console = _stderr_console()
    setup = replace(load_setup(adapter_dir, store, chroma_url, console), only=modes)
    if modes and not setup.modes():
        raise UserError(f"--mode {' '.join(modes)} needs a knowledge base; give --store DIR (or --chroma-url)")
    result = run_with_progress(setup, pairs, console)
    write_eval(run_dir, result)
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False))
    else:
        print_table(result, console=None)
        click.echo(f"Replies and figures: {run_dir / 'eval.json'}")


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def load_setup(adapter_dir: Path, store: str | None, chroma_url: str | None, console: Any) -> Any:
    """The model with its adapter, the prompt style and decoding, and the retriever if a store is given."""
    from base.adapter_info import read_adapter_info
    from engine.models import choose_precision, load_adapter, load_base_model, load_tokenizer, resolve_base_model
    from base.settings import load_settings
    from engine.decoding import decoding_of
    from finetune.evaluation import EvalSetup

    from knowledge.config import RetrievalConfig, for_adapter

    info = read_adapter_info(adapter_dir)
    settings = load_settings(store=store, chroma_url=chroma_url)
    retrieval, notes = for_adapter(RetrievalConfig.of(settings), settings.model_fields_set, info.retrieval)
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    retriever = open_retriever(retrieval) if (store or chroma_url) else None
    base_dir = resolve_base_model(info.base_model, settings.model_cache)
    precision = choose_precision(settings.device)
    console.print(f"Loading {info.base_model} ({info.quantization}) with the adapter in {adapter_dir} ...")
    tokenizer = load_tokenizer(base_dir)
    model = load_adapter(load_base_model(base_dir, info.quantization, precision), adapter_dir)
    from knowledge.embedder import load_embedder

    from knowledge.triage import TriageClassifier

    embedder = load_embedder(retrieval.embedder)
    triage = TriageClassifier.load(embedder).classify  # the reply figures triage comments and replies
    return EvalSetup(model=model, tokenizer=tokenizer, style=info.style, decoding=decoding_of(settings),
                     device=precision.device, model_name=info.base_model, retriever=retriever,
                     top_k=retrieval.top_k, embed=embedder.embed, triage=triage, citation=settings.citation)


def open_retriever(settings: Any) -> Any:
    from knowledge.store import open_knowledge_base

    kb = open_knowledge_base(settings)
    if kb.collection() is None:
        raise UserError(f"knowledge base '{settings.chroma_url or settings.store}' is empty; run "
                        "`ingest ARTICLES --store DIR` first or leave out --store")
    return kb


def run_with_progress(setup: Any, pairs: list, console: Any) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from finetune.evaluation import evaluate_replies

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        tasks = {mode: progress.add_task(f"replies, {mode}", total=len(pairs)) for mode in setup.modes()}
        setup.progress = lambda mode, n: progress.update(tasks[mode], completed=n)
        return evaluate_replies(setup, pairs)


def write_eval(run_dir: Path, result: dict[str, Any]) -> None:
    from base.fileio import write_text_atomic

    write_text_atomic(run_dir / "eval.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def print_table(result: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from finetune.evaluation import METRIC_LABELS, format_value

    modes = list(result["modes"])
    n = result["modes"][modes[0]]["count"] if modes else 0
    table = Table(title=f"Reply quality on {n} held-out comments")
    table.add_column("metric")
    for mode in modes:
        table.add_column(mode, justify="right")
    for key, label in METRIC_LABELS:
        table.add_row(label, *(format_value(key, result["modes"][m].get(key)) for m in modes))
    (console or Console(file=sys.stdout)).print(table)
