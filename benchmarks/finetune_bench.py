"""`finetune run` against the tutorial QLoRA recipe: same model, same data, one epoch, side by side.

(a) tutorial: HF Trainer + PEFT, bitsandbytes NF4 + double quantization with the default float32
    compute dtype, gradient checkpointing (prepare_model_for_kbit_training), pad-to-longest
    collator with pad = EOS, loss on every token, paged_adamw_8bit, batch 4 x accumulation 4.
(b) `finetune run` (the default preset's recipe, one epoch).
Both eval losses are measured by the same function, on the reply tokens of the same held-out pairs.
Each side runs in its own process so peak RSS is its own.

    nice .venv/bin/python benchmarks/finetune_bench.py [--pairs 50] [--epochs 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LORA = dict(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", bias="none", task_type="CAUSAL_LM")


def load_data(pairs: int):
    from finetune.config import load_config
    from finetune.data import load_pairs

    cfg = load_config("demo", [], {})
    train = load_pairs(str(ROOT / "samples/pairs/train.csv")).pairs[:pairs]
    held = load_pairs(str(ROOT / "samples/pairs/heldout.csv")).pairs
    return cfg, train, held


def tutorial(pairs: int, epochs: int) -> dict:
    """The recipe as the tutorials write it; returns its figures."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from base.models import Precision, load_base_model, load_tokenizer, quantized_bits_per_weight, resolve_base_model
    from base.prompt import CommentInput, clean_comment, render_training_example
    from finetune.data import encode_pairs
    from finetune.trainer import evaluate

    hf_logging.set_verbosity_error()
    cfg, train, held = load_data(pairs)
    style = cfg.prompt.style
    base = resolve_base_model(cfg.model.base_model)
    tok = load_tokenizer(base)
    tok.pad_token = tok.eos_token  # the tutorials' pad = EOS: the collator then masks every EOS
    texts = [render_training_example(tok, style, CommentInput(clean_comment(p.comment)), p.reply) for p in train]
    enc = tok(texts, truncation=True, max_length=512, add_special_tokens=False)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    tokens = sum(map(len, enc["input_ids"]))

    model = load_base_model(base, "nf4", Precision("cpu", "float32", "bitsandbytes default compute dtype"))
    bits = quantized_bits_per_weight(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(**LORA))
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=4, gradient_accumulation_steps=4,
                                 num_train_epochs=epochs, learning_rate=2e-4, warmup_steps=0.03, weight_decay=0.01,
                                 lr_scheduler_type="cosine", max_grad_norm=0.3, optim="paged_adamw_8bit",
                                 gradient_checkpointing=True, logging_steps=1, save_strategy="no", report_to=[],
                                 use_cpu=True, seed=42, disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=ds,
                          data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
        t0 = time.time()
        trainer.train()
        seconds = (time.time() - t0) / epochs
    model.config.use_cache = False
    eval_ex, _ = encode_pairs(tok, style, held, 512)
    eval_loss = evaluate(model, eval_ex, 4, tok.pad_token_id, "cpu")
    return {"seconds_per_epoch": seconds, "tokens_per_s": tokens / seconds, "eval_loss": eval_loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bits_per_weight": bits,
            "tokens_per_epoch": tokens, "threads": torch.get_num_threads()}


def ours(pairs: int, epochs: int) -> dict:
    _, train, _ = load_data(pairs)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"comment": p.comment, "reply": p.reply}) + "\n" for p in train))
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-c", "from finetune.cli import main; main()", "run", "--config", "default",
               "--data", str(data), "--eval-data", str(ROOT / "samples/pairs/heldout.csv"), "--output", str(out),
               "--epochs", str(epochs), "samples.count=0", "train.patience=0"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"finetune run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval" and r["epoch"] > 0]
    steps = [r for r in records if r["kind"] == "step"]
    summary = records[-1]
    seconds = sum(r["epoch_seconds"] for r in evals) / len(evals)
    tokens = sum(r["tokens"] for r in steps) / len(evals)
    return {"seconds_per_epoch": seconds, "tokens_per_s": tokens / seconds, "eval_loss": evals[-1]["eval_loss"],
            "peak_rss_mb": summary["peak_rss_mb"], "bits_per_weight": summary["bits_per_weight"],
            "tokens_per_epoch": tokens}


def matmul_rate() -> float:
    """fp32 matmul FLOP/s on this machine, now (the same threads as training)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.time()
    while time.time() - t0 < 3:
        a @ b
        n += 1
    return n * 2 * 1024**3 / (time.time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--only", choices=["tutorial", "ours"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only == "tutorial":
        print(json.dumps(tutorial(args.pairs, args.epochs)))
        return
    print(f"Benchmark: SmolLM2-135M-Instruct, {args.pairs} pairs, {args.epochs} epoch(s), held-out: "
          "samples/pairs/heldout.csv (reply-token eval loss)", flush=True)
    print("(a) tutorial recipe (HF Trainer, NF4+DQ fp32 compute, grad checkpointing, pad=EOS, loss on all "
          "tokens, paged_adamw_8bit, 4x4) ...", flush=True)
    proc = subprocess.run([sys.executable, __file__, "--only", "tutorial", "--pairs", str(args.pairs),
                           "--epochs", str(args.epochs)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tutorial run failed:\n{proc.stderr[-3000:]}")
    a = json.loads(proc.stdout.strip().splitlines()[-1])
    print("(b) finetune run --config default ...", flush=True)
    b = ours(args.pairs, args.epochs)
    import torch

    torch.set_num_threads(a["threads"])
    rate = matmul_rate()
    params = 134_515_008  # SmolLM2-135M parameters (embeddings tied)
    rows = [("seconds per epoch", "seconds_per_epoch", "{:.1f}"), ("tokens/s", "tokens_per_s", "{:.0f}"),
            ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"), ("eval loss (reply tokens)", "eval_loss", "{:.4f}"),
            ("bits per weight (4-bit layers)", "bits_per_weight", "{:.3f}")]
    print(f"\n{'':32}{'(a) tutorial':>14}{'(b) finetune':>14}{'ratio a/b':>11}")
    for label, key, fmt in rows:
        ratio = a[key] / b[key] if b[key] else float("nan")
        print(f"{label:32}{fmt.format(a[key]):>14}{fmt.format(b[key]):>14}{ratio:>11.2f}")
    print(f"\nspeed-up per epoch: {a['seconds_per_epoch'] / b['seconds_per_epoch']:.2f}x (goal >= 2x); "
          f"peak RSS b/a: {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} (goal <= 1); "
          f"eval loss b - a: {b['eval_loss'] - a['eval_loss']:+.4f} (goal <= 0)")
    for name, r in (("(a)", a), ("(b)", b)):
        floor = 4 * params * r["tokens_per_epoch"] / rate
        print(f"floor {name}: 4 x {params / 1e6:.0f}M params x {r['tokens_per_epoch']:.0f} tokens / "
              f"{rate / 1e9:.1f} GFLOP/s fp32 matmul = {floor:.1f} s; share of floor reached: "
              f"{floor / r['seconds_per_epoch']:.0%}")


if __name__ == "__main__":
    main()
