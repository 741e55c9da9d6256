"""Linear layers packed for oneDNN (`engine.packed_linear`) on the real SmolLM2, float32, CPU.

What a user would notice: the packed model writes the replies the plain model writes; a reply does
not depend on which comments it is batched with; the weights are not held twice (but a tied output
head); gradients still reach a packed layer's input; 4-bit layers and a LoRA adapter's narrow
layers are left as they are.
"""

from __future__ import annotations

import pytest
import torch

from engine.generation import LocalGenerator
from engine.packed_linear import pack_linears
from base.prompt import CommentInput, encode_prompt
from tests.support import DECODE_QUESTIONS as QUESTIONS, DECODE_STYLE as STYLE, DECODE_THANKS as THANKS

COMMENTS = [*QUESTIONS, THANKS]


@pytest.fixture(scope="module")
def plain_model(base_model_dir):
    """The same model as the session's generator, loaded without packing."""
    from engine.models import choose_precision, load_base_model

    return load_base_model(str(base_model_dir), "none", choose_precision("cpu")).eval()


def test_the_served_model_is_packed_and_replies_as_the_plain_model(embedded_generator, plain_model):
    model = embedded_generator.model
    assert hasattr(model.lm_head, "_onednn_weight")  # LocalGenerator.load packed it
    assert sum(hasattr(m, "_onednn_weight") for m in model.modules()) == 1 + 7 * model.config.num_hidden_layers

    plain = LocalGenerator(plain_model, embedded_generator.tokenizer, "SmolLM2", max_new_tokens=24)
    packed = LocalGenerator(model, embedded_generator.tokenizer, "SmolLM2", max_new_tokens=24)
    assert packed.generate([CommentInput(c) for c in COMMENTS], STYLE) == \
        plain.generate([CommentInput(c) for c in COMMENTS], STYLE)

    ids = torch.tensor([encode_prompt(embedded_generator.tokenizer, STYLE, CommentInput(COMMENTS[0]))])
    with torch.inference_mode():
        got, want = model(input_ids=ids).logits, plain_model(input_ids=ids).logits
    assert (got - want).abs().max() < 1e-3 * want.std()  # the last bits only (summation order)


def test_a_row_scores_the_same_whatever_it_is_batched_with(embedded_generator):
    """Replies should not depend on the batch. A row computed with one other equals the row computed
    with 15 others (MKL's sgemm, the unpacked path, differs below 8 rows). A row alone does too,
    except where a layer's input is wider than its output (the MLP's down projection)."""
    model = embedded_generator.model
    mlp = model.model.layers[0].mlp
    for layer in (model.model.layers[0].self_attn.q_proj, mlp.up_proj, mlp.down_proj, model.lm_head):
        rows = torch.randn(16, 3, layer.in_features)
        with torch.inference_mode():
            together = layer(rows)
            for i in (0, 7, 14):
                assert torch.equal(layer(rows[i:i + 2]), together[i:i + 2]), layer
                assert torch.equal(layer(rows[i, 1:3]), together[i, 1:3]), layer
                if layer is not mlp.down_proj:
                    assert torch.equal(layer(rows[i, :1]), together[i, :1]), layer


def test_a_packed_layer_frees_its_dense_weight_and_still_passes_gradients_back():
    torch.manual_seed(0)
    plain = torch.nn.Linear(128, 96)
    packed = torch.nn.Linear(128, 96)
    packed.load_state_dict(plain.state_dict())
    assert pack_linears(packed) == 1
    assert packed.weight.numel() == 0  # no second copy of the weight in memory

    x = torch.randn(4, 128)
    x_plain, x_packed = x.clone().requires_grad_(), x.clone().requires_grad_()
    plain(x_plain).square().sum().backward()
    packed(x_packed).square().sum().backward()
    assert torch.allclose(x_packed.grad, x_plain.grad, atol=1e-4)
    with torch.inference_mode():
        assert torch.allclose(packed(x), plain(x), atol=1e-5)


def test_a_tied_output_head_keeps_the_embeddings(embedded_generator):
    model = embedded_generator.model
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert model.lm_head.weight.shape == (model.config.vocab_size, model.config.hidden_size)
    assert model.model.layers[0].mlp.up_proj.weight.numel() == 0


def test_four_bit_and_lora_layers_are_left_alone(base_model_dir, tmp_path):
    from tests.support import seeded_lora_adapter

    adapter = seeded_lora_adapter(base_model_dir, tmp_path / "adapter", rank=4, std=0.02, seed=1)
    gen = LocalGenerator.load(str(base_model_dir), adapter, "nf4", "cpu", max_new_tokens=4)
    packed = [name for name, m in gen.model.named_modules() if hasattr(m, "_onednn_weight")]
    assert packed == ["base_model.model.lm_head"]  # the only float32 layer wider than a LoRA rank
    assert gen.generate([CommentInput(COMMENTS[1])], STYLE)[0].strip()
