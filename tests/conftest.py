"""Shared fixtures: real embedded models, tiny models built from a config, stores and servers.

Tiny models use the real SmolLM2 tokenizer and chat template (so prompts are the real ones) on a
2-layer, width-64 Llama: fast enough to train and generate in unit tests. Plain helpers (free
ports, the loopback server, the article corpus, the parrot model) live in tests/support.py.

Markers: `integration` (real embedded models, real Chroma, real HTTP), `slow` (minutes; skipped
unless `-m slow`), `gpu`. A test that uses one of INTEGRATION_FIXTURES is marked `integration`
here, so the mark cannot be forgotten; other integration tests carry it in their file. Every test
times out after 600 s (pyproject.toml), a `slow` one after SLOW_TIMEOUT_S.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import (
    LiveServer,
    Parrot,
    copy_tokenizer_files,
    free_port,
    seeded_lora_adapter,
    tiny_llama,
    train_parrot,
    write_corpus,
)

INTEGRATION_FIXTURES = {"live_server", "chroma_server", "knowledge_store", "embedded_generator"}
SLOW_TIMEOUT_S = 3600  # the default per-test timeout (pyproject.toml) is 600 s


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if INTEGRATION_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def samples_dir(repo_root) -> Path:
    return repo_root / "samples"


# --------------------------------------------------------------------------------------- models


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once into the user's model cache."""
    from engine.models import embedded_base_model

    return embedded_base_model()


@pytest.fixture(scope="session")
def tokenizer(base_model_dir):
    from engine.models import load_tokenizer

    return load_tokenizer(str(base_model_dir))


@pytest.fixture(scope="session")
def embedded_generator(base_model_dir):
    """The real SmolLM2 in float32 on the CPU, few new tokens (real words, a few seconds a batch)."""
    from engine.generation import LocalGenerator

    return LocalGenerator.load(str(base_model_dir), None, "none", "cpu", max_new_tokens=8)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, base_model_dir) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, saved like a real checkpoint.

    Its greedy output is whitespace (with tied embeddings it repeats its last token, a newline):
    fine for plumbing, useless for checking what a model writes (see `parrot`).
    """
    out = tmp_path_factory.mktemp("tiny-model")
    tiny_llama(base_model_dir).save_pretrained(out)
    copy_tokenizer_files(base_model_dir, out)
    return out


@pytest.fixture(scope="session")
def tiny_generator(tiny_model_dir):
    from engine.generation import LocalGenerator

    return LocalGenerator.load(str(tiny_model_dir), None, "none", "cpu", max_new_tokens=8)


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA adapter on the tiny model with non-zero B (so merging changes the weights), saved as
    `finetune run` saves one: `<run>/adapter` with adapter_info (NF4, the Nadia style)."""
    return seeded_lora_adapter(tiny_model_dir, tmp_path_factory.mktemp("run") / "adapter", rank=4, std=0.02, seed=1)


@pytest.fixture(scope="session")
def parrot(tmp_path_factory, base_model_dir) -> Parrot:
    """A tiny model trained to answer `parrot.comment` with `parrot.says` (about 10 s on 2 cores)."""
    return train_parrot(tmp_path_factory.mktemp("parrot"), base_model_dir)


# ----------------------------------------------------------------------------- knowledge stores


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """The three test articles (tests.support.CORPUS). Shared: never edit; use `articles` for that."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "articles")


@pytest.fixture
def articles(tmp_path, corpus_dir) -> Path:
    """A copy of the test articles that this test may edit."""
    return Path(shutil.copytree(corpus_dir, tmp_path / "articles"))


@pytest.fixture(scope="session")
def knowledge_store(tmp_path_factory, corpus_dir) -> Path:
    """An embedded Chroma store holding the test articles (real embedder). Read it, don't write it."""
    from base.settings import Settings
    from ingest.pipeline import ingest
    from knowledge.store import open_knowledge_base

    store = tmp_path_factory.mktemp("kb") / "store"
    ingest([corpus_dir], open_knowledge_base(Settings(store=store)))
    return store


# -------------------------------------------------------------------------------------- servers


@pytest.fixture
def live_server():
    """Serve ASGI apps on free loopback ports: `srv = live_server(app)`; all stopped after the test."""
    started: list[LiveServer] = []

    def serve(app) -> LiveServer:
        started.append(LiveServer(app).__enter__())
        return started[-1]

    yield serve
    for srv in reversed(started):
        srv.__exit__(None, None, None)


def _chroma_cli() -> str:
    local = Path(sys.executable).with_name("chroma")
    return str(local) if local.exists() else (shutil.which("chroma") or "chroma")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` on a free loopback port; yields its URL."""
    import httpx

    path, port = tmp_path_factory.mktemp("chroma-server"), free_port()
    log = open(path.parent / "chroma.log", "w")
    proc = subprocess.Popen([_chroma_cli(), "run", "--path", str(path / "data"), "--host", "127.0.0.1",
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
