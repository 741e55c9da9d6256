"""Generation on llama.cpp's server, which the service starts and supervises (`--backend llama.cpp`).

What the service's own local path does, said to `llama-server`'s `/completion`:
- the prompt is `base.prompt.encode_prompt`'s token ids (never re-tokenized text), and the reply's
  tokens are decoded here with the same tokenizer, so cleaning, checks and citations see what
  the local path would hand them;
- the adapter is loaded at start and chosen per request (`"lora": [{"id": n, "scale": 1.0}]`): an
  item may name another adapter the server holds (`CommentInput.adapter`), the engine interface
  for one base model serving many creators;
- the reply budget per comment (`Decoding.budget`) is `n_predict`; greedy unless sampling is set;
  the repetition penalty is llama.cpp's own, over the last 64 tokens of the context (the prompt's
  tail included, where the local path counts the reply only); there is no n-gram ban and no
  "stop at a sentence end past 60% of the budget" (the reply cleaning's repeated-sentence cut
  still applies); the sign-off and the end of turn stop a reply;
- the opening ban (no empty reply, no reply that starts with the sign-off, and for a redraft not
  the first token of an earlier draft): llama.cpp's `logit_bias` holds at every position, the ban
  only at the first, so a banned first token is decoded again alone under the ban and the reply
  continued from it (the prompt cache makes the second request cheap). Deterministic like the
  local path: a first token the ban would not change costs nothing.
Comments of one call are sent at once, one request each: llama.cpp batches them across its slots.
A server that died is restarted for the next request; the request it failed is an `UpstreamError`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from base.adapter_info import adapter_display_name
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, PromptStyle, encode_prompt
from engine.decoding import (SOFT_STOP_SHARE, Decoding, decoding_of, draft_opening_ids, opening_ban_ids,
                             sentence_end_token_ids)
from engine.generation import TokenCounts, stop_token_ids
from engine.llama_cpp import LlamaServer, exported_lora, find_llama_server
from responder.generators.upstream import post_json

log = logging.getLogger(__name__)

REPEAT_LAST_N = 64  # llama.cpp's default window for its repetition penalty
# Stop strings that end the server's part past 60% of the budget (the reply is then cut after the
# first sentence-end token, as the local path's `ReplyBudget` cuts it).
SENTENCE_END_TEXTS = (".", "!", "?", "…")


@dataclass(frozen=True)
class Completion:
    tokens: list[int]
    ended: bool  # at the end of turn or a stop string, not at n_predict


class LlamaCppGenerator:
    """Replies from a supervised `llama-server`; `generate` sends one request per comment, at once."""

    avoids_openings = True  # a redraft's `avoid_openings` are banned at its first token (base.redraft)
    # The service keeps this many batches generating at once (responder/service/state.py): llama.cpp
    # batches every request it holds, so a comment need not wait for the batch before it.
    batches_in_flight = 4

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
        from engine.models import embedded_gguf, is_embedded_base_model, load_tokenizer, resolve_base_model

        binary = find_llama_server(settings.llama_server)
        base_dir = resolve_base_model(base_model, settings.model_cache)
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
        is the end of turn), and past 60% of the budget it ends at the first sentence end."""
        prompt = encode_prompt(self.tokenizer, style, item)
        budget = self.decoding.budget(item.comment) - 1
        soft = math.ceil(SOFT_STOP_SHARE * (budget + 1))
        body = self._body(item, style)
        banned = set(opening_ban_ids(self.tokenizer, self._stop_ids, style.sign_off))
        avoided = set(draft_opening_ids(self.tokenizer, item.avoid_openings))
        opening = {**body, "n_predict": 1, "logit_bias": [[t, False] for t in sorted(banned | avoided)], "stop": []}
        tokens = self._complete(prompt, opening).tokens if avoided else []
        head = self._complete(prompt + tokens, {**body, "n_predict": soft - len(tokens)})
        if not tokens and (not head.tokens or head.tokens[0] in banned):
            # A first token the ban forbids: that one again under the ban, then the rest from it.
            tokens = self._complete(prompt, opening).tokens
            head = self._complete(prompt + tokens, {**body, "n_predict": soft - len(tokens)})
        tokens += head.tokens
        if head.ended or len(tokens) >= budget or (tokens and tokens[-1] in self._sentence_ends):
            return tokens[:budget]
        tail = self._complete(prompt + tokens, {**body, "n_predict": budget - len(tokens),
                                                "stop": body["stop"] + list(SENTENCE_END_TEXTS)})
        ends = [n for n, t in enumerate(tail.tokens) if t in self._sentence_ends]
        return tokens + tail.tokens[:ends[0] + 1 if ends else budget]

    def _body(self, item: CommentInput, style: PromptStyle) -> dict[str, Any]:
        d = self.decoding
        body: dict[str, Any] = {
            "cache_prompt": True, "return_tokens": True,
            "temperature": d.temperature if d.do_sample else 0.0,
            "repeat_penalty": d.repetition_penalty, "repeat_last_n": REPEAT_LAST_N,
            "stop": [style.sign_off] if style.sign_off else [],
            "lora": self._lora(item.adapter),
        }
        return body

    def _lora(self, name: str | None) -> list[dict[str, Any]]:
        """Every adapter the server holds at scale 0 except the item's (or the default) at 1."""
        chosen = name or self.adapter_name
        if chosen is not None and chosen not in self.adapters:
            raise UserError(f"adapter '{chosen}' is not served here; served: {', '.join(self.adapters) or 'none'}")
        return [{"id": i, "scale": 1.0 if n == chosen else 0.0} for n, i in self.adapters.items()]

    def _complete(self, prompt: list[int], body: dict[str, Any]) -> Completion:
        """One request; what the server wrote and whether it ended (end of turn or a stop string)."""
        if body.get("n_predict", 1) <= 0:
            return Completion([], False)
        data = post_json(self.client, self.server.url + "/completion", {**body, "prompt": prompt},
                         down=self.server.exit_note)
        try:
            tokens = [int(t) for t in data["tokens"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError(f"llama-server answered 200 without tokens ({type(exc).__name__})", status=502) from exc
        computed = int((data.get("timings") or {}).get("prompt_n") or 0)  # the rest came from its prompt cache
        with self._stats_lock:
            self.stats.prompt_tokens += len(prompt)
            self.stats.prompt_tokens_computed += computed
            self.stats.generated_tokens += len(tokens)
        return Completion(tokens, data.get("stop_type") in ("eos", "word"))
