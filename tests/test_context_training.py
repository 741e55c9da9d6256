"""Context-aware fine-tuning renders exactly the prompt serving renders, passages and all."""

from __future__ import annotations

import pytest

from base.prompt import CommentInput, PromptStyle, encode_prompt
from base.settings import Settings
from finetune.context import ContextRecipe, serving_passages, training_passages
from finetune.data import Pair, encode_pairs
from knowledge.store import open_knowledge_base
from tests.fakes import FakeGenerator

STYLE = PromptStyle(persona="You are a test creator.", sign_off="Bye!")
QUESTION = "how do I compute a running total of sales per day in postgres?"


@pytest.mark.integration
def test_training_with_a_store_renders_the_serving_prompt(knowledge_store, tokenizer):
    from responder.responder import Responder

    kb = open_knowledge_base(Settings(store=knowledge_store))
    threshold = kb.threshold()
    recipe = ContextRecipe(distractor_share=0.0, none_share=0.0)
    passages, kinds = training_passages(kb, [QUESTION], recipe, threshold)
    assert passages[0] and kinds["retrieved passages"] == 1
    (example,), _ = encode_pairs(tokenizer, STYLE, [Pair(QUESTION, "Use SUM OVER.", "row 1")], 4096, passages)

    generator = FakeGenerator()
    Responder(generator, STYLE, retriever=kb, top_k=recipe.top_k).respond(CommentInput(QUESTION))
    serving_ids = encode_prompt(tokenizer, STYLE, generator.items[0])
    assert generator.items[0].passages == passages[0]
    assert example.input_ids[:len(serving_ids)] == serving_ids
    assert all(label == -100 for label in example.labels[:len(serving_ids)])


@pytest.mark.integration
def test_distractors_come_from_other_articles_and_off_topic_gets_nothing(knowledge_store):
    kb = open_knowledge_base(Settings(store=knowledge_store))
    relevant = serving_passages(kb, [QUESTION], 3, kb.threshold())[0]
    recipe = ContextRecipe(distractor_share=1.0, none_share=0.0)
    passages, kinds = training_passages(kb, [QUESTION, "great video!"], recipe, kb.threshold())
    assert kinds == {"distractors": 1, "no passage retrieved": 1}
    assert passages[0] and {p.source for p in passages[0]}.isdisjoint({p.source for p in relevant})
    assert passages[1] == ()
