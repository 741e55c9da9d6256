"""Continuous (in-flight) batching for the local model: replies join and leave a running batch.

`ContinuousDecoder` keeps one batch of replies being written and its key/value cache (each row
left-padded to the batch's length, with an attention mask and per-row positions, as `generate`
pads a batch). Each `step` writes one token for every row; a reply that ends leaves the batch at
once and is returned, so nobody waits for the longest reply of a batch, and a comment that arrives
mid-batch does not wait for the batch to end.

New comments join inside a step, `step(items, tags)`: their prompts are prefilled in the same
forward pass as the batch's next token (`engine.packed_pass`), and their keys/values written into
the batch's cache: a joining group with a forward pass of its own would hold every reply in the
batch for it, a quarter of the lane's time (measured at 16 replies, 48 new tokens).
`join` still prefills apart: into an empty batch, for a model whose attention a packed pass does
not reproduce (`fuses_joins` is false), and when a packed pass failed (`FusedJoinFailed`).

Rows are slots: a reply that ends frees its slot (it idles there, computed but ignored), and the
next comment to join is written into it, so neither leaving nor joining copies the whole batch's
cache. (Measured: no change in replies/s against cutting rows out, as the batch is compute-bound,
but the memory traffic is gone.) When half the slots are idle (nobody came to take them),
`compact` drops them.

Every prompt starts with the same tokens (the system turn: persona and sign-off, most of a short
comment's prompt). Their keys/values are computed once (`PromptPrefix`) and reused for every
prompt, as vLLM's automatic prefix caching does; a joining prompt computes only its own suffix.

Each row decodes with exactly the controls `LocalGenerator` uses (`engine.decoding`): the same
processors, applied to that row's own reply tokens, and the same stops (end of turn, sign-off,
budget); with context-aware decoding on, a row with passages also runs its prompt without them,
one row and one token at a time beside the batch. Why not transformers' own continuous batching (`generate_batch`)? It packs requests into
one flat sequence: its logits processors see no per-request history, and it drops
`RepetitionPenaltyLogitsProcessor` as unsupported, so the reply controls would not apply.

One thread drives a decoder; it takes the generator's lock around each model call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from engine.decoding import (ContextContrast, draft_opening_ids, logits_processors, opening_ban_ids,
                             sentence_end_token_ids)
from engine.generation import LocalGenerator, TokenCounts
from engine.packed_pass import GrowingColumns, PackedPass, passable_config, routed_through_pass
from base.prompt import CommentInput, PromptStyle, encode_prompt

# Two comments that share nothing but the prompt's frame: their prompts' common start is the prefix.
_PROBES = (CommentInput("a"), CommentInput("Z?"))


@dataclass
class Row:
    """One reply being written: who asked, its controls, and its tokens so far."""

    tag: Any
    budget: int
    processors: list[Any]
    generated: list[int] = field(default_factory=list)


class PromptPrefix:
    """The token ids every prompt of a style starts with, and their keys/values (computed once)."""

    def __init__(self, generator: LocalGenerator, style: PromptStyle) -> None:
        tokenizer = generator.tokenizer
        probes = [encode_prompt(tokenizer, style, probe) for probe in _PROBES]
        n = 0
        while n < min(map(len, probes)) and probes[0][n] == probes[1][n]:
            n += 1
        self.ids = probes[0][:n]
        self._kv: list[tuple[Any, Any]] | None = None
        self._generator = generator

    def starts(self, ids: Sequence[int]) -> bool:
        return len(ids) > len(self.ids) > 0 and list(ids[: len(self.ids)]) == self.ids

    def keys_values(self) -> list[tuple[Any, Any]]:
        """Per layer (keys, values) of the prefix, shape (1, heads, prefix, head_dim)."""
        if self._kv is None:
            import torch

            model = self._generator.model
            device = next(model.parameters()).device
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([self.ids], device=device), use_cache=True)
            self._kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return self._kv


class FusedJoinFailed(RuntimeError):
    """The forward pass that decodes the batch and prefills joining prompts failed; the batch is as
    it was, so the comments can still join apart (`join`) and the batch step on."""


class ContinuousDecoder:
    def __init__(self, generator: LocalGenerator, style: PromptStyle, share_prefix: bool = True,
                 packed: bool = True) -> None:
        self.generator = generator
        self.style = style
        self.tokenizer = generator.tokenizer
        self.decoding = generator.decoding
        self.stop_ids = generator.stop_token_ids()
        self.sentence_ends = sentence_end_token_ids(self.tokenizer)
        self.opening_bans = opening_ban_ids(self.tokenizer, self.stop_ids, style.sign_off)
        self.prefix = PromptPrefix(generator, style) if share_prefix else None
        self.sign_off_tail = len(self.tokenizer.encode(style.sign_off, add_special_tokens=False)) + 2 \
            if style.sign_off else 0
        self.slots: list[Row | None] = []  # None: an idle slot, free for the next comment
        self.stats = TokenCounts()  # this decoder's; the generator's own counts everything
        self._cache: Any = None  # DynamicCache of the rows, (rows, heads, width, head_dim) per layer
        self._mask: Any = None  # (rows, width): 1 for real tokens, 0 for padding
        self._last: Any = None  # (rows,): the token each row feeds next
        self._columns = GrowingColumns()  # the room the cache grows into, step by step
        # None: each step and each join is a plain forward pass of the model (packed=False, or a model
        # whose attention a packed pass does not reproduce)
        self._pass_config = passable_config(generator.model) if packed else None

    @property
    def fuses_joins(self) -> bool:
        """Whether comments can join inside a decoding step (`step(items, tags)`), rather than in a
        forward pass of their own (`join`)."""
        return self._pass_config is not None

    @property
    def rows(self) -> list[Row]:
        return [row for row in self.slots if row is not None]

    @property
    def size(self) -> int:
        return sum(row is not None for row in self.slots)

    # --- joining ----------------------------------------------------------------------------------
    def join(self, items: Sequence[CommentInput], tags: Sequence[Any]) -> list[tuple[Any, str]]:
        """Prefill `items` (prepared comments) and add them to the batch; replies already finished
        by their first token are returned as (tag, raw completion)."""
        import torch

        prompts, skip = self._encode(items)
        with self.generator._lock, torch.inference_mode():
            logits, cache, mask = self._prefill(prompts, skip)
        self._count_prompts(prompts, skip)
        with torch.inference_mode():  # the cache and mask are inference tensors, updated in place
            return self._advance(logits, self._place(self._new_rows(items, tags), cache, mask))

    def _encode(self, items: Sequence[CommentInput]) -> tuple[list[list[int]], int]:
        """The prompts of `items`, and how many of their first tokens the shared prefix's cache covers
        (0 without it)."""
        prompts = [encode_prompt(self.tokenizer, self.style, item) for item in items]
        shared = self.prefix is not None and all(self.prefix.starts(p) for p in prompts)
        return prompts, len(self.prefix.ids) if shared else 0  # type: ignore[union-attr]

    def _count_prompts(self, prompts: list[list[int]], skip: int) -> None:
        self._count(prompt_tokens=sum(map(len, prompts)), prompt_tokens_computed=sum(len(p) - skip for p in prompts))

    def _new_rows(self, items: Sequence[CommentInput], tags: Sequence[Any]) -> list[Row]:
        return [Row(tag, budget, self._contrast(item) + logits_processors(
                    self.decoding, 0, [budget], self.stop_ids, self.sentence_ends, self.opening_bans,
                    [draft_opening_ids(self.tokenizer, item.avoid_openings)]))
                for tag, item, budget in zip(tags, items, (self.decoding.budget(item.comment) for item in items))]

    def _contrast(self, item: CommentInput) -> list[Any]:
        """Context-aware decoding for a row with passages, when `context_weight` is set: the row's own
        pass without passages, a one-row forward per token beside the batch's (engine.decoding)."""
        if self.decoding.context_weight <= 0 or not item.passages:
            return []
        plain = encode_prompt(self.tokenizer, self.style, replace(item, passages=()))
        return [ContextContrast(self.generator.model, [plain], self.tokenizer.pad_token_id, 0,
                                self.decoding.context_weight, [True], lock=self.generator._lock)]

    def _prefill(self, prompts: list[list[int]], skip: int) -> tuple[Any, Any, Any]:
        """Logits of each prompt's last position (n, vocab), its cache and its attention mask.

        With the shared prefix, row i is [prefix][padding][suffix i] (the prefix's cache, broadcast);
        without, [padding][prompt i]. Positions count real tokens only, so padding changes nothing."""
        import torch
        from transformers import DynamicCache

        device = next(self.generator.model.parameters()).device
        suffixes = [p[skip:] for p in prompts]
        width = max(map(len, suffixes))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=device)
        mask = torch.tensor([[1] * skip + [0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
        cache = None
        if skip:
            assert self.prefix is not None
            cache = DynamicCache(ddp_cache_data=[(k.expand(len(prompts), -1, -1, -1), v.expand(len(prompts), -1, -1, -1))
                                                 for k, v in self.prefix.keys_values()])
        out = self.generator.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                   past_key_values=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float(), out.past_key_values, mask

    def _place(self, rows: list[Row], cache: Any, mask: Any) -> list[int]:
        """Write the new rows' cache into idle slots (new slots when there are none); their slots."""
        import torch
        import torch.nn.functional as F

        if self._cache is None:
            self._cache, self._mask, self.slots = cache, mask, list(rows)
            self._last = torch.zeros(len(rows), dtype=torch.long, device=mask.device)
            return list(range(len(rows)))
        width = self._mask.shape[1]
        if mask.shape[1] > width:  # a longer prompt: widen the batch (padding on the left)
            self._widen(mask.shape[1])
            width = mask.shape[1]
        idle = [i for i, row in enumerate(self.slots) if row is None]
        reuse, extra = idle[: len(rows)], len(rows) - len(idle[: len(rows)])
        pad = width - mask.shape[1]
        for old, new in zip(self._cache.layers, cache.layers):
            keys, values = F.pad(new.keys, (0, 0, pad, 0)), F.pad(new.values, (0, 0, pad, 0))
            if reuse:
                old.keys[reuse], old.values[reuse] = keys[: len(reuse)], values[: len(reuse)]
            if extra:
                old.keys, old.values = torch.cat([old.keys, keys[len(reuse):]]), torch.cat([old.values, values[len(reuse):]])
        mask = F.pad(mask, (pad, 0))
        if reuse:
            self._mask[reuse] = mask[: len(reuse)]
        if extra:
            self._mask = torch.cat([self._mask, mask[len(reuse):]])
            self._last = torch.cat([self._last, self._last.new_zeros(extra)])
            self.slots += [None] * extra
        places = reuse + list(range(len(self.slots) - extra, len(self.slots)))
        for slot, row in zip(places, rows):
            self.slots[slot] = row
        return places

    def _widen(self, width: int) -> None:
        import torch.nn.functional as F

        grow = width - self._mask.shape[1]
        for layer in self._cache.layers:
            layer.keys, layer.values = F.pad(layer.keys, (0, 0, grow, 0)), F.pad(layer.values, (0, 0, grow, 0))
        self._mask = F.pad(self._mask, (grow, 0))

    # --- decoding ---------------------------------------------------------------------------------
    def step(self, items: Sequence[CommentInput] = (), tags: Sequence[Any] = ()) -> list[tuple[Any, str]]:
        """One token for every row; the replies that ended, as (tag, raw completion).

        `items` (prepared comments, with their `tags`) join in the same forward pass, when
        `fuses_joins` and the batch is running: their prompts are prefilled beside the step and
        their first tokens chosen. If that pass fails, `FusedJoinFailed` is raised and the batch is
        as it was (the comments can still `join` apart)."""
        import torch

        if not self.size:
            return []
        assert not items or self.fuses_joins, "this model's comments join apart: use join()"
        with torch.inference_mode():  # the cache and mask are inference tensors, updated in place
            if 2 * (len(self.slots) - self.size - len(items)) >= len(self.slots):
                self.compact()  # as many idle rows as busy ones (after the joiners took theirs)
            self._trim()
            if self.fuses_joins:
                return self._packed_step(items, tags)
            mask = torch.cat([self._mask, self._mask.new_ones(len(self.slots), 1)], dim=1)
            positions = self._mask.sum(dim=1, keepdim=True)  # each row's next position: its real tokens so far
            with self.generator._lock:
                out = self.generator.model(input_ids=self._last[:, None], attention_mask=mask, position_ids=positions,
                                           past_key_values=self._cache, use_cache=True, logits_to_keep=1)
            self._cache, self._mask = out.past_key_values, mask
            logits = out.logits[:, -1, :].float()
            live = [i for i, row in enumerate(self.slots) if row is not None]
            return self._advance(logits[live], live)

    def _packed_step(self, items: Sequence[CommentInput], tags: Sequence[Any]) -> list[tuple[Any, str]]:
        """The step, and the prefill of `items` if any, in one forward pass (`engine.packed_pass`)."""
        import torch

        try:
            prompts, skip = self._encode(items)
            logits, packed = self._packed_forward([p[skip:] for p in prompts], skip)
        except Exception as exc:
            if items:  # nothing of the batch has changed yet
                raise FusedJoinFailed(f"{type(exc).__name__}: {exc}") from exc
            raise
        self._count_prompts(prompts, skip)
        for layer, (keys, values) in zip(self._cache.layers, packed.slot_kv):
            layer.keys, layer.values = keys, values
        self._mask = torch.cat([self._mask, self._mask.new_ones(len(self.slots), 1)], dim=1)
        live = [i for i, row in enumerate(self.slots) if row is not None]
        finished = self._advance(logits[live], live)
        if not items:
            return finished
        cache, mask = self._stack(packed.joined_kv, [len(p) for p in prompts])
        places = self._place(self._new_rows(items, tags), cache, mask)
        return finished + self._advance(logits[packed.slots:], places)

    def _packed_forward(self, suffixes: list[list[int]], skip: int) -> tuple[Any, PackedPass]:
        """Run the packed pass: the next-token scores of every slot, then of every joiner, and the
        pass (with the keys/values it computed)."""
        import torch

        device = self._mask.device
        ids = torch.tensor([self._last.tolist() + [t for s in suffixes for t in s]], device=device)
        positions = torch.cat([self._mask.sum(dim=1)] + [torch.arange(skip, skip + len(s), device=device)
                                                         for s in suffixes])[None]
        with self.generator._lock:
            prefix = self.prefix.keys_values() if skip and self.prefix is not None else None
            packed = PackedPass(self._cache, self._mask, self._columns, prefix, suffixes)
            ends = [start + length - 1 for start, length in packed.spans]  # the joiners' last prompt tokens
            keep = torch.tensor([*range(packed.slots), *ends], device=device)
            with routed_through_pass(self._pass_config):
                out = self.generator.model(input_ids=ids, position_ids=positions, use_cache=False,
                                           logits_to_keep=keep, packed_pass=packed)
        return out.logits[0].float(), packed

    @staticmethod
    def _stack(joined: list[list[tuple[Any, Any]]], lengths: list[int]) -> tuple[Any, Any]:
        """The joiners' keys/values (per layer, one (1, heads, length, dim) pair each) as one cache,
        left-padded to the longest, and its attention mask."""
        import torch
        import torch.nn.functional as F
        from transformers import DynamicCache

        width = max(lengths)
        stacked = [tuple(torch.cat([F.pad(pair[i], (0, 0, width - pair[i].shape[2], 0)) for pair in layer])
                         for i in (0, 1)) for layer in joined]
        mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=stacked[0][0].device)
        return DynamicCache(ddp_cache_data=stacked), mask

    def _advance(self, logits: Any, slots: list[int]) -> list[tuple[Any, str]]:
        """Choose the next token of the rows in `slots` from their logits (one per slot, in order);
        free and return those that ended."""
        finished: list[int] = []
        for index, row_logits in zip(slots, logits):
            row = self.slots[index]
            assert row is not None
            token = self._choose(row, row_logits)
            if token in self.stop_ids:
                finished.append(index)
                continue
            row.generated.append(token)
            self._last[index] = token
            self._count(generated_tokens=1)
            if len(row.generated) >= row.budget or self._signed_off(row):
                finished.append(index)
        done = [(self.slots[i].tag, self.tokenizer.decode(self.slots[i].generated, skip_special_tokens=True))
                for i in finished]
        self._free(finished)
        return done

    def _count(self, **added: int) -> None:
        for counts in (self.stats, self.generator.stats):
            for name, n in added.items():
                setattr(counts, name, getattr(counts, name) + n)

    def _choose(self, row: Row, logits: Any) -> int:
        import torch

        scores = logits[None, :].clone()
        history = torch.tensor([row.generated], dtype=torch.long, device=logits.device)
        for processor in row.processors:
            scores = processor(history, scores)
        if self.decoding.do_sample:
            probs = torch.softmax(scores / self.decoding.temperature, dim=-1)
            return int(torch.multinomial(probs, 1))
        return int(scores.argmax())

    def _signed_off(self, row: Row) -> bool:
        if not self.sign_off_tail:
            return False
        tail = self.tokenizer.decode(row.generated[-self.sign_off_tail:], skip_special_tokens=True)
        return self.style.sign_off in tail

    # --- leaving ----------------------------------------------------------------------------------
    def drop(self, tags: Sequence[Any]) -> None:
        """Free the rows of `tags` (requests nobody waits for any more) without answering them."""
        gone = {id(tag) for tag in tags}
        self._free([i for i, row in enumerate(self.slots) if row is not None and id(row.tag) in gone])

    def reset(self) -> list[Any]:
        """Empty the batch (after a failed step); the tags of the rows that were in it."""
        tags = [row.tag for row in self.rows]
        self._free(list(range(len(self.slots))))
        return tags

    def _free(self, slots: list[int]) -> None:
        """Make `slots` idle; with no row left, the batch and its cache go."""
        for i in slots:
            self.slots[i] = None
        if not self.size:
            self.slots, self._cache, self._mask, self._last = [], None, None, None
            self._columns = GrowingColumns()

    def compact(self) -> None:
        """Drop the idle slots (copies the batch's cache: when no comment is waiting to fill them)."""
        import torch

        keep = [i for i, row in enumerate(self.slots) if row is not None]
        if len(keep) == len(self.slots):
            return
        index = torch.tensor(keep, device=self._mask.device)
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys.index_select(0, index), layer.values.index_select(0, index)
        self._mask, self._last = self._mask.index_select(0, index), self._last.index_select(0, index)
        self.slots = [self.slots[i] for i in keep]

    def _trim(self) -> None:
        """Cut the leading columns no row in use reads (idle slots keep reading their last ones)."""
        live = [i for i, row in enumerate(self.slots) if row is not None]
        start = int((self._mask[live].cumsum(dim=1) == 0).sum(dim=1).min())
        if start:
            for layer in self._cache.layers:  # views: the step's concatenation copies them anyway
                layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
            self._mask = self._mask[:, start:]
