"""The run's report files: metrics.jsonl, loss.png and samples.md (written atomically)."""

from __future__ import annotations

import json
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


def samples_markdown(result: dict[str, Any], epochs: list[dict[str, Any]] | None = None) -> str:
    """samples.md: the reply-quality table, each epoch's figures (which one was kept, and why), then
    each held-out comment with every mode's reply."""
    from .evaluation import markdown_table

    def cell(text: str) -> str:
        return text.strip().replace("|", "\\|").replace("\n", "<br>") or "*(empty)*"

    modes = list(result["modes"])
    by_comment: dict[str, dict[str, Any]] = {}
    for row in result["replies"]:
        entry = by_comment.setdefault(row["comment"], {"reference": row["reference"]})
        flags = [name for name in ("loop", "echo", "empty", "invented_link") if row.get(name)]
        entry[row["mode"]] = row["reply"] + (f" **[{', '.join(flags)}]**" if flags else "")
    lines = ["# Held-out comments: base model vs tuned adapter", "",
             "Replies generated as the service generates them (same prompt, decoding and cleaning), scored by "
             "`finetune eval` (definitions in the README). Flags in brackets: what a reviewer would catch.", "",
             markdown_table(result), *epoch_table(epochs or []), "| comment | " + " | ".join(modes) + " | reference |",
             "|---|" + "---|" * (len(modes) + 1)]
    for comment, entry in by_comment.items():
        lines.append(f"| {cell(comment)} | " + " | ".join(cell(entry.get(m, "")) for m in modes)
                     + f" | {cell(entry['reference'])} |")
    return "\n".join(lines) + "\n"


def epoch_table(epochs: list[dict[str, Any]]) -> list[str]:
    """Lines of the table of each epoch's eval loss and reply figures, the kept one marked."""
    trained = [e for e in epochs if e.get("epoch", 0) > 0]
    if not trained:
        return []
    names = ("stock_rate", "misfit_rate", "distinct_rate", "grounded_rate")
    kept = max((e["epoch"] for e in trained if e.get("best")), default=None)
    lines = ["## Epochs: the adapter kept is the one whose replies score best", "",
             "| epoch | eval loss | " + " | ".join(n.removesuffix("_rate") for n in names) + " | selection | kept |",
             "|---|---|" + "---|" * (len(names) + 2)]
    for e in trained:
        figures = e.get("figures") or {}
        cells = [f"{figures[n]:.0%}" if figures.get(n) is not None else "-" for n in names]
        lines.append(f"| {e['epoch']} | {e['eval_loss']:.4f} | " + " | ".join(cells)
                     + f" | {e.get('selection', e['eval_loss']):.3f} | {'yes' if e['epoch'] == kept else ''} |")
    return lines + [""]
