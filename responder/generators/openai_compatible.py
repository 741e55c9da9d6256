"""Generation on an OpenAI-compatible server (vLLM with `--enable-lora --lora-modules`).

The prompt is sent as token ids (`base.prompt.encode_prompt`), never re-tokenized text, and the
reply is cleaned by `Responder` exactly as a local reply is. The decoding controls travel too: the
reply budget per comment as `max_tokens`, and `repetition_penalty` (a vLLM sampling parameter;
vLLM applies it to the prompt and the reply alike). The no-repeat n-gram ban has no counterpart in
the API; the repeated-sentence cut in reply cleaning still applies. A server that is down, times out or
answers 5xx raises `UpstreamError` (`responder.generators.upstream`), not the user's `UserError`.
"""

from __future__ import annotations

from typing import Any, Sequence

from engine.decoding import Decoding
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, PromptStyle, encode_prompt
from engine.decoding import decoding_of
from responder.generators.upstream import post_json, snippet

_HINTS = {401: "; set RESPONDER_OPENAI_API_KEY to the server's key",
          403: "; set RESPONDER_OPENAI_API_KEY to the server's key",
          404: "; check RESPONDER_OPENAI_MODEL (the --lora-modules name) and RESPONDER_OPENAI_BASE_URL"}


class OpenAIGenerator:
    """Generation on an OpenAI-compatible server (vLLM), prompt sent as token ids.

    vLLM serves the adapter as a LoRA module (`--lora-modules NAME=PATH`); `model` is that NAME.
    Sending token ids rather than text keeps the prompt identical to training and keeps
    special-token text inside a comment plain.
    """

    def __init__(self, base_url: str, model: str, tokenizer: Any, model_name: str,
                 adapter_name: str | None = None, max_new_tokens: int = 96, api_key: str | None = None,
                 timeout_s: float = 300.0, client: Any = None, decoding: Decoding | None = None) -> None:
        import httpx

        base = base_url.rstrip("/")
        self.url = base + ("/completions" if base.endswith("/v1") else "/v1/completions")
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.adapter_name = adapter_name
        self.decoding = decoding or Decoding(max_new_tokens=max_new_tokens)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout_s, headers=headers)

    @classmethod
    def from_settings(cls, settings: Any, model_name: str, adapter_name: str | None) -> "OpenAIGenerator":
        from engine.models import load_tokenizer, resolve_base_model

        if not settings.openai_base_url:
            raise UserError("backend 'openai' needs a server URL: set RESPONDER_OPENAI_BASE_URL "
                            "(for example http://vllm:8000/v1) or pass --openai-base-url")
        # The tokenizer is needed locally to build the exact token ids of the prompt.
        tokenizer = load_tokenizer(resolve_base_model(settings.base_model, settings.model_cache))
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(settings.openai_base_url, settings.openai_model or adapter_name or settings.base_model,
                   tokenizer, model_name, adapter_name, settings.max_new_tokens, key,
                   settings.request_timeout_s, decoding=decoding_of(settings))

    @property
    def max_new_tokens(self) -> int:
        return self.decoding.max_new_tokens

    def generate(self, items: Sequence[CommentInput], style: PromptStyle) -> list[str]:
        """Raw completions, one per item. The completions API takes one `max_tokens` per request,
        so items are sent in one request per reply budget (thanks get the short budget)."""
        if not items:
            return []
        groups: dict[int, list[int]] = {}
        for n, item in enumerate(items):
            groups.setdefault(self.decoding.budget(item.comment), []).append(n)
        texts: list[str] = [""] * len(items)
        for budget, members in groups.items():
            body: dict[str, Any] = {
                "model": self.model,
                "prompt": [encode_prompt(self.tokenizer, style, items[n]) for n in members],
                "max_tokens": budget,
                **self.decoding.openai_params(),  # temperature, repetition_penalty (vLLM)
            }
            if style.sign_off:
                body["stop"] = [style.sign_off]
            for n, text in zip(members, self._completions(body, len(members))):
                texts[n] = text
        return texts

    def _completions(self, body: dict[str, Any], expected: int) -> list[str]:
        """The server's completions in prompt order; `UpstreamError` when the server fails us."""
        data = post_json(self.client, self.url, body, _HINTS,
                         down=lambda: "check RESPONDER_OPENAI_BASE_URL and that the server is running")
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [c.get("text") or "" for c in choices]
        except (KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError(f"generation server {self.url} answered 200 without completions "
                                f"({type(exc).__name__}): {snippet(str(data))}", status=502) from exc
        if len(texts) != expected:
            raise UpstreamError(f"generation server {self.url} returned {len(texts)} completions for {expected} "
                                "prompts", status=502)
        return texts
