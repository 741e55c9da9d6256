"""The real LocalGenerator (tiny model + a peft adapter) behind the real service, over HTTP.

The app is built from settings alone, as `responder serve` builds it: the model loads in the
background, /readyz turns 200 when it is loaded, concurrent requests share batched generates
(static) or one running batch (continuous), with the same replies.
"""

from __future__ import annotations

import time

import httpx
import pytest

from responder.service.settings import ServiceSettings
from tests.support import HOSTILE, SIGN_OFF, LiveServer, post_many, run_responder_cli

pytestmark = pytest.mark.integration  # real HTTP, real CLI processes


def wait_ready(srv: LiveServer, seconds: float = 120) -> None:
    """Until /readyz answers 200 (the model loaded in the background), or fail with /healthz."""
    deadline = time.time() + seconds
    while httpx.get(srv.url + "/readyz").status_code != 200:
        assert time.time() < deadline, httpx.get(srv.url + "/healthz").json()
        time.sleep(0.1)


def serve_four(tiny_adapter, tmp_path, batching: str) -> tuple[dict, list[str], str]:
    """/healthz, the replies to four concurrent comments, and /metrics, from a real server."""
    from responder.service.app import create_app

    # A long max_wait: a static batch closes when the 3rd request arrives, however slowly they come
    # (the hostile comment is screened before the queue: it never reaches the model). Redrafting off:
    # the tiny model writes one garbled reply to every comment, and which comment keeps a reply given
    # twice depends on the order replies finish in, which batching changes (tests/test_continuous.py
    # compares the lanes' redrafts).
    settings = ServiceSettings(adapter=tiny_adapter, quantization="none", device="cpu", store=tmp_path / "none",
                               max_new_tokens=8, max_batch_size=3, max_wait_ms=20_000, batching=batching,
                               redrafts=0)
    with LiveServer(create_app(settings)) as srv:
        wait_ready(srv)
        health = httpx.get(srv.url + "/healthz").json()
        responses = post_many(srv.url + "/respond", ["thank you so much!", "first!", HOSTILE, "how do I tune xgboost?"])
        metrics = httpx.get(srv.url + "/metrics").text
    assert health["adapter"] == tiny_adapter.parent.name and health["quantization"] == "none"
    assert health["knowledge_base"].startswith("none:")
    hostile = responses.pop(2).json()
    assert hostile["reply"] == "" and hostile["intent"] == "instructions"
    # Served without a store: the classifier loaded with the model; no passage answers the question.
    triaged = [(r.json()["intent"], r.json()["needs_creator"]) for r in responses]
    assert triaged[0] == ("thanks", False) and triaged[2] == ("question", True)
    for r in responses:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["reply"].endswith(SIGN_OFF) and body["reply"].count(SIGN_OFF) == 1
        assert "<|im_start|>" not in body["reply"] and "<|im_end|>" not in body["reply"]
        assert body["used_context"] is False and body["adapter"] == tiny_adapter.parent.name
    return health, [r.json()["reply"] for r in responses], metrics


def test_real_model_through_the_service(tiny_adapter, tmp_path):
    _, static_replies, metrics = serve_four(tiny_adapter, tmp_path, "static")
    # One generate for the three concurrent requests that reach the model.
    assert "responder_batch_size_count 1.0" in metrics and "responder_batch_size_sum 3.0" in metrics
    # Continuous batching (the default) answers with the very same replies.
    _, continuous_replies, _ = serve_four(tiny_adapter, tmp_path, "continuous")
    assert continuous_replies == static_replies


def test_cli_respond_json(tiny_adapter, tmp_path):
    import json

    out = run_responder_cli("respond", "thanks Nadia!", "--adapter", str(tiny_adapter), "--json", "--max-new-tokens", "6",
               "--device", "cpu", "--store", str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["reply"].endswith(SIGN_OFF) and body["sources"] == [] and body["used_context"] is False
    assert body["adapter"] == tiny_adapter.parent.name


def test_cli_respond_answers_a_file_of_comments_as_a_table(tiny_adapter, tmp_path):
    comments = tmp_path / "comments.txt"
    comments.write_text("thanks Nadia!\n\nfirst!\n")
    out = run_responder_cli("respond", "--file", str(comments), "--adapter", str(tiny_adapter), "--max-new-tokens", "6",
               "--device", "cpu", "--store", str(tmp_path / "none"), env={"COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    assert "thanks Nadia!" in out.stdout and "first!" in out.stdout
    assert out.stdout.count("Keep exploring! - Nadia") == 2  # one reply each, sign-off once
    assert "2 comment(s) in one batch" in out.stdout


def test_cli_respond_with_an_unreadable_file_is_one_line(tmp_path):
    out = run_responder_cli("respond", "--file", str(tmp_path / "missing.txt"))
    assert out.returncode == 2
    assert out.stderr.startswith("Error: cannot read comments file") and out.stderr.count("\n") == 1


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_the_model_loads_and_computes_in_one_thread(tiny_adapter, tmp_path, monkeypatch, batching):
    """Loaded in one thread and run in another, the model's OpenMP threads outnumber the cores and
    every step waits for them to wake (`responder/service/model_thread.py`)."""
    import threading

    import responder.factory
    from engine.generation import LocalGenerator
    from engine.inflight import ContinuousDecoder
    from responder.service.app import create_app

    threads: dict[str, set[int]] = {"load": set(), "compute": set()}

    def recorded(kind: str, fn):
        def call(*args, **kwargs):
            threads[kind].add(threading.get_ident())
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(responder.factory, "build_responder", recorded("load", responder.factory.build_responder))
    for cls, name in ((LocalGenerator, "generate"), (ContinuousDecoder, "join"), (ContinuousDecoder, "step")):
        monkeypatch.setattr(cls, name, recorded("compute", getattr(cls, name)))
    settings = ServiceSettings(adapter=tiny_adapter, quantization="none", device="cpu", store=tmp_path / "none",
                        max_new_tokens=4, max_wait_ms=0, batching=batching)
    with LiveServer(create_app(settings)) as srv:
        wait_ready(srv)
        assert all(r.status_code == 200 for r in post_many(srv.url + "/respond", ["first!", "thanks a lot!"]))
    assert len(threads["load"]) == 1 and threads["compute"] == threads["load"]


def test_a_reply_still_weak_after_its_redrafts_says_why(tiny_adapter, tmp_path):
    """The tiny model answers a question with noise: redrafted twice (the default), still no answer,
    and the response says so in fixed words (`weak`), beside needs_creator."""
    from responder.service.app import create_app

    settings = ServiceSettings(adapter=tiny_adapter, quantization="none", device="cpu", store=tmp_path / "none",
                               max_new_tokens=8)
    with LiveServer(create_app(settings)) as srv:
        wait_ready(srv)
        body = httpx.post(srv.url + "/respond", json={"comment": "how do I tune xgboost?"}, timeout=120).json()
    assert body["intent"] == "question" and body["needs_creator"] is True
    assert body["weak"] and "xgboost" not in body["weak"]  # why, never quoting the comment
