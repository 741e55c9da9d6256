"""Fakes shared by the tests: pure-logic stand-ins for a generator, a retriever, an answerer, and
the service app built on them. A fake is only ever the stand-in of a unit test of pure logic; every
part they stand for is also tested for real (tests/test_service_model.py, test_generator.py, ...).
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

from base.prompt import CommentInput, Passage, PromptStyle
from responder.responder import Reply, Responder
from responder.service.settings import ServiceSettings
from tests.support import SIGN_OFF


class FakeGenerator:
    """Replies `Echo: <comment>` plus junk a real model might add; records every batch (its comments
    in `batches`, the items themselves in `items`).

    `gate` (when set) holds each batch until the test releases it; `delay` sleeps per batch.
    """

    model_name = "fake-model"
    adapter_name = "fake-adapter"

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        self.delay = delay
        self.gate = gate
        self.batches: list[list[str]] = []
        self.items: list[CommentInput] = []
        self.started = threading.Event()

    def generate(self, items: Sequence[CommentInput], style: PromptStyle) -> list[str]:
        self.batches.append([i.comment for i in items])
        self.items += list(items)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        time.sleep(self.delay)
        return [f"Echo: {i.comment}<|im_end|>\n{style.sign_off}\nNote: I am an AI language model."
                for i in items]


class FakeRetriever:
    def search(self, text: str, top_k: int = 3, video=None) -> list[Passage]:
        if "xgboost" not in text.lower():
            return []
        return [Passage("Tune the learning rate and the number of trees together.", "Tuning XGBoost",
                        "Trees", "articles/xgboost.md", "https://example.org/xgboost", None, 0.71)][:top_k]


def make_app(generator, triage=None, **overrides):
    """The service over `generator` and the fake retriever, small queues, no store."""
    from responder.service.app import create_app

    settings = ServiceSettings(**{"max_batch_size": 8, "max_wait_ms": 100, "queue_size": 16,
                           "store": "/nonexistent", **overrides})
    return create_app(settings, Responder(generator, SERVICE_STYLE, FakeRetriever()), triage)


SERVICE_STYLE = PromptStyle(sign_off=SIGN_OFF)


class StubAnswerer:
    """An answerer whose reply a test can predict."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def respond_many(self, requests):
        self.asked += [r.comment for r in requests]
        passage = Passage(text="...", title="Bootstrap Confidence Intervals", url="https://blog.test/bootstrap")
        return [Reply("Resample with replacement, then take percentiles.", [passage], True, "stub", None)
                for _ in requests]
