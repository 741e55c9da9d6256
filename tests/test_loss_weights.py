"""The per-token weights of the training loss (train.opener_tokens / opener_weight): exact."""

from __future__ import annotations

import torch

from finetune.loss import head_cross_entropy


def test_weighted_head_loss_and_gradient_match_plain_autograd():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 50, (40,))
    weights = torch.where(torch.arange(40) % 10 < 3, 0.25, 1.0)  # the first 3 tokens of each 10 count less
    loss = head_cross_entropy(head, hidden, targets, weights)
    loss.backward()
    fast = hidden.grad.clone()
    hidden.grad = None
    plain = (torch.nn.functional.cross_entropy(head(hidden), targets, reduction="none") * weights).sum()
    plain.backward()
    assert torch.allclose(loss, plain, atol=1e-4) and torch.allclose(fast, hidden.grad, atol=1e-6)
    unweighted = head_cross_entropy(head, hidden.detach(), targets)
    assert unweighted > loss  # down-weighted tokens count less
