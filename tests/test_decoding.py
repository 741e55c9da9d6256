"""Decoding controls: the reply's own n-grams are banned, each reply ends within its budget."""

from __future__ import annotations

import pytest
import torch

from engine.decoding import Decoding, ReplyBudget, ReplyNoRepeatNGram, is_short_remark
from base.prompt import CommentInput, PromptStyle


def test_thanks_get_the_short_budget_questions_the_long_one():
    d = Decoding(max_new_tokens=96, short_reply_tokens=40)
    assert d.budget("Great video, thanks!") == 40 and d.budget("first!") == 40
    assert d.budget("how do I choose k for k-means?") == 96
    assert d.budget("I tried the elbow method on my customer data and the curve has no clear bend at all, "
                    "it just keeps going down") == 96
    assert is_short_remark("love the cat cameo") and not is_short_remark("why?")


def test_no_repeat_ngram_looks_at_the_reply_not_the_prompt():
    prompt = [5, 6, 7, 5, 6]  # the prompt repeats (5, 6) -> 7: that must not ban 7 in the reply
    reply = [1, 2, 3, 1, 2]  # the reply already holds (1, 2) -> 3: 3 is banned next
    ids = torch.tensor([prompt + reply])
    scores = ReplyNoRepeatNGram(3, prompt_width=len(prompt))(ids, torch.zeros(1, 10))
    assert scores[0, 3] == float("-inf")
    assert torch.isfinite(scores[0, [0, 1, 2, 4, 5, 6, 7, 8, 9]]).all()
    ids = torch.tensor([prompt + [5, 6]])  # (5, 6) -> 7 only in the prompt: allowed
    assert torch.isfinite(ReplyNoRepeatNGram(3, len(prompt))(ids, torch.zeros(1, 10))).all()


def test_budget_ends_each_row_at_its_own_limit_and_at_a_sentence_end_past_60_percent():
    stop, period = 0, 9
    budget = ReplyBudget([10, 4], prompt_width=2, stop_ids=[stop], sentence_end_ids=[period])
    ids = torch.tensor([[1, 1, 3, 3, 3], [1, 1, 3, 3, 3]])  # 3 tokens written
    scores = budget(ids, torch.zeros(2, 10))
    assert torch.isfinite(scores[0]).all()  # 3 of 10: go on
    assert scores[1].argmax() == stop and torch.isinf(scores[1, 1:]).all()  # 3 of 4: stop now
    ids = torch.tensor([[1, 1, 3, 3, 3, 3, 3, period], [1, 1, 3, 3, 3, 3, 3, 3]])  # 6 written
    scores = ReplyBudget([10, 20], 2, [stop], [period])(ids, torch.zeros(2, 10))
    assert scores[0].argmax() == stop and torch.isinf(scores[0, 1:]).all()  # past 60% at a sentence end
    assert torch.isfinite(scores[1]).all()


@pytest.mark.integration
def test_local_generation_keeps_every_reply_within_its_budget(tiny_model_dir):
    """A random tiny model never stops by itself: the budget is what ends its replies."""
    from engine.generation import LocalGenerator

    generator = LocalGenerator.load(str(tiny_model_dir), quantization="none", device="cpu",
                                    decoding=Decoding(max_new_tokens=24, short_reply_tokens=8))
    items = [CommentInput("thanks!"), CommentInput("how do window functions work in SQL?")]
    prompts = generator.encode(items, PromptStyle())
    raw = generator.generate(items, PromptStyle())
    lengths = [len(generator.tokenizer.encode(text, add_special_tokens=False)) for text in raw]
    assert lengths[0] <= 8 and lengths[1] <= 24 and lengths[1] > 8, (lengths, raw)
    assert prompts  # the prompts themselves are not cut


def test_a_reply_never_opens_with_its_sign_off_a_blank_or_the_end(tokenizer):
    from engine.decoding import ReplyOpening, opening_ban_ids

    sign_off = "Keep exploring! - Nadia"
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    banned = opening_ban_ids(tokenizer, [stop], sign_off)
    keep = tokenizer.encode(sign_off, add_special_tokens=False)[0]
    newline = tokenizer.encode("\n", add_special_tokens=False)[0]
    that = tokenizer.encode("That", add_special_tokens=False)[0]
    assert {stop, keep, newline} <= set(banned) and that not in banned

    # The model's favourite opening is the sign-off; the reply starts with its next best word.
    scores = torch.zeros(2, len(tokenizer))
    scores[:, keep], scores[:, newline], scores[:, that] = 5.0, 4.0, 3.0
    opening = ReplyOpening(banned, prompt_width=7)
    first = opening(torch.zeros(2, 7, dtype=torch.long), scores.clone())
    assert first.argmax(dim=1).tolist() == [that, that]
    later = opening(torch.zeros(2, 8, dtype=torch.long), scores.clone())  # words written: the sign-off may come
    assert later.argmax(dim=1).tolist() == [keep, keep]


@pytest.mark.integration
def test_context_aware_decoding_contrasts_with_the_same_rows_without_passages(tiny_generator):
    """Each contrasted row's scores are (1 + a) log p(. | with passages) - a log p(. | without), the
    second from an unpadded pass over that row's plain prompt and reply so far; other rows untouched."""
    from engine.decoding import ContextContrast

    model, tok = tiny_generator.model, tiny_generator.tokenizer
    plain = [tok.encode("short prompt"), tok.encode("a much longer prompt without any passages in it")]
    with_passages = [tok.encode("passage: LAG. short prompt"), tok.encode("a longer prompt")]
    width = max(map(len, with_passages))
    reply = [[11, 12, 13], [21, 22, 23]]
    contrast = ContextContrast(model, plain, tok.pad_token_id, width, alpha=0.5, contrasted=[True, True])
    ids = [[tok.pad_token_id] * (width - len(p)) + p for p in with_passages]
    for step in range(len(reply[0]) + 1):  # the first call, then one token at a time
        rows = torch.tensor([ids[r] + reply[r][:step] for r in range(2)])
        scores = torch.randn(2, model.config.vocab_size)
        got = contrast(rows, scores.clone())
        for r in range(2):
            with torch.inference_mode():
                alone = model(torch.tensor([plain[r] + reply[r][:step]])).logits[0, -1]
            want = 1.5 * torch.log_softmax(scores[r], -1) - 0.5 * torch.log_softmax(alone, -1)
            assert torch.allclose(got[r], want, atol=1e-4), (step, r)
    only_first = ContextContrast(model, plain, tok.pad_token_id, width, 0.5, contrasted=[True, False])
    scores = torch.randn(2, model.config.vocab_size)
    got = only_first(torch.tensor(ids), scores.clone())
    assert torch.equal(got[1], scores[1]) and not torch.equal(got[0], scores[0])


@pytest.mark.integration
def test_generation_with_context_aware_decoding_keeps_its_budgets(tiny_model_dir):
    from base.prompt import Passage
    from engine.generation import LocalGenerator

    gen = LocalGenerator.load(str(tiny_model_dir), None, "none", "cpu", max_new_tokens=8,
                              decoding=Decoding(max_new_tokens=8, context_weight=0.5))
    passage = Passage("Use LAG(revenue) OVER (ORDER BY month).", "SQL", similarity=0.7)
    items = [CommentInput("how do I get last month's revenue?", passages=(passage,)), CommentInput("thanks!")]
    out = gen.generate(items, PromptStyle())
    assert len(out) == 2 and gen.stats.generated_tokens <= 8 + 8
