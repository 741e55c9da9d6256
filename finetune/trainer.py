"""The lean QLoRA training loop behind `finetune run`.

Why a custom loop instead of the HF Trainer, for this job on a CPU:
- the loss is taken on reply tokens only, and the output head (a 49k-word vocabulary, a large share
  of a small model's FLOPs) runs only on those positions: hidden states are sliced before lm_head;
- no gradient checkpointing: a small model's activations fit easily, and recomputing the forward
  costs a third of the step;
- examples of one optimizer step are sorted by length before being cut into micro-batches, so
  padding is small, and micro-batches are padded to their own longest example;
- the loss of an optimizer step is the mean over all reply tokens of its examples (not a mean of
  micro-batch means), so short replies weigh what they should;
- one resumable checkpoint file (adapter + optimizer + scheduler + RNG + position), written
  atomically every few steps, is picked up automatically when the same output is used again.
"""

from __future__ import annotations

import logging
import math
import os
import random
import resource
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.errors import UserError
from base.fileio import replace_dir_atomic, write_text_atomic, write_with_atomic
from finetune.outputs import plot_loss, samples_markdown, write_metrics

from .config import RunConfig, dump_config
from .data import Example, encode_pairs, load_pairs, split_pairs

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"
BEST = Path("checkpoints") / "best.pt"
# A resumed run must train the same thing; these keys must match the checkpoint's config.
_RESUME_KEYS = ("model.base_model", "model.quantization", "lora.r", "lora.alpha", "lora.target_modules",
                "data.path", "train.batch_size", "train.seed", "prompt.persona", "prompt.sign_off")


@dataclass
class Prepared:
    """Everything checked before anything heavy loads."""

    cfg: RunConfig
    output: Path
    base_dir: str
    train_pairs: list
    eval_pairs: list
    warnings: list[str] = field(default_factory=list)
    resume: bool = False


def prepare(cfg: RunConfig, fresh: bool = False) -> Prepared:
    """Check data, base model and output directory; raise one `UserError` for what is wrong."""
    from base.models import resolve_base_model

    train = load_pairs(cfg.data.path, cfg.data.comment_column, cfg.data.reply_column)
    warnings = list(train.warnings)
    if cfg.data.eval_path:
        held = load_pairs(cfg.data.eval_path, cfg.data.comment_column, cfg.data.reply_column)
        warnings += held.warnings
        train_pairs, eval_pairs = train.pairs, held.pairs
    else:
        train_pairs, eval_pairs = split_pairs(train.pairs, cfg.data.eval_fraction, cfg.train.seed)
    base_dir = resolve_base_model(cfg.model.base_model)
    output = Path(cfg.output).expanduser()
    if output.exists() and not output.is_dir():
        raise UserError(f"output '{output}' is a file; pass --output with a directory")
    resume = (output / CHECKPOINT).exists() and not fresh
    if not resume and not fresh and (output / "adapter" / "adapter_config.json").exists():
        raise UserError(f"output '{output}' already holds a finished run; pass --fresh to train it again "
                        "(the old adapter is replaced only when the new one is done) or choose another --output")
    return Prepared(cfg, output, base_dir, train_pairs, eval_pairs, warnings, resume)


def quiet_libraries() -> None:
    """Our progress bar and log lines are the run's output; silence the libraries' own."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*[Pp]aged.*")


# --- device, model, optimizer -----------------------------------------------------------------


def physical_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def build_model(cfg: RunConfig, base_dir: str, precision: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    from base.models import load_base_model

    model = load_base_model(base_dir, cfg.model.quantization, precision)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(f"lora.target_modules={cfg.lora.target_modules!r}: {str(exc).splitlines()[0]}; "
                        "use all-linear or names such as [q_proj, v_proj]") from exc
    return model


def choose_optimizer(name: str, params: list, cfg: RunConfig, device: str) -> tuple[Any, str, str]:
    """(optimizer, name, why)."""
    import torch

    lr, wd = cfg.train.learning_rate, cfg.train.weight_decay
    if name == "auto":
        if device == "cuda":
            name, why = "paged_adamw_8bit", "CUDA: paged 8-bit AdamW (QLoRA), state can spill to CPU memory"
        elif device == "cpu":
            name, why = "adamw_8bit", "CPU: bitsandbytes 8-bit AdamW (paging only exists on CUDA)"
        else:
            name, why = "adamw", f"{device}: torch AdamW (bitsandbytes optimizers need CUDA or CPU)"
    else:
        why = "set by train.optimizer"
    if name == "paged_adamw_8bit" and device != "cuda":
        name, why = "adamw_8bit", "paged optimizers page only on CUDA: 8-bit AdamW instead"
    if name in ("adamw_8bit", "paged_adamw_8bit") and device not in ("cuda", "cpu"):
        name, why = "adamw", f"bitsandbytes has no {device} optimizers: torch AdamW instead"
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd), name, why
    import bitsandbytes as bnb

    cls = bnb.optim.PagedAdamW8bit if name == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return cls(params, lr=lr, weight_decay=wd), name, why


def lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else max(0.0, 1 - progress)

    return f


# --- batches and loss -------------------------------------------------------------------------


def epoch_batches(examples: list[Example], batch_size: int, micro: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Optimizer steps of one epoch, each a list of micro-batches (example indices), seeded."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    steps = []
    for start in range(0, len(order), batch_size):
        group = sorted(order[start:start + batch_size], key=lambda i: len(examples[i].input_ids))
        steps.append([group[j:j + micro] for j in range(0, len(group), micro)])
    return steps


def collate(examples: list[Example], idx: list[int], pad_id: int, device: str) -> dict[str, Any]:
    """Right-padded tensors; padding is masked in attention and in labels (-100)."""
    import torch

    width = max(len(examples[i].input_ids) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), -100, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        n = len(examples[i].input_ids)
        ids[row, :n] = torch.tensor(examples[i].input_ids)
        labels[row, :n] = torch.tensor(examples[i].labels)
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def causal_lm_of(model: Any) -> Any:
    """The transformers CausalLM inside a PEFT model (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def shared_prefix_len(batch: dict[str, Any], minimum: int = 16) -> int:
    """Length of the token prefix every row shares (the system prompt), ending before any label."""
    ids, labels = batch["input_ids"], batch["labels"]  # (B, T)
    if ids.shape[0] < 2:
        return 0
    lcp = int((ids == ids[:1]).all(dim=0).long().cumprod(0).sum())
    first_label = int((labels != -100).long().argmax(dim=1).min())
    n = min(lcp, first_label - 1)
    return n if n >= minimum else 0


def reply_loss_sum(model: Any, batch: dict[str, Any], share_prefix: bool = True) -> tuple[Any, int]:
    """(sum of cross-entropy over reply tokens, number of reply tokens).

    Two savings, both exact (same loss as the full forward with masking afterwards):
    - the prefix all rows share (the persona's system prompt, often most of the prompt) runs once
      per micro-batch, and its keys/values are broadcast to every row; gradients flow through it;
    - the output head runs only on positions whose next token carries a label.
    """
    import torch.nn.functional as F

    lm = causal_lm_of(model)
    decoder = lm.get_decoder()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = shared_prefix_len(batch) if share_prefix else 0
    if n:
        from transformers import DynamicCache

        rows = ids.shape[0]
        prefix = decoder(input_ids=ids[:1, :n], use_cache=True).past_key_values
        cache = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                             for k, v, *_ in prefix])
        hidden = decoder(input_ids=ids[:, n:], attention_mask=mask, past_key_values=cache,
                         use_cache=True).last_hidden_state  # (B, T-n, C)
    else:
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # (B, T, C)
    targets = batch["labels"][:, n + 1:]  # position t predicts token t+1
    keep = targets != -100
    picked = hidden[:, :-1][keep]  # (N, C)
    logits = lm.get_output_embeddings()(picked).float()  # (N, V)
    return F.cross_entropy(logits, targets[keep], reduction="sum"), int(keep.sum())


def evaluate(model: Any, examples: list[Example], micro: int, pad_id: int, device: str,
             share_prefix: bool = True) -> float:
    import torch

    if not examples:
        return float("nan")
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(order), micro * 2):
            batch = collate(examples, order[start:start + micro * 2], pad_id, device)
            loss, n = reply_loss_sum(model, batch, share_prefix)
            total += float(loss)
            count += n
    model.train()
    return total / max(1, count)


def peak_memory_mb(device: str) -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU memory on CUDA), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)}
    if device == "cuda":
        import torch

        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


# --- generation for samples.md ----------------------------------------------------------------


def generate_replies(model: Any, tokenizer: Any, style: Any, comments: list[str], max_new_tokens: int,
                     device: str, batch: int = 8) -> list[str]:
    """Greedy replies, left-padded in batches; the raw text the model wrote (special tokens dropped)."""
    import torch

    from base.generation import left_pad
    from base.prompt import CommentInput, clean_comment, encode_prompt

    model.eval()
    out = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for start in range(0, len(comments), batch):
        prompts = [encode_prompt(tokenizer, style, CommentInput(clean_comment(c))) for c in comments[start:start + batch]]
        padded, padding_mask = left_pad(prompts, pad)
        width = len(padded[0])
        ids = torch.tensor(padded, device=device)  # (B, T), padded on the left
        mask = torch.tensor(padding_mask, device=device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        for row in gen[:, width:]:
            out.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    model.train()
    return out


# --- the run ----------------------------------------------------------------------------------


def _get(cfg_dict: dict, dotted: str) -> Any:
    node: Any = cfg_dict
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def train(prep: Prepared, console: Any, fresh: bool = False, stop_after_steps: int | None = None) -> Path:
    """Train, evaluate each epoch, keep the best adapter, write every output; returns the output dir."""
    import torch
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from base.models import choose_precision, load_tokenizer, quantized_bits_per_weight

    cfg, out = prep.cfg, prep.output
    say = console.print
    quiet_libraries()
    for w in prep.warnings:
        say(f"[yellow]Warning:[/yellow] {w}")

    precision = choose_precision(cfg.model.device)
    device = precision.device
    threads = cfg.model.threads or physical_cores()
    if device == "cpu":
        torch.set_num_threads(threads)
    say(f"Device: {device}, compute {precision.compute_dtype} ({precision.reason})"
        + (f", {threads} threads" if device == "cpu" else ""))

    tokenizer = load_tokenizer(prep.base_dir)
    style = cfg.prompt.style
    train_ex, w1 = encode_pairs(tokenizer, style, prep.train_pairs, cfg.data.max_length)
    eval_ex, w2 = encode_pairs(tokenizer, style, prep.eval_pairs, cfg.data.max_length)
    for w in w1 + w2:
        say(f"[yellow]Warning:[/yellow] {w}")

    if fresh and out.exists():
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    state = None
    if prep.resume:
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        diffs = [f"{k}: {_get(state['config'], k)!r} then, {_get(cfg.to_dict(), k)!r} now"
                 for k in _RESUME_KEYS if _get(state["config"], k) != _get(cfg.to_dict(), k)]
        if diffs:
            raise UserError(f"the checkpoint in '{out}' was made with another config ({'; '.join(diffs)}); "
                            "pass --fresh to start over or use another --output")

    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    t0 = time.time()
    model = build_model(cfg, prep.base_dir, precision)
    model.train()
    quant_note = ""
    if cfg.model.quantization == "nf4":
        bits = quantized_bits_per_weight(model)
        quant_note = f"NF4 + double quantization, {bits:.3f} bits per weight of the quantized linear layers"
    else:
        bits = None
        quant_note = "none: float weights, plain LoRA"
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in model.parameters())
    say(f"Model: {cfg.model.base_model} loaded in {time.time() - t0:.1f}s; quantization {quant_note}; "
        f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {cfg.lora.target_modules}: "
        f"{n_train:,} trainable of {n_all:,} parameters")
    optimizer, opt_name, why = choose_optimizer(cfg.train.optimizer, trainable, cfg, device)
    say(f"Optimizer: {opt_name} ({why})")

    micro = cfg.train.micro_batch_size
    steps_per_epoch = math.ceil(len(train_ex) / cfg.train.batch_size)
    total_steps = steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    warmup = int(round(total_steps * cfg.train.warmup_ratio))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train.lr_scheduler, warmup, total_steps))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    say(f"Data: {len(train_ex)} training / {len(eval_ex)} eval examples; {cfg.train.epochs} epoch(s) of "
        f"{steps_per_epoch} step(s), batch {cfg.train.batch_size} = {micro} x {cfg.train.batch_size // micro}")

    step, epoch, step_in_epoch = 0, 0, 0
    best, since_best = float("inf"), 0
    records: list[dict[str, Any]] = []
    if state is not None:
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        step, epoch, step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        best, since_best, records = state["best"], state["since_best"], state["records"]
        say(f"[bold]Resumed[/bold] from {out / CHECKPOINT}: epoch {epoch + 1}, step {step} of {total_steps}")

    def save_checkpoint() -> None:
        payload = {"adapter": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()},
                   "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                   "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
                   "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch, "best": best,
                   "since_best": since_best, "records": records, "config": cfg.to_dict()}
        write_with_atomic(out / CHECKPOINT, lambda tmp: torch.save(payload, tmp))
        write_metrics(out / "metrics.jsonl", records)

    if state is None:
        # Eval loss of the untouched model: the curve's starting point.
        base_eval = evaluate(model, eval_ex, micro, pad_id, device, cfg.train.share_prefix)
        records.append({"kind": "eval", "epoch": 0, "step": 0, "eval_loss": round(base_eval, 5)})
        say(f"Eval loss before training: {base_eval:.4f}")

    stopped_early = False
    progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} steps"), TextColumn("loss {task.fields[loss]}"),
                        TextColumn("{task.fields[tps]} tok/s"), TimeRemainingColumn(), console=console,
                        transient=False)
    with progress:
        task = progress.add_task("train", total=total_steps, completed=step, epoch=epoch + 1, loss="-", tps="-")
        while epoch < cfg.train.epochs and step < total_steps:
            batches = epoch_batches(train_ex, cfg.train.batch_size, micro, cfg.train.seed, epoch)
            epoch_start = time.time()
            epoch_tokens = 0
            for micro_batches in batches[step_in_epoch:]:
                if step >= total_steps:
                    break
                t_step = time.time()
                n_reply = sum(sum(1 for x in train_ex[i].labels[1:] if x != -100) for mb in micro_batches for i in mb)
                n_tokens = 0
                loss_total = 0.0
                for mb in micro_batches:
                    batch = collate(train_ex, mb, pad_id, device)
                    loss_sum, _ = reply_loss_sum(model, batch, cfg.train.share_prefix)
                    (loss_sum / max(1, n_reply)).backward()
                    loss_total += float(loss_sum.detach())
                    n_tokens += int(batch["attention_mask"].sum())
                if cfg.train.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(trainable, cfg.train.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                step_in_epoch += 1
                epoch_tokens += n_tokens
                dt = time.time() - t_step
                loss = loss_total / max(1, n_reply)
                records.append({"kind": "step", "epoch": epoch + 1, "step": step, "loss": round(loss, 5),
                                "lr": scheduler.get_last_lr()[0], "tokens": n_tokens,
                                "tokens_per_s": round(n_tokens / dt, 1), "seconds": round(dt, 3),
                                **peak_memory_mb(device)})
                progress.update(task, completed=step, loss=f"{loss:.3f}", tps=f"{n_tokens / dt:.0f}")
                if step % cfg.train.checkpoint_every == 0:
                    save_checkpoint()
                if stop_after_steps is not None and step >= stop_after_steps:
                    save_checkpoint()
                    say(f"Stopped after step {step} (checkpoint saved); run again to resume")
                    return out
            else:
                seconds = time.time() - epoch_start
                eval_loss = evaluate(model, eval_ex, micro, pad_id, device, cfg.train.share_prefix)
                improved = eval_loss < best - 1e-4
                if improved:
                    best, since_best = eval_loss, 0
                    adapter = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}
                    write_with_atomic(out / BEST, lambda tmp: torch.save(adapter, tmp))
                else:
                    since_best += 1
                records.append({"kind": "eval", "epoch": epoch + 1, "step": step, "eval_loss": round(eval_loss, 5),
                                "epoch_seconds": round(seconds, 2), "epoch_tokens_per_s": round(epoch_tokens / seconds, 1),
                                "best": improved, **peak_memory_mb(device)})
                progress.console.print(f"epoch {epoch + 1}: eval loss {eval_loss:.4f}"
                                       f"{' (best)' if improved else ''}, {seconds:.1f}s, "
                                       f"{epoch_tokens / seconds:.0f} tok/s")
                epoch += 1
                step_in_epoch = 0
                progress.update(task, epoch=min(epoch + 1, cfg.train.epochs))
                save_checkpoint()
                if cfg.train.patience and since_best >= cfg.train.patience:
                    stopped_early = True
                    progress.console.print(f"Early stop: no eval improvement for {since_best} epoch(s)")
                    break
                continue
            break  # max_steps reached inside an epoch

    if step >= total_steps and not records[-1].get("kind") == "eval" and not stopped_early:
        # max_steps ended mid-epoch: evaluate what we have so the best adapter exists.
        eval_loss = evaluate(model, eval_ex, micro, pad_id, device, cfg.train.share_prefix)
        records.append({"kind": "eval", "epoch": epoch + 1, "step": step, "eval_loss": round(eval_loss, 5),
                        "best": eval_loss < best, **peak_memory_mb(device)})
        if eval_loss < best:
            best = eval_loss
            adapter = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}
            write_with_atomic(out / BEST, lambda tmp: torch.save(adapter, tmp))
        save_checkpoint()

    # The best adapter (lowest eval loss) is the one written and sampled.
    if (out / BEST).exists():
        set_peft_model_state_dict(model, torch.load(out / BEST, map_location="cpu"))
    finish(model, tokenizer, prep, records, device, bits, console)
    return out


def finish(model: Any, tokenizer: Any, prep: Prepared, records: list[dict[str, Any]], device: str,
           bits: float | None, console: Any) -> None:
    from base.adapter_info import write_adapter_info

    from .estimate import estimate_for_run

    cfg, out = prep.cfg, prep.output
    style = cfg.prompt.style
    n = min(cfg.samples.count, len(prep.eval_pairs))
    if n:
        console.print(f"Writing samples.md: {n} held-out comments, base model vs tuned ...")
        comments = [p.comment for p in prep.eval_pairs[:n]]
        tuned = generate_replies(model, tokenizer, style, comments, cfg.samples.max_new_tokens, device)
        with model.disable_adapter():
            base = generate_replies(model, tokenizer, style, comments, cfg.samples.max_new_tokens, device)
        rows = [{"comment": c, "base": b, "tuned": t, "reference": p.reply}
                for c, b, t, p in zip(comments, base, tuned, prep.eval_pairs[:n])]
        write_text_atomic(out / "samples.md", samples_markdown(rows, style.sign_off))

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp)
        write_adapter_info(tmp, cfg.model.base_model, cfg.model.quantization, style)

    replace_dir_atomic(out / "adapter", build)
    write_text_atomic(out / "config.yaml", f"# Resolved config of this run; rerun with:\n"
                      f"#   finetune run --config {out / 'config.yaml'} --fresh\n" + dump_config(cfg))
    evals = [r for r in records if r["kind"] == "eval"]
    summary = {"kind": "summary", "best_eval_loss": min(r["eval_loss"] for r in evals) if evals else None,
               "first_eval_loss": evals[0]["eval_loss"] if evals else None, "bits_per_weight": bits,
               **peak_memory_mb(device), "estimate": estimate_for_run(model, cfg)}
    records = [r for r in records if r["kind"] != "summary"] + [summary]
    write_metrics(out / "metrics.jsonl", records)
    plot_loss(out / "loss.png", records)
    (out / CHECKPOINT).unlink(missing_ok=True)  # finished: a rerun must not "resume" it
    console.print(f"[bold green]Done[/bold green]: adapter in {out / 'adapter'}; eval loss "
                  f"{summary['first_eval_loss']} -> {summary['best_eval_loss']}; peak RSS "
                  f"{summary['peak_rss_mb']:.0f} MB; see {out / 'samples.md'} and {out / 'loss.png'}")
