"""Server mode: a real `chroma run` on a free loopback port, used through HttpClient."""

from __future__ import annotations

import pytest

from base.errors import UserError
from base.settings import Settings
from ingest.pipeline import ingest
from knowledge.store import check_workers, open_knowledge_base
from tests.support import free_port

pytestmark = pytest.mark.integration


def test_ingest_and_search_through_a_chroma_server(chroma_server, corpus_dir, tmp_path):
    settings = Settings(store=tmp_path / "unused", chroma_url=chroma_server)
    check_workers(settings, 4)  # several workers are fine with a server
    report = ingest([corpus_dir], open_knowledge_base(settings))
    assert (report.added, report.chunks_embedded) == (3, 5)
    again = ingest([corpus_dir], open_knowledge_base(settings))
    assert (again.unchanged, again.chunks_embedded) == (3, 0)

    passages = open_knowledge_base(settings).search("torch cannot see the gpu inside my container")
    assert passages and passages[0].section == "GPUs" and passages[0].title == "Docker for Data Scientists"
    assert open_knowledge_base(settings).search("first!") == []
    assert not (tmp_path / "unused").exists()  # nothing went to the embedded store


def test_an_unreachable_server_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=f"cannot reach the Chroma server at {url}"):
        open_knowledge_base(Settings(store=tmp_path, chroma_url=url))
