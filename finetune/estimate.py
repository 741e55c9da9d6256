"""Memory arithmetic for full fine-tuning, LoRA and QLoRA (what `finetune estimate` prints).

Bytes per base parameter:
- full fine-tuning, Adam, mixed precision: 2 (16-bit weights) + 2 (16-bit gradients)
  + 4 (fp32 master weights) + 8 (Adam's two fp32 moments) = 16 bytes/param: 10B -> 160 GB
  (activations kept small with gradient checkpointing, as any 10B full fine-tune must);
- LoRA on a 16-bit base: 2 bytes/param for the frozen weights; gradients and Adam state only for
  the adapter; activations for backward are kept (no gradient checkpointing): 10B -> about 40 GB;
- QLoRA: NF4 weights with double quantization, 4.127 bits = 0.52 bytes/param; gradient
  checkpointing keeps only each layer's input; paged optimizer: 10B -> about 12 GB.
Activations follow Korthikanti et al. (2022): per layer s*b*h*(34 + 5*a*s/h) bytes in 16-bit, for
the usual recipes; the QLoRA row is this project's (`finetune run`): the output head runs a chunk
of reply positions at a time, so no b*s*vocab logits.
The model's shape comes from its config.json, or is guessed from the parameter count.

`estimate_for_run` is the estimate written into metrics.jsonl beside the measured peak: weights and
adapter/optimizer from the loaded model, activations of the largest micro-batch the run can form
(`recipe_activations`, counted from what autograd keeps in this recipe), and the process's own
memory (Python, torch, the tokenizer and data) as measured around loading the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import UserError

NF4_DQ_BITS = 4 + 8 / 64 + 32 / (64 * 256)  # 4-bit codes + 8-bit scales per 64 + fp32 per 256 scales


@dataclass(frozen=True)
class Shape:
    params: float
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    kv_heads: int = 0  # 0: as many as query heads (no grouped-query attention)
    head_dim: int = 0  # 0: hidden // heads

    @property
    def q_dim(self) -> int:
        return self.heads * (self.head_dim or self.hidden // self.heads)

    @property
    def kv_dim(self) -> int:
        return (self.kv_heads or self.heads) * (self.head_dim or self.hidden // self.heads)


@dataclass(frozen=True)
class Row:
    method: str
    weights: float
    gradients: float
    optimizer: float
    adapter: float
    activations: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.adapter + self.activations


def parse_params(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMbBtT]?)\s*", text)
    if not m:
        raise UserError(f"--params '{text}' is not a parameter count; write it like 7B, 135M or 1.5e9")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2).lower()]
    value = float(m.group(1)) * scale
    if value < 1e5:
        raise UserError(f"--params '{text}' is too small for a language model; write it like 7B or 135M")
    return value


def guess_shape(params: float) -> Shape:
    """A Llama-like shape for a parameter count (params ~ 12 * layers * hidden^2)."""
    # hidden/layers ratio of ~128 fits Llama-family models from 1B to 70B.
    h = (params * 128 / 12) ** (1 / 3)
    hidden = max(256, int(round(h / 128) * 128))
    layers = max(2, int(round(params / (12 * hidden * hidden))))
    heads = max(1, hidden // 128)
    return Shape(params, hidden, layers, heads, int(hidden * 8 / 3 // 128 * 128), 32000)


def shape_from_model(path: str) -> Shape:
    cfg_path = Path(path).expanduser() / "config.json"
    if not cfg_path.exists():
        raise UserError(f"--model '{path}' has no config.json; pass a Hugging Face model directory")
    c = json.loads(cfg_path.read_text())
    h, n, v = c["hidden_size"], c["num_hidden_layers"], c.get("vocab_size", 32000)
    inter = c.get("intermediate_size", 4 * h)
    kv = c.get("num_key_value_heads", c.get("num_attention_heads", 1))
    heads = c.get("num_attention_heads", 1)
    head_dim = c.get("head_dim", h // heads)
    per_layer = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * inter
    params = n * per_layer + v * h * (1 if c.get("tie_word_embeddings") else 2)
    return Shape(float(params), h, n, heads, inter, v, kv, head_dim)


def lora_params(shape: Shape, rank: int) -> float:
    """Adapter parameters on every linear layer of every block (q, k, v, o, gate, up, down)."""
    h, i = shape.hidden, shape.intermediate
    return shape.layers * rank * (4 * (h + h) + 3 * (h + i))


def logits_bytes(shape: Shape, batch: int, seq: int) -> float:
    return batch * seq * shape.vocab * (2 + 4 + 4)  # 16-bit logits, fp32 copy and its gradient


def head_chunk_bytes(shape: Shape) -> float:
    """float32 logits of one chunk of reply positions (finetune/loss.py): what the head keeps at once."""
    from .loss import LOGIT_CHUNK_BYTES

    return max(16 * 4 * shape.vocab, LOGIT_CHUNK_BYTES)


def activations(shape: Shape, batch: int, seq: int, checkpointing: bool) -> float:
    s, b, h, a = seq, batch, shape.hidden, shape.heads
    per_layer = s * b * h * (34 + 5 * a * s / h)
    if checkpointing:  # each layer's input kept, one layer recomputed at a time
        return shape.layers * 2 * s * b * h + per_layer + logits_bytes(shape, batch, seq)
    return shape.layers * per_layer + logits_bytes(shape, batch, seq)


def recipe_layer_bytes(shape: Shape, rank: int, dropout: bool, compute_bytes: int = 4, adapter_bytes: int = 4) -> float:
    """Bytes one decoder layer keeps for backward per position in `finetune run` (LoRA on every
    linear layer), counted from the tensors autograd saves, keys and values aside. In the compute
    dtype: both RMSNorms' inputs and outputs (4h), rotated queries and the attention output
    (2 q_dim), gate, up, silu(gate) and the down projection's input (4i). In the adapter's dtype:
    the seven LoRA A outputs (7r). In float32: attention's log-sum-exp (one per head). The adapted
    layers' inputs (5h + q_dim + i: q, k, v, gate and up each read a norm's output) are kept again,
    in the adapter's dtype, when LoRA changes them: dropped out (and the masks besides, 4h), or cast
    to the adapter's dtype when the compute dtype differs. tests/test_finetune_memory.py checks it
    against autograd's own count."""
    h, i, q = shape.hidden, shape.intermediate, shape.q_dim
    kept = (4 * h + 2 * q + 4 * i) * compute_bytes + 7 * rank * adapter_bytes + 4 * shape.heads
    if dropout or compute_bytes != adapter_bytes:
        kept += (5 * h + q + i) * adapter_bytes
    return kept + (4 * h * adapter_bytes if dropout else 0)


def attention_values(shape: Shape, positions: int, prefix: int, rows: int) -> float:
    """Keys, values (and the padding mask) one layer keeps for `rows` rows of `positions` in all,
    after a shared `prefix`. One row attends without a mask, grouped-query heads as they are; padded
    rows get a mask, and keys/values repeated to every query head, prefix included, per row."""
    if rows <= 1:
        return 2 * shape.kv_dim * (positions + prefix)
    width = positions / rows
    return 2 * shape.q_dim * rows * (width + prefix) + rows * width * (width + prefix)


def recipe_activations(shape: Shape, positions: int, prefix: int, rank: int, dropout: bool,
                       checkpointing: bool, compute_bytes: int = 4, rows: int = 1, adapter_bytes: int = 4) -> float:
    """Bytes one micro-batch keeps for backward in `finetune run`: `positions` through the decoder
    in `rows` rows (rows x padded width, less the shared prefix), the `prefix` run once (never
    checkpointed). With checkpointing a layer keeps only its input, and one layer's activations are
    rebuilt at a time. Besides: the final norm's input, the reply positions' hidden states and their
    gradient (at most `positions` of them), what the head keeps at once."""
    per_layer = recipe_layer_bytes(shape, rank, dropout, compute_bytes, adapter_bytes)
    one_layer = positions * per_layer + attention_values(shape, positions, prefix, rows) * compute_bytes
    body = shape.layers * positions * shape.hidden * compute_bytes + one_layer if checkpointing else shape.layers * one_layer
    prefix_run = shape.layers * prefix * (per_layer + 2 * shape.kv_dim * compute_bytes) if rows > 1 else 0
    head = 3 * positions * shape.hidden * compute_bytes
    return body + prefix_run + head + head_chunk_bytes(shape)


def table(shape: Shape, rank: int = 64, batch: int = 4, seq: int = 512) -> list[Row]:
    p = shape.params
    adapter = lora_params(shape, rank)
    adapter_bytes = adapter * (4 + 4 + 8)  # fp32 weights, gradients, Adam moments
    chunked_head = activations(shape, batch, seq, True) - logits_bytes(shape, batch, seq) + head_chunk_bytes(shape)
    return [
        Row("full", 2 * p, 2 * p, 12 * p, 0,
            activations(shape, batch, seq, True)),
        Row(f"LoRA r={rank}", 2 * p, 0, 0, adapter_bytes, activations(shape, batch, seq, False)),
        Row(f"QLoRA r={rank}", qlora_weights(shape), 0, 0, adapter_bytes, chunked_head),
    ]


def qlora_weights(shape: Shape) -> float:
    """NF4 linear layers, 16-bit embeddings and output head (never quantized), and one block's
    weights dequantized to 16-bit at a time for the matmuls."""
    embed = 2 * shape.vocab * shape.hidden
    block = (shape.params - embed) / shape.layers
    return (shape.params - embed) * NF4_DQ_BITS / 8 + embed * 2 + block * 2


def shape_of(model: Any) -> Shape:
    """The shape of a loaded (PEFT) model, from its config."""
    c = model.config if hasattr(model, "config") else model.get_base_model().config
    heads = getattr(c, "num_attention_heads", 1)
    return Shape(float(sum(p.numel() for p in model.parameters())), c.hidden_size, c.num_hidden_layers, heads,
                 getattr(c, "intermediate_size", 4 * c.hidden_size), c.vocab_size,
                 getattr(c, "num_key_value_heads", heads) or heads, getattr(c, "head_dim", 0) or c.hidden_size // heads)


def weights_bytes(model: Any) -> float:
    """Bytes of the frozen weights as loaded: 4-bit layers at their storage bits (NF4 + double
    quantization constants), the rest (embeddings, norms) at their own width."""
    from engine.models import quantized_bits_per_weight

    total, quantized = 0.0, 0
    for p in model.parameters():
        if p.requires_grad:
            continue
        state = getattr(p, "quant_state", None)
        if state is not None:
            quantized += state.shape.numel()
        else:
            total += p.numel() * p.element_size()
    bits = quantized_bits_per_weight(model) if quantized else 0
    return total + quantized * (bits or NF4_DQ_BITS) / 8


def run_activations(model: Any, cfg: Any, examples: list, checkpointing: bool) -> float:
    """Activation bytes of the largest micro-batch `finetune run` can form from `examples`: the
    longest example alone, or the token budget filled with examples of the median length (the
    shared prompt prefix once); without a budget, micro_batch_size examples of the longest length."""
    from .loss import common_prefix_len

    t = cfg.train
    lengths = sorted(len(e.input_ids) for e in examples) or [1]
    prefix = common_prefix_len(examples)
    adapter_bytes = next((p.element_size() for p in model.parameters() if p.requires_grad), 4)
    compute_bytes = model.get_input_embeddings().weight.element_size()
    shape = shape_of(model)

    def kept(rows: int, width: int) -> float:
        shared = prefix if rows > 1 else 0
        return recipe_activations(shape, rows * (width - shared), shared, cfg.lora.r, cfg.lora.dropout > 0,
                                  checkpointing, compute_bytes, rows, adapter_bytes)

    if not t.micro_batch_tokens:
        return kept(min(t.micro_batch_size, len(lengths)), lengths[-1])
    median = lengths[len(lengths) // 2]
    return max(kept(1, lengths[-1]), kept(max(1, t.micro_batch_tokens // median), median))


# glibc's heap on a CPU holds freed blocks of the forward pass (temporaries, shapes the next
# micro-batch cannot reuse) beside the kept activations: measured 0.74x the activations in bf16
# (50 long pairs, 1,931 MB peak) and 0.7x in float32 (0.85 GB for 1.2 GB). The trainer gives free
# pages back after every micro-batch, which stops the creep from step to step, not this.
CPU_HEAP_RETENTION = 0.75


def estimate_for_run(model: Any, cfg: Any, examples: list, checkpointing: bool, rss_before_mb: float,
                     rss_with_model_mb: float, base_dir: str) -> dict[str, float]:
    """The estimate for the run just made, recorded beside the measured peak in metrics.jsonl.

    training: the process (measured with the model loaded, less the weights) + weights + adapter
    and optimizer + activations of the largest micro-batch + on a CPU, the heap's freed blocks
    (`CPU_HEAP_RETENTION`); loading: the process before the model + the checkpoint's float
    weights, read while they are quantized, + the weights. The total is the larger of the two (on
    short pairs loading is the peak)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    moments = 2 if cfg.train.optimizer in ("auto", "adamw_8bit", "paged_adamw_8bit") else 8  # 8-bit or fp32 Adam
    weights = weights_bytes(model) / 2**20
    activations_mb = run_activations(model, cfg, examples, checkpointing) / 2**20
    on_cpu = next(model.parameters()).device.type == "cpu"
    terms = {"runtime_mb": max(0.0, rss_with_model_mb - weights), "weights_mb": weights,
             "adapter_and_optimizer_mb": trainable * (4 + 4 + moments) / 2**20,
             "activations_mb": activations_mb, "heap_mb": CPU_HEAP_RETENTION * activations_mb if on_cpu else 0.0}
    out = {k: round(v, 1) for k, v in terms.items()}
    out["training_mb"] = round(sum(terms.values()), 1)
    out["loading_mb"] = round(rss_before_mb + checkpoint_bytes(base_dir) / 2**20 + weights, 1)
    out["total_mb"] = max(out["training_mb"], out["loading_mb"])
    return out


def checkpoint_bytes(base_dir: str) -> float:
    """Size of a model directory's weight files (safetensors or PyTorch bins), 0 if not a directory."""
    path = Path(base_dir)
    if not path.is_dir():
        return 0.0
    files = list(path.glob("*.safetensors")) or list(path.glob("*.bin"))
    return float(sum(f.stat().st_size for f in files))


def gb(x: float) -> str:
    return f"{x / 1e9:,.1f}" if x >= 1e10 else f"{x / 1e9:,.2f}"
