"""Video-aware retrieval: which articles a video is about, and search preferring them."""

from __future__ import annotations

import pytest

from base.errors import UserError
from base.settings import Settings
from base.video import Video, parse_video_id, url_key, urls_in
from ingest.pipeline import ingest
from ingest.video_map import read_video_map, resolve_video_map
from knowledge.store import open_knowledge_base
from knowledge.video_links import Link, title_text

DOCKER_VIDEO = "DOCKERvid01"
SQL_VIDEO = "SQLvideo001"
BOTH = "how do I compute a running total in postgres? and how do I make my docker build stop reinstalling packages?"


def test_video_ids_and_urls_are_read_as_a_person_writes_them():
    for form in ("dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=42s", "youtu.be/dQw4w9WgXcQ",
                 "https://youtube.com/shorts/dQw4w9WgXcQ", "https://m.youtube.com/live/dQw4w9WgXcQ"):
        assert parse_video_id(form) == "dQw4w9WgXcQ", form
    assert parse_video_id("not a video") is None and parse_video_id("https://vimeo.com/12345678901") is None
    assert url_key("https://www.Blog.test/sql-window/?utm_source=yt#top") == url_key("http://blog.test/sql-window")
    assert url_key("blog.test/sql-window") == ""  # no scheme: not a link
    assert urls_in("Read it: https://blog.test/a. And (https://blog.test/b)") == ["https://blog.test/a",
                                                                               "https://blog.test/b"]
    described = Video(title="Window functions", description="Running totals in SQL. 0:00 intro https://x.test/y\n\n"
                                                             "Sponsored by a VPN")
    assert title_text(described) == "Window functions\nRunning totals in SQL. intro"


def test_a_mapping_file_resolves_articles_by_name_stem_key_or_url(tmp_path):
    files = [(tmp_path / "articles" / "sql-window.md", "articles/sql-window.md"),
             (tmp_path / "articles" / "docker.md", "articles/docker.md")]
    mapping = tmp_path / "videos.csv"
    mapping.write_text("Video,Article\nhttps://youtu.be/SQLvideo001,sql-window\nDOCKERvid01,articles/docker.md\n"
                       "AAAAAAAAAAA,https://blog.test/sql-window/\n", encoding="utf-8")
    urls = {"sql-window.md": "https://blog.test/sql-window", "docker.md": ""}
    links = resolve_video_map(read_video_map(mapping), files, mapping, lambda path: urls[path.name])
    assert links == {"articles/sql-window.md": ("SQLvideo001", "AAAAAAAAAAA"), "articles/docker.md": ("DOCKERvid01",)}


@pytest.mark.parametrize("text, problem", [
    ("id,post\nSQLvideo001,sql-window\n", "has no video and article columns"),
    ("video,article\nnot-an-id,sql-window\n", "line 2: 'not-an-id' is not a YouTube video id"),
    ("video,article\nSQLvideo001,\n", "line 2: no article for video SQLvideo001"),
    ("video,article\n", "has no rows"),
    ("video,article\nSQLvideo001,sql-window\nDOCKERvid01,kubernetes.md\n",
     "line 3: article 'kubernetes.md' (video DOCKERvid01) is not among the articles ingested"),
])
def test_a_bad_mapping_is_one_line_naming_the_row(tmp_path, text, problem):
    mapping = tmp_path / "videos.csv"
    mapping.write_text(text, encoding="utf-8")
    files = [(tmp_path / "sql-window.md", "articles/sql-window.md")]
    with pytest.raises(UserError) as err:
        resolve_video_map(read_video_map(mapping), files, mapping, lambda path: "")
    assert problem in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def linked_store(tmp_path, articles):
    docker = articles / "docker.md"
    docker.write_text(docker.read_text().replace("---\n", f"---\nvideo: https://youtu.be/{DOCKER_VIDEO}\n", 1))
    mapping = tmp_path / "videos.csv"
    mapping.write_text(f"video,article\n{SQL_VIDEO},sql-window.md\n", encoding="utf-8")
    store = tmp_path / "store"
    ingest([articles], open_knowledge_base(Settings(store=store)), videos_file=mapping)
    return store


@pytest.mark.integration
def test_a_video_is_linked_by_mapping_front_matter_description_or_title(linked_store):
    kb = open_knowledge_base(Settings(store=linked_store))
    assert kb.video_links(Video(DOCKER_VIDEO)) == [Link("articles/docker.md", "mapping")]  # front matter
    assert kb.video_links(Video(SQL_VIDEO)) == [Link("articles/sql-window.md", "mapping")]  # --videos
    described = Video("zzzzzzzzzzz", description="Code and notes: https://www.blog.test/sql-window/")
    assert kb.video_links(described) == [Link("articles/sql-window.md", "description")]
    [by_title] = kb.video_links(Video(title="Error bars on a median with the bootstrap"))
    assert by_title.source == "articles/bootstrap.md" and by_title.how == "title"
    assert by_title.similarity >= kb.link_threshold()
    for generic in (Video(title="Q&A livestream"), Video(title="My desk setup tour"), Video("unknownvid1")):
        assert kb.video_links(generic) == [], generic
    # An unknown id retrieves as if no video were given.
    assert kb.search(BOTH, top_k=3, video=Video("unknownvid1")) == kb.search(BOTH, top_k=3)


@pytest.mark.integration
def test_search_prefers_the_videos_article_but_never_past_the_threshold(linked_store, monkeypatch):
    import knowledge.store

    kb = open_knowledge_base(Settings(store=linked_store))
    monkeypatch.setattr(knowledge.store, "VIDEO_BOOST", 100.0)  # a preference that always wins, to see it act
    # A comment that asks nothing is not searched with the video's title: only the preference acts.
    praise = "loved the parts on running totals in postgres and on docker layer caching"
    assert kb.search(praise, top_k=1, video=Video(DOCKER_VIDEO))[0].source == "articles/docker.md"
    assert kb.search(praise, top_k=1, video=Video(SQL_VIDEO))[0].source == "articles/sql-window.md"
    # Not a filter: a question about another article under the docker video still gets that article,
    # and no docker passage below the threshold is let in.
    found = kb.search("how do I get error bars on a median?", top_k=3, video=Video(DOCKER_VIDEO))
    assert found and found[0].source == "articles/bootstrap.md"
    assert all(p.similarity >= kb.threshold() for p in found)


@pytest.mark.integration
def test_a_video_known_by_id_alone_is_searched_as_its_articles_title(linked_store):
    kb = open_knowledge_base(Settings(store=linked_store))
    vague = "what does LAG do exactly?"  # too short to reach the threshold alone
    assert kb.search(vague, top_k=3) == []
    found = kb.search(vague, top_k=3, video=Video(SQL_VIDEO))
    assert found and found[0].source == "articles/sql-window.md" and "LAG(revenue)" in found[0].text


@pytest.mark.integration
def test_a_changed_mapping_rewrites_metadata_without_embedding_again(tmp_path, linked_store, articles):
    mapping = tmp_path / "videos2.csv"
    mapping.write_text(f"video,article\n{SQL_VIDEO},bootstrap.md\n", encoding="utf-8")
    report = ingest([articles], open_knowledge_base(Settings(store=linked_store)), videos_file=mapping)
    assert report.chunks_embedded == 0 and report.updated == 2  # sql-window and bootstrap; docker unchanged
    kb = open_knowledge_base(Settings(store=linked_store))
    assert kb.video_links(Video(SQL_VIDEO)) == [Link("articles/bootstrap.md", "mapping")]
    assert kb.video_links(Video(DOCKER_VIDEO)) == [Link("articles/docker.md", "mapping")]  # front matter stays


@pytest.mark.integration
def test_ingest_refuses_a_mapping_to_an_article_it_does_not_have_before_writing(tmp_path, articles):
    from click.testing import CliRunner

    from ingest.cli import cli

    mapping = tmp_path / "videos.csv"
    mapping.write_text(f"video,article\n{SQL_VIDEO},sql-windows.md\n", encoding="utf-8")
    store = tmp_path / "store"
    result = CliRunner().invoke(cli, [str(articles), "--store", str(store), "--videos", str(mapping)])
    assert isinstance(result.exception, UserError)
    assert "line 2: article 'sql-windows.md'" in str(result.exception) and "not among the articles" in str(result.exception)
    assert not store.exists()  # nothing opened, nothing written


@pytest.mark.integration
def test_retrieve_names_the_videos_articles(linked_store):
    from click.testing import CliRunner

    from responder.cli import cli

    result = CliRunner().invoke(cli, ["retrieve", "what does LAG do exactly?", "--store", str(linked_store),
                                      "--video-id", f"https://www.youtube.com/watch?v={SQL_VIDEO}"])
    assert result.exit_code == 0, result.output
    assert "The video is about: articles/sql-window.md (your mapping)" in result.output
    assert "LAG(revenue)" in result.output
