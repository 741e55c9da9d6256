"""Memory arithmetic for full fine-tuning, LoRA and QLoRA (what `finetune estimate` prints).

Bytes per base parameter:
- full fine-tuning, Adam, mixed precision: 2 (16-bit weights) + 2 (16-bit gradients)
  + 4 (fp32 master weights) + 8 (Adam's two fp32 moments) = 16 bytes/param: 10B -> 160 GB
  (activations kept small with gradient checkpointing, as any 10B full fine-tune must);
- LoRA on a 16-bit base: 2 bytes/param for the frozen weights; gradients and Adam state only for
  the adapter; activations for backward are kept (no gradient checkpointing): 10B -> about 40 GB;
- QLoRA: NF4 weights with double quantization, 4.127 bits = 0.52 bytes/param; gradient
  checkpointing keeps only each layer's input; paged optimizer: 10B -> about 12 GB.
Activations follow Korthikanti et al. (2022): per layer s*b*h*(34 + 5*a*s/h) bytes in 16-bit.
The model's shape comes from its config.json, or is guessed from the parameter count.
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
    return Shape(float(params), h, n, heads, inter, v)


def lora_params(shape: Shape, rank: int) -> float:
    """Adapter parameters on every linear layer of every block (q, k, v, o, gate, up, down)."""
    h, i = shape.hidden, shape.intermediate
    return shape.layers * rank * (4 * (h + h) + 3 * (h + i))


def activations(shape: Shape, batch: int, seq: int, checkpointing: bool) -> float:
    s, b, h, a = seq, batch, shape.hidden, shape.heads
    per_layer = s * b * h * (34 + 5 * a * s / h)
    logits = b * s * shape.vocab * (2 + 4 + 4)  # 16-bit logits, fp32 copy and its gradient
    if checkpointing:  # each layer's input kept, one layer recomputed at a time
        return shape.layers * 2 * s * b * h + per_layer + logits
    return shape.layers * per_layer + logits


def table(shape: Shape, rank: int = 64, batch: int = 4, seq: int = 512) -> list[Row]:
    p = shape.params
    adapter = lora_params(shape, rank)
    adapter_bytes = adapter * (4 + 4 + 8)  # fp32 weights, gradients, Adam moments
    return [
        Row("full", 2 * p, 2 * p, 12 * p, 0,
            activations(shape, batch, seq, True)),
        Row(f"LoRA r={rank}", 2 * p, 0, 0, adapter_bytes, activations(shape, batch, seq, False)),
        Row(f"QLoRA r={rank}", qlora_weights(shape), 0, 0, adapter_bytes,
            activations(shape, batch, seq, True)),
    ]


def qlora_weights(shape: Shape) -> float:
    """NF4 linear layers, 16-bit embeddings and output head (never quantized), and one block's
    weights dequantized to 16-bit at a time for the matmuls."""
    embed = 2 * shape.vocab * shape.hidden
    block = (shape.params - embed) / shape.layers
    return (shape.params - embed) * NF4_DQ_BITS / 8 + embed * 2 + block * 2


def estimate_for_run(model: Any, cfg: Any) -> dict[str, float]:
    """The estimate for the model and settings just trained (no checkpointing: the lean loop keeps
    activations), recorded beside the measured peak in metrics.jsonl."""
    c = model.config if hasattr(model, "config") else model.get_base_model().config
    heads = getattr(c, "num_attention_heads", 1)
    shape = Shape(float(sum(p.numel() for p in model.parameters())), c.hidden_size, c.num_hidden_layers, heads,
                  getattr(c, "intermediate_size", 4 * c.hidden_size), c.vocab_size)
    weights_bits = NF4_DQ_BITS if cfg.model.quantization == "nf4" else 32
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    act = activations(shape, cfg.train.micro_batch_size, min(cfg.data.max_length, 256), False) * 2  # fp32
    return {"weights_mb": round(shape.params * weights_bits / 8 / 2**20, 1),
            "adapter_and_optimizer_mb": round(trainable * (4 + 4 + 2) / 2**20, 1),
            "activations_mb": round(act / 2**20, 1)}


def gb(x: float) -> str:
    return f"{x / 1e9:,.1f}" if x >= 1e10 else f"{x / 1e9:,.2f}"
