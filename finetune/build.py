"""What the recipe builds: threads, the LoRA model over its (4-bit) base, optimizer and schedule."""

from __future__ import annotations

import math
import os
import resource
import sys
from typing import Any, Callable

from base.errors import UserError

from .config import RunConfig


def physical_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def build_model(cfg: RunConfig, base_dir: str, precision: Any) -> Any:
    """The base model (NF4 or float), frozen, with trainable LoRA layers."""
    from peft import LoraConfig, get_peft_model

    from base.models import load_base_model

    model = load_base_model(base_dir, cfg.model.quantization, precision)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    nf4_cpu_fast_path(model, False)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(f"lora.target_modules={cfg.lora.target_modules!r}: {str(exc).splitlines()[0]}; "
                        "use all-linear or names such as [q_proj, v_proj]") from exc
    return model


def nf4_cpu_fast_path(model: Any, enabled: bool) -> None:
    """Turn bitsandbytes' AVX512-BF16 inference path for 4-bit layers on or off.

    On CPUs with AVX512-BF16, a 4-bit layer that runs once in eval mode without gradients (our eval
    loss) repacks its weights for a bf16 kernel, for good: every later forward, training's too, goes
    through `bitsandbytes::gemv_4bit`, an op with no backward. Autograd then drops the gradient into
    the layer's input (torch warns "an autograd kernel was not registered ... silently incorrect"),
    so the LoRA gradients of every earlier layer come out wrong. Training keeps the path off (eval
    then computes in float32, as training does); samples.md turns it back on to generate as serving
    does. tests/test_nf4_gradients.py checks the gradients against the dequantized weights.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]  # bnb Linear4bit
    if not layers:
        return
    from bitsandbytes.functional import has_avx512bf16

    for layer in layers:
        layer.support_avx512bf16_for_cpu = enabled and has_avx512bf16()


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


def lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else max(0.0, 1 - progress)

    return f


def peak_memory_mb(device: str) -> dict[str, float]:
    """Peak resident memory of this process (and peak GPU memory on CUDA), in MB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024, 1)}
    if device == "cuda":
        import torch

        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out
