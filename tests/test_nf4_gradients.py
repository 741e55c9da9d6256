"""LoRA gradients through the NF4 base equal those through the same weights dequantized to float32.

QLoRA's claim is that the frozen 4-bit base changes nothing but the weights' rounding. Here the
rounding is taken out of the comparison: a float32 copy of the tiny model gets, in every linear
layer, `dequantize_4bit` of the NF4 layer's weights, and both models get the same LoRA weights (B
non-zero, so A has gradients too). What is left to differ is the 4-bit kernels' arithmetic and
their backward pass. Shapes are training's: an optimizer step of `epoch_batches` micro-batches,
right-padded by `collate`, through `reply_loss_sum` with and without the shared prompt prefix
(prefix run once, its keys/values broadcast to every row), gradients accumulated as `_step` does.

Why this exists: on CPUs with AVX512-BF16, bitsandbytes switches a 4-bit layer to a bf16 inference
kernel (`gemv_4bit`, which has no backward) the first time it runs in eval mode without gradients,
which the eval loss before training does. Training then passed through it, torch warned "an
autograd kernel was not registered ... silently incorrect behavior", and the gradient into every
4-bit layer's input was dropped: first-layer LoRA gradients were mostly wrong. `build_model` keeps
that path off during training (finetune/build.py, `nf4_cpu_fast_path`); on CPUs without AVX512-BF16
the path does not exist and the after-eval case checks the same thing as the plain one.
"""

from __future__ import annotations

import warnings

import pytest

from base.prompt import PromptStyle

# (comment, reply) pairs of different lengths, so micro-batches are padded like real ones.
PAIRS = [
    ("great video!", "Thank you, glad it landed!"),
    ("What does PCA do?", "It rotates your data onto the directions of largest variance."),
    ("Is k-means deterministic?", "Not by default: it starts from random centroids, so fix the seed."),
    ("second!", "Silver medal, still counts!"),
]
SIGN_OFF = "Keep exploring! - Nadia"

# Tolerance. Both sides multiply the same float32 weights (dequantization is deterministic), so only
# float32 rounding of differently ordered sums may differ: ~1e-6 of a gradient's size (on this CPU
# they agree exactly: bitsandbytes dequantizes, then runs the same float32 matmul). A bf16 kernel on
# the path is ~4e-3 off (8-bit mantissa), a dropped input gradient O(1), a weight 0.1% off in one
# layer ~4e-4 (checked by perturbing one). 1e-4 of each tensor's largest gradient (plus 1e-4 of the
# element) lies between float32 noise and any of these by at least a factor of 4.
RTOL = 1e-4
ATOL_OF_MAX = 1e-4


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """(NF4 LoRA model as training builds it, float32 LoRA model on its dequantized weights)."""
    import bitsandbytes as bnb
    import torch
    from bitsandbytes.functional import dequantize_4bit
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from engine.models import Precision
    from finetune.build import build_model
    from finetune.config import load_config

    cpu = Precision("cpu", "float32", "test")
    args = ["lora.dropout=0", f"prompt.sign_off={SIGN_OFF}"]  # dropout off: no random masks to match
    flags = {"data.path": "unused.csv", "model.base_model": str(tiny_model_dir)}
    nf4 = build_model(load_config(None, args, flags), str(tiny_model_dir), cpu)  # via load_base_model(.., "nf4", cpu)
    dense = build_model(load_config(None, [*args, "model.quantization=none"], flags), str(tiny_model_dir), cpu)
    dense_modules = dict(dense.named_modules())
    quantized = [(n, m) for n, m in nf4.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 14  # 7 linear layers in each of 2 blocks
    with torch.no_grad():
        for name, layer in quantized:
            weight = dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(torch.float32)
            dense_modules[name].weight.copy_(weight)
        torch.manual_seed(0)
        for name, p in nf4.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    set_peft_model_state_dict(dense, {k: v.clone() for k, v in get_peft_model_state_dict(nf4).items()})
    nf4.train()
    dense.train()
    return nf4, dense


@pytest.fixture(scope="module")
def step(tokenizer):
    """The micro-batches of one optimizer step (batch 4 = 2 x 2), as the trainer cuts them."""
    from finetune.data import Pair, encode_pairs
    from finetune.loss import collate, epoch_batches, reply_tokens

    examples, _ = encode_pairs(tokenizer, PromptStyle(sign_off=SIGN_OFF), [Pair(c, r, "") for c, r in PAIRS], 512)
    [micro_batches] = epoch_batches(examples, 4, 2, seed=42, epoch=0)
    batches = [collate(examples, mb, tokenizer.pad_token_id, "cpu") for mb in micro_batches]
    return examples, batches, reply_tokens(examples, micro_batches), tokenizer.pad_token_id


def lora_grads(model, batches, n_reply, share_prefix):
    """Gradients of one optimizer step's loss (mean over its reply tokens), as `Recipe._step` does."""
    from finetune.loss import reply_loss_sum

    model.zero_grad(set_to_none=True)
    for batch in batches:
        loss_sum, _ = reply_loss_sum(model, batch, share_prefix)
        (loss_sum / n_reply).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all("lora_" in n for n in grads)
    return grads


def assert_same_grads(got, want):
    assert got.keys() == want.keys()
    for name, g in want.items():
        assert g.abs().max() > 0, f"{name}: no gradient, nothing compared"
        assert got[name].isfinite().all(), name
        worst = float((got[name] - g).abs().max() / g.abs().max())
        assert (got[name] - g).abs().le(ATOL_OF_MAX * g.abs().max() + RTOL * g.abs()).all(), \
            f"{name}: NF4 gradient differs from the dequantized one by {worst:.2e} of its largest value"


def test_shared_prefix_is_used(step):
    from finetune.loss import shared_prefix_len

    _, batches, _, _ = step
    assert all(shared_prefix_len(b) > 16 for b in batches)  # the prefix path really runs


@pytest.mark.parametrize("share_prefix", [True, False], ids=["shared-prefix", "full-forward"])
def test_lora_gradients_through_nf4_match_dequantized_float32(models, step, share_prefix):
    nf4, dense = models
    _, batches, n_reply, _ = step
    got = lora_grads(nf4, batches, n_reply, share_prefix)
    assert_same_grads(got, lora_grads(dense, batches, n_reply, share_prefix))


def test_gradients_stay_right_after_an_eval_pass(models, step):
    """The trainer measures eval loss (eval mode, no gradients) before training and after every
    epoch; the steps after it must still backpropagate through the 4-bit layers."""
    from finetune.loss import evaluate

    nf4, dense = models
    examples, batches, n_reply, pad_id = step
    losses = [evaluate(m, examples, 2, pad_id, "cpu") for m in (nf4, dense)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)  # the forward agrees too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = lora_grads(nf4, batches, n_reply, True)
    assert_same_grads(got, lora_grads(dense, batches, n_reply, True))
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
