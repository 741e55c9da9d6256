"""`finetune run` against the tutorial QLoRA recipe: same model, same data, one epoch, side by side.

(a) tutorial: HF Trainer + PEFT, bitsandbytes NF4 + double quantization with the default float32
    compute dtype (--tutorial-compute bfloat16: the bf16 compute dtype GPU tutorials set),
    gradient checkpointing (prepare_model_for_kbit_training), pad-to-longest collator with
    pad = EOS, loss on every token, paged_adamw_8bit, batch 4 x accumulation 4.
(b) `finetune run` (the default preset's recipe, one epoch; its compute dtype is its own choice:
    bf16 on a CPU with bf16 instructions, else float32; each side's is printed).
(c) with --store DIR: (b) again with passages from that knowledge base in the training prompts
    (context-aware training: prompts several times longer); no tutorial counterpart.
Both sides render the same prompts (the default preset's persona), cut examples at the same
data.max_length, and are evaluated by the same function on the reply tokens of the same held-out
pairs. Each side runs in its own process so peak RSS is its own (model loading included).

Floor: the FLOPs each side needs for what it computes, over the positions it computes: forward
plus backward of the frozen weights (input gradients only: 2 + 2 FLOPs per weight and position),
LoRA's (2 + 2 + 2: its weight gradients too), the output head over the positions it runs on (the
tutorial: every position, padding included; ours: reply positions), and causal attention's score
and value products (4 x q_dim per query-key pair and layer forward, twice that backward), divided
by the matmul rate measured here, now, in that side's compute dtype (bf16 matmuls run about twice
fp32's rate on a CPU with bf16 instructions). Recomputation (gradient checkpointing) is not needed
work, so it counts against a side; share of floor is floor / measured seconds, at most 100%.

    nice .venv/bin/python benchmarks/finetune_bench.py [--data FILE] [--heldout FILE] [--pairs 50]
        [--epochs 1] [--store DIR] [--threads N] [--tutorial-compute float32|bfloat16] [--json]
Real-length stand-in: --data samples/pairs/long_pairs.csv --heldout samples/pairs/long_heldout.csv
(benchmarks/long_pairs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LORA = {"r": 8, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear", "bias": "none",
        "task_type": "CAUSAL_LM"}
DEFAULT_DATA = str(ROOT / "samples/pairs/train.csv")
DEFAULT_HELDOUT = str(ROOT / "samples/pairs/heldout.csv")


def load_data(data: str, heldout: str, pairs: int):
    """(config of the default preset, first `pairs` training pairs, held-out pairs)."""
    from finetune.config import load_config
    from finetune.data import load_pairs

    cfg = load_config("default", [], {"data.path": data})
    return cfg, load_pairs(data).pairs[:pairs], load_pairs(heldout).pairs


def counting_collator(tok):
    """The tutorials' collator, recording what each batch makes the model compute."""
    from transformers import DataCollatorForLanguageModeling

    class Counting(DataCollatorForLanguageModeling):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.computed = {"decoder": 0, "head": 0, "attention_pairs": 0}

        def __call__(self, features, *args, **kwargs):
            batch = super().__call__(features, *args, **kwargs)
            rows, width = batch["input_ids"].shape
            for key, value in (("decoder", rows * width), ("head", rows * width),
                               ("attention_pairs", rows * width * (width + 1) // 2)):
                self.computed[key] += value
            return batch

    return Counting(tok, mlm=False)


def tutorial(args) -> dict:
    """The recipe as the tutorials write it; returns its figures."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from engine.models import Precision, load_base_model, load_tokenizer, quantized_bits_per_weight, resolve_base_model
    from base.prompt import CommentInput, clean_comment, render_training_example
    from finetune.data import encode_pairs
    from finetune.loss import evaluate

    hf_logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, train, held = load_data(args.data, args.heldout, args.pairs)
    style, max_length = cfg.prompt.style, cfg.data.max_length
    base = resolve_base_model(cfg.model.base_model)
    tok = load_tokenizer(base)
    tok.pad_token = tok.eos_token  # the tutorials' pad = EOS: the collator then masks every EOS
    texts = [render_training_example(tok, style, CommentInput(clean_comment(p.comment)), p.reply) for p in train]
    enc = tok(texts, truncation=True, max_length=max_length, add_special_tokens=False)
    ds = Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    tokens = sum(map(len, enc["input_ids"]))

    model = load_base_model(base, "nf4", Precision("cpu", args.tutorial_compute, "the tutorial's"))
    bits = quantized_bits_per_weight(model)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model = get_peft_model(model, LoraConfig(**LORA))
    collator = counting_collator(tok)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=tmp, per_device_train_batch_size=4, gradient_accumulation_steps=4,
                                  num_train_epochs=args.epochs, learning_rate=2e-4, warmup_steps=0.03,
                                  weight_decay=0.01, lr_scheduler_type="cosine", max_grad_norm=0.3,
                                  optim="paged_adamw_8bit", gradient_checkpointing=True, logging_steps=1,
                                  save_strategy="no", report_to=[], use_cpu=True, seed=42, disable_tqdm=True)
        trainer = Trainer(model=model, args=targs, train_dataset=ds, data_collator=collator)
        t0 = time.time()
        trainer.train()
        seconds = (time.time() - t0) / args.epochs
    model.config.use_cache = False
    eval_ex, _ = encode_pairs(tok, style, held, max_length)
    eval_loss = evaluate(model, eval_ex, 4, tok.pad_token_id, "cpu")
    return {"seconds_per_epoch": seconds, "tokens_per_s": tokens / seconds, "eval_loss": eval_loss,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "bits_per_weight": bits,
            "tokens_per_epoch": tokens, "threads": torch.get_num_threads(), "compute": args.tutorial_compute,
            "computed_per_epoch": {k: v / args.epochs for k, v in collator.computed.items()}}


def ours(args, store: str | None = None) -> dict:
    """`finetune run --config default` on the same pairs (with `store`: context-aware)."""
    _, train, _ = load_data(args.data, args.heldout, args.pairs)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        data.write_text("".join(json.dumps({"comment": p.comment, "reply": p.reply}) + "\n" for p in train))
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-c", "from finetune.cli import main; main()", "run", "--config", "default",
               "--data", str(data), "--eval-data", args.heldout, "--output", str(out),
               "--epochs", str(args.epochs), "samples.count=0", "train.patience=0", f"model.threads={args.threads}",
               *(["--store", store] if store else [])]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"finetune run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval" and r["epoch"] > 0]
    steps = [r for r in records if r["kind"] == "step"]
    summary = records[-1]
    seconds = sum(r["epoch_seconds"] for r in evals) / len(evals)
    tokens = sum(r["tokens"] for r in steps) / len(evals)
    computed = {k: sum(r["positions"][k] for r in steps) / len(evals) for k in steps[0]["positions"]}
    log = proc.stdout
    return {"seconds_per_epoch": seconds, "tokens_per_s": tokens / seconds, "eval_loss": evals[-1]["eval_loss"],
            "peak_rss_mb": summary["peak_rss_mb"], "bits_per_weight": summary["bits_per_weight"],
            "tokens_per_epoch": tokens, "computed_per_epoch": computed, "estimate": summary["estimate"],
            "activation_checkpointing": summary.get("activation_checkpointing"),
            "compute": summary["compute_dtype"],
            "checkpointing_line": next((x for x in log.splitlines() if x.startswith("Activation checkpointing")), "")}


def matmul_rate(threads: int, dtype: str = "float32") -> float:
    """Matmul FLOP/s on this machine, now, in `dtype`, with the threads both sides train with (0:
    torch's default, one per core)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    a, b = (torch.randn(1024, 1024).to(getattr(torch, dtype)) for _ in range(2))
    for _ in range(3):
        a @ b
    n, t0 = 0, time.time()
    while time.time() - t0 < 3:
        a @ b
        n += 1
    return n * 2 * 1024**3 / (time.time() - t0)


def matmul_rates(threads: int) -> dict[str, float]:
    return {dtype: matmul_rate(threads, dtype) for dtype in ("float32", "bfloat16")}


def floor_flops(shape, rank: int, computed: dict) -> float:
    """FLOPs one epoch needs for the positions a side computes (see the module docstring)."""
    h, i, q, kv, layers = shape.hidden, shape.intermediate, shape.q_dim, shape.kv_dim, shape.layers
    frozen = layers * (h * q + 2 * h * kv + q * h + 3 * h * i)  # q, k, v, o, gate, up, down
    lora = layers * rank * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))
    return (4 * frozen * computed["decoder"] + 6 * lora * computed["decoder"]
            + 4 * shape.vocab * h * computed["head"] + 12 * q * layers * computed["attention_pairs"])


def compare(a: dict, b: dict, c: dict | None, rates: dict[str, float], args) -> dict:
    """The JSON object: ratios as plain numbers, each side's figures, the floor."""
    from engine.models import resolve_base_model
    from finetune.estimate import shape_from_model

    cfg, _, _ = load_data(args.data, args.heldout, args.pairs)
    shape = shape_from_model(resolve_base_model(cfg.model.base_model))
    sides = {"tutorial": (a, LORA["r"]), "ours": (b, cfg.lora.r), **({"ours_store": (c, cfg.lora.r)} if c else {})}
    for side, rank in sides.values():
        side["floor_seconds"] = floor_flops(shape, rank, side["computed_per_epoch"]) / rates[side["compute"]]
        side["floor_share"] = side["floor_seconds"] / side["seconds_per_epoch"]
    return {"speedup": a["seconds_per_epoch"] / b["seconds_per_epoch"],
            "peak_rss_ratio": b["peak_rss_mb"] / a["peak_rss_mb"],
            "eval_loss_delta": b["eval_loss"] - a["eval_loss"],
            "floor_share": {name: side["floor_share"] for name, (side, _) in sides.items()},
            "matmul_gflops": rates["float32"] / 1e9, "matmul_gflops_bf16": rates["bfloat16"] / 1e9,
            "data": args.data, "heldout": args.heldout, "pairs": args.pairs,
            "epochs": args.epochs, "store": args.store, "threads": args.threads,
            "tutorial_compute": args.tutorial_compute,
            **{name: side for name, (side, _) in sides.items()}}


def print_report(r: dict, out) -> None:
    a, b, c = r["tutorial"], r["ours"], r.get("ours_store")
    rows = [("seconds per epoch", "seconds_per_epoch", "{:.1f}"), ("tokens/s", "tokens_per_s", "{:.0f}"),
            ("peak RSS (MB)", "peak_rss_mb", "{:.0f}"), ("eval loss (reply tokens)", "eval_loss", "{:.4f}"),
            ("bits per weight (4-bit layers)", "bits_per_weight", "{:.3f}"),
            ("floor (s)", "floor_seconds", "{:.1f}"), ("share of floor", "floor_share", "{:.0%}")]
    head = f"\n{'':32}{'(a) tutorial':>14}{'(b) finetune':>14}{'ratio a/b':>11}" + (f"{'(c) --store':>14}" if c else "")
    print(head, file=out)
    for label, key, fmt in rows:
        ratio = a[key] / b[key] if b[key] else float("nan")
        print(f"{label:32}{fmt.format(a[key]):>14}{fmt.format(b[key]):>14}{ratio:>11.2f}"
              + (f"{fmt.format(c[key]):>14}" if c else ""), file=out)
    print(f"\nspeed-up per epoch: {r['speedup']:.2f}x (goal >= 3x); peak RSS b/a: {r['peak_rss_ratio']:.2f} "
          f"(goal <= 0.8); eval loss b - a: {r['eval_loss_delta']:+.4f} (goal <= 0); matmul "
          f"{r['matmul_gflops']:.1f} GFLOP/s fp32, {r['matmul_gflops_bf16']:.1f} bf16 (each side's floor at its "
          "compute dtype's rate)", file=out)
    print(f"compute dtype: (a) {a['compute']}, (b) {b['compute']}" + (f", (c) {c['compute']}" if c else ""), file=out)
    for name, side in (("(b)", b), ("(c)", c)):
        if side:
            e = side["estimate"]
            print(f"{name} estimate {e['total_mb']:.0f} MB, {e['total_mb'] / side['peak_rss_mb']:.0%} of the measured "
                  f"peak: training {e['training_mb']:.0f} = runtime {e['runtime_mb']:.0f} + weights "
                  f"{e['weights_mb']:.0f} + adapter/optimizer {e['adapter_and_optimizer_mb']:.0f} + activations "
                  f"{e['activations_mb']:.0f} + freed heap {e['heap_mb']:.0f}; loading {e['loading_mb']:.0f}. "
                  f"{side['checkpointing_line']}", file=out)


def check_pairs(*files: str) -> None:
    """Before any work: a pairs file that cannot be read is one line on stderr, exit code 2."""
    from base.errors import UserError
    from finetune.data import load_pairs

    for path in files:
        try:
            load_pairs(path)
        except UserError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            sys.exit(exc.exit_code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=DEFAULT_DATA, help="training pairs (CSV or JSONL); default samples/pairs/train.csv")
    ap.add_argument("--heldout", default=DEFAULT_HELDOUT, help="held-out pairs for the eval loss")
    ap.add_argument("--pairs", type=int, default=50, help="first N training pairs")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--store", help="also run (c): finetune run --store DIR (context-aware training)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads for both sides and the floor's matmul rate (0: one per core); 1 on a busy machine")
    ap.add_argument("--tutorial-compute", choices=["float32", "bfloat16"], default="float32",
                    help="the tutorial side's compute dtype (bitsandbytes' default: float32)")
    ap.add_argument("--json", action="store_true", help="standard output: one JSON object")
    ap.add_argument("--only", choices=["tutorial"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.data, args.heldout = str(Path(args.data).resolve()), str(Path(args.heldout).resolve())
    check_pairs(args.data, args.heldout)
    if args.only == "tutorial":
        print(json.dumps(tutorial(args)))
        return
    out = sys.stderr if args.json else sys.stdout
    load_before = os.getloadavg()
    rates_before = matmul_rates(args.threads)
    say = lambda text: print(text, file=out, flush=True)
    say(f"Benchmark: SmolLM2-135M-Instruct, first {args.pairs} pairs of {args.data}, {args.epochs} epoch(s), "
        f"held-out {args.heldout}; load average {load_before[0]:.2f}")
    say("(a) tutorial recipe (HF Trainer, NF4+DQ fp32 compute, grad checkpointing, pad=EOS, loss on all tokens, "
        "paged_adamw_8bit, 4x4) ...")
    proc = subprocess.run([sys.executable, __file__, "--only", "tutorial", "--data", args.data, "--heldout",
                           args.heldout, "--pairs", str(args.pairs), "--epochs", str(args.epochs),
                           "--threads", str(args.threads), "--tutorial-compute", args.tutorial_compute],
                          check=False, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"tutorial run failed:\n{proc.stderr[-3000:]}")
    a = json.loads(proc.stdout.strip().splitlines()[-1])
    say("(b) finetune run --config default ...")
    b = ours(args)
    c = None
    if args.store:
        say(f"(c) finetune run --config default --store {args.store} ...")
        c = ours(args, args.store)
    # The floor takes the better of two rates (before and after the runs): a busy machine must not
    # lower the floor and flatter the shares.
    rates_after = matmul_rates(args.threads)
    result = compare(a, b, c, {k: max(rates_before[k], rates_after[k]) for k in rates_after}, args)
    result["load_average"] = {"before": list(load_before), "after": list(os.getloadavg())}
    print_report(result, out)
    say(f"load average before {load_before[0]:.2f}, after {result['load_average']['after'][0]:.2f} (1 min)")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
