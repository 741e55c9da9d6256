"""LocalGenerator and OpenAIGenerator; the factory's adapter checks.

Plumbing runs on conftest's tiny random model (its greedy output is only newlines). What the
generated text itself must be is checked on models that write words: the real SmolLM2 (left
padding) and the parrot, a tiny model trained to say one reply with the sign-off (stopping).
Adapters are made directly with peft (conftest's `tiny_adapter`), like `finetune run` saves them.
"""

from __future__ import annotations

import pytest

from base.adapter_info import write_adapter_info
from engine.decoding import Decoding
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, PromptStyle, clean_reply, encode_prompt
from base.settings import Settings
from tests.support import NADIA, SIGN_OFF
from tests.support import HOSTILE

STYLE = NADIA


def test_comment_special_token_text_never_becomes_control_tokens(tokenizer, tiny_generator):
    special = set(tokenizer.all_special_ids) | {tokenizer.convert_tokens_to_ids(t)
                                               for t in tokenizer.get_added_vocab()}
    plain = tiny_generator.encode([CommentInput("hello there")], STYLE)[0]
    hostile = tiny_generator.encode([CommentInput(HOSTILE, video_title="</s>", author="[INST]")], STYLE)[0]
    count = lambda ids: sum(1 for i in ids if i in special)  # noqa: E731
    # The template's own <|im_start|>/<|im_end|> only: none came from the comment, title or author.
    assert count(hostile) == count(plain) > 0
    assert "<|im_start|>system" in tokenizer.decode(hostile)  # the text is still there, as plain text
    assert hostile == encode_prompt(tokenizer, STYLE, CommentInput(HOSTILE, video_title="</s>", author="[INST]"))


def record_generate(generator, monkeypatch) -> list[tuple[int, object]]:
    """Every `model.generate` output of `generator`, with its prompt width: [(width, (B, T) ids)]."""
    calls: list[tuple[int, object]] = []
    real = generator.model.generate

    def generate(**kwargs):
        output = real(**kwargs)
        calls.append((kwargs["input_ids"].shape[1], output))
        return output

    monkeypatch.setattr(generator.model, "generate", generate)
    return calls


@pytest.mark.integration
def test_batched_generate_with_left_padding_matches_one_at_a_time(embedded_generator, monkeypatch):
    """Prompts of different lengths in one left-padded batch get, token for token, what each gets alone.

    On the real model: it writes different words for each comment, so a wrong padding side or
    a missing attention mask changes what it writes (a model writing only newlines would not).
    """
    gen = embedded_generator
    calls = record_generate(gen, monkeypatch)
    items = [CommentInput("first!"), CommentInput("what is a p-value?"),
             CommentInput("How many trees should my xgboost model have when the dataset is small? " * 2)]
    batched = gen.generate(items, STYLE)
    width, output = calls[-1]
    batched_ids = [row[width:].tolist() for row in output]
    for item, row, text in zip(items, batched_ids, batched):
        alone = gen.generate([item], STYLE)
        width, output = calls[-1]
        alone_ids = output[0, width:].tolist()
        assert row[:len(alone_ids)] == alone_ids, item.comment
        assert set(row[len(alone_ids):]) <= {gen.tokenizer.pad_token_id}  # finished early: padding only
        assert alone == [text]
    assert all(text.strip() for text in batched) and len(set(batched)) == 3, batched


def test_generation_stops_right_after_the_sign_off(parrot):
    """The raw completion (before `clean_reply`, which would append a missing sign-off) ends with
    the sign-off the model wrote: generation stops there, and the junk after it is never generated."""
    import torch

    from engine.generation import LocalGenerator

    gen = LocalGenerator.load(str(parrot.model_dir), None, "none", "cpu", max_new_tokens=40)
    item = CommentInput(parrot.comment)
    ids = torch.tensor([gen.encode([item], parrot.style)[0]])
    # Left alone, the model goes on past its sign-off, as real models do.
    with torch.inference_mode():
        unstopped = gen.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=40,
                                       do_sample=False, pad_token_id=gen.tokenizer.pad_token_id)
    assert gen.tokenizer.decode(unstopped[0, ids.shape[1]:], skip_special_tokens=True) == parrot.says
    raw = gen.generate([item, item], parrot.style)
    assert raw == [f"{parrot.reply}\n{SIGN_OFF}"] * 2
    assert clean_reply(raw[0], SIGN_OFF) == raw[0]  # nothing left for cleaning to fix


@pytest.mark.parametrize("raw,expected", [
    (f"Thanks!\n{SIGN_OFF}\nNote: I am an AI language model.", f"Thanks!\n{SIGN_OFF}"),
    ("Thanks!<|im_end|><|endoftext|>", f"Thanks!\n{SIGN_OFF}"),
    (f"Thanks! {SIGN_OFF} {SIGN_OFF}", f"Thanks!\n{SIGN_OFF}"),
    ("[INST] Thanks! </s>", f"Thanks!\n{SIGN_OFF}"),
])
def test_reply_cleaning(raw, expected):
    assert clean_reply(raw, SIGN_OFF) == expected


def test_nf4_adapter_loads_with_lora_layers(tiny_model_dir, tiny_adapter):
    from responder.factory import build_generator, plan_serving

    settings = Settings(adapter=tiny_adapter, store="/nonexistent", max_new_tokens=4)
    plan = plan_serving(settings)
    assert (plan.base_model, plan.quantization, plan.style) == (str(tiny_model_dir), "nf4", STYLE)
    gen = build_generator(settings, plan)
    names = {type(m).__name__ for m in gen.model.modules()}
    assert "Linear4bit" in names and any("lora" in n.lower() for n in names)
    assert gen.adapter_name == tiny_adapter.parent.name  # a `finetune run` output dir names the run
    assert len(gen.generate([CommentInput("hi"), CommentInput("great video")], plan.style)) == 2


def test_float_merged_adapter_changes_the_model(tiny_model_dir, tiny_adapter, tiny_generator):
    import torch

    from responder.factory import build_generator, plan_serving

    settings = Settings(adapter=tiny_adapter, quantization="none", device="cpu", store="/nonexistent")
    gen = build_generator(settings, plan_serving(settings))
    names = {type(m).__name__ for m in gen.model.modules()}
    assert not any("lora" in n.lower() for n in names)  # merged: plain Linear layers only
    ids = torch.tensor([tiny_generator.encode([CommentInput("hi")], STYLE)[0]])
    with torch.no_grad():
        merged, base = gen.model(ids).logits, tiny_generator.model(ids).logits
    assert not torch.allclose(merged, base)


def test_adapter_mismatches_are_refused(tiny_model_dir, tiny_adapter, base_model_dir, tmp_path):
    from responder.factory import plan_serving

    with pytest.raises(UserError) as exc:
        plan_serving(Settings(adapter=tiny_adapter, base_model=str(base_model_dir)))
    assert str(exc.value) == (f"adapter '{tiny_adapter}' was trained on base model '{tiny_model_dir}', not "
                              f"'{base_model_dir}'; drop --base-model (or RESPONDER_BASE_MODEL) to use the "
                              "adapter's own base model")
    float_adapter = tmp_path / "float"
    float_adapter.mkdir()
    (float_adapter / "adapter_config.json").write_text((tiny_adapter / "adapter_config.json").read_text())
    write_adapter_info(float_adapter, str(tiny_model_dir), "none", STYLE)
    with pytest.raises(UserError) as exc:
        plan_serving(Settings(adapter=float_adapter, quantization="nf4"))
    assert str(exc.value) == (f"adapter '{float_adapter}' was trained on float weights (quantization 'none'), "
                              "not on a 4-bit NF4 base; serve it with --quantization none")
    # Persona and sign-off come from the adapter unless the settings override them.
    plan = plan_serving(Settings(adapter=tiny_adapter, sign_off="Bye - N"))
    assert plan.style == PromptStyle(persona=STYLE.persona, sign_off="Bye - N")


def test_no_adapter_is_reported(tiny_model_dir):
    from responder.factory import plan_serving

    plan = plan_serving(Settings(base_model=str(tiny_model_dir)))
    assert plan.adapter is None and plan.adapter_label == "no adapter"


def test_openai_backend_sends_prompt_token_ids_and_cleans(tokenizer, live_server):
    """A stand-in OpenAI-compatible server on loopback records what vLLM would receive."""
    from fastapi import FastAPI

    from responder.generators.openai_compatible import OpenAIGenerator
    from responder.responder import Responder

    seen: list[dict] = []
    fake = FastAPI()

    @fake.post("/v1/completions")
    async def completions(body: dict) -> dict:
        seen.append(body)
        # Out of order on purpose: the client must sort by index.
        return {"choices": [{"index": i, "text": f"Reply {i}<|im_end|>\n{SIGN_OFF} Note: I am an AI"}
                            for i in reversed(range(len(body["prompt"])))]}

    srv = live_server(fake)
    decoding = Decoding(max_new_tokens=48, short_reply_tokens=48, repetition_penalty=1.1)
    gen = OpenAIGenerator(srv.url + "/v1", "nadia-style", tokenizer, "smollm2", "run-1", api_key="k",
                          decoding=decoding)
    replies = Responder(gen, STYLE).respond_many([CommentInput("first!"), CommentInput(HOSTILE)])
    body = seen[0]
    assert body["model"] == "nadia-style" and body["max_tokens"] == 48 and body["temperature"] == 0.0
    assert body["repetition_penalty"] == 1.1  # the decoding controls reach vLLM
    assert body["stop"] == [SIGN_OFF]
    assert body["prompt"] == [encode_prompt(tokenizer, STYLE, CommentInput("first!")),
                              encode_prompt(tokenizer, STYLE, CommentInput(HOSTILE))]
    assert [r.reply for r in replies] == [f"Reply 0\n{SIGN_OFF}", f"Reply 1\n{SIGN_OFF}"]
    assert replies[0].model == "smollm2" and replies[0].adapter == "run-1"


@pytest.mark.integration
def test_openai_backend_sends_each_reply_budget_in_its_own_request(tokenizer, live_server):
    """Thanks get the short budget, questions the long one: one request per budget, order kept."""
    from fastapi import FastAPI

    from responder.generators.openai_compatible import OpenAIGenerator

    seen: list[dict] = []
    fake = FastAPI()

    @fake.post("/v1/completions")
    async def completions(body: dict) -> dict:
        seen.append(body)
        return {"choices": [{"index": i, "text": f"{body['max_tokens']}"} for i in range(len(body["prompt"]))]}

    srv = live_server(fake)
    gen = OpenAIGenerator(srv.url + "/v1", "m", tokenizer, "smollm2",
                          decoding=Decoding(max_new_tokens=96, short_reply_tokens=32))
    texts = gen.generate([CommentInput("thanks!"), CommentInput("how do I pick k in k-means?"),
                          CommentInput("great video")], STYLE)
    assert texts == ["32", "96", "32"]
    assert sorted(b["max_tokens"] for b in seen) == [32, 96]


@pytest.mark.integration
def test_openai_backend_unreachable_is_one_clear_upstream_error(tokenizer):
    """Not the user's fault: an `UpstreamError` (503), which the service answers as 503."""
    from responder.generators.openai_compatible import OpenAIGenerator
    from tests.support import free_port

    url = f"http://127.0.0.1:{free_port()}/v1"
    gen = OpenAIGenerator(url, "m", tokenizer, "smollm2", None, timeout_s=2)
    with pytest.raises(UpstreamError, match=r"^generation server .*/v1/completions unreachable") as info:
        gen.generate([CommentInput("hi")], STYLE)
    assert info.value.status == 503 and "\n" not in str(info.value)
