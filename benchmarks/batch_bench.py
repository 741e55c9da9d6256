"""`responder batch` throughput: 64 comments answered in batches vs the same comments one at a time.

    .venv/bin/python benchmarks/batch_bench.py [--comments 64] [--sequential 16] [--batch-size 16]
                                               [--quantization nf4|none] [--max-new-tokens 48]

Both sides use the same responder object (the real default model, built by
responder.factory.build_responder from the settings, i.e. what `responder batch` runs in-process),
the same prompt and the same max_new_tokens. The batch side is the batch command's own pipeline
(read a commentThreads.list export, select, answer in batches, append to a replies file); the
sequential side calls `Responder.respond` once per comment. Comments per minute is a rate, so the
sequential side may be measured on the first --sequential comments to keep the run short (pass
--sequential 64 to time all of them). Goal: batch >= 5x the comments per minute.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def comment_texts(n: int) -> list[str]:
    """Real-looking comments from the samples (the training pairs' comments, then the held-out ones)."""
    texts: list[str] = []
    for name in ("heldout.csv", "train.csv"):
        with (ROOT / "samples" / "pairs" / name).open(newline="", encoding="utf-8") as f:
            texts += [row["comment"] for row in csv.DictReader(f) if row["comment"].strip()]
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} sample comments; ask for at most that many")
    return texts[:n]


def export(texts: list[str], path: Path) -> None:
    """A commentThreads.list page holding the comments, as `responder batch` reads it."""
    items = []
    for i, text in enumerate(texts):
        cid = f"UgxBench{i:04d}"
        items.append({"kind": "youtube#commentThread", "id": cid, "snippet": {
            "channelId": "UCnadiaDoesData000000001", "videoId": "nDdBench001", "canReply": True,
            "totalReplyCount": 0, "topLevelComment": {"kind": "youtube#comment", "id": cid, "snippet": {
                "textOriginal": text, "authorDisplayName": f"@viewer{i}",
                "authorChannelId": {"value": f"UCviewer{i:04d}"}, "publishedAt": "2026-11-27T10:00:00Z"}}}})
    path.write_text(json.dumps({"kind": "youtube#commentThreadListResponse", "items": items}))


def build(settings):
    try:
        from responder.factory import build_responder
    except ImportError:  # the factory is written by another issue; same parts, built by hand
        from engine.generation import LocalGenerator
        from base.prompt import PromptStyle
        from responder.responder import Responder

        print("note: responder.factory not available; using LocalGenerator + Responder without retrieval")
        generator = LocalGenerator.load(settings.base_model, settings.adapter, settings.quantization,
                                        settings.device, settings.max_new_tokens, settings.model_cache)
        return Responder(generator, PromptStyle(sign_off="Keep exploring! - Nadia"))
    return build_responder(settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comments", type=int, default=64)
    parser.add_argument("--sequential", type=int, default=16, help="comments timed one at a time")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quantization", choices=["nf4", "none"], default=None)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--adapter", default=None)
    args = parser.parse_args()

    from base.prompt import CommentInput
    from base.settings import load_settings
    from responder.jobs.batch_run import run_batch
    from responder.jobs.reply_log import ReplyLog
    from responder.youtube.export import load_comments
    from responder.youtube.selection import Filters, infer_channel_id, select

    try:  # the weight-loading progress bars would bury the figures
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    settings = load_settings(quantization=args.quantization, max_new_tokens=args.max_new_tokens,
                             adapter=args.adapter)
    texts = comment_texts(args.comments)
    t0 = time.perf_counter()
    responder = build(settings)
    print(f"model: {settings.base_model} ({settings.quantization}), adapter: {settings.adapter}, "
          f"max_new_tokens={settings.max_new_tokens}, loaded in {time.perf_counter() - t0:.1f}s", flush=True)
    # Warm-up (first-call allocations), not timed.
    responder.respond_many([CommentInput(texts[0])])

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "commentThreads.json"
        export(texts, source)
        comments = load_comments(source)
        selected = select(comments, Filters(channel_id=infer_channel_id(comments)))
        to_answer = sum(r is None for _, r in selected)
        start = time.perf_counter()
        with ReplyLog(Path(tmp) / "replies.jsonl") as out:
            summary = run_batch(selected, responder, out, batch_size=args.batch_size)
        batch_s = time.perf_counter() - start
        skipped = sum(summary.skipped.values())
    batch_rate = summary.answered / batch_s * 60
    print(f"comments: {len(texts)} ({to_answer} selected, {skipped} skipped by the rules, "
          f"{sum(summary.failed.values())} failed)")
    print(f"responder batch (batch size {args.batch_size}): {summary.answered} answered in {batch_s:.1f}s "
          f"= {batch_rate:.1f} comments/min", flush=True)

    sequential = [c.text for c, r in selected if r is None][: args.sequential]
    start = time.perf_counter()
    for text in sequential:
        responder.respond(CommentInput(text))
    seq_s = time.perf_counter() - start

    seq_rate = len(sequential) / seq_s * 60
    print(f"one at a time: {len(sequential)} answered in {seq_s:.1f}s = {seq_rate:.1f} comments/min")
    ratio = batch_rate / seq_rate if seq_rate else float("inf")
    print(f"speed-up: {ratio:.2f}x (goal >= 5x): {'MET' if ratio >= 5 else 'NOT MET'}")


if __name__ == "__main__":
    main()
