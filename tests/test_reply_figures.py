"""The reply figures catch the failures the issue measured, and pass replies that answer.

Each figure gets its bad case (7 of 20 replies the same sentence; "Thanks for the question! I hope
this helps." to technical questions; a reply that only parrots its comment) and a good case. The
intents are plain inputs here: the figures take them from the triage classifier, whoever runs it.
"""

from __future__ import annotations

from base.reply_figures import (ReplyCase, answered_rate, answers_question, cited_rate, content_words,
                                distinct_rate, grounded_rate, grounding_words, is_grounded, misfit_rate,
                                misfit_reason, repeat_counts, repeated_replies, reply_figures, stock_rate,
                                stock_reason)

PERSONA = "You are a YouTube creator replying to comments under your own videos. Be warm, direct and brief."
STOCK = "Thanks for the question! I hope this helps."

QUESTIONS = [
    "is text embedding same as text tokenization done in training?",
    "In GES algorithm how are the direction of the edges determined?",
    "Do you think I should use Wavelet Transform for EEG data or should I use Fast fourier Transform?",
    "How many resamples do I need for a bootstrap interval?",
    "Can I use normal KFold for my sales forecast?",
    "which xgboost param should I tune first",
    "why does my classifier use a 0.5 threshold, can I change it",
]
ANSWERS = [
    "No: tokenization cuts text into ids, the embedding maps each id to a learned vector.",
    "The edges get their direction from orientation rules: v-structures first, then acyclicity.",
    "For EEG I'd start with wavelets, since the signal is not stationary and FFT loses the timing.",
    "1,000 for a rough interval, 10,000 for the tails of a 95% one; it's cheap.",
    "Please don't. Shuffling trains on the future: use TimeSeriesSplit with a gap of one forecast horizon.",
    "Tune max_depth and min_child_weight first, with learning_rate fixed at 0.1.",
    "Pick the threshold on validation data with precision_recall_curve, then keep it fixed.",
]
THANKS = [f"great video number {n}!" for n in range(13)]
THANKS_REPLIES = [f"Thank you, glad part {n} landed!" for n in range(13)]

PASSAGE = ("Set n_estimators high, like 2000, and use early_stopping_rounds=50 on a validation set. "
           "Tune max_depth and min_child_weight first with learning_rate fixed at 0.1, then gamma, "
           "then subsample and colsample_bytree.")
XGB_QUESTION = "which xgboost param should I tune first"


def test_distinct_rate_sees_seven_of_twenty_replies_the_same_sentence():
    comments = QUESTIONS + THANKS
    stock_replies = [STOCK] * 7 + THANKS_REPLIES
    assert distinct_rate(stock_replies, comments) == 14 / 20
    assert distinct_rate(ANSWERS + THANKS_REPLIES, comments) == 1.0


def test_distinct_rate_ignores_case_space_punctuation_and_counts_a_repeated_comment_once():
    variants = [STOCK, "thanks for the question  i hope this helps", "THANKS FOR THE QUESTION!! I hope this helps"]
    assert distinct_rate(variants, QUESTIONS[:3]) == 1 / 3
    # The same comment twice (a re-run, a duplicate in the data) is one comment.
    assert distinct_rate(["Thank you!", "Thank you!"], ["great video", "Great video!"]) == 1.0
    assert distinct_rate([], []) is None


def test_stock_rate_sees_a_polite_sentence_given_to_technical_questions():
    intents = ["question"] * 7
    # Different wording each time, so the repeat rule is not what catches it: no content word shared.
    polite = [STOCK, "Thanks for the question! I hope it's not too much to ask.", "Great question, thanks!",
              "Thank you so much, I hope this helps!", "Glad you asked, hope it helps.",
              "Thanks, great point!", "Thanks for watching, I hope this helps."]
    assert stock_rate(polite, QUESTIONS, [()] * 7, intents) == 1.0
    assert stock_rate(ANSWERS, QUESTIONS, [()] * 7, intents) == 0.0


def test_stock_rate_counts_one_reply_given_to_three_comments_whatever_they_are():
    comments = ["great video!", "love this", "so clear, thanks", "first!"]
    replies = ["Thanks for the kind words!"] * 3 + ["Gold medal!"]
    intents = ["thanks", "thanks", "thanks", "other"]
    assert stock_rate(replies, comments, [()] * 4, intents) == 0.75
    assert repeat_counts(replies, comments) == [3, 3, 3, 1]
    assert repeated_replies(replies, comments) == [("Thanks for the kind words!", 3)]
    # Twice is not yet a template, and a reply to thanks need not share a word with it.
    assert stock_rate(replies[:2] + ["Gold medal!"], comments[:3], [()] * 3, intents[:3]) == 0.0


def test_a_reply_that_uses_the_passage_but_not_the_comments_words_is_not_stock():
    reply = "Start with max_depth and min_child_weight, keep learning_rate at 0.1."
    assert stock_reason(reply, "what do I tune first??", [PASSAGE]) is None
    assert stock_reason(reply, "what do I tune first??", []) is not None  # nothing in common without it
    assert stock_reason(STOCK, XGB_QUESTION, [PASSAGE]) == \
        "stock: shares no content word with the comment or its passages"
    assert stock_reason(STOCK, XGB_QUESTION, [PASSAGE], repeats=4) == "stock: the same reply went to 4 different comments"
    assert stock_reason("", XGB_QUESTION, [PASSAGE]) is None  # empty is the empty check's to report


def test_misfit_rate_counts_questions_and_requests_answered_with_thanks():
    comment_intents = ["question", "question", "request", "thanks", "question"]
    reply_intents = ["thanks", "other", "thanks", "thanks", "question"]
    assert misfit_rate(comment_intents, reply_intents) == 2 / 4  # the thanks to thanks does not count
    assert misfit_rate(["question"] * 3, ["other"] * 3) == 0.0
    assert misfit_rate(["thanks"], ["thanks"]) is None
    assert misfit_reason("question", "thanks") == "misfit: the comment is a question, the reply only thanks"
    assert misfit_reason("thanks", "thanks") is None


def test_grounded_rate_needs_two_passage_words_the_comment_did_not_already_say():
    parrot = "Which xgboost param should you tune first? Good question about xgboost params!"
    grounded = "Tree structure first: max_depth and min_child_weight, with learning_rate fixed at 0.1."
    one_word = "Tune xgboost gently, with gamma."
    assert grounding_words(parrot, XGB_QUESTION, [PASSAGE], PERSONA) == set()
    assert len(grounding_words(grounded, XGB_QUESTION, [PASSAGE], PERSONA)) >= 2
    assert grounded_rate([parrot, grounded, one_word, STOCK], [XGB_QUESTION] * 4, [[PASSAGE]] * 4,
                         ["question"] * 4, PERSONA) == 0.25
    # Only replies to questions whose prompt held passages are judged.
    assert grounded_rate([grounded, STOCK], [XGB_QUESTION, "great video!"], [[PASSAGE], [PASSAGE]],
                         ["question", "thanks"], PERSONA) == 1.0
    assert grounded_rate([STOCK], [XGB_QUESTION], [[]], ["question"], PERSONA) is None


def test_answered_rate_sees_a_stock_phrase_copied_from_the_article():
    """The demo adapter's replies of session 12: two passage words that any article holds pass as
    grounded; an answer shares a word with its question or says more of its article."""
    passage = ("A good rule of thumb: 1,000 resamples for a rough interval, 10,000 for the tails of a "
               "95% interval. That's the order I've settled on for bootstrap work.")
    question = "How many resamples do I need for a bootstrap interval?"
    stock_copy = "That's a good rule of thumb. Keep exploring! - Nadia"
    answer = "About 1,000 for a rough look, 10,000 if you care about the tails. Keep exploring! - Nadia"
    in_its_terms = "Rule of thumb: 10,000 for the tails of a 95% one, 1,000 for rough work."
    sign_off = "Keep exploring! - Nadia"
    assert is_grounded(stock_copy, question, [passage], PERSONA, sign_off)  # what grounded_rate counts
    assert not answers_question(stock_copy, question, [passage], PERSONA, sign_off)
    assert answers_question(answer, question, [passage], PERSONA, sign_off)  # "interval" is not needed:
    assert answers_question(in_its_terms, question, [passage], PERSONA, sign_off)  # four passage words do
    assert answered_rate([stock_copy, answer], [question] * 2, [[passage]] * 2, ["question"] * 2,
                         PERSONA, sign_off) == 0.5
    assert grounded_rate([stock_copy, answer], [question] * 2, [[passage]] * 2, ["question"] * 2,
                         PERSONA, sign_off) == 1.0


def test_the_persona_words_do_not_ground_a_reply():
    passage = "YouTube creator replying to comments: be warm, direct and brief with viewers."
    reply = "As a creator I stay direct and brief with viewers."
    assert grounding_words(reply, "how do you reply?", [passage], "") >= {"direct", "brief"}
    assert grounding_words(reply, "how do you reply?", [passage], PERSONA) == {"viewer"}


def test_cited_rate_counts_only_replies_with_a_confident_passage():
    assert cited_rate([True, True, False, True], [True, False, False, True]) == 2 / 3
    assert cited_rate([True, True], [True, True]) == 1.0
    assert cited_rate([False], [True]) is None


def test_content_words_drop_function_and_conversational_words_and_stem_the_rest():
    assert content_words(STOCK) == set()
    assert content_words("Passages about the passage") == {"passag"}
    assert content_words("mean imputation of 10000 rows in a time series") == {"mean", "imput", "10000", "row",
                                                                                "time", "seri"}


def test_reply_figures_reports_every_figure_and_strips_the_sign_off():
    cases = [ReplyCase(XGB_QUESTION, STOCK + "\nKeep exploring! - Nadia", (PASSAGE,), "question", "thanks",
                       confident=True, cited=False),
             ReplyCase("great video!", "Thank you!\nKeep exploring! - Nadia", (), "thanks", "thanks")]
    figures = reply_figures(cases, PERSONA, sign_off="Keep exploring! - Nadia")
    assert figures == {"distinct_rate": 1.0, "stock_rate": 0.5, "misfit_rate": 1.0, "grounded_rate": 0.0,
                       "answered_rate": 0.0, "cited_rate": 0.0}
