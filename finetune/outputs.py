"""The run's report files: metrics.jsonl, loss.png and samples.md (written atomically)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from base.fileio import write_text_atomic, write_with_atomic


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def plot_loss(path: Path, records: list[dict[str, Any]]) -> None:
    """loss.png: training loss per optimizer step and eval loss per epoch, on one axis of steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("kind") == "step"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train loss (reply tokens)",
                color="tab:blue", alpha=0.8)
    if evals:
        ax.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval loss (reply tokens)",
                color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title("finetune run")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_with_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def samples_markdown(rows: list[dict[str, str]], sign_off: str) -> str:
    """samples.md: for each held-out comment, the reference, the base reply and the tuned reply."""

    def cell(text: str) -> str:
        return text.strip().replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"

    ends = lambda key: sum(1 for r in rows if sign_off and r[key].rstrip().endswith(sign_off))  # noqa: E731
    lines = ["# Held-out comments: base model vs tuned adapter", "",
             "Generated as the service generates (greedy, its decoding controls); raw model output, "
             "before reply cleaning.", ""]
    if sign_off:
        lines += [f"Replies ending with the sign-off `{sign_off}`: base {ends('base')}/{len(rows)}, "
                  f"tuned {ends('tuned')}/{len(rows)}.", ""]
    mean = lambda key: sum(len(r[key].split()) for r in rows) / max(1, len(rows))  # noqa: E731
    lines += [f"Mean words per reply: base {mean('base'):.1f}, tuned {mean('tuned'):.1f}, "
              f"reference {mean('reference'):.1f}.", "",
              "| comment | base model | tuned | reference |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {cell(r['comment'])} | {cell(r['base'])} | {cell(r['tuned'])} | {cell(r['reference'])} |")
    return "\n".join(lines) + "\n"


def generate_replies(model: Any, tokenizer: Any, style: Any, comments: Sequence[str], max_new_tokens: int,
                     model_name: str, adapter_name: str | None = None, batch: int = 8) -> list[str]:
    """Greedy replies to `comments`, generated as serving generates them (`LocalGenerator` around the
    in-memory model: same prompt, padding, stop tokens and decoding controls); the raw text, trimmed."""
    from base.generation import LocalGenerator
    from base.prompt import CommentInput, clean_comment

    generator = LocalGenerator(model, tokenizer, model_name, adapter_name, max_new_tokens)
    was_training = model.training
    model.eval()  # no dropout in the LoRA layers
    try:
        out: list[str] = []
        for start in range(0, len(comments), batch):
            items = [CommentInput(clean_comment(c)) for c in comments[start:start + batch]]
            out += [reply.strip() for reply in generator.generate(items, style)]
    finally:
        model.train(was_training)
    return out
