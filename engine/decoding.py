"""How replies are decoded: repetition control and a length budget that fits the comment.

A small model decoding greedily loops: a sentence repeated until the token limit is its most
common failure. Two controls, both applied to the reply's own tokens only (never the prompt,
whose end-of-turn tokens a prompt-wide penalty would make harder to write, so replies would run
on), and a budget:
- `repetition_penalty` (transformers' own processor with `prompt_ignore_length`);
- `no_repeat_ngram_size`: no token n-gram twice within the reply;
- a budget per comment: short comments that ask nothing (thanks, "first!") get
  `short_reply_tokens`, the rest `max_new_tokens`; past 60% of its budget a reply ends at its
  next sentence end, and at the budget it ends;
- a reply opens with words: its first token is never the end of turn, a bare line break or the
  start of the sign-off. A small adapter given long passages was seen to answer technical
  questions with the bare sign-off ("Keep" was its most likely first token, at 13-21%, with
  "That", "No", "You" close behind): an empty reply no creator would post.
Greedy by default: the same comment gets the same reply. The defaults were chosen with
`finetune eval` on samples/pairs/heldout_varied.csv (30 comments; the default-preset adapter
trained on 100 sample pairs; SmolLM2-135M, NF4):

    decoding                           base model                     tuned adapter
                                       loops raw  echo  empty  link   loops raw  similarity
    no controls (1.0, off, 96 tokens)  73%        0%    3%     0%     0%         0.304
    default (1.1, 4-gram, budget)      0%         3%    0%     0%     0%         0.318
    strong (1.3, 3-gram, budget)       0%         3%    0%     3%     0%         0.299

The controls matter most where the model has not learned to stop (the base model, or a weak
adapter); the strong setting starts to invent links, as seen on real pairs before.

Context-aware decoding (Shi et al. 2023, "Trusting Your Evidence"), `context_weight` = alpha: for a
comment with passages, each next token is chosen by (1 + alpha) * log p(token | prompt with the
passages) - alpha * log p(token | the same prompt without them), so what the passages make likely
gains over what the model would say anyway (its stock openers). It costs a second forward pass per
token for those comments. 0 turns it off; its default is measured in README "Reply quality".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Sequence

from base.replychecks import words

SOFT_STOP_SHARE = 0.6


@dataclass(frozen=True)
class Decoding:
    max_new_tokens: int = 96
    short_reply_tokens: int = 40
    repetition_penalty: float = 1.1
    no_repeat_ngram_size: int = 4
    do_sample: bool = False
    temperature: float = 0.7
    context_weight: float = 0.0  # context-aware decoding's alpha (0: off)
    redrafts: int = 0  # more drafts a weak reply to a question may get (base.redraft; 0: off)

    def budget(self, comment: str) -> int:
        """New tokens this comment's reply may take."""
        return min(self.max_new_tokens, self.short_reply_tokens) if is_short_remark(comment) else self.max_new_tokens

    def openai_params(self) -> dict[str, Any]:
        """The same controls for an OpenAI-compatible server (vLLM knows repetition_penalty)."""
        params: dict[str, Any] = {"temperature": self.temperature if self.do_sample else 0.0}
        if self.repetition_penalty != 1.0:
            params["repetition_penalty"] = self.repetition_penalty
        return params


def is_short_remark(comment: str) -> bool:
    """A comment that asks nothing and says little: thanks, praise, "first!"."""
    return "?" not in comment and len(words(comment)) <= 12


def logits_processors(decoding: Decoding, prompt_width: int, budgets: Sequence[int], stop_ids: Sequence[int],
                      sentence_end_ids: Sequence[int], opening_bans: Sequence[int] = (),
                      row_opening_bans: Sequence[Sequence[int]] = ()) -> list[Any]:
    """The processors for one batched `generate` whose prompts are left-padded to `prompt_width`
    (`row_opening_bans`: per row, the first tokens of the drafts it redrafts)."""
    from transformers import RepetitionPenaltyLogitsProcessor

    processors: list[Any] = [ReplyOpening(opening_bans, prompt_width, row_opening_bans)] \
        if opening_bans or any(row_opening_bans) else []
    if decoding.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty,
                                                           prompt_ignore_length=prompt_width))
    if decoding.no_repeat_ngram_size > 0:
        processors.append(ReplyNoRepeatNGram(decoding.no_repeat_ngram_size, prompt_width))
    processors.append(ReplyBudget(budgets, prompt_width, stop_ids, sentence_end_ids))
    return processors


class ReplyOpening:
    """Bans, at a reply's first token, the tokens that would leave it without words of its own, and
    per row the first tokens of the drafts a redraft must not open like (`row_bans`)."""

    def __init__(self, banned: Sequence[int], prompt_width: int, row_bans: Sequence[Sequence[int]] = ()) -> None:
        self.banned, self.prompt_width = list(banned), prompt_width
        self.row_bans = [list(b) for b in row_bans]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if input_ids.shape[1] == self.prompt_width:
            scores[:, self.banned] = float("-inf")
            for row, banned in enumerate(self.row_bans):
                if banned:
                    scores[row, banned] = float("-inf")
        return scores


def draft_opening_ids(tokenizer: Any, drafts: Sequence[str]) -> list[int]:
    """The first token of each earlier draft (`CommentInput.avoid_openings`, see base.redraft)."""
    ids = (tokenizer.encode(draft.lstrip(), add_special_tokens=False) for draft in drafts if draft.strip())
    return sorted({first[0] for first in ids if first})


def opening_ban_ids(tokenizer: Any, stop_ids: Sequence[int], sign_off: str) -> list[int]:
    """What a reply may not start with: end of turn, a token of only whitespace, the sign-off's start."""
    blanks = _token_ids_where(tokenizer, "_reply_blank_ids", lambda token, text: bool(token) and not text.strip())
    starts = {tokenizer.encode(text, add_special_tokens=False)[0] for text in (sign_off, " " + sign_off)} \
        if sign_off.strip() else set()
    return sorted(set(stop_ids) | set(blanks) | starts)


class ReplyNoRepeatNGram:
    """Bans the token that would repeat an n-gram already in the reply (the prompt is not counted)."""

    def __init__(self, n: int, prompt_width: int) -> None:
        self.n, self.prompt_width = n, prompt_width

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        generated = input_ids[:, self.prompt_width:]  # (B, t)
        if generated.shape[1] < self.n:
            return scores
        for row, tokens in enumerate(generated.tolist()):
            prefix = tuple(tokens[len(tokens) - self.n + 1:])
            banned = {tokens[i + self.n - 1] for i in range(len(tokens) - self.n + 1)
                      if tuple(tokens[i:i + self.n - 1]) == prefix}
            if banned:
                scores[row, list(banned)] = float("-inf")
        return scores


class ReplyBudget:
    """Ends each reply at its own budget: at a sentence end past 60% of it, and at the budget."""

    def __init__(self, budgets: Sequence[int], prompt_width: int, stop_ids: Sequence[int],
                 sentence_end_ids: Sequence[int]) -> None:
        self.budgets, self.prompt_width = list(budgets), prompt_width
        self.stop_id = stop_ids[0]
        self.sentence_end_ids = set(sentence_end_ids)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        written = input_ids.shape[1] - self.prompt_width
        if written == 0:
            return scores
        last = input_ids[:, -1].tolist()
        for row, budget in enumerate(self.budgets):
            soft = written >= SOFT_STOP_SHARE * budget and last[row] in self.sentence_end_ids
            if written >= budget - 1 or soft:
                scores[row, :] = float("-inf")
                scores[row, self.stop_id] = 0.0
        return scores


class ContextContrast:
    """Context-aware decoding as a logits processor: runs the model, with its own KV cache, on each
    row's prompt without passages plus the tokens generated so far, and returns
    (1 + alpha) * log_softmax(scores) - alpha * log_softmax(those logits) for the rows that have
    passages (`contrasted`); other rows keep their scores. Put first: the other processors then
    work on the contrasted scores."""

    def __init__(self, model: Any, plain_prompts: Sequence[Sequence[int]], pad_id: int, prompt_width: int,
                 alpha: float, contrasted: Sequence[bool], lock: Any = None) -> None:
        self.model, self.alpha, self.prompt_width = model, alpha, prompt_width
        self.lock = lock if lock is not None else contextlib.nullcontext()  # none inside `generate`: it holds it
        self.plain_prompts, self.pad_id = [list(p) for p in plain_prompts], pad_id
        self.rows = [i for i, c in enumerate(contrasted) if c]
        self.past: Any = None
        self.mask: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not self.rows:
            return scores
        generated = input_ids[self.rows, self.prompt_width:]  # (R, t) the reply so far
        if self.past is None:
            width = max(len(self.plain_prompts[r]) for r in self.rows)
            ids = [[self.pad_id] * (width - len(self.plain_prompts[r])) + self.plain_prompts[r] for r in self.rows]
            prompt = torch.tensor(ids, device=input_ids.device)
            self.mask = (torch.arange(width, device=input_ids.device)[None, :]
                         >= torch.tensor([width - len(self.plain_prompts[r]) for r in self.rows],
                                         device=input_ids.device)[:, None]).long()
            step = torch.cat([prompt, generated], dim=1)
            self.mask = torch.cat([self.mask, torch.ones_like(generated)], dim=1)
        else:
            step = generated[:, -1:]
            self.mask = torch.cat([self.mask, torch.ones_like(step)], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -step.shape[1]:]
        with self.lock:
            out = self.model(input_ids=step, attention_mask=self.mask, position_ids=positions,
                             past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        plain = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)
        with_passages = torch.log_softmax(scores[self.rows].float(), dim=-1)
        scores = scores.clone()
        scores[self.rows] = ((1 + self.alpha) * with_passages - self.alpha * plain).to(scores.dtype)
        return scores


def sentence_end_token_ids(tokenizer: Any) -> list[int]:
    """Ids of tokens whose text ends a sentence (".", "!", "?", "…", possibly after a quote or emoji)."""
    return _token_ids_where(tokenizer, "_reply_sentence_end_ids",
                            lambda token, text: text.rstrip().endswith((".", "!", "?", "…", '."', '!"')))


def _token_ids_where(tokenizer: Any, cache_name: str, keep: Any) -> list[int]:
    """Ids of the tokens for which `keep(token, text)` holds: a scan of the whole vocabulary, done once
    per tokenizer (kept on it as `cache_name`)."""
    cached = getattr(tokenizer, cache_name, None)
    if cached is not None:
        return cached
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts = [tokenizer.convert_tokens_to_string([tok]) if tok else "" for tok in vocab]
    ids = [i for i, (tok, text) in enumerate(zip(vocab, texts)) if keep(tok, text)]
    try:
        setattr(tokenizer, cache_name, ids)
    except AttributeError:  # a tokenizer that refuses new attributes: recompute next time
        pass
    return ids


def decoding_of(settings: Any) -> Decoding:
    """The decoding controls a `base.settings.Settings` asks for."""
    return Decoding(max_new_tokens=settings.max_new_tokens, short_reply_tokens=settings.short_reply_tokens,
                    repetition_penalty=settings.repetition_penalty,
                    no_repeat_ngram_size=settings.no_repeat_ngram_size,
                    context_weight=getattr(settings, "context_weight", 0.0),
                    redrafts=getattr(settings, "redrafts", 0))
