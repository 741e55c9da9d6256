"""Batches and the reply-only loss: pure tensor code, shared by training and evaluation.

- examples of one optimizer step are sorted by length before being cut into micro-batches, so
  padding is small, and micro-batches are padded to their own longest example;
- the loss is taken on reply tokens only, and the output head (a 49k-word vocabulary, a large share
  of a small model's FLOPs) runs only on those positions: hidden states are sliced before lm_head;
- the prefix all rows of a micro-batch share (the persona's system prompt) runs once.
"""

from __future__ import annotations

import random
from typing import Any

from .data import Example


def epoch_batches(examples: list[Example], batch_size: int, micro: int, seed: int, epoch: int) -> list[list[list[int]]]:
    """Optimizer steps of one epoch, each a list of micro-batches (example indices), seeded."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    steps = []
    for start in range(0, len(order), batch_size):
        group = sorted(order[start:start + batch_size], key=lambda i: len(examples[i].input_ids))
        steps.append([group[j:j + micro] for j in range(0, len(group), micro)])
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
