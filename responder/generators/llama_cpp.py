"""Generation on llama.cpp's server, which the service starts and supervises (`--backend llama.cpp`).

What the service's own local path does, said to `llama-server`'s `/completion`:
- the prompt is `base.prompt.encode_prompt`'s token ids (never re-tokenized text), and the reply's
  tokens are decoded here with the same tokenizer, so cleaning, checks and citations see what
  the local path would hand them;
- the adapter is loaded at start and chosen per request (`"lora": [{"id": n, "scale": 1.0}]`): an
  item may name another adapter the server holds (`CommentInput.adapter`), the engine interface
  for one base model serving many creators (with several adapters the prompt cache is off: see
  `_body`);
- the reply budget per comment (`Decoding.budget`) is `n_predict`; greedy unless sampling is set;
  the reply is streamed and, past 60% of its budget, the stream is closed at the first sentence end
  (llama.cpp then stops that sequence), as the local path's `ReplyBudget` ends it; the sign-off and
  the end of turn stop a reply; the repetition penalty is llama.cpp's own, over the last 64 tokens
  of the context (the prompt's tail included, where the local path counts the reply only), and
  there is no n-gram ban (the reply cleaning's repeated-sentence cut still applies);
- the opening ban (no empty reply, no reply that starts with the sign-off, and for a redraft not
  the first token of an earlier draft): llama.cpp's `logit_bias` holds at every position, the ban
  only at the first, so a banned first token is decoded again alone under the ban and the reply
  continued from it (the prompt cache makes the second request cheap); a first token the ban would
  not change costs nothing.
Greedy, yet not bit-for-bit repeatable: llama.cpp's sums differ in the last bits with the batch a
request shares and with its prompt cache (its README says so), so the same comment can get a reply
that parts from the last one late on; the local path repeats itself exactly.
Comments of one call are sent at once, one request each: llama.cpp batches them across its slots.
A server that died is restarted for the next request; the request it failed is an `UpstreamError`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

from base.adapter_info import adapter_display_name
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, PromptStyle, encode_prompt
from engine.decoding import (SOFT_STOP_SHARE, Decoding, decoding_of, draft_opening_ids, opening_ban_ids,
                             sentence_end_token_ids)
from engine.generation import TokenCounts, stop_token_ids
from engine.llama_cpp import LlamaServer, exported_lora, find_llama_server
from responder.generators.upstream import post_json, stream_events

log = logging.getLogger(__name__)

REPEAT_LAST_N = 64  # llama.cpp's default window for its repetition penalty


class LlamaCppGenerator:
    """Replies from a supervised `llama-server`; `generate` sends one request per comment, at once."""

    avoids_openings = True  # a redraft's `avoid_openings` are banned at its first token (base.redraft)
    # llama.cpp batches whatever requests it holds: the service sends comments as they come, as many
    # at a time as the server has slots, and no comment waits for the batch before it to finish
    # (responder/service/state.py).
    server_batching = True

    def __init__(self, server: LlamaServer, tokenizer: Any, model_name: str, adapters: dict[str, int] | None = None,
                 adapter_name: str | None = None, decoding: Decoding | None = None, timeout_s: float = 300.0) -> None:
        import httpx

        self.server = server
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.adapters = dict(adapters or {})  # adapter name -> llama-server's LoRA id
        self.adapter_name = adapter_name  # the one an item gets when it names none
        self.decoding = decoding or Decoding()
        self.stats = TokenCounts()
        self._stats_lock = threading.Lock()
        self.client = httpx.Client(timeout=timeout_s, headers=server.headers,
                                   limits=httpx.Limits(max_connections=server.slots + 4))
        self._pool = concurrent.futures.ThreadPoolExecutor(server.slots, thread_name_prefix="llama.cpp")
        self._stop_ids = stop_token_ids(tokenizer)
        self._sentence_ends = set(sentence_end_token_ids(tokenizer))

    @classmethod
    def from_settings(cls, settings: Any, base_model: str, adapter_dir: Path | None, slots: int) -> "LlamaCppGenerator":
        """Start `llama-server` on the base model's GGUF with the adapter (converted once, when needed)."""
        from engine.models import load_tokenizer, resolve_base_model

        binary, gguf = llama_cpp_files(settings, base_model)
        if settings.context_weight > 0:
            log.warning("context-aware decoding (RESPONDER_CONTEXT_WEIGHT) runs on the local engine only; "
                        "llama.cpp decodes without it")
        base_dir = resolve_base_model(base_model, settings.model_cache)
        loras = [exported_lora(adapter_dir, base_dir)] if adapter_dir is not None else []
        name = adapter_display_name(adapter_dir) if adapter_dir is not None else None
        server = LlamaServer(binary, gguf, loras, slots=slots, threads=settings.llama_threads).start()
        return cls(server, load_tokenizer(base_dir), base_model, {name: 0} if name else {}, name,
                   decoding_of(settings), settings.request_timeout_s)

    @property
    def max_new_tokens(self) -> int:
        return self.decoding.max_new_tokens

    def generate(self, items: Sequence[CommentInput], style: PromptStyle) -> list[str]:
        """Raw completions (special tokens dropped), one per item, in item order."""
        if not items:
            return []
        self.server.ensure_running()
        replies = list(self._pool.map(lambda item: self.reply_tokens(item, style), items))
        return self.tokenizer.batch_decode(replies, skip_special_tokens=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
        self.server.stop()

    # --- one reply ------------------------------------------------------------------------------
    def reply_tokens(self, item: CommentInput, style: PromptStyle) -> list[int]:
        """The reply's tokens, decoded as the local path decodes: at most budget - 1 tokens (its last
        is the end of turn), past 60% of the budget ending at the first sentence end, never opening
        with a banned token. One streamed request, closed as soon as the reply is complete."""
        prompt = encode_prompt(self.tokenizer, style, item)
        budget = self.decoding.budget(item.comment) - 1
        soft = math.ceil(SOFT_STOP_SHARE * (budget + 1))
        body = {**self._body(item, style), "n_predict": budget}
        banned = set(opening_ban_ids(self.tokenizer, self._stop_ids, style.sign_off))
        avoided = set(draft_opening_ids(self.tokenizer, item.avoid_openings))
        if not avoided:
            tokens = self._stream(prompt, body, soft, banned)
            if tokens is not None:
                return tokens
        # The first token alone under the ban (llama.cpp's logit_bias holds at every position), then the rest.
        opening = {**body, "n_predict": 1, "logit_bias": [[t, False] for t in sorted(banned | avoided)], "stop": []}
        first = self._complete(prompt, opening)
        rest = self._stream(prompt + first, {**body, "n_predict": budget - len(first)}, soft - len(first), set())
        return first + (rest or [])

    def _stream(self, prompt: list[int], body: dict[str, Any], soft: int, banned: set[int]) -> list[int] | None:
        """Tokens streamed until the server stops or, from `soft` tokens on, a sentence ends (the
        stream is then closed: llama.cpp stops that sequence). None when the first is `banned`."""
        if body["n_predict"] <= 0:
            return []
        tokens: list[int] = []
        computed = 0  # prompt tokens the server computed, told in its last event (none when we close first)
        events = stream_events(self.client, self.server.url + "/completion",
                               {**body, "prompt": prompt, "stream": True}, down=self.server.exit_note)
        try:
            for event in events:
                new = [int(t) for t in event.get("tokens") or ()]
                if new and not tokens and new[0] in banned:
                    return None
                tokens += new
                computed = int((event.get("timings") or {}).get("prompt_n") or computed)
                if event.get("stop") or (len(tokens) >= soft and tokens[-1] in self._sentence_ends):
                    break
        finally:
            events.close()
        self._count(prompt, tokens, computed)
        if not tokens and banned:
            return None  # the end of turn first: an empty reply
        return tokens[:body["n_predict"]]

    def _complete(self, prompt: list[int], body: dict[str, Any]) -> list[int]:
        """One request, answered whole: the tokens the server wrote."""
        data = post_json(self.client, self.server.url + "/completion", {**body, "prompt": prompt},
                         down=self.server.exit_note)
        try:
            tokens = [int(t) for t in data["tokens"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"llama-server answered 200 without tokens ({type(exc).__name__})", status=502) from exc
        self._count(prompt, tokens, int((data.get("timings") or {}).get("prompt_n") or 0))
        return tokens

    def _count(self, prompt: list[int], tokens: list[int], computed: int) -> None:
        with self._stats_lock:
            self.stats.prompt_tokens += len(prompt)
            self.stats.prompt_tokens_computed += computed  # the rest came from llama.cpp's prompt cache
            self.stats.generated_tokens += len(tokens)

    def _body(self, item: CommentInput, style: PromptStyle) -> dict[str, Any]:
        d = self.decoding
        return {
            # llama.cpp reuses a prompt's cached KV across requests naming different adapters, and the
            # reply then follows the wrong adapter (ggml-org/llama.cpp#26207): with more than one
            # adapter loaded, every prompt is computed afresh.
            "cache_prompt": len(self.adapters) <= 1, "return_tokens": True,
            "temperature": d.temperature if d.do_sample else 0.0,
            "repeat_penalty": d.repetition_penalty, "repeat_last_n": REPEAT_LAST_N,
            "stop": [style.sign_off] if style.sign_off else [],
            "lora": self._lora(item.adapter),
        }

    def _lora(self, name: str | None) -> list[dict[str, Any]]:
        """Every adapter the server holds at scale 0 except the item's (or the default) at 1."""
        chosen = name or self.adapter_name
        if chosen is not None and chosen not in self.adapters:
            raise UserError(f"adapter '{chosen}' is not served here; served: {', '.join(self.adapters) or 'none'}")
        return [{"id": i, "scale": 1.0 if n == chosen else 0.0} for n, i in self.adapters.items()]


def llama_cpp_files(settings: Any, base_model: str) -> tuple[Path, Path]:
    """The `llama-server` binary and the base model's GGUF file, or a one-line `UserError` (checked
    before anything loads, and again when the server starts)."""
    from engine.models import embedded_gguf, is_embedded_base_model

    binary = find_llama_server(settings.llama_server)
    if settings.llama_model is not None:
        gguf = Path(settings.llama_model).expanduser()
        if not gguf.is_file():
            raise UserError(f"llama_model (RESPONDER_LLAMA_MODEL) {gguf}: no such file; point it at the base "
                            "model's GGUF file")
    elif is_embedded_base_model(base_model, settings.model_cache):
        gguf = embedded_gguf()
    else:
        raise UserError(f"backend llama.cpp needs base model '{base_model}' as a GGUF file: set "
                        "RESPONDER_LLAMA_MODEL (llama.cpp's convert_hf_to_gguf.py writes one)")
    return binary, gguf
