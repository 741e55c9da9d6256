"""Hardening of the service (issue 11): no open door by accident, bounded prompts and bodies, one
bad comment fails alone, /retrieve in its own lane, no paths leave the process, a graceful stop.

Over real HTTP on loopback with deterministic fakes (tests/test_service.py's FakeGenerator; a
generator that carries the real SmolLM2 tokenizer where tokens are counted). Ingest, the replies
CSV and the Dockerfile have their own tests in tests/test_hardening_files.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest

from base.errors import UserError
from base.prompt import CommentInput, Passage, encode_prompt
from responder.responder import CommentFailed, Responder
from responder.service.settings import ServiceSettings
from tests.fakes import SERVICE_STYLE as STYLE
from tests.fakes import FakeGenerator, FakeRetriever, make_app
from tests.support import LiveServer, free_port, run_responder_cli

pytestmark = pytest.mark.integration  # real HTTP on loopback

KEY = {"Authorization": "Bearer s3cret"}
TOO_LARGE = ("request body is over {} bytes (RESPONDER_MAX_BODY_BYTES); send less (split a /respond/batch), "
             "or raise the limit on the server")


class CountingGenerator(FakeGenerator):
    """The fake generator with the real model's tokenizer (comments are counted in its tokens) and a
    context window of `context` tokens."""

    def __init__(self, tokenizer, context: int = 8192, max_new_tokens: int = 96, **kwargs) -> None:
        super().__init__(**kwargs)
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=context))
        self.prompts: list[list[int]] = []

    def generate(self, items, style):
        self.prompts += [encode_prompt(self.tokenizer, style, item) for item in items]
        return super().generate(items, style)


def raw_post(url: str, body: bytes, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": "application/json", **(headers or {})}, timeout=60)


# --------------------------------------------------------------------------------------- 1. auth


def test_a_blank_api_key_is_a_startup_error():
    for blank in ("", "   "):
        with pytest.raises(UserError, match="RESPONDER_API_KEY is set but blank"):
            make_app(FakeGenerator(), api_key=blank)


def test_cli_serve_refuses_a_blank_key_and_an_open_public_bind_in_one_line():
    blank = run_responder_cli("serve", "--port", str(free_port()), env={"RESPONDER_API_KEY": " "})
    assert blank.returncode == 2 and blank.stderr.startswith("Error: RESPONDER_API_KEY is set but blank")
    assert blank.stderr.count("\n") == 1
    public = run_responder_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert public.returncode == 2 and public.stderr.count("\n") == 1
    assert public.stderr.startswith("Error: refusing to serve on 0.0.0.0 without an API key")
    assert "--allow-no-auth" in public.stderr


def test_only_loopback_is_served_without_a_key():
    from responder.cli.serve import check_exposure

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(ServiceSettings(host=host))
    for host in ("0.0.0.0", "192.168.1.5", "::", "myhost.example"):
        with pytest.raises(UserError, match="refusing to serve"):
            check_exposure(ServiceSettings(host=host))
        check_exposure(ServiceSettings(host=host, allow_no_auth=True))
        check_exposure(ServiceSettings(host=host, api_key="k"))


# ------------------------------------------------------------------------------ 3. body limits


def test_a_body_over_the_limit_is_413_before_parsing_and_before_auth():
    gen = FakeGenerator()
    with LiveServer(make_app(gen, api_key="s3cret", max_body_bytes=4096)) as srv:
        declared = raw_post(srv.url + "/respond", b" " * 5000)  # Content-Length 5000: not even JSON
        unauthorized_big = raw_post(srv.url + "/retrieve", b"x" * 3_000_000)

        def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"[" + b'{"comment": "hi"},' * 40

        streamed = httpx.post(srv.url + "/respond/batch", content=chunks(), headers={**KEY,
                              "content-type": "application/json"}, timeout=60)
        small = httpx.post(srv.url + "/respond", json={"comment": "hi"}, headers=KEY)
        metrics = httpx.get(srv.url + "/metrics", headers=KEY).text
    for r in (declared, unauthorized_big, streamed):
        assert (r.status_code, r.json()) == (413, {"detail": TOO_LARGE.format(4096)})
    assert "content-length" not in streamed.request.headers  # the streamed case really streamed
    assert small.status_code == 200 and gen.batches == [["hi"]]  # nothing refused reached the model
    assert 'responder_refused_total{reason="body_too_large"} 3.0' in metrics


def test_batch_item_cap_comes_before_item_validation():
    with LiveServer(make_app(FakeGenerator(), max_body_bytes=10_000_000)) as srv:
        # 100,000 invalid items: validating them would be 422 (and slow); the cap answers first.
        r = httpx.post(srv.url + "/respond/batch", json=[{"comment": ""}] * 100_000, timeout=60)
    assert r.status_code == 413
    assert r.json()["detail"] == ("batch has 100000 comments; this server takes at most 16 per request "
                                  "(RESPONDER_QUEUE_SIZE); split it")


# --------------------------------------------------------------------- 2. prompts in model tokens


def test_comments_are_counted_in_model_tokens_after_cleaning(tokenizer):
    gen = CountingGenerator(tokenizer)
    app = create_counting_app(gen)
    with LiveServer(app) as srv:
        shin = httpx.post(srv.url + "/respond", json={"comment": "\ufb2c" * 9000})  # 27,000 chars after NFC
        emoji = httpx.post(srv.url + "/respond", json={"comment": "\U0001F600" * 10_000})
        batch = httpx.post(srv.url + "/respond/batch", json=[{"comment": "ok"}, {"comment": "\U0001F600" * 5000}])
        tags = httpx.post(srv.url + "/respond", json={"comment": "hi" + "\U000E0041" * 9000})  # invisible
        prose = httpx.post(srv.url + "/respond", json={"comment": "how big does my test need to be? " * 300})
    limit = "this server takes at most 3072 (RESPONDER_MAX_COMMENT_TOKENS)"
    assert (shin.status_code, shin.json()["detail"]) == (422, f"body.comment: comment is 36000 model tokens; {limit}")
    assert (emoji.status_code, emoji.json()["detail"]) == (422, f"body.comment: comment is 30000 model tokens; {limit}")
    assert batch.status_code == 422
    assert batch.json()["detail"] == f"body.1.comment: comment is 15000 model tokens; {limit}"
    assert tags.status_code == 200 and gen.batches[0] == ["hi"]  # the tag characters never reach the model
    assert prose.status_code == 200  # 10,000 characters of English fit


def create_counting_app(gen, retriever=None, **overrides):
    from responder.service.app import create_app

    settings = ServiceSettings(**{"max_batch_size": 8, "max_wait_ms": 50, "queue_size": 16, "store": "/nonexistent",
                           **overrides})
    return create_app(settings, Responder(gen, STYLE, retriever or FakeRetriever()))


class LongPassages:
    """Three on-topic passages of about 300 tokens each, with a long title."""

    def search(self, text, top_k=3, video=None):
        body = "Tune the learning rate and the number of trees together, then the depth. " * 20
        return [Passage(body, f"Tuning XGBoost part {n}", "Trees", f"xgb{n}.md", "", None, 0.8) for n in range(3)]


def test_passages_shrink_or_go_so_prompt_and_reply_fit_the_context(tokenizer):
    comment = CommentInput("how do I tune xgboost? " * 10)
    bare_prompt = len(encode_prompt(tokenizer, STYLE, comment))  # the prompt without passages

    def responder(context: int) -> Responder:
        return Responder(CountingGenerator(tokenizer, context=context, max_new_tokens=96), STYLE, LongPassages())

    budget = STYLE.passage_tokens  # all passages of one prompt, in model tokens (base.prompt)
    roomy, tight, tiny = responder(8192), responder(bare_prompt + 96 + budget // 2), responder(bare_prompt + 96 + 10)
    full, cut, bare = (r.respond(comment) for r in (roomy, tight, tiny))
    assert len(full.sources) >= 2 and full.used_context
    assert len(roomy.generator.prompts[0]) > bare_prompt + budget * 0.9  # the passages fill their budget
    assert len(cut.sources) >= 1 and cut.used_context  # cut to the room that is left
    assert bare_prompt + budget * 0.3 < len(tight.generator.prompts[0]) <= tight.context - 96
    assert bare.sources == [] and not bare.used_context and len(tiny.generator.prompts[0]) == bare_prompt
    with pytest.raises(CommentFailed, match=f"does not fit the model's {bare_prompt + 50}-token context"):
        responder(bare_prompt + 50).respond(comment)


# ------------------------------------------------------------------ 4. failures stay with their comment


def test_lone_surrogates_and_non_utf8_bodies_are_422():
    with LiveServer(make_app(FakeGenerator())) as srv:
        comment = raw_post(srv.url + "/respond", b'{"comment": "hi \\ud800 there"}')
        author = raw_post(srv.url + "/respond", b'{"comment": "hi", "author": "\\udfff"}')
        title = raw_post(srv.url + "/respond/batch", b'[{"comment": "hi", "video_title": "a\\ud83d"}]')
        latin1 = raw_post(srv.url + "/respond", '{"comment": "caf\u00e9"}'.encode("latin-1"))
        retrieve = raw_post(srv.url + "/retrieve", b'{"comment": "\\ud800"}')
    assert (comment.status_code, comment.json()["detail"]) == (422, (
        "body.comment: comment contains a lone surrogate (U+D800 at character 3), which is not text; "
        "send valid UTF-8"))
    assert author.status_code == 422 and author.json()["detail"].startswith("body.author: author contains a lone")
    assert title.status_code == 422 and title.json()["detail"].startswith("body.0.video_title: video_title contains")
    assert (latin1.status_code, latin1.json()["detail"]) == (
        422, "body: not UTF-8 (byte 0xe9 at offset 16); send UTF-8 JSON")
    assert retrieve.status_code == 422


class Fragile(FakeGenerator):
    """Fails any batch holding a comment with "boom" (a tokenizer or model error on one input)."""

    def generate(self, items, style):
        self.batches.append([i.comment for i in items])
        if any("boom" in i.comment for i in items):
            raise RuntimeError("index out of range in self")
        return [f"Echo: {i.comment}" for i in items]


def test_a_comment_that_breaks_generation_fails_alone():
    gen = Fragile()
    with LiveServer(make_app(gen, max_wait_ms=20_000, max_batch_size=3)) as srv:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.post, srv.url + "/respond", json={"comment": c}, timeout=60)
                       for c in ("first fine one", "boom goes this one", "second fine one")]
            results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200, 500, 200]
    assert results[1].json() == {"detail": "internal error; the reason is in the server log"}
    assert sorted(gen.batches[0]) == sorted(["first fine one", "boom goes this one", "second fine one"])
    assert sorted(map(tuple, gen.batches[1:])) == [("boom goes this one",), ("first fine one",),
                                                   ("second fine one",)]  # then one by one


# --------------------------------------------------------------------------- 5. /retrieve lane


class HeldRetriever(FakeRetriever):
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0

    def search(self, text, top_k=3, video=None):
        self.calls += 1
        self.gate.wait(30)
        return super().search(text, top_k, video)


def test_retrieve_has_its_own_bounded_queue_and_never_blocks_replies():
    from responder.service.app import create_app

    retriever = HeldRetriever()
    settings = ServiceSettings(max_batch_size=8, max_wait_ms=0, queue_size=2, retrieve_queue_size=2, store="/nonexistent")
    app = create_app(settings, Responder(FakeGenerator(), STYLE, retriever))
    with LiveServer(app) as srv, ThreadPoolExecutor(3) as pool:
        def ask(n: int):
            return pool.submit(httpx.post, srv.url + "/retrieve", json={"comment": f"xgboost {n}?"}, timeout=60)

        held = [ask(0)]
        deadline = time.time() + 10
        while retriever.calls == 0:  # the first one computing (held) ...
            assert time.time() < deadline
            time.sleep(0.02)
        held += [ask(1), ask(2)]
        while app.state.responder_state.retrieval.depth < 2:  # ... and two queued: the lane is full
            assert time.time() < deadline
            time.sleep(0.02)
        refused = httpx.post(srv.url + "/retrieve", json={"comment": "xgboost?"})
        # Replies neither wait for the held retrieval nor lose queue places to it.
        replies = [httpx.post(srv.url + "/respond", json={"comment": "no context", "use_context": False}, timeout=10)
                   for _ in range(3)]
        retriever.gate.set()
        answered = [f.result() for f in held]
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["detail"].startswith("server busy: retrieval queue is full; retry after")
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert [r.status_code for r in answered] == [200, 200, 200]


def test_retrieve_times_out_with_504():
    from responder.service.app import create_app

    retriever = HeldRetriever()
    app = create_app(ServiceSettings(retrieve_timeout_s=0.3, store="/nonexistent"),
                     Responder(FakeGenerator(), STYLE, retriever))
    with LiveServer(app) as srv:
        r = httpx.post(srv.url + "/retrieve", json={"comment": "xgboost?"})
        retriever.gate.set()
    assert (r.status_code, r.json()["detail"]) == (
        504, "no passages within 0.3 s; retry later or raise RESPONDER_RETRIEVE_TIMEOUT_S")


def test_the_retrieve_lane_rests_while_replies_generate():
    """With share 0.25 and replies busy, each 50 ms batch is followed by about 150 ms of rest."""
    import asyncio

    from responder.service.batcher import Batcher

    def work(items):
        time.sleep(0.05)
        return items

    async def run(busy: bool) -> float:
        lane = Batcher(work, max_batch_size=1, max_wait_ms=0, queue_size=8, yield_to=lambda: busy, share=0.25)
        lane.start()
        start = time.perf_counter()
        for n in range(4):
            await lane.submit(n)
        elapsed = time.perf_counter() - start
        await lane.stop()
        return elapsed

    resting, free = asyncio.run(run(True)), asyncio.run(run(False))
    assert resting >= 4 * 0.05 + 3 * 0.15 - 0.01  # at most a quarter of the time computing
    assert free < resting


def test_the_retrieve_lane_waits_while_replies_gather_a_batch():
    """A retrieval never computes while the replies' batcher holds a half-gathered batch (its
    comments would arrive late and wait a whole batch more), nor just after a reply batch."""
    from responder.service.app import create_app

    computed: list[float] = []

    class Timed(FakeRetriever):
        def search(self, text, top_k=3, video=None):
            if text == "xgboost?":  # the /retrieve request, not the reply's own retrieval
                computed.append(time.perf_counter())
            return []

    app = create_app(ServiceSettings(max_wait_ms=1500, store="/nonexistent"), Responder(FakeGenerator(), STYLE, Timed()))
    with LiveServer(app) as srv, ThreadPoolExecutor(2) as pool:
        state = app.state.responder_state
        reply = pool.submit(httpx.post, srv.url + "/respond", json={"comment": "gathering"}, timeout=60)
        while not state.batcher.gathering:
            time.sleep(0.01)
        asked = time.perf_counter()
        retrieved = httpx.post(srv.url + "/retrieve", json={"comment": "xgboost?"}, timeout=60)
        assert reply.result().status_code == 200 and retrieved.status_code == 200
    done = state.batcher.last_done
    assert len(computed) == 1 and computed[0] > done + 0.9  # after the batch was answered, and a settling second
    assert computed[0] - asked > 1.0


# ---------------------------------------------------------------------- 7. no paths leave the process


class PathLeakingRetriever:
    def search(self, text, top_k=3, video=None):
        return [Passage("Tune the trees.", "Tuning", "Trees", "/home/nadia/blog/posts/xgboost.md", "", None, 0.7)]


def test_responses_carry_names_not_paths():
    from responder.service.app import create_app

    gen = FakeGenerator()
    gen.model_name, gen.adapter_name = "/home/nadia/models/SmolLM2-135M-Instruct", "/home/nadia/runs/nadia/adapter"
    app = create_app(ServiceSettings(store="/nonexistent", max_wait_ms=0), Responder(gen, STYLE, PathLeakingRetriever()))
    with LiveServer(app) as srv:
        replied = httpx.post(srv.url + "/respond", json={"comment": "xgboost?"}).json()
        passages = httpx.post(srv.url + "/retrieve", json={"comment": "xgboost?"}).json()
        health = httpx.get(srv.url + "/healthz").json()
    assert replied["sources"][0]["source"] == "xgboost.md" and passages["passages"][0]["source"] == "xgboost.md"
    assert (replied["model"], replied["adapter"]) == ("SmolLM2-135M-Instruct", "nadia")
    assert "/home/" not in json.dumps([replied, passages, health])


def test_user_errors_lose_their_paths(tmp_path):
    from responder.service.errors import redact_paths

    message = f"the knowledge base at {tmp_path}/store was built with embedder 'x'; see ~/notes/a.txt"
    assert redact_paths(message) == "the knowledge base at store was built with embedder 'x'; see a.txt"
    kept = "generation server http://vllm:8000/v1/completions said 503; split a /respond/batch"
    assert redact_paths(kept) == kept


# ---------------------------------------------------------------------------- 10. graceful stop


def _queue_three(srv):
    pool = ThreadPoolExecutor(3)
    return pool, [pool.submit(httpx.post, srv.url + "/respond", json={"comment": f"c{n}"}, timeout=60)
                  for n in range(3)]


def test_stopping_finishes_queued_requests_within_the_grace_period():
    gate = threading.Event()
    gen = FakeGenerator(gate=gate)
    app = make_app(gen, max_batch_size=1, max_wait_ms=0, shutdown_grace_s=20)
    with LiveServer(app) as srv:
        pool, pending = _queue_three(srv)
        assert gen.started.wait(10)
        while app.state.responder_state.batcher.depth < 2:
            time.sleep(0.02)
        app.state.responder_state.request_drain()
        time.sleep(0.2)
        late = httpx.post(srv.url + "/respond", json={"comment": "late"})
        ready = httpx.get(srv.url + "/readyz")
        gate.set()
        statuses = [f.result().status_code for f in pending]
        pool.shutdown()
    assert statuses == [200, 200, 200]  # queued before the stop: answered
    assert late.status_code == 503 and late.json()["detail"] == "the server is shutting down; retry shortly"
    assert ready.status_code == 503


def test_what_the_grace_period_cannot_finish_is_answered_503():
    gate = threading.Event()
    gen = FakeGenerator(gate=gate)
    app = make_app(gen, max_batch_size=1, max_wait_ms=0, shutdown_grace_s=0.5)
    with LiveServer(app) as srv:
        pool, pending = _queue_three(srv)
        assert gen.started.wait(10)
        while app.state.responder_state.batcher.depth < 2:
            time.sleep(0.02)
        app.state.responder_state.request_drain()
        answers = [f.result() for f in pending]  # the held batch never ends within 0.5 s
        gate.set()
        pool.shutdown()
    assert [r.status_code for r in answers] == [503, 503, 503]
    assert answers[0].json()["detail"].startswith("the server is shutting down; retry")
    assert all(r.headers["Retry-After"] == "5" for r in answers)


_SERVE_FAKE = """
import sys, time, uvicorn
from responder.service.settings import ServiceSettings
from responder.responder import Responder
from responder.service.app import create_app
from tests.fakes import SERVICE_STYLE as STYLE, FakeGenerator
settings = ServiceSettings(max_batch_size=1, max_wait_ms=0, store="/nonexistent", shutdown_grace_s=float(sys.argv[2]))
app = create_app(settings, Responder(FakeGenerator(delay=0.4), STYLE))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            timeout_graceful_shutdown=settings.shutdown_grace_s + 5)
"""


@pytest.mark.parametrize("grace,expected", [(30.0, [200] * 6), (1.0, None)])
def test_sigterm_answers_every_queued_request(grace, expected):
    """A real uvicorn process and a real SIGTERM: each of 6 queued requests (0.4 s each) gets an
    answer, 200 when the grace period allows it, else 503; none is dropped."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _SERVE_FAKE, str(port), str(grace)],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.1)
        with ThreadPoolExecutor(6) as pool:
            pending = [pool.submit(httpx.post, url + "/respond", json={"comment": f"c{n}"}, timeout=60)
                       for n in range(6)]
            time.sleep(0.5)
            proc.terminate()
            statuses = [f.result().status_code for f in pending]  # raises if a connection was dropped
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert statuses == expected if expected else (set(statuses) == {200, 503} and statuses.count(503) >= 2)
