"""The lean QLoRA training loop behind `finetune run`, as a recipe of named steps.

`train()` reads as the algorithm: set up, resume, train epoch by epoch (evaluating and keeping the
best adapter after each), finish. Why a custom loop instead of the HF Trainer, for this job on a CPU:
- the loss is taken on reply tokens only, and the output head (a 49k-word vocabulary, a large share
  of a small model's FLOPs) runs only on those positions: hidden states are sliced before lm_head
  (finetune/loss.py);
- activation checkpointing only where it pays (train.activation_checkpointing: auto is on for CUDA,
  off on a CPU unless activations would crowd memory: there recomputing costs a third of a step);
- examples of one optimizer step are sorted by length and cut into micro-batches by a token budget
  (train.micro_batch_tokens), so long pairs run alone, short ones together, and padding is small;
- the loss of an optimizer step is the mean over all reply tokens of its examples (not a mean of
  micro-batch means), so short replies weigh what they should;
- one resumable checkpoint file (adapter + optimizer + scheduler + RNG + position), written
  atomically every few steps, is picked up automatically when the same output is used again.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from base.errors import UserError
from base.fileio import replace_dir_atomic, write_text_atomic, write_with_atomic

from .build import (
    build_model,
    choose_checkpointing,
    choose_optimizer,
    current_rss_mb,
    lr_lambda,
    nf4_cpu_fast_path,
    peak_memory_mb,
    physical_cores,
    release_free_heap,
)
from .config import RunConfig, dump_config, resolve_schedule
from .data import encode_pairs, load_pairs, split_pairs
from .loss import collate, epoch_batches, evaluate, positions, reply_loss_sum, reply_tokens
from .outputs import plot_loss, samples_markdown, write_metrics

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
    from engine.models import resolve_base_model

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


def train(prep: Prepared, console: Any, fresh: bool = False, stop_after_steps: int | None = None) -> Path:
    """Train, evaluate each epoch, keep the best adapter, write every output; returns the output dir."""
    recipe = Recipe(prep, console)
    recipe.setup(fresh)
    recipe.resume()
    if recipe.train(stop_after_steps):
        recipe.finish()
    return prep.output


def quiet_libraries() -> None:
    """Our progress bar and log lines are the run's output; silence the libraries' own."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*[Pp]aged.*")


def _get(cfg_dict: dict, dotted: str) -> Any:
    node: Any = cfg_dict
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class Recipe:
    """One `finetune run`. Public methods are the steps, called in order by `train()`; the position
    (step, epoch, step in epoch), the best eval loss and the records are what a checkpoint holds."""

    def __init__(self, prep: Prepared, console: Any) -> None:
        self.prep, self.cfg, self.out = prep, prep.cfg, prep.output
        self.console, self.say = console, console.print
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.best, self.since_best = float("inf"), 0
        self._samples: list[Any] | None = None  # the held-out pairs whose replies are generated
        self.records: list[dict[str, Any]] = []
        self.checkpoint: dict[str, Any] | None = None  # the state being resumed
        self.epoch_start, self.epoch_tokens = time.time(), 0

    # --- setup ------------------------------------------------------------------------------------

    def setup(self, fresh: bool = False) -> None:
        """Device, tokenizer and encoded data; a checkpoint to resume is read and checked before the
        model loads (a mismatch fails fast); then model, optimizer and learning-rate schedule."""
        quiet_libraries()
        for w in self.prep.warnings:
            self.say(f"[yellow]Warning:[/yellow] {w}")
        self._setup_device()
        self._setup_data()
        if fresh and self.out.exists():
            shutil.rmtree(self.out / "checkpoints", ignore_errors=True)
        if self.prep.resume:
            self.checkpoint = self._read_checkpoint()
        self._setup_model()
        self._setup_optimizer()

    def _setup_device(self) -> None:
        import torch

        from engine.models import choose_precision

        self.precision = choose_precision(self.cfg.model.device, self.cfg.model.compute_dtype, training=True)
        self.device = self.precision.device
        threads = self.cfg.model.threads or physical_cores()
        if self.device == "cpu":
            torch.set_num_threads(threads)
        self.say(f"Device: {self.device}, compute {self.precision.compute_dtype} ({self.precision.reason})"
                 + (f", {threads} threads" if self.device == "cpu" else ""))

    def _setup_data(self) -> None:
        from engine.models import load_tokenizer

        self.tokenizer = tok = load_tokenizer(self.prep.base_dir)
        style, max_length = self.cfg.prompt.style, self.cfg.data.max_length
        train_passages, eval_passages = self._setup_context()
        self.train_ex, w1 = encode_pairs(tok, style, self.prep.train_pairs, max_length, train_passages)
        self.eval_ex, w2 = encode_pairs(tok, style, self.prep.eval_pairs, max_length, eval_passages)
        for w in w1 + w2:
            self.say(f"[yellow]Warning:[/yellow] {w}")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _setup_context(self) -> tuple[list | None, list | None]:
        """With a knowledge base (context-aware training): the passages of each training prompt
        (retrieved, distractors or none) and of each eval prompt (what serving would retrieve)."""
        self.kb, self.retrieval = None, None
        ctx = self.cfg.context
        if not ctx.enabled:
            return None, None
        from knowledge.store import open_knowledge_base

        from .context import ContextRecipe, describe, serving_passages, training_passages

        kb = open_knowledge_base(ctx.retrieval())  # the preset and the command line only: no environment
        if kb.count() == 0:
            raise UserError(f"knowledge base '{kb.location}' is empty; run `ingest ARTICLES --store DIR` first")
        threshold = kb.threshold(ctx.min_similarity)
        recipe = ContextRecipe(ctx.top_k, ctx.min_similarity, ctx.distractor_share, ctx.none_share, self.cfg.train.seed)
        train_passages, kinds = training_passages(kb, [p.comment for p in self.prep.train_pairs], recipe, threshold)
        eval_passages = serving_passages(kb, [p.comment for p in self.prep.eval_pairs], ctx.top_k, threshold)
        self.say(f"Context: {kb.location}, top {ctx.top_k} above similarity {threshold:.2f}; training prompts: "
                 f"{describe(kinds)}")
        self.kb = kb
        self.retrieval = {**kb.config.record(threshold), "embedder": kb.embedder_name,
                          "distractor_share": ctx.distractor_share, "none_share": ctx.none_share}
        return train_passages, eval_passages

    def _read_checkpoint(self) -> dict[str, Any]:
        import torch

        state = torch.load(self.out / CHECKPOINT, map_location="cpu", weights_only=False)
        now = self.cfg.to_dict()
        diffs = [f"{k}: {_get(state['config'], k)!r} then, {_get(now, k)!r} now"
                 for k in _RESUME_KEYS if _get(state["config"], k) != _get(now, k)]
        if diffs:
            raise UserError(f"the checkpoint in '{self.out}' was made with another config ({'; '.join(diffs)}); "
                            "pass --fresh to start over or use another --output")
        return state

    def _setup_model(self) -> None:
        import torch

        from engine.models import quantized_bits_per_weight

        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        random.seed(cfg.train.seed)
        t0 = time.time()
        rss_before = current_rss_mb()  # the process without and with the model: the estimate's fixed terms
        self.model = build_model(cfg, self.prep.base_dir, self.precision)
        self.rss_mb = (rss_before, current_rss_mb())
        self.model.train()
        self.bits = None
        quant_note = "none: float weights, plain LoRA"
        if cfg.model.quantization == "nf4":
            self.bits = quantized_bits_per_weight(self.model)
            quant_note = f"NF4 + double quantization, {self.bits:.3f} bits per weight of the quantized linear layers"
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in self.trainable)
        n_all = sum(p.numel() for p in self.model.parameters())
        self.say(f"Model: {cfg.model.base_model} loaded in {time.time() - t0:.1f}s; quantization {quant_note}; "
                 f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha} on {cfg.lora.target_modules}: "
                 f"{n_train:,} trainable of {n_all:,} parameters")

    def _setup_optimizer(self) -> None:
        import torch

        t = self.cfg.train
        self.optimizer, name, why = choose_optimizer(t.optimizer, self.trainable, self.cfg, self.device)
        self.say(f"Optimizer: {name} ({why})")
        self.micro, self.micro_tokens = t.micro_batch_size, t.micro_batch_tokens
        self._setup_checkpointing()
        self.batch_size, self.epochs, why = resolve_schedule(t, len(self.train_ex))
        if why:
            self.say(f"Schedule: {why}")
        self.steps_per_epoch = math.ceil(len(self.train_ex) / self.batch_size)
        self.total_steps = self.steps_per_epoch * self.epochs
        if t.max_steps:
            self.total_steps = min(self.total_steps, t.max_steps)
        warmup = round(self.total_steps * t.warmup_ratio)
        schedule = lr_lambda(t.lr_scheduler, warmup, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        split = (f"in micro-batches of at most {self.micro_tokens} tokens" if self.micro_tokens
                 else f"= {self.micro} x {max(1, self.batch_size // self.micro)}")
        self.say(f"Data: {len(self.train_ex)} training / {len(self.eval_ex)} eval examples; {self.epochs} epoch(s) of "
                 f"{self.steps_per_epoch} step(s), batch {self.batch_size} {split}")

    def _setup_checkpointing(self) -> None:
        from .estimate import run_activations

        act = run_activations(self.model, self.cfg, self.train_ex, checkpointing=False)
        self.checkpointing, why = choose_checkpointing(self.cfg.train.activation_checkpointing, self.device, act)
        self.say(f"Activation checkpointing: {'on' if self.checkpointing else 'off'} ({why})")

    # --- resume -----------------------------------------------------------------------------------

    def resume(self) -> None:
        """Restore the checkpoint's adapter, optimizer, schedule, RNG and position; on a new run,
        measure the untouched model's eval loss instead (the curve's starting point)."""
        if self.checkpoint is None:
            base_eval = self._eval_loss()
            self.records.append({"kind": "eval", "epoch": 0, "step": 0, "eval_loss": round(base_eval, 5)})
            self.say(f"Eval loss before training: {base_eval:.4f}")
            return
        import torch
        from peft.utils import set_peft_model_state_dict

        state = self.checkpoint
        set_peft_model_state_dict(self.model, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        self.step, self.epoch, self.step_in_epoch = state["step"], state["epoch"], state["step_in_epoch"]
        self.best, self.since_best, self.records = state["best"], state["since_best"], state["records"]
        self.say(f"[bold]Resumed[/bold] from {self.out / CHECKPOINT}: epoch {self.epoch + 1}, "
                 f"step {self.step} of {self.total_steps}")

    def save_checkpoint(self) -> None:
        """Everything a resumed run needs, in one file written atomically; metrics.jsonl with it."""
        import torch

        payload = {"adapter": self._adapter_state(), "optimizer": self.optimizer.state_dict(),
                   "scheduler": self.scheduler.state_dict(),
                   "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
                   "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                   "best": self.best, "since_best": self.since_best, "records": self.records,
                   "config": self.cfg.to_dict()}
        write_with_atomic(self.out / CHECKPOINT, lambda tmp: torch.save(payload, tmp))
        write_metrics(self.out / "metrics.jsonl", self.records)

    # --- training ---------------------------------------------------------------------------------

    def train(self, stop_after_steps: int | None = None) -> bool:
        """Epochs until the last one, max_steps or an early stop, each followed by an evaluation.
        False when stopped after `stop_after_steps` (checkpoint saved, nothing else written)."""
        self.epoch_start, self.epoch_tokens = time.time(), 0
        with self._progress():
            while self.epoch < self.epochs and self.step < self.total_steps:
                if not self.train_epoch(stop_after_steps):
                    return False
                if self.evaluate_and_keep_best():
                    break
            if self.step >= self.total_steps and self.records[-1]["kind"] != "eval":
                self.evaluate_and_keep_best()  # resumed from a checkpoint at max_steps taken before its eval
        return True

    def _progress(self) -> Any:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} steps"),
                                 TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[tps]} tok/s"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
        self.task = self.progress.add_task("train", total=self.total_steps, completed=self.step,
                                           epoch=self.epoch + 1, loss="-", tps="-")
        return self.progress

    def train_epoch(self, stop_after_steps: int | None = None) -> bool:
        """Optimizer steps from where this epoch stands to its end (or to max_steps), checkpointing
        every `train.checkpoint_every` steps. False when stopped after `stop_after_steps`."""
        t = self.cfg.train
        batches = epoch_batches(self.train_ex, self.batch_size, self.micro, t.seed, self.epoch, self.micro_tokens)
        self.epoch_start, self.epoch_tokens = time.time(), 0
        for micro_batches in batches[self.step_in_epoch:]:
            if self.step >= self.total_steps:
                break
            self._step(micro_batches)
            if self.step % t.checkpoint_every == 0:
                self.save_checkpoint()
            if stop_after_steps is not None and self.step >= stop_after_steps:
                self.save_checkpoint()
                self.say(f"Stopped after step {self.step} (checkpoint saved); run again to resume")
                return False
        return True

    def _step(self, micro_batches: list[list[int]]) -> None:
        """One optimizer step; its loss is the mean over every reply token of its examples."""
        import torch

        t0 = time.time()
        n_reply = reply_tokens(self.train_ex, micro_batches)
        loss_total, n_tokens, computed = 0.0, 0, {"decoder": 0, "head": 0, "attention_pairs": 0}
        for mb in micro_batches:
            batch = collate(self.train_ex, mb, self.pad_id, self.device)
            loss_sum, _ = reply_loss_sum(self.model, batch, self.cfg.train.share_prefix, self.checkpointing,
                                         (self.cfg.train.opener_tokens, self.cfg.train.opener_weight))
            (loss_sum / max(1, n_reply)).backward()
            if self.device == "cpu":
                release_free_heap()
            loss_total += float(loss_sum.detach())
            n_tokens += int(batch["attention_mask"].sum())
            for key, value in positions(batch, self.cfg.train.share_prefix).items():
                if key in computed:
                    computed[key] += value
        if self.cfg.train.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.step_in_epoch += 1
        self.epoch_tokens += n_tokens
        dt = time.time() - t0
        loss = loss_total / max(1, n_reply)
        self.records.append({"kind": "step", "epoch": self.epoch + 1, "step": self.step, "loss": round(loss, 5),
                             "lr": self.scheduler.get_last_lr()[0], "tokens": n_tokens,
                             "micro_batches": len(micro_batches), "positions": computed,
                             "tokens_per_s": round(n_tokens / dt, 1), "seconds": round(dt, 3),
                             **peak_memory_mb(self.device)})
        self.progress.update(self.task, completed=self.step, loss=f"{loss:.3f}", tps=f"{n_tokens / dt:.0f}")

    def evaluate_and_keep_best(self) -> bool:
        """Eval loss at the end of an epoch (or where max_steps cut one short): an improvement saves
        the adapter as the best so far, a finished epoch is closed, a checkpoint is written.
        True when `train.patience` epochs have passed without improvement (early stop)."""
        from .evaluation import selection_badness

        seconds = max(time.time() - self.epoch_start, 1e-9)
        eval_loss = self._eval_loss()
        figures = self._epoch_figures()
        first = next((r["eval_loss"] for r in self.records if r["kind"] == "eval" and r["epoch"] == 0), None)
        badness = selection_badness(eval_loss, first, figures)
        improved = self._keep_if_best(badness)
        self.records.append({"kind": "eval", "epoch": self.epoch + 1, "step": self.step,
                             "eval_loss": round(eval_loss, 5), "epoch_seconds": round(seconds, 2),
                             "epoch_tokens_per_s": round(self.epoch_tokens / seconds, 1), "best": improved,
                             "figures": figures, "selection": round(badness, 4), **peak_memory_mb(self.device)})
        speed = f", {seconds:.1f}s, {self.epoch_tokens / seconds:.0f} tok/s" if self.epoch_tokens else ""
        said = "" if figures is None else "; replies: " + ", ".join(
            f"{name.removesuffix('_rate')} {figures[name]:.0%}" for name in ("stock_rate", "misfit_rate",
                                                                            "distinct_rate", "grounded_rate")
            if figures.get(name) is not None)
        self.progress.console.print(f"epoch {self.epoch + 1}: eval loss {eval_loss:.4f}{said}"
                                    f"{' (best)' if improved else ''}" + speed)
        finished_epoch = self.step_in_epoch >= self.steps_per_epoch
        if finished_epoch:
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            self.progress.update(self.task, epoch=min(self.epoch + 1, self.epochs))
        self.save_checkpoint()
        patience = self.cfg.train.patience
        if finished_epoch and patience and self.since_best >= patience:
            self.progress.console.print(f"Early stop: no eval improvement for {self.since_best} epoch(s)")
            return True
        return False

    def _keep_if_best(self, badness: float) -> bool:
        """Save the adapter as checkpoints/best.pt if `badness` (selection_badness) beats the best so far."""
        import torch

        if badness < self.best - 1e-4:
            self.best, self.since_best = badness, 0
            adapter = self._adapter_state()
            write_with_atomic(self.out / BEST, lambda tmp: torch.save(adapter, tmp))
            return True
        self.since_best += 1
        return False

    def _epoch_figures(self) -> dict[str, Any] | None:
        """The reply figures of the adapter as it stands, from its replies to the eval comments (as
        served: with passages when there is a store), or None when the run selects by loss."""
        from .evaluation import FIGURES, evaluate_replies

        if self.cfg.samples.select_by != "replies" or not self.prep.eval_pairs or not self.cfg.samples.count:
            return None
        pairs = self._sample_pairs()
        setup = self._eval_setup()
        setup = replace(setup, only=(setup.adapter_mode,))
        self.model.eval()
        try:
            result = evaluate_replies(setup, pairs)
        finally:
            self.model.train()
        return {name: result["modes"][setup.adapter_mode][name] for name in FIGURES}

    def _sample_pairs(self) -> list[Any]:
        """The `samples.count` held-out pairs whose replies are generated: questions and requests
        first (triage's drafting order, file order within an intent), since answering them is what
        the figures judge; a sample of thank-yous alone could not tell a stock reply from an answer."""
        from knowledge.triage_policy import draft_rank

        if self._samples is None:
            pairs = self.prep.eval_pairs
            intents = [t.intent for t in self._triage()([p.comment for p in pairs])] if pairs else []
            order = sorted(range(len(pairs)), key=lambda i: draft_rank(intents[i]))
            self._samples = [pairs[i] for i in order[:self.cfg.samples.count]]
        return self._samples

    def _eval_loss(self) -> float:
        return evaluate(self.model, self.eval_ex, self.micro, self.pad_id, self.device, self.cfg.train.share_prefix)

    def _adapter_state(self) -> dict[str, Any]:
        from peft.utils import get_peft_model_state_dict

        return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.model).items()}

    # --- finish -----------------------------------------------------------------------------------

    def finish(self) -> None:
        """The best adapter (by what it writes, `samples.select_by`) restored; samples.md, adapter/, config.yaml,
        metrics.jsonl with its summary and loss.png written; the checkpoint removed."""
        import torch
        from peft.utils import set_peft_model_state_dict

        out = self.out
        if (out / BEST).exists():
            set_peft_model_state_dict(self.model, torch.load(out / BEST, map_location="cpu"))
        self._write_samples()
        self._write_adapter()
        summary = self._write_report()
        (out / CHECKPOINT).unlink(missing_ok=True)  # finished: a rerun must not "resume" it
        self.say(f"[bold green]Done[/bold green]: adapter in {out / 'adapter'}; eval loss "
                 f"{summary['first_eval_loss']} -> {summary['best_eval_loss']}; peak RSS "
                 f"{summary['peak_rss_mb']:.0f} MB (estimate {summary['estimate']['total_mb']:.0f} MB); "
                 f"see {out / 'samples.md'} and {out / 'loss.png'}")

    def _write_samples(self) -> None:
        """eval.json and samples.md: the reply-quality evaluation (`finetune eval`) on the eval split,
        its table on top of samples.md and every reply below, generated as serving generates."""
        from .evaluation import evaluate_replies

        if not self.prep.eval_pairs or not self.cfg.samples.count:
            return
        pairs = self._sample_pairs()
        self.say(f"Evaluating replies to {len(pairs)} held-out comments (base, tuned"
                 f"{', tuned+passages' if self.kb else ''}) -> eval.json, samples.md ...")
        nf4_cpu_fast_path(self.model, True)  # training is over: generate with serving's kernels
        setup = self._eval_setup()
        self.model.eval()
        result = evaluate_replies(setup, pairs)
        self.model.train()
        write_text_atomic(self.out / "eval.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        epochs = [r for r in self.records if r["kind"] == "eval"]
        write_text_atomic(self.out / "samples.md", samples_markdown(result, epochs))

    def _eval_setup(self) -> Any:
        """The evaluation of replies as serving writes them: its decoding (within the samples'
        budget) and citation, the run's store, the triage classifier for the figures."""
        from base.settings import load_settings
        from engine.decoding import decoding_of

        from .evaluation import EvalSetup

        budget = self.cfg.samples.max_new_tokens
        serving_settings = load_settings()
        serving = decoding_of(serving_settings)
        decoding = replace(serving, max_new_tokens=budget, short_reply_tokens=min(budget, serving.short_reply_tokens))
        return EvalSetup(model=self.model, tokenizer=self.tokenizer, style=self.cfg.prompt.style, decoding=decoding,
                         device=self.device, model_name=self.cfg.model.base_model, retriever=self.kb,
                         top_k=self.cfg.context.top_k, max_length=self.cfg.data.max_length,
                         embed=self._embedder().embed, triage=self._triage(), citation=serving_settings.citation)

    def _triage(self) -> Any:
        """The triage classifier over the knowledge embedder: the reply figures read intents."""
        from knowledge.triage import TriageClassifier

        return TriageClassifier.load(self._embedder()).classify

    def _embedder(self) -> Any:
        """The knowledge embedder (the store's, with a store), for reply-to-reference similarity."""
        from base.settings import DEFAULT_EMBEDDER
        from knowledge.embedder import load_embedder

        return self.kb.embedder if self.kb is not None else load_embedder(DEFAULT_EMBEDDER)

    def _write_adapter(self) -> None:
        """adapter/ (PEFT files + responder.json) and config.yaml, the resolved config of this run."""
        from base.adapter_info import write_adapter_info

        cfg, out = self.cfg, self.out

        def build(tmp: Path) -> None:
            self.model.save_pretrained(tmp)
            extra = {"retrieval": self.retrieval} if self.retrieval else {}
            write_adapter_info(tmp, cfg.model.base_model, cfg.model.quantization, cfg.prompt.style, **extra)

        replace_dir_atomic(out / "adapter", build)
        write_text_atomic(out / "config.yaml", f"# Resolved config of this run; rerun with:\n"
                          f"#   finetune run --config {out / 'config.yaml'} --fresh\n" + dump_config(cfg))

    def _write_report(self) -> dict[str, Any]:
        """metrics.jsonl ending in a summary (eval losses, bits, peak memory, the estimate); loss.png."""
        from .estimate import estimate_for_run

        evals = [r for r in self.records if r["kind"] == "eval"]
        summary = {"kind": "summary", "best_eval_loss": min(r["eval_loss"] for r in evals) if evals else None,
                   "first_eval_loss": evals[0]["eval_loss"] if evals else None, "bits_per_weight": self.bits,
                   **peak_memory_mb(self.device), "activation_checkpointing": self.checkpointing,
                   "compute_dtype": self.precision.compute_dtype,
                   "estimate": estimate_for_run(self.model, self.cfg, self.train_ex, self.checkpointing, *self.rss_mb,
                                                self.prep.base_dir)}
        records = [r for r in self.records if r["kind"] != "summary"] + [summary]
        write_metrics(self.out / "metrics.jsonl", records)
        plot_loss(self.out / "loss.png", records)
        return summary

