"""Fine-tune memory: token-budget micro-batches, the chunked output head, activation checkpointing
and the estimate of what a step keeps.

The memory path must not change what is learned: an optimizer step cut into token-budget
micro-batches, through the shared-prefix forward, the chunked head and checkpointed layers, gives
the loss and LoRA gradients of one plain forward (full-vocabulary logits, transformers' own loss)
over the whole step. The same comparison is fed broken variants it must catch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

from base.prompt import PromptStyle
from finetune.cli import cli
from finetune.data import Example, Pair

SIGN_OFF = "Keep exploring! - Nadia"
# Lengths that make the budget matter: thanks (short), technical answers (long), one very long.
PAIRS = [
    ("great video!", "Thank you, glad it landed!"),
    ("What does PCA do?", "It rotates your data onto the directions of largest variance. " * 3),
    ("second!", "Silver medal, still counts!"),
    ("Is k-means deterministic?", "Not by default: it starts from random centroids, so fix the seed. " * 6),
    ("thanks!!", "You're welcome!"),
    ("Why log-transform prices?", "Prices are skewed; the log makes effects multiplicative. " * 2),
]
BUDGET = 160  # tokens: the step above splits into single long examples and pairs of short ones
RTOL, ATOL_OF_MAX = 1e-4, 1e-5  # float32 sums in another order: ~1e-6 here; every break below: > 1e-2


def fake_examples(lengths: list[int]) -> list[Example]:
    return [Example(list(range(n)), [-100] * (n - 1) + [1], f"line {i}", "", "") for i, n in enumerate(lengths)]


# --- batching (pure) ------------------------------------------------------------------------------


def test_token_budget_splits_only_how_a_step_is_cut():
    from finetune.loss import epoch_batches

    lengths = [40, 900, 60, 300, 45, 250, 35, 700, 50, 500, 55, 65]
    examples = fake_examples(lengths)
    by_count = epoch_batches(examples, 4, 4, seed=7, epoch=2)
    by_tokens = epoch_batches(examples, 4, 4, seed=7, epoch=2, micro_tokens=512)
    # The effective batch (examples per optimizer step, and which ones) is the preset's.
    assert [sorted(i for mb in s for i in mb) for s in by_tokens] == [sorted(i for mb in s for i in mb) for s in by_count]
    for step in by_tokens:
        for mb in step:
            width = max(lengths[i] for i in mb)
            assert len(mb) * width <= 512 or len(mb) == 1, (mb, width)  # over budget only alone
    singles = [mb[0] for s in by_tokens for mb in s if len(mb) == 1]
    assert {1, 7} <= set(singles)  # 900 and 700 tokens run alone
    assert any(len(mb) >= 2 for s in by_tokens for mb in s)  # short ones share a forward pass


def test_common_prefix_and_positions(tokenizer):
    from finetune.data import encode_pairs
    from finetune.loss import collate, common_prefix_len, positions, shared_prefix_len

    exs, _ = encode_pairs(tokenizer, PromptStyle(sign_off=SIGN_OFF), [Pair(c, r, "") for c, r in PAIRS], 512)
    batch = collate(exs, [0, 2, 4], tokenizer.pad_token_id, "cpu")
    n = shared_prefix_len(batch)
    assert n == common_prefix_len(exs) > 16
    pos = positions(batch)
    width = batch["input_ids"].shape[1]
    assert pos["decoder"] == 3 * (width - n) + n  # the prefix once
    assert pos["head"] == sum(sum(1 for t in exs[i].labels[1:] if t != -100) for i in (0, 2, 4))


# --- exactness ------------------------------------------------------------------------------------


def tiny_lora(tiny_model_dir, dropout: float):
    """The tiny Llama with LoRA on every linear layer, B non-zero (so A has gradients too)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.train()
    return model


@pytest.fixture(scope="module")
def lora_model(tiny_model_dir):
    """Dropout off, so a whole step and its micro-batches see the same function."""
    return tiny_lora(tiny_model_dir, 0.0)


@pytest.fixture(scope="module")
def step_examples(tokenizer):
    from finetune.data import encode_pairs

    exs, _ = encode_pairs(tokenizer, PromptStyle(sign_off=SIGN_OFF), [Pair(c, r, "") for c, r in PAIRS], 512)
    return exs


def plain_step(model, examples, pad_id):
    """The reference: the whole step in one padded forward, full logits, transformers' loss."""
    from finetune.loss import causal_lm_of, collate

    model.zero_grad(set_to_none=True)
    batch = collate(examples, list(range(len(examples))), pad_id, "cpu")
    n = int((batch["labels"][:, 1:] != -100).sum())
    loss = causal_lm_of(model)(**batch).loss  # mean over every reply token of the step
    loss.backward()
    return float(loss.detach()), grads_of(model), n


def memory_step(model, examples, pad_id, checkpoint, normalize=None):
    """`Recipe._step`'s arithmetic: token-budget micro-batches, loss sums over the step's tokens."""
    from finetune.loss import collate, epoch_batches, reply_loss_sum, reply_tokens

    [micro_batches] = epoch_batches(examples, len(examples), 2, seed=1, epoch=0, micro_tokens=BUDGET)
    n_reply = reply_tokens(examples, micro_batches)
    model.zero_grad(set_to_none=True)
    total = 0.0
    for mb in micro_batches:
        loss_sum, n = reply_loss_sum(model, collate(examples, mb, pad_id, "cpu"), True, checkpoint)
        (loss_sum / (normalize(n) if normalize else n_reply)).backward()
        total += float(loss_sum.detach())
    return total / n_reply, grads_of(model), micro_batches


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def worst_difference(got, want) -> float:
    """Largest gradient difference, as a share of the tolerance (> 1: the two differ)."""
    worst = 0.0
    for name, g in want.items():
        assert g.abs().max() > 0, f"{name}: no gradient, nothing compared"
        limit = ATOL_OF_MAX * g.abs().max() + RTOL * g.abs()
        worst = max(worst, float(((got[name] - g).abs() / limit).max()))
    return worst


@pytest.fixture
def small_chunks(monkeypatch):
    """Head chunks of 16 positions, so the step's reply tokens span several chunks."""
    from finetune import loss

    monkeypatch.setattr(loss, "LOGIT_CHUNK_BYTES", 1)


@pytest.mark.parametrize("checkpoint", [False, True], ids=["kept", "checkpointed"])
def test_memory_path_gives_the_plain_loss_and_gradients(lora_model, step_examples, tokenizer, small_chunks,
                                                       checkpoint):
    loss, grads, n = plain_step(lora_model, step_examples, tokenizer.pad_token_id)
    got_loss, got_grads, micro_batches = memory_step(lora_model, step_examples, tokenizer.pad_token_id, checkpoint)
    assert len(micro_batches) >= 3 and any(len(mb) == 1 for mb in micro_batches)  # the budget really cut
    assert any(len(mb) >= 2 for mb in micro_batches)  # and a shared prefix really ran
    assert n > 3 * 16  # the head really ran in several chunks
    assert got_loss == pytest.approx(loss, rel=1e-5)
    assert worst_difference(got_grads, grads) <= 1


def test_checkpointing_keeps_dropout_masks(tiny_model_dir, step_examples, tokenizer):
    """With LoRA dropout on, recomputed layers draw the masks of the first pass (RNG preserved)."""
    import torch

    model = tiny_lora(tiny_model_dir, 0.3)
    results = []
    for checkpoint in (False, True):
        torch.manual_seed(3)
        results.append(memory_step(model, step_examples, tokenizer.pad_token_id, checkpoint))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    assert worst_difference(results[1][1], results[0][1]) <= 1


def broken_transformers_checkpointing(monkeypatch):
    """transformers' own gradient checkpointing around the main forward pass: its layers drop
    past_key_values, so the shared prefix leaves attention (an error with padding, else a wrong loss)."""
    from finetune import loss

    @contextmanager
    def transformers_checkpointing(decoder, enabled):
        decoder.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        try:
            yield
        finally:
            decoder.activation_checkpointing_disable()

    monkeypatch.setattr(loss, "checkpointed_layers", transformers_checkpointing)


def broken_head_backward(monkeypatch):
    """A chunked head whose backward forgets the incoming gradient (the 1 / reply tokens)."""
    from finetune import loss

    real = loss._head_ce_function()

    class Forgetful(real):
        @staticmethod
        def backward(ctx, grad_out):
            return (ctx.saved_tensors[0], None, None, None, None, None)

    monkeypatch.setattr(loss, "_head_ce_function", lambda: Forgetful)


def broken_targets(monkeypatch):
    """Each position scored against its own token instead of the next one (an off-by-one)."""
    import torch

    from finetune import loss

    real = loss.head_cross_entropy
    monkeypatch.setattr(loss, "head_cross_entropy", lambda head, hidden, targets, weights=None: real(head, hidden, torch.roll(targets, 1), weights))


BREAKS = {"transformers checkpointing": broken_transformers_checkpointing, "head backward": broken_head_backward,
          "off-by-one targets": broken_targets, "mean of micro-batch means": None}


@pytest.mark.parametrize("break_it", list(BREAKS))
def test_the_comparison_catches_broken_memory_paths(lora_model, step_examples, tokenizer, small_chunks,
                                                    monkeypatch, break_it):
    loss, grads, _ = plain_step(lora_model, step_examples, tokenizer.pad_token_id)
    normalize = None
    if BREAKS[break_it]:
        BREAKS[break_it](monkeypatch)
    else:
        normalize = lambda n: n * 3  # each micro-batch's own mean, not the step's
    try:
        got_loss, got_grads, _ = memory_step(lora_model, step_examples, tokenizer.pad_token_id, True, normalize)
    except RuntimeError:
        return  # broken loudly: caught as well
    assert worst_difference(got_grads, grads) > 100 or got_loss != pytest.approx(loss, rel=1e-3)


# --- what a step keeps, and the estimate of it ----------------------------------------------------


def saved_bytes(model, batch, checkpoint):
    """Bytes autograd keeps for backward after the forward pass (weights not counted)."""
    import torch

    from finetune.loss import reply_loss_sum

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen.setdefault(storage.data_ptr(), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = reply_loss_sum(model, batch, True, checkpoint)
    loss.backward()
    return sum(seen.values())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("dropout", [0.0, 0.05], ids=["no-dropout", "dropout"])
def test_activation_estimate_matches_what_autograd_keeps(tiny_model_dir, step_examples, tokenizer, dropout, dtype):
    from engine.models import Precision
    from finetune.build import build_model
    from finetune.config import load_config
    from finetune.estimate import head_chunk_bytes, recipe_activations, shape_of
    from finetune.loss import collate, positions, shared_prefix_len

    cfg = load_config(None, [f"lora.dropout={dropout}"], {"data.path": "x.csv", "model.base_model": str(tiny_model_dir)})
    model = build_model(cfg, str(tiny_model_dir), Precision("cpu", dtype, "test"))  # NF4, as training
    model.train()
    shape, compute = shape_of(model), 4 if dtype == "float32" else 2
    for idx in ([3], [0, 2, 4]):
        batch = collate(step_examples, idx, tokenizer.pad_token_id, "cpu")
        prefix = shared_prefix_len(batch)
        body = positions(batch)["decoder"] - prefix  # rows x (width - prefix)
        for checkpoint in (False, True):
            counted = saved_bytes(model, batch, checkpoint)
            estimate = recipe_activations(shape, body, prefix, cfg.lora.r, dropout > 0, checkpoint, compute,
                                          rows=len(idx))
            estimate -= head_chunk_bytes(shape)  # a transient, not kept
            if checkpoint:  # the layer rebuilt in backward is not kept after the forward pass
                assert counted <= estimate, (idx, counted, estimate)
                assert counted < 0.5 * saved_bytes(model, batch, False)
            else:
                assert counted == pytest.approx(estimate, rel=0.1), idx


def test_checkpointing_choice_per_device():
    from finetune.build import choose_checkpointing

    gb = 2**30
    assert choose_checkpointing("on", "cpu", 1.0)[0] and not choose_checkpointing("off", "cuda", 1.0)[0]
    on, why = choose_checkpointing("auto", "cuda", 20 * gb)
    assert on and why.startswith("CUDA")
    off, why = choose_checkpointing("auto", "cpu", 1.5 * gb, 20 * gb)
    assert not off and "~1.5 GB, 8% of the 20.0 GB available" in why and "a third more time" in why
    assert choose_checkpointing("auto", "cpu", 8 * gb, 20 * gb)[0]  # activations would crowd memory


def test_run_with_budget_and_checkpointing_records_memory(tiny_model_dir, tmp_path):
    from tests.support import SHORT_PAIRS as SHORT
    from tests.support import tiny_args, write_csv

    data = write_csv(tmp_path / "pairs.csv", [*SHORT, *PAIRS])
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, tiny_args(tiny_model_dir, data, out, "train.max_steps=2", "train.epochs=1",
                                               "samples.count=0", f"train.micro_batch_tokens={BUDGET}",
                                               "train.activation_checkpointing=on"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "Activation checkpointing: on (set by train.activation_checkpointing)" in result.output
    assert f"in micro-batches of at most {BUDGET} tokens" in result.output
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert all(r["micro_batches"] >= 1 and r["positions"]["decoder"] >= r["positions"]["head"] > 0 for r in steps)
    summary = records[-1]
    estimate = summary["estimate"]
    assert summary["activation_checkpointing"] is True
    for key in ("runtime_mb", "weights_mb", "adapter_and_optimizer_mb", "activations_mb", "training_mb",
                "loading_mb", "total_mb"):
        assert estimate[key] > 0, key
    assert estimate["total_mb"] == max(estimate["training_mb"], estimate["loading_mb"])
    assert "(estimate" in result.output


def test_presets_carry_the_memory_keys():
    from finetune.config import load_config

    for preset in ("default", "demo"):
        cfg = load_config(preset, [], {"data.path": "x.csv"})
        assert cfg.train.micro_batch_tokens > 0 and cfg.train.activation_checkpointing == "auto"


def test_bad_memory_keys_are_named():
    from base.errors import UserError
    from finetune.config import load_config

    with pytest.raises(UserError) as exc:
        load_config("default", ["train.activation_checkpointing=maybe", "train.micro_batch_tokens=-1"],
                    {"data.path": "x.csv"})
    assert "train.activation_checkpointing='maybe' is not allowed; use one of auto, on, off" in str(exc.value)
    assert "train.micro_batch_tokens=-1 must be 0 or more" in str(exc.value)


# --- the benchmark's interface and floor ----------------------------------------------------------


def test_bench_options_and_honest_floor():
    sys.path.insert(0, "benchmarks")
    import finetune_bench as bench

    from finetune.estimate import Shape

    out = subprocess.run([sys.executable, "benchmarks/finetune_bench.py", "--help"], check=False, capture_output=True, text=True)
    assert out.returncode == 0 and all(opt in out.stdout for opt in ("--data", "--heldout", "--json", "--store"))
    shape = Shape(1e8, 576, 30, 9, 1536, 49152, 3, 64)
    # The same 4 x 100-token batch: the tutorial computes every position through the head, ours
    # only 40 reply positions and the 30-token prefix once.
    tutorial = bench.floor_flops(shape, 8, {"decoder": 400, "head": 400, "attention_pairs": 4 * 5050})
    ours = bench.floor_flops(shape, 8, {"decoder": 4 * 70 + 30, "head": 40, "attention_pairs": 4 * (5050 - 465) + 465})
    assert ours < 0.8 * tutorial
    frozen = 30 * (576 * 576 * 2 + 2 * 576 * 192 + 3 * 576 * 1536)
    assert tutorial > 4 * frozen * 400 + 4 * 49152 * 576 * 400  # weights and head, forward and backward
