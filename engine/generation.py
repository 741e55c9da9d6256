"""Local generation: a batch of comments in, raw completions out, exactly as serving makes them.

`LocalGenerator` holds the base model (4-bit NF4 or float weights) plus the LoRA adapter in this
process. One call is one batched `model.generate` with left padding, an attention mask, and the
decoding controls of `engine.decoding` (repetition control, a length budget per comment). Prompts
come from `base.prompt.encode_prompt` (token ids, never re-tokenized text); cleaning is
`base.prompt.clean_reply`. The service, `finetune run`'s samples and `finetune eval` all
generate through this class, so what is measured is what is served.

Nothing heavy is imported at module level.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from engine.decoding import (ContextContrast, Decoding, draft_opening_ids, logits_processors, opening_ban_ids,
                             sentence_end_token_ids)
from base.adapter_info import adapter_display_name
from base.errors import UserError
from base.prompt import CommentInput, PromptStyle, encode_prompt

log = logging.getLogger(__name__)


@dataclass
class TokenCounts:
    """What the model computed since it was loaded (the service's /metrics, serve_bench's floor)."""

    prompt_tokens: int = 0  # tokens of every prompt
    prompt_tokens_computed: int = 0  # of those, computed (the rest came from a prefix cache)
    generated_tokens: int = 0


class LocalGenerator:
    """Base model + LoRA adapter in this process; `generate` is one batched `generate` call."""

    avoids_openings = True  # a redraft's `avoid_openings` are banned at its first token (base.redraft)

    def __init__(self, model: Any, tokenizer: Any, model_name: str, adapter_name: str | None = None,
                 max_new_tokens: int = 96, decoding: Decoding | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.adapter_name = adapter_name
        self.decoding = decoding or Decoding(max_new_tokens=max_new_tokens)
        # One generate at a time: torch already uses every core for one batch, and two
        # concurrent generates on one model only slow each other down.
        self._lock = threading.Lock()
        self.stats = TokenCounts()

    @property
    def max_new_tokens(self) -> int:
        return self.decoding.max_new_tokens

    @classmethod
    def load(cls, base_model: str, adapter: Path | str | None = None, quantization: str = "nf4",
             device: str = "auto", max_new_tokens: int = 96, cache_dir: Path | str | None = None,
             model_name: str | None = None, decoding: Decoding | None = None) -> "LocalGenerator":
        """Load the base model (NF4 or float) and the adapter.

        With `quantization="none"` the adapter is merged into the float weights (`merge_and_unload`),
        so a generate step costs exactly what the base model costs: the fastest choice on a CPU
        when memory allows. With NF4 the adapter stays a separate LoRA layer over 4-bit weights,
        computed in two operations rather than PEFT's seven (`engine.fused_lora`).
        On a CPU, the float32 linear layers (the output head in both) compute through oneDNN with
        packed weights (`engine.packed_linear`): about 1.8x faster decoding steps for float32.
        """
        from engine.models import choose_precision, load_adapter, load_base_model, load_tokenizer, resolve_base_model

        base_dir = resolve_base_model(base_model, cache_dir)
        precision = choose_precision(device)
        log.info("Loading %s (%s, %s)", base_dir, quantization, precision.reason)
        tokenizer = load_tokenizer(base_dir)
        model = load_base_model(base_dir, quantization, precision)
        adapter_name = None
        if adapter is not None:
            adapter_dir = Path(adapter)
            adapter_name = adapter_display_name(adapter_dir)
            model = load_adapter(model, adapter_dir, merge=quantization == "none")
        model.eval()
        if adapter is not None and quantization != "none":
            from engine.fused_lora import fuse_lora

            log.info("%d LoRA layers fused for inference", fuse_lora(model))
        if precision.device == "cpu":
            from engine.packed_linear import pack_linears

            log.info("%d linear layers packed for oneDNN", pack_linears(model))
        return cls(model, tokenizer, model_name or base_model, adapter_name, max_new_tokens, decoding)

    def encode(self, items: Sequence[CommentInput], style: PromptStyle) -> list[list[int]]:
        return [encode_prompt(self.tokenizer, style, item) for item in items]

    def stop_token_ids(self) -> list[int]:
        return stop_token_ids(self.tokenizer, getattr(self.model, "generation_config", None))

    def generate(self, items: Sequence[CommentInput], style: PromptStyle) -> list[str]:
        """Raw completions (special tokens dropped), one per item, in one batched `generate`."""
        if not items:
            return []
        others = {item.adapter for item in items} - {None, self.adapter_name}
        if others:
            raise UserError(f"adapter '{sorted(others)[0]}' is not served here; served: {self.adapter_name or 'none'}")
        import torch

        prompts = self.encode(items, style)
        input_ids, attention_mask = left_pad(prompts, self.tokenizer.pad_token_id)
        width = len(input_ids[0])
        device = next(self.model.parameters()).device
        budgets = [self.decoding.budget(item.comment) for item in items]
        stop_ids = self.stop_token_ids()
        kwargs: dict[str, Any] = dict(
            input_ids=torch.tensor(input_ids, device=device),  # (B, T), padded on the left
            attention_mask=torch.tensor(attention_mask, device=device),
            max_new_tokens=max(budgets),
            eos_token_id=stop_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=self._contrast(items, style, width) + logits_processors(
                self.decoding, width, budgets, stop_ids, sentence_end_token_ids(self.tokenizer),
                opening_ban_ids(self.tokenizer, stop_ids, style.sign_off),
                [draft_opening_ids(self.tokenizer, item.avoid_openings) for item in items]),
            **self._sampling(),
        )
        if style.sign_off:
            # Each sequence stops as soon as it has written the sign-off; clean_reply drops the rest.
            kwargs.update(stop_strings=[style.sign_off], tokenizer=self.tokenizer)
        with self._lock, torch.inference_mode():
            output = self.model.generate(**kwargs)  # (B, T + new)
        self._count(prompts, output[:, width:].tolist(), stop_ids)
        return self.tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)

    def _contrast(self, items: Sequence[CommentInput], style: PromptStyle, width: int) -> list[Any]:
        """Context-aware decoding for the items with passages, when `context_weight` is set."""
        if self.decoding.context_weight <= 0 or not any(item.passages for item in items):
            return []
        plain = self.encode([replace(item, passages=()) for item in items], style)
        return [ContextContrast(self.model, plain, self.tokenizer.pad_token_id, width, self.decoding.context_weight,
                                [bool(item.passages) for item in items])]

    def _count(self, prompts: list[list[int]], replies: list[list[int]], stop_ids: list[int]) -> None:
        """Add a batch's prompt tokens, and each reply's tokens up to its stop, to `stats`."""
        stops = set(stop_ids)
        self.stats.prompt_tokens += sum(map(len, prompts))
        self.stats.prompt_tokens_computed += sum(map(len, prompts))
        self.stats.generated_tokens += sum(next((i for i, t in enumerate(r) if t in stops), len(r)) for r in replies)

    def _sampling(self) -> dict[str, Any]:
        # Checkpoints' generation_config may carry sampling or penalty defaults: override them all,
        # so decoding is exactly what `Decoding` says.
        none = dict(repetition_penalty=None, no_repeat_ngram_size=None)
        if self.decoding.do_sample:
            return dict(do_sample=True, temperature=self.decoding.temperature, **none)
        return dict(do_sample=False, temperature=None, top_p=None, top_k=None, **none)


def stop_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """End-of-turn tokens, the tokenizer's EOS first, then the generation config's, then the chat
    template's `<|im_end|>`."""
    ids = [tokenizer.eos_token_id]
    gen_eos = getattr(generation_config, "eos_token_id", None)
    ids += gen_eos if isinstance(gen_eos, list) else [gen_eos]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.append(im_end)
    return list(dict.fromkeys(i for i in ids if i is not None))


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[list[list[int]], list[list[int]]]:
    """Left-pad token id lists to one length; decoder-only models continue from the right end."""
    width = max(len(p) for p in prompts)
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return ids, mask


