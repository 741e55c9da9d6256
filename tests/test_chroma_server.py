"""Server mode: a real `chroma run` on a free loopback port, used through HttpClient."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from base.errors import UserError
from base.settings import Settings
from ingest.pipeline import ingest
from knowledge.store import check_workers, open_knowledge_base
from tests.test_ingest_pipeline import write_corpus

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chroma_cli() -> str:
    local = Path(sys.executable).with_name("chroma")
    return str(local) if local.exists() else (shutil.which("chroma") or "chroma")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    path, port = tmp_path_factory.mktemp("chroma-server"), free_port()
    log = open(path.parent / "chroma.log", "w")
    proc = subprocess.Popen([chroma_cli(), "run", "--path", str(path / "data"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (path.parent / "chroma.log").read_text()
            assert time.monotonic() < deadline, "chroma run did not answer within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_ingest_and_search_through_a_chroma_server(chroma_server, tmp_path):
    settings = Settings(store=tmp_path / "unused", chroma_url=chroma_server)
    check_workers(settings, 4)  # several workers are fine with a server
    report = ingest([write_corpus(tmp_path / "articles")], open_knowledge_base(settings))
    assert (report.added, report.chunks_embedded) == (3, 5)
    again = ingest([tmp_path / "articles"], open_knowledge_base(settings))
    assert (again.unchanged, again.chunks_embedded) == (3, 0)

    passages = open_knowledge_base(settings).search("torch cannot see the gpu inside my container")
    assert passages and passages[0].section == "GPUs" and passages[0].title == "Docker for Data Scientists"
    assert open_knowledge_base(settings).search("first!") == []
    assert not (tmp_path / "unused").exists()  # nothing went to the embedded store


def test_an_unreachable_server_is_one_clear_error(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UserError, match=f"cannot reach the Chroma server at {url}"):
        open_knowledge_base(Settings(store=tmp_path, chroma_url=url))
