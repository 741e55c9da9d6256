"""The knowledge base: search on a real embedded Chroma store with the real embedder."""

from __future__ import annotations

import threading

import pytest

from base.errors import UserError
from base.prompt import has_words
from base.settings import Settings
from base.video import Video
from ingest.pipeline import ingest
from knowledge.embedder import embedded_embedder_dir, resolve_embedder
from knowledge.search import DEFAULT_MIN_SIMILARITY, to_passages
from knowledge.store import check_workers, open_knowledge_base


@pytest.mark.integration
def test_search_returns_the_answering_passage_with_its_provenance(knowledge_store):
    kb = open_knowledge_base(Settings(store=knowledge_store))
    passages = kb.search("how do I get month over month growth in postgres without a self join", top_k=3)
    best = passages[0]
    assert "LAG(revenue)" in best.text
    assert (best.title, best.section, best.url) == ("SQL Window Functions", "Previous row",
                                                    "https://blog.test/sql-window")
    assert best.source.endswith("sql-window.md") and best.page is None
    assert DEFAULT_MIN_SIMILARITY <= best.similarity <= 1
    assert [p.similarity for p in passages] == sorted((p.similarity for p in passages), reverse=True)


@pytest.mark.integration
@pytest.mark.parametrize("comment", ["first!", "great video", "love your sweater", "🔥🔥🔥", "lol"])
def test_off_topic_comments_get_no_passages(knowledge_store, comment):
    assert open_knowledge_base(Settings(store=knowledge_store)).search(comment, top_k=3) == []


@pytest.mark.integration
def test_threshold_argument_then_settings_then_default(knowledge_store):
    kb = open_knowledge_base(Settings(store=knowledge_store))
    assert len(kb.search("great video", top_k=3, min_similarity=-1.0)) == 3
    assert len(open_knowledge_base(Settings(store=knowledge_store, min_similarity=-1.0)).search("great video")) == 3
    assert open_knowledge_base(Settings(store=knowledge_store, min_similarity=0.99)).search("LAG in postgres") == []


@pytest.mark.integration
def test_search_from_worker_threads_gives_the_same_answers(knowledge_store):
    kb = open_knowledge_base(Settings(store=knowledge_store))
    questions = ["running total in sql", "docker reinstalls packages on every change", "error bars on a median"]
    expected = [kb.search(q)[0].text for q in questions]
    results: list[list[str]] = [[] for _ in range(6)]

    def work(n: int) -> None:
        results[n] = [kb.search(q)[0].text for q in questions]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 6


@pytest.mark.integration
def test_writes_are_batched_by_the_client_limit(tmp_path, articles):
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    kb.client.get_max_batch_size = lambda: 2
    col = kb.collection(create=True)
    calls: list[int] = []
    real_upsert = col.upsert
    col.upsert = lambda **kw: calls.append(len(kw["ids"])) or real_upsert(**kw)
    report = ingest([articles], kb)
    assert report.chunks_stored == 5 and max(calls) <= 2 and sum(calls) == 5


@pytest.mark.integration
def test_an_empty_store_searches_to_nothing(tmp_path):
    assert open_knowledge_base(Settings(store=tmp_path / "new")).search("running totals") == []


@pytest.mark.integration
def test_another_embedder_is_refused_instead_of_mixing_vectors(knowledge_store, tmp_path):
    other = tmp_path / "other-embedder"
    other.mkdir()
    (other / "config.json").write_text("{}")
    kb = open_knowledge_base(Settings(store=knowledge_store, embedder=str(other)))
    with pytest.raises(UserError, match="was built with embedder 'all-MiniLM-L6-v2' \\(384 dimensions\\)"):
        kb.search("running totals")


def test_embedder_names_resolve_offline(tmp_path):
    assert resolve_embedder("all-MiniLM-L6-v2") == ("all-MiniLM-L6-v2", str(embedded_embedder_dir()))
    assert resolve_embedder(str(embedded_embedder_dir()))[0] == "all-MiniLM-L6-v2"
    with pytest.raises(UserError, match="does not exist"):
        resolve_embedder("./no/such/folder")
    with pytest.raises(UserError, match="has no config.json"):
        resolve_embedder(str(tmp_path))


def test_unknown_embedder_is_one_clear_error():
    from knowledge.embedder import load_embedder

    with pytest.raises(UserError, match="could not be loaded offline"):
        load_embedder("no-such-org/no-such-model")


def test_several_workers_need_a_chroma_server(tmp_path):
    with pytest.raises(UserError) as info:
        check_workers(Settings(store=tmp_path), 4)
    message = str(info.value)
    assert "not multi-process safe" in message and f"chroma run --path {tmp_path}" in message
    assert "RESPONDER_CHROMA_URL" in message
    check_workers(Settings(store=tmp_path), 1)
    check_workers(Settings(store=tmp_path, chroma_url="http://127.0.0.1:8001"), 4)


def test_store_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        open_knowledge_base(Settings(store=tmp_path / "file"))


def test_rows_become_passages_above_the_threshold():
    passages = to_passages(["a", "b", "c"], [{"title": "T", "page": 3}, {"title": "U"}, {}], [0.2, 0.5, 0.9], 0.45)
    assert [(p.text, p.similarity, p.page) for p in passages] == [("a", 0.8, 3), ("b", 0.5, None)]
    assert has_words("is k-means ok?", 2) and not has_words("🔥🔥 !!", 2) and not has_words("k", 2)
    assert has_words("k") and has_words("ок") and not has_words("🔥🔥 !!")


@pytest.mark.integration
def test_a_block_repeated_a_thousand_times_is_stored_once_and_hides_no_article(tmp_path, articles):
    block = "```\npip install -r requirements.txt && python train.py --epochs 10\n```\n\n"
    (articles / "notebook.md").write_text("# Notebook\n\n" + block * 1000 + "That is all.\n", encoding="utf-8")
    (articles / "spaces.md").write_text("# Spaces\n\n" + "ha " * 400 + "\n", encoding="utf-8")
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    report = ingest([articles], kb)
    assert report.left_out["repeats a chunk of the same file"] >= 100
    assert report.left_out["degenerate (no words, or one word repeated)"] >= 1
    stored = kb.collection().get(include=["documents"])["documents"]
    assert len(stored) == len(set(" ".join(d.split()) for d in stored))  # every stored chunk distinct
    best = kb.search("how do I get month over month growth in postgres without a self join", top_k=3)
    assert best and "LAG(revenue)" in best[0].text


@pytest.mark.integration
def test_search_is_exact_so_a_crowd_of_identical_vectors_hides_nothing(tmp_path, articles):
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    ingest([articles], kb)
    question = "how do I get month over month growth in postgres without a self join"
    crowd = kb.embedder.embed(["Subscribe to my newsletter for more tips every week!"])[0]
    kb.add([f"crowd-{n}" for n in range(1000)], [crowd] * 1000, ["Subscribe to my newsletter!"] * 1000,
           [{"source": f"crowd/{n}.md", "title": "Footer", "chunk": 0, "n_chunks": 1, "fingerprint": "x"}
            for n in range(1000)])
    found = open_knowledge_base(Settings(store=tmp_path / "store")).search(question, top_k=3)
    assert found and "LAG(revenue)" in found[0].text


@pytest.mark.integration
def test_a_question_is_searched_with_its_videos_title_and_an_off_topic_one_still_gets_nothing(knowledge_store):
    kb = open_knowledge_base(Settings(store=knowledge_store))
    video = Video(title="SQL window functions: five patterns")
    assert kb.search("what does LAG do exactly?", top_k=3) == []  # alone, too short to reach the threshold
    found = kb.search("what does LAG do exactly?", top_k=3, video=video)
    assert found and found[0].title == "SQL Window Functions" and "LAG(revenue)" in found[0].text
    assert kb.search("hey what mic do you use?", top_k=3, video=video) == []  # asks, but not about the article
    assert kb.search("great video!", top_k=3, video=video) == []  # asks nothing: the title is not used


@pytest.mark.integration
def test_a_block_repeated_across_articles_is_stored_once(tmp_path, articles):
    bio = ("## About me\n\nI'm Nadia, a data scientist who writes about SQL, Docker and statistics. "
           "Subscribe to my newsletter for a new article every Tuesday.\n")
    for name in ("sql-window.md", "docker.md", "bootstrap.md"):
        path = articles / name
        path.write_text(path.read_text(encoding="utf-8") + "\n" + bio, encoding="utf-8")
    kb = open_knowledge_base(Settings(store=tmp_path / "store"))
    report = ingest([articles], kb)
    assert report.left_out["repeats a chunk of another file"] == 2
    stored = kb.collection().get(include=["documents"])["documents"]
    assert sum("Subscribe to my newsletter" in d for d in stored) == 1
    again = ingest([articles], kb)
    assert again.unchanged == 3 and again.chunks_embedded == 0  # the left-out copies do not make a file stale
    found = kb.search("how do I compute a running total per day in postgres", top_k=3)
    assert found and "SUM(amount)" in found[0].text
