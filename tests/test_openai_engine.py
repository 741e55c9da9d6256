"""The OpenAI-compatible backend against a real engine: `transformers serve` on loopback (issue 13.6).

One `transformers serve` subprocess (CPU, float32, offline) serves two local models on demand: a
LoRA adapter merged into SmolLM2-135M with `finetune merge` (real words), and conftest's parrot (a
tiny model trained to say one reply, its sign-off, then junk: whether the engine stops at the
sign-off shows). What the engine does is its own: generation, `max_tokens`, `stop`, greedy
decoding, the answer's shape, its error statuses.

The backend speaks vLLM's dialect (token-id prompts, several per request, `repetition_penalty`),
which `transformers serve` refuses (the first test pins what a user then sees). The other tests
carry the request across with `tests.openai_engine.VLLMDialect`, a transport that only rewrites
those three things, so the wire format of token-id prompts stays checked against a fake
(tests/test_generator.py), not an engine. See tests/openai_engine.py.
"""

from __future__ import annotations

import os
import signal

import pytest

from engine.decoding import Decoding
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, encode_prompt
from tests.openai_engine import TransformersServe, VLLMDialect, serve_missing
from tests.support import NADIA, SIGN_OFF, seeded_lora_adapter

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(serve_missing() is not None, reason=serve_missing() or "")]

# Short budgets keep the 135M model fast on two cores; thanks get the short one.
DECODING = Decoding(max_new_tokens=16, short_reply_tokens=8)
COMMENTS = ["Thanks, great video!",
            "How do I choose the number of clusters for k-means on my sales data?",
            "first!"]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with TransformersServe(tmp_path_factory.mktemp("transformers-serve") / "serve.log") as server:
        yield server


@pytest.fixture(scope="module")
def merged_model(tmp_path_factory, base_model_dir):
    """A LoRA adapter on SmolLM2-135M (non-zero B, as after training), merged by `finetune merge`'s code."""
    from base.adapter_info import read_adapter_info
    from finetune.merge import merge

    run = tmp_path_factory.mktemp("run")
    seeded_lora_adapter(base_model_dir, run / "adapter", rank=8, std=0.002, seed=0)
    out = run / "merged"
    merge(read_adapter_info(run), str(base_model_dir), out, "bfloat16")
    return out


def generator(engine, model_dir, tokenizer, decoding=DECODING, timeout_s=300.0):
    """The backend as the service builds it, its HTTP client carrying vLLM's dialect to the engine."""
    import httpx

    from responder.generators.openai_compatible import OpenAIGenerator

    dialect = VLLMDialect(tokenizer)
    client = httpx.Client(transport=dialect, timeout=timeout_s)
    gen = OpenAIGenerator(engine.url + "/v1", str(model_dir), tokenizer, "smollm2-merged", "run",
                          client=client, decoding=decoding)
    return gen, dialect


def test_the_request_as_sent_is_refused_with_the_engines_reason(engine, merged_model, tokenizer):
    """Pointed straight at `transformers serve`, the backend fails with one line that says why."""
    from responder.generators.openai_compatible import OpenAIGenerator

    gen = OpenAIGenerator(engine.url + "/v1", str(merged_model), tokenizer, "m", None, decoding=DECODING)
    with pytest.raises(UserError, match=r"refused the request \(422\).*Unexpected fields.*repetition_penalty"):
        gen.generate([CommentInput(COMMENTS[0])], NADIA)
    plain = OpenAIGenerator(engine.url + "/v1", str(merged_model), tokenizer, "m", None,
                            decoding=Decoding(repetition_penalty=1.0))
    with pytest.raises(UserError, match=r"refused the request \(400\).*prompt must be a string") as info:
        plain.generate([CommentInput(COMMENTS[0])], NADIA)
    assert "\n" not in str(info.value)


def test_merged_adapter_replies_within_budget_through_the_responder(engine, merged_model, tokenizer):
    """Three comments, one `respond_many`: a reply to each, each within its budget, signed once."""
    from responder.responder import Responder

    gen, dialect = generator(engine, merged_model, tokenizer)
    replies = Responder(gen, NADIA).respond_many([CommentInput(c) for c in COMMENTS])

    assert len(replies) == 3
    for comment, reply in zip(COMMENTS, replies):
        body = reply.reply.removesuffix(SIGN_OFF).strip()
        assert len(body.split()) >= 2, f"empty reply to {comment!r}: {reply.reply!r}"
        assert reply.reply.endswith(SIGN_OFF) and reply.reply.count(SIGN_OFF) == 1
        assert reply.model == "smollm2-merged" and reply.adapter == "run"
    # One engine request per prompt, each the exact prompt the backend built, each within its budget.
    assert len(dialect.exchanges) == 3
    for comment in COMMENTS:
        ids = encode_prompt(tokenizer, NADIA, CommentInput(comment))
        [(sent, answer)] = [(s, a) for s, a in dialect.exchanges if tokenizer(s["prompt"])["input_ids"] == ids]
        budget = DECODING.budget(comment)
        assert sent["max_tokens"] == budget and sent["stop"] == [SIGN_OFF] and sent["temperature"] == 0.0
        assert sent["frequency_penalty"] == pytest.approx(DECODING.repetition_penalty - 1.0)
        assert 0 < answer["usage"]["completion_tokens"] <= budget
        assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    assert {s["max_tokens"] for s, _ in dialect.exchanges} == {8, 16}  # thanks got the short budget
    assert "POST /v1/completions HTTP/1.1\" 200" in engine.log_text()


def test_the_engine_stops_at_the_sign_off(engine, parrot, tokenizer):
    """The parrot goes on past its sign-off unless stopped (tests/test_generator.py shows it
    locally); through the engine its completion ends at the sign-off, well inside the budget."""
    gen, dialect = generator(engine, parrot.model_dir, tokenizer,
                             Decoding(max_new_tokens=40, short_reply_tokens=40))
    raw = gen.generate([CommentInput(parrot.comment)] * 2, parrot.style)

    assert raw == [f"{parrot.reply}\n{SIGN_OFF}"] * 2  # the engine keeps the stop text; vLLM drops it
    says = len(tokenizer(parrot.says, add_special_tokens=False)["input_ids"])
    for _, answer in dialect.exchanges:
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert answer["usage"]["completion_tokens"] < says < 40


def test_engine_failures_are_upstream_errors(engine, parrot, tokenizer):
    """The engine's 500 (a model it cannot load) is a 502 `UpstreamError`; an engine that hangs
    (stopped with SIGSTOP) times out into a 503 one. Neither is the user's `UserError`."""
    gen, _ = generator(engine, parrot.model_dir.parent / "no-such-model", tokenizer)
    with pytest.raises(UpstreamError, match=r"/v1/completions answered 500") as info:
        gen.generate([CommentInput("thanks!")], parrot.style)
    assert info.value.status == 502

    gen, _ = generator(engine, parrot.model_dir, tokenizer, timeout_s=1.0)
    os.kill(engine.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(UpstreamError, match=r"unreachable") as info:
            gen.generate([CommentInput("thanks!")], parrot.style)
    finally:
        os.kill(engine.proc.pid, signal.SIGCONT)
    assert info.value.status == 503
