"""Retrieval for real comments: the part that asks, BM25 beside the embedder, recall against exact."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from base.settings import Settings
from ingest.pipeline import ingest
from knowledge.config import RetrievalConfig
from knowledge.lexical import LexicalIndex
from knowledge.query import search_queries
from knowledge.store import open_knowledge_base

# --- the part of a comment that asks (pure) ----------------------------------------------------


def test_greetings_praise_timestamps_and_links_leave_the_query():
    comment = ("Hey Nadia!! 😂 Love the channel. Great vid. at 4:12 you made the store column a category "
               "https://youtu.be/x and my result got empty rows, why?")
    assert search_queries(comment) == ["you made the store column a category and my result got empty rows, why?"]


def test_a_sentence_that_gives_context_stays_beside_the_question():
    queries = search_queries("Thanks a lot! I train xgboost on 2 million rows. Why does it overfit so fast?")
    assert queries == ["I train xgboost on 2 million rows. Why does it overfit so fast?"]


def test_several_questions_are_also_searched_one_by_one():
    queries = search_queries("great video! how do I get last month's revenue in SQL? "
                             "also why does my docker build reinstall every package?")
    assert queries[0] == ("how do I get last month's revenue in SQL? also why does my docker build "
                          "reinstall every package?")
    assert queries[1:] == ["how do I get last month's revenue in SQL?",
                           "also why does my docker build reinstall every package?"]


def test_short_follow_ups_are_not_queries_of_their_own():
    assert search_queries("how many resamples do I need for the bootstrap? 1000? 10000?") == [
        "how many resamples do I need for the bootstrap? 1000? 10000?"]


@pytest.mark.parametrize("comment", ["great video!", "Thanks so much Nadia!!", "🔥🔥"])
def test_a_comment_with_nothing_but_praise_is_searched_as_written(comment):
    assert search_queries(comment) == [comment]


# --- BM25 over the stored documents ------------------------------------------------------------


def test_bm25_scores_rare_words_and_stems():
    index = LexicalIndex(["Variance reduction with CUPED uses a pre-period covariate.",
                          "Tune the learning rate last, after the tree structure.",
                          "A running total uses SUM over a window."])
    cuped = index.scores("what is cuped exactly?")
    assert cuped.argmax() == 0 and cuped[1] == cuped[2] == 0
    assert index.scores("when do you do the tuning").argmax() == 1  # "tuning" finds "tune"
    assert not index.scores("hello there, what?").any()  # question and chat words score nothing


# --- the store: hybrid ranking, merged questions, recall ---------------------------------------

# One article names the function; another is closer in wording to a question about sensors.
RARE = {
    "joins.md": "# Joining tables\n\n## Nearest keys\n\npd.merge_asof matches each row with the last row of the "
                "other table whose key is not greater; both frames must be sorted by the key, and tolerance= "
                "limits how far back it looks.\n",
    "resample.md": "# Sensors at different rates\n\n## Aligning readings\n\nWhen two sensors log readings at "
                   "different times, resample both series to a common frequency and interpolate, so the readings "
                   "line up before you combine them.\n",
    "rolling.md": "# Rolling windows\n\n## Smoothing sensor data\n\nA rolling mean over a time-based window "
                  "smooths noisy sensor readings; use a window like '5min' on a datetime index.\n",
    "plots.md": "# Plotting time series\n\n## Two sensors on one chart\n\nPlot each sensor's readings on a shared "
                "time axis, with a second y axis when their units differ.\n",
}


@pytest.fixture(scope="module")
def rare_store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rare") / "articles"
    folder.mkdir()
    for name, text in RARE.items():
        (folder / name).write_text(text, encoding="utf-8")
    store = folder.parent / "store"
    ingest([folder], open_knowledge_base(Settings(store=store)))
    return store


def _kb(store: Path, **fields):
    return open_knowledge_base(replace(RetrievalConfig.of(Settings(store=store)), **fields))


@pytest.mark.integration
def test_bm25_lifts_the_passage_naming_the_function_and_similarities_stay_cosine(rare_store):
    comment = "does merge_asof work for my sensor readings?"
    dense = _kb(rare_store, hybrid=False).search(comment, top_k=4, min_similarity=-1.0)
    hybrid = _kb(rare_store).search(comment, top_k=4, min_similarity=-1.0)
    assert Path(dense[0].source).name == "resample.md"  # the embedder hears "sensor readings"
    assert Path(hybrid[0].source).name == "joins.md"  # BM25 hears the function's name
    # Fusion reorders; it never changes a passage's similarity, which the threshold reads.
    cosine = {p.source: p.similarity for p in dense}
    assert all(p.similarity == cosine[p.source] for p in hybrid)
    strict = max(cosine.values()) + 0.01
    assert _kb(rare_store).search(comment, top_k=2, min_similarity=strict) == []


@pytest.mark.integration
def test_a_comment_asking_two_things_finds_both_articles(knowledge_store):
    comment = "great stuff. how do I get error bars on a median? and does LAG need ORDER BY?"
    whole = {p.title for p in _kb(knowledge_store, focus=False).search(comment, top_k=3)}
    assert whole == {"Bootstrap Confidence Intervals"}  # the second question drowns in the first
    found = {p.title for p in open_knowledge_base(Settings(store=knowledge_store)).search(comment, top_k=3)}
    assert found == {"Bootstrap Confidence Intervals", "SQL Window Functions"}


@pytest.mark.integration
def test_recall_against_exact_and_bm25_alone(knowledge_store):
    kb = open_knowledge_base(Settings(store=knowledge_store))
    in_use, hnsw = kb.recall_against_exact(["how do I compute a running total in postgres",
                                            "my docker build reinstalls every package"], [None, None])
    assert in_use == 1.0 and 0.0 <= hnsw <= 1.0
    lexical = kb.lexical_search("running total postgres", top_k=5)
    assert lexical and "SUM(amount)" in lexical[0].text
    assert kb.lexical_search("lol", top_k=5) == []


@pytest.mark.integration
def test_above_the_exact_limit_hnsw_and_bm25_propose_and_the_same_passages_come_back(knowledge_store, monkeypatch):
    import knowledge.store as store_module

    comment = "how do I get last month's revenue next to this month's in postgres?"
    exact = open_knowledge_base(Settings(store=knowledge_store)).search(comment, top_k=3)
    monkeypatch.setattr(store_module, "EXACT_SEARCH_MAX", 2)  # the test store is "large": HNSW path
    kb = open_knowledge_base(Settings(store=knowledge_store))
    approximate = kb.search(comment, top_k=3)
    assert kb._index(kb.collection()).vectors is None  # no vectors held in memory on this path
    assert [(p.source, p.section, p.similarity) for p in approximate] == [
        (p.source, p.section, p.similarity) for p in exact]
    in_use, hnsw = kb.recall_against_exact([comment], [None])
    assert in_use == 1.0 and hnsw == 1.0


def test_a_wall_of_questions_costs_a_few_queries():
    wall = " ".join(f"how do I tune parameter number {n} of my model?" for n in range(50))
    queries = search_queries(wall)
    assert len(queries) == 1 + 4 and queries[0].startswith("how do I tune parameter number 0")


@pytest.mark.integration
def test_the_threshold_is_calibrated_on_the_most_similar_chunk_not_the_fused_first(tmp_path, monkeypatch):
    import knowledge.store as store_module

    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "levels.md").write_text("# Audio levels\n\n## Voice\n\nKeep the voice at -14 LUFS and the background "
                                      "track quiet, so nobody has to reach for the volume knob while watching.\n")
    (folder / "songs.md").write_text("# Clustering songs\n\n## Features\n\nThe song dataset has loud, music, genre "
                                     "and tempo columns; we cluster the tracks on them with k-means after scaling.\n")
    ingest([folder], open_knowledge_base(Settings(store=tmp_path / "store")))
    monkeypatch.setattr(store_module, "LEXICAL_WEIGHT", 1000.0)  # BM25's order first: songs.md for "music loud"
    kb = _kb(tmp_path / "store")
    fused_first = kb.search("the music is too loud", top_k=1, min_similarity=-1.0)[0]
    assert Path(fused_first.source).name == "songs.md"
    scorers = []
    monkeypatch.setattr(store_module, "calibrate", lambda best_match, default: (scorers.append(best_match), (default, 0.0))[1])
    kb.calibrate()
    most_similar = kb.search_many(["the music is too loud"], 1, -1.0, fused=False)[0][0]
    assert Path(most_similar.source).name == "levels.md" and most_similar.similarity > fused_first.similarity
    assert scorers[0](["the music is too loud"]) == [most_similar.similarity]


@pytest.mark.integration
def test_bm25_cannot_lift_a_chunk_the_embedder_puts_far_below(tmp_path_factory, samples_dir, monkeypatch):
    """In the sample articles, "row" is everywhere in the SQL article's code: BM25 alone would put
    running totals first for a question the embedder matches with its "latest row per group"
    section by a wide margin."""
    import knowledge.store

    store = tmp_path_factory.mktemp("samples") / "store"
    ingest([samples_dir / "articles"], open_knowledge_base(Settings(store=store)))
    comment = "sql question: how do I keep only the newest row per user?"
    found = open_knowledge_base(Settings(store=store)).search(comment, top_k=3)
    assert found[0].section == "Pattern 1: Latest row per group"
    assert found[0].similarity > max(p.similarity for p in found[1:]) + knowledge.store.LEXICAL_MARGIN
    monkeypatch.setattr(knowledge.store, "LEXICAL_MARGIN", 10.0)  # BM25 votes for every chunk again
    assert open_knowledge_base(Settings(store=store)).search(comment, top_k=3)[0].section != found[0].section
