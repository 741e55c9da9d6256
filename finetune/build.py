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

    from engine.models import load_base_model

    model = load_base_model(base_dir, cfg.model.quantization, precision)
    model.config.use_cache = False
    for p in model.parameters():
        p.requires_grad_(False)
    own_memory(model)
    nf4_cpu_fast_path(model, False)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as exc:
        raise UserError(f"lora.target_modules={cfg.lora.target_modules!r}: {str(exc).splitlines()[0]}; "
                        "use all-linear or names such as [q_proj, v_proj]") from exc
    return model


def own_memory(model: Any) -> None:
    """Copy weights that still point into the checkpoint file's memory map into memory of their own.

    transformers loads safetensors zero-copy: the tensors it did not convert (embeddings, norms;
    on a CPU with float weights, all of them) stay views of the mapped file, which keeps the whole
    mapping alive, and every page quantization read stays resident: 405 MB of SmolLM2-135M's
    540 MB file, counted in RSS for the whole run for 113 MB of embeddings actually used.
    """
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if getattr(tensor, "quant_state", None) is None and tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()


def release_free_heap() -> None:
    """Give the heap's free pages back to the system (glibc malloc_trim), after every micro-batch.

    Freed blocks stay resident, and each micro-batch's pattern of sizes leaves different holes, so
    without this the peak crept up step by step (1.3 GB after the first step, 2.5 GB by the end of
    a 6-epoch run on 50 long pairs) while live memory did not; trimmed after every micro-batch, the
    same run's first epoch peaked at 1.9 GB. Costs nothing measurable. Not done: a fixed mmap
    threshold (every block of 256 KB or more mapped and unmapped) held the peak lower (1.5 GB) but
    cost two thirds more time per step in page faults.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _libc() -> Any:
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


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


def choose_checkpointing(setting: str, device: str, activation_bytes: float,
                         available_bytes: float | None = None) -> tuple[bool, str]:
    """(activation checkpointing on?, why). `activation_bytes`: what the largest micro-batch keeps
    without it (finetune/estimate.py).

    It trades a second forward pass of every layer, in the backward pass, for keeping only each
    layer's input. On CUDA memory is what limits (a 7B model's activations at real lengths are tens
    of GB, its compute cheap), so auto turns it on. On a CPU compute is what limits: measured on 2
    cores with SmolLM2-135M on long pairs, 4 steps took 36% longer with it (512-token micro-
    batches; 41% with 1,024) and peak RSS fell from 3.4 to 2.0 GB (4.4 to 2.4 GB), memory this
    recipe does not need; so auto turns it on only when activations would take a quarter of the
    memory available.
    """
    if setting in ("on", "off"):
        return setting == "on", "set by train.activation_checkpointing"
    act = activation_bytes / 2**30
    if device == "cuda":
        return True, (f"CUDA: memory is the limit; keeps each layer's input instead of ~{act:.1f} GB of "
                      "activations, for one more forward per layer in the backward pass")
    available = available_memory_bytes() if available_bytes is None else available_bytes
    share = activation_bytes / available if available else 0.0
    if share > 0.25:
        return True, (f"{device}: activations of the largest micro-batch (~{act:.1f} GB) would take "
                      f"{share:.0%} of the {available / 2**30:.1f} GB available")
    return False, (f"{device}: activations of the largest micro-batch ~{act:.1f} GB, {share:.0%} of the "
                   f"{available / 2**30:.1f} GB available; recomputing them would cost about a third more time")


def available_memory_bytes() -> float:
    """Memory the system can still give this process (MemAvailable on Linux), 0 when unknown."""
    try:
        with open("/proc/meminfo") as f:
            return next(float(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        try:
            return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 0.0


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB (0 where /proc is missing); the peak is `peak_memory_mb`."""
    try:
        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


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
