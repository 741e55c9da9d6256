"""Batches and the reply-only loss: pure tensor code, shared by training and evaluation.

- the examples of one optimizer step are sorted by length and cut into micro-batches by a token
  budget (rows x padded width), so long pairs run alone and short ones together: activation memory
  follows the budget, not the longest example times a fixed count, and padding stays small;
- the loss is taken on reply tokens only, and the output head (a 49k-word vocabulary, a large share
  of a small model's FLOPs) runs only on those positions, a chunk of them at a time, its gradient
  taken during the forward: the full-vocabulary logits of a micro-batch never exist at once;
- the prefix all rows of a micro-batch share (the persona's system prompt) runs once;
- with activation checkpointing each decoder layer keeps only its input and recomputes the rest
  in the backward pass (the shared prefix's keys/values are read, never rewritten, so a recomputed
  layer sees what the first pass saw).
All of it is exact: the same loss and gradients as a full forward with masking afterwards
(tests/test_finetune_memory.py).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .data import Example

LOGIT_CHUNK_BYTES = 32 * 2**20  # float32 logits of one chunk of reply positions (~170 rows at 49k words)


def micro_batches(lengths: list[int], group: list[int], micro: int, micro_tokens: int) -> list[list[int]]:
    """`group` (example indices, sorted by length) cut into micro-batches: with `micro_tokens`, as
    many rows as fit rows x longest <= micro_tokens (an example longer than that alone); else
    `micro` rows each."""
    if not micro_tokens:
        return [group[j:j + micro] for j in range(0, len(group), micro)]
    out: list[list[int]] = []
    for i in group:
        if out and (len(out[-1]) + 1) * lengths[i] <= micro_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def epoch_batches(examples: list[Example], batch_size: int, micro: int, seed: int, epoch: int,
                  micro_tokens: int = 0) -> list[list[list[int]]]:
    """Optimizer steps of one epoch (`batch_size` examples each, seeded order), each a list of
    micro-batches (example indices). The budget only decides how a step's examples are split."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    lengths = [len(e.input_ids) for e in examples]
    steps = []
    for start in range(0, len(order), batch_size):
        group = sorted(order[start:start + batch_size], key=lambda i: lengths[i])
        steps.append(micro_batches(lengths, group, micro, micro_tokens))
    return steps


def reply_tokens(examples: list[Example], micro_batches: list[list[int]]) -> int:
    """Tokens that carry loss in one optimizer step (each predicted from the token before it)."""
    return sum(sum(1 for x in examples[i].labels[1:] if x != -100) for mb in micro_batches for i in mb)


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


def common_prefix_len(examples: list[Example]) -> int:
    """Tokens every example starts with, before any label: what `shared_prefix_len` finds in a
    micro-batch of them (0 when under its minimum)."""
    if len(examples) < 2:
        return 0
    first = examples[0].input_ids
    n = min(len(e.input_ids) for e in examples)
    for e in examples:
        n = min(n, next((k for k, x in enumerate(e.labels) if x != -100), n) - 1)
        n = next((k for k in range(n) if e.input_ids[k] != first[k]), n)
    return n if n >= 16 else 0


def positions(batch: dict[str, Any], share_prefix: bool = True) -> dict[str, int]:
    """What one micro-batch computes: positions through the decoder (padding included, the shared
    prefix once), positions through the output head (reply tokens), and query x key pairs of causal
    attention (for the FLOP floor of finetune_bench)."""
    rows, width = batch["input_ids"].shape
    n = shared_prefix_len(batch) if share_prefix else 0
    pairs = rows * sum(range(n + 1, width + 1)) + n * (n + 1) // 2
    return {"decoder": rows * (width - n) + n, "head": int((batch["labels"][:, n + 1:] != -100).sum()),
            "attention_pairs": pairs, "rows": rows, "width": width}


@contextmanager
def checkpointed_layers(decoder: Any, enabled: bool) -> Iterator[None]:
    """Inside: each decoder layer runs under torch.utils.checkpoint (non-reentrant, RNG preserved, so
    dropout masks repeat): only its input is kept for backward, the rest is recomputed then.
    transformers' own gradient checkpointing drops `past_key_values`, which cuts the shared prefix
    out of attention; this keeps it."""
    if not enabled:
        yield
        return
    from torch.utils.checkpoint import checkpoint

    layers = list(decoder.layers)
    for layer in layers:
        layer.forward = functools.partial(checkpoint, type(layer).forward.__get__(layer), use_reentrant=False)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def prefix_cache(decoder: Any, prefix_ids: Any, rows: int) -> Any:
    """Keys/values of the shared prefix (run once, gradients flow through it), broadcast to `rows`,
    in a cache that is read and never written (a recomputed layer must see the same keys)."""
    from transformers.cache_utils import Cache, DynamicLayer

    class FixedLayer(DynamicLayer):
        def __init__(self, keys: Any, values: Any) -> None:
            super().__init__()
            self.keys, self.values, self.is_initialized = keys, values, True
            self.dtype, self.device = keys.dtype, keys.device

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            import torch

            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    prefix = decoder(input_ids=prefix_ids, use_cache=True).past_key_values
    return Cache(layers=[FixedLayer(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v, *_ in prefix])


def reply_loss_sum(model: Any, batch: dict[str, Any], share_prefix: bool = True,
                   checkpoint: bool = False, opener: tuple[int, float] = (0, 1.0)) -> tuple[Any, int]:
    """(sum of cross-entropy over reply tokens, number of reply tokens).

    `opener` = (k, w): the first k tokens of each reply count w times (a recipe trial: the opener a
    creator writes to everyone, "Thanks for the question!", learned less than the answer after it).

    Savings, all exact (same loss as the full forward with masking afterwards):
    - the prefix all rows share (the persona's system prompt, often most of the prompt) runs once
      per micro-batch, and its keys/values are broadcast to every row; gradients flow through it;
    - the output head runs only on positions whose next token carries a label, in chunks;
    - `checkpoint`: decoder layers keep only their inputs (see `checkpointed_layers`).
    """
    lm = causal_lm_of(model)
    decoder = lm.get_decoder()
    ids, mask = batch["input_ids"], batch["attention_mask"]
    n = shared_prefix_len(batch) if share_prefix else 0
    cache = prefix_cache(decoder, ids[:1, :n], ids.shape[0]) if n else None
    with checkpointed_layers(decoder, checkpoint):
        hidden = decoder(input_ids=ids[:, n:], attention_mask=mask, past_key_values=cache,
                         use_cache=cache is not None).last_hidden_state  # (B, T-n, C)
    targets = batch["labels"][:, n + 1:]  # position t predicts token t+1
    keep = targets != -100
    picked = hidden[:, :-1][keep]  # (N, C)
    weights = None
    if opener[0] > 0 and opener[1] != 1.0:
        place = keep.long().cumsum(dim=1) - 1  # each target's place in its reply
        weights = (1.0 + (opener[1] - 1.0) * (place < opener[0]).float())[keep]
    return head_cross_entropy(lm.get_output_embeddings(), picked, targets[keep], weights), int(keep.sum())


def head_cross_entropy(head: Any, hidden: Any, targets: Any, weights: Any = None) -> Any:
    """Sum of cross-entropy of `head(hidden)` (N, V) against `targets` (N,), without the (N, V) logits.

    A frozen linear head (the usual case: LoRA never targets it) goes through `_HeadCrossEntropy`:
    chunks of rows, each chunk's gradient with respect to `hidden` taken in the forward. Any other
    head (trainable, wrapped) gets the plain computation."""
    import torch
    import torch.nn.functional as F

    plain = type(head) is not torch.nn.Linear or any(p.requires_grad for p in head.parameters())
    if plain:
        losses = F.cross_entropy(head(hidden).float(), targets, reduction="none")
        return (losses * weights).sum() if weights is not None else losses.sum()
    rows = max(16, LOGIT_CHUNK_BYTES // (4 * head.weight.shape[0]))
    return _head_ce_function().apply(hidden, head.weight, head.bias, targets, rows, weights)


@functools.cache
def _head_ce_function() -> Any:
    import torch
    import torch.nn.functional as F

    class _HeadCrossEntropy(torch.autograd.Function):
        """Cross-entropy through a frozen linear head, `rows` positions at a time. The gradient with
        respect to the hidden states, (softmax - onehot) @ W, is computed chunk by chunk in the
        forward and kept ((N, C), small); the backward only scales it. Same FLOPs as the plain
        forward + backward, one chunk's logits in memory instead of all of them (and their copies)."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bias: Any, targets: Any, rows: int,
                    weights: Any = None) -> Any:
            need = ctx.needs_input_grad[0]
            grad = torch.empty_like(hidden) if need else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            for s in range(0, hidden.shape[0], rows):
                logits = F.linear(hidden[s:s + rows], weight, bias).float()  # (n, V)
                t = targets[s:s + rows]
                w = weights[s:s + rows] if weights is not None else None
                lse = torch.logsumexp(logits, dim=-1)  # (n,)
                losses = lse - logits.gather(1, t[:, None]).squeeze(1)
                total += (losses * w).sum() if w is not None else losses.sum()
                if need:
                    probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                    probs[torch.arange(len(t), device=t.device), t] -= 1
                    if w is not None:
                        probs.mul_(w[:, None])
                    grad[s:s + rows] = probs.to(weight.dtype) @ weight  # (n, C)
            ctx.save_for_backward(grad)
            return total

        @staticmethod
        def backward(ctx: Any, grad_out: Any) -> tuple[Any, ...]:
            (grad,) = ctx.saved_tensors
            return grad * grad_out.to(grad.dtype), None, None, None, None, None

    return _HeadCrossEntropy


def evaluate(model: Any, examples: list[Example], micro: int, pad_id: int, device: str,
             share_prefix: bool = True) -> float:
    """Mean cross-entropy per reply token over `examples` (nan when there are none)."""
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
