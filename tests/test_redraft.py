"""Redrafting (base/redraft.py): a reply to a question that only thanks, or takes nothing from its
passages, is decoded again opening differently; replies to thanks are never touched.

The loop's tests give it a scripted generator (which draft comes when is the logic under test) and
the real triage classifier; the ban itself is tested on the real embedded model, in `generate` and
in the continuous batch."""

from __future__ import annotations

import pytest

from base.prompt import CommentInput, Passage, PromptStyle
from base.redraft import FINE, NO_ANSWER, UNGROUNDED, Drafter, judge_draft

THRESHOLD = Passage("Pick the decision threshold on validation data, never on the test set: the test set "
                    "must stay unseen until the end.", "Choosing a threshold", similarity=0.7)
QUESTION = CommentInput("hey! love the channel. how do I pick the threshold for my classifier?",
                        passages=(THRESHOLD,))
THANKS = CommentInput("great video, thank you so much!")
ANSWER = "Pick it on validation data, so the test set stays unseen until the end."


class Scripted:
    """Drafts by attempt: the n-th call for a comment returns its n-th scripted draft."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script, self.calls = script, []

    def __call__(self, items):
        self.calls.append([(item.comment, tuple(item.avoid_openings)) for item in items])
        return [self.script[item.comment][len(item.avoid_openings)] for item in items]


@pytest.fixture(scope="module")
def classify(tmp_path_factory):
    from knowledge.triage import TriageClassifier

    triage = TriageClassifier.load(cache_dir=tmp_path_factory.mktemp("triage-cache"))
    return lambda texts: [t.intent for t in triage.classify(texts)]


def test_a_question_answered_with_thanks_is_redrafted_and_the_answer_kept(classify):
    generate = Scripted({QUESTION.comment: ["Thanks for the question! I hope this helps.", ANSWER],
                         THANKS.comment: ["Thank you, glad it helped!"]})
    drafter = Drafter(generate, classify, redrafts=2)
    assert drafter.draft([QUESTION, THANKS]) == [ANSWER, "Thank you, glad it helped!"]
    # Only the question was drafted again, told what its first draft opened with.
    assert generate.calls[1] == [(QUESTION.comment, ("Thanks for the question! I hope this helps.",))]
    assert drafter.drafts_written == 1


def test_without_redrafts_or_a_classifier_the_first_draft_stands(classify):
    script = {QUESTION.comment: ["Thanks for the question! I hope this helps.", ANSWER]}
    for drafter in (Drafter(Scripted(script), classify, redrafts=0), Drafter(Scripted(script), None, redrafts=2)):
        assert drafter.draft([QUESTION]) == ["Thanks for the question! I hope this helps."]


def test_when_every_draft_is_weak_the_least_weak_is_kept(classify):
    ungrounded = "The threshold depends on your classifier, honestly."  # shares words with the comment only
    generate = Scripted({QUESTION.comment: ["Thanks so much!", ungrounded, "Thank you for watching!"]})
    assert Drafter(generate, classify, redrafts=2).draft([QUESTION]) == [ungrounded]
    assert len(generate.calls) == 3


def test_a_reply_already_given_to_another_comment_is_redrafted(classify):
    """Thanks replies fit any thanks, so one sentence would go to all of them: a stock phrase."""
    thanks = ["great video!", "subscribed", "you explain things like a human being, thank you"]
    generate = Scripted({c: ["Thank you, glad it helped!", "Glad it clicked, thanks for watching."] for c in thanks})
    drafter = Drafter(generate, classify, redrafts=1)
    first = drafter.draft([CommentInput(c) for c in thanks[:2]])
    later = drafter.draft([CommentInput(thanks[2])])  # a later batch: the drafter remembers
    assert first == ["Thank you, glad it helped!", "Glad it clicked, thanks for watching."]
    # Both replies are taken and the redrafts are spent: the least weak, the earliest, is kept.
    assert later == ["Thank you, glad it helped!"]
    # The same comment again is not another comment: it keeps its reply, drafted once.
    generate = Scripted({thanks[0]: ["Thank you, glad it helped!", "-"]})
    drafter = Drafter(generate, classify, redrafts=1)
    assert drafter.draft([CommentInput(thanks[0])]) == drafter.draft([CommentInput(thanks[0])])
    assert len(generate.calls) == 2


def test_the_same_answer_to_a_second_question_is_redrafted(classify):
    """"That's a good rule of thumb." carries passage words, but an answer given to two different
    questions answers neither."""
    other = CommentInput("what threshold do you use for a classifier, is 0.5 fine?", passages=(THRESHOLD,))
    stock = "That's the threshold I pick on validation data."
    generate = Scripted({QUESTION.comment: [stock], other.comment: [stock, ANSWER]})
    assert Drafter(generate, classify, redrafts=1).draft([QUESTION, other]) == [stock, ANSWER]


def test_the_verdicts_name_what_is_wrong(classify):
    intent = "question"
    assert judge_draft("Thanks!", QUESTION, intent, "thanks").weakness == NO_ANSWER
    assert "misfit" in judge_draft("Thanks!", QUESTION, intent, "thanks").reason
    assert judge_draft("Sure, it depends, honestly.", QUESTION, intent, "other").weakness == NO_ANSWER  # stock
    assert judge_draft("The threshold depends on your classifier.", QUESTION, intent, "other").weakness == UNGROUNDED
    assert judge_draft(ANSWER, QUESTION, intent, "other").weakness == FINE
    assert judge_draft("Thanks!", THANKS, "thanks", "thanks").weakness == FINE  # thanks for thanks is right


@pytest.mark.integration
def test_a_redraft_never_opens_like_the_draft_before(embedded_generator):
    """The real model, in one batch and in the continuous batch: the redraft's first token is not the
    first draft's; the row beside it is decoded as before."""
    from engine.inflight import ContinuousDecoder

    style = PromptStyle()
    tokenizer = embedded_generator.tokenizer
    other = CommentInput("what is a p-value?")
    first, beside = embedded_generator.generate([QUESTION, other], style)
    again = CommentInput(QUESTION.comment, passages=QUESTION.passages, avoid_openings=(first,))
    redraft, beside_again = embedded_generator.generate([again, other], style)

    def opening(text: str) -> int:
        return tokenizer.encode(text.lstrip(), add_special_tokens=False)[0]

    assert opening(redraft) != opening(first)
    assert beside_again == beside
    decoder = ContinuousDecoder(embedded_generator, style)
    finished = dict(decoder.join([again], ["again"]))
    while "again" not in finished:
        finished.update(decoder.step())
    assert opening(finished["again"]) == opening(redraft)
