"""LoRA layers fused for inference (`engine.fused_lora`), on the real SmolLM2 with a 4-bit base.

What a user would notice: replies and scores are those of PEFT's own forward; training still goes
through PEFT (the adapter's weights get gradients); a disabled adapter is really off.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from engine.generation import LocalGenerator
from base.prompt import CommentInput, encode_prompt
from tests.support import DECODE_QUESTIONS as QUESTIONS, DECODE_STYLE as STYLE, DECODE_THANKS as THANKS

COMMENTS = [QUESTIONS[0], THANKS]


@pytest.fixture(scope="module")
def nf4_lora(base_model_dir, tmp_path_factory) -> LocalGenerator:
    from tests.support import seeded_lora_adapter

    adapter = seeded_lora_adapter(base_model_dir, tmp_path_factory.mktemp("run") / "adapter", rank=4, std=0.02, seed=1)
    return LocalGenerator.load(str(base_model_dir), adapter, "nf4", "cpu", max_new_tokens=16)


@contextlib.contextmanager
def peft_forward(model):
    """Inside, each fused layer computes with PEFT's own forward again."""
    layers = [m for m in model.modules() if hasattr(m, "_peft_forward")]
    fused = [m.forward for m in layers]
    for m in layers:
        m.forward = m._peft_forward
    try:
        yield
    finally:
        for m, forward in zip(layers, fused):
            m.forward = forward


def test_fused_layers_score_and_reply_as_peft(nf4_lora):
    model = nf4_lora.model
    from peft.tuners.lora import LoraLayer

    lora_layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(lora_layers) == 2 * model.config.num_hidden_layers  # q and v
    assert all(hasattr(m, "_fused_adapter") for m in lora_layers)
    ids = torch.tensor([encode_prompt(nf4_lora.tokenizer, STYLE, CommentInput(COMMENTS[0]))])
    with torch.inference_mode():
        fused = model(input_ids=ids).logits
        with peft_forward(model):
            peft = model(input_ids=ids).logits
            replies = nf4_lora.generate([CommentInput(c) for c in COMMENTS], STYLE)
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert (fused - peft).abs().max() < 1e-4 * peft.std()
    assert (base - peft).abs().max() > 100 * (fused - peft).abs().max()  # the adapter matters here
    assert nf4_lora.generate([CommentInput(c) for c in COMMENTS], STYLE) == replies


def test_training_goes_through_peft(nf4_lora):
    model = nf4_lora.model
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, layer.in_features)
    layer.lora_B["default"].weight.requires_grad_(True)
    try:
        layer(x).square().sum().backward()
        assert layer.lora_B["default"].weight.grad is not None
    finally:
        layer.lora_B["default"].weight.grad = None
        layer.lora_B["default"].weight.requires_grad_(False)
