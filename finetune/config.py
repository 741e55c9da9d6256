"""The typed configuration of `finetune run`: YAML preset + `key=value` overrides, validated at once.

One pydantic model per section (`extra="forbid"`, so a misspelt key is an error); the rules live on
the fields. `load_config` merges defaults < preset < overrides < flags into one mapping, validates
it once, and turns every pydantic error into one sentence naming the field, the bad value and what
is allowed; all of them go into one `UserError` (like `tune validate`). Nothing heavy is imported
here, so a bad config is reported before torch loads.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from base.errors import UserError, join_problems
from base.prompt import DEFAULT_PASSAGE_TOKENS, DEFAULT_PERSONA, PromptStyle
from base.settings import DEFAULT_BASE_MODEL, DEFAULT_COLLECTION, DEFAULT_EMBEDDER, default_store
from knowledge.config import RetrievalConfig

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

# --- field types: each rule once, with the words the user reads -------------------------------


def _rule(test: Callable[[Any], bool], text: str) -> AfterValidator:
    """A check whose failure reads `key=value <text>`."""

    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(text)
        return value

    return AfterValidator(check)


def _no_bool(kind: str) -> BeforeValidator:
    # pydantic's lax mode reads true as 1; in a config that is a mistake, not a number.
    def check(value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError(f"{kind}_type", "a bool where a number belongs")
        return value

    return BeforeValidator(check)


def _choice(*choices: str) -> AfterValidator:
    return _rule(lambda v: v in choices, f"is not allowed; use one of {', '.join(choices)}")


def _whole(message: str) -> PydanticCustomError:
    """A problem told in a sentence of its own (not `key=value ...`)."""
    return PydanticCustomError("config_problem", message)


Int = Annotated[int, _no_bool("int")]
Float = Annotated[float, _no_bool("float")]
Text = Annotated[str, BeforeValidator(lambda v: "" if v is None else v)]  # `key=` or `key: ~` is empty
Positive = Annotated[Int, _rule(lambda v: v >= 1, "must be at least 1")]
# YAML reads a bare on/off as true/false: take them back as the words.
OnOff = Annotated[str, BeforeValidator(lambda v: ("on" if v else "off") if isinstance(v, bool) else v)]
Count = Annotated[Int, _rule(lambda v: v >= 0, "must be 0 or more")]
NonNegative = Annotated[Float, _rule(lambda v: v >= 0, "must be 0 or more")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class ModelConfig(Section):
    base_model: Text = Field(DEFAULT_BASE_MODEL, validate_default=True)  # hub id, local dir or embedded alias
    quantization: Annotated[Text, _choice("nf4", "none")] = "nf4"  # nf4 = QLoRA (NF4 + double quant); none = LoRA
    device: Annotated[Text, _choice("auto", "cpu", "cuda", "mps")] = "auto"
    threads: Count = 0  # torch CPU threads; 0 = one per physical core
    # auto: bf16 on CUDA GPUs that support it and on CPUs with bf16 instructions, else fp16 (older
    # GPUs, MPS) or float32 (other CPUs). The adapter and its optimizer state stay float32.
    compute_dtype: Annotated[Text, _choice("auto", "float32", "bfloat16", "float16")] = "auto"

    @field_validator("base_model")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v:
            raise _whole("model.base_model is empty; use a local model directory or a hub id")
        return v


class LoraConfig(Section):
    r: Positive = 8
    alpha: Positive = 32
    dropout: Annotated[Float, _rule(lambda v: 0 <= v < 1, "must be in [0, 1)")] = 0.0  # see presets/default.yaml
    # "all-linear" (QLoRA: every linear layer but the output head) or a list of module names.
    target_modules: Annotated[Any, _rule(
        lambda v: v == "all-linear" or (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)),
        "must be 'all-linear' or a list of module names such as [q_proj, v_proj]")] = "all-linear"


class DataConfig(Section):
    path: Text = Field("", validate_default=True)  # CSV, JSONL or a `datasets` dataset saved with save_to_disk
    eval_path: Text = ""  # held-out pairs; empty = a seeded split of `path`
    eval_fraction: Annotated[Float, _rule(lambda v: 0 < v < 1, "must be in (0, 1), for example 0.1")] = 0.1
    comment_column: Text = ""  # empty = found by name (comment, question, ...)
    reply_column: Text = ""  # empty = found by name (reply, response, answer, ...)
    max_length: Positive = 512  # tokens per example; longer ones are cut (with a warning)

    @field_validator("path")
    @classmethod
    def _given(cls, v: str) -> str:
        if not v:
            raise _whole("no training data: pass --data FILE (CSV or JSONL with comment/reply columns) "
                         "or set data.path")
        return v


def _auto_or_positive(v: Any) -> Any:
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        return v
    if isinstance(v, str) and v.strip().isdigit() and int(v) >= 1:
        return int(v)
    raise ValueError("must be 'auto' or a whole number of at least 1")


AutoPositive = Annotated[Any, AfterValidator(_auto_or_positive)]


class TrainConfig(Section):
    epochs: AutoPositive = "auto"  # auto: enough epochs for about `target_steps` optimizer steps
    learning_rate: Annotated[Float, _rule(lambda v: 0 < v < 1, "must be in (0, 1), for example 2e-4")] = 2e-4
    warmup_ratio: Annotated[Float, _rule(lambda v: 0 <= v < 1, "must be in [0, 1)")] = 0.03
    weight_decay: NonNegative = 0.01
    batch_size: AutoPositive = "auto"  # effective batch (examples per optimizer step); auto: by data size
    target_steps: Positive = 80  # what epochs=auto aims at (early stopping may end sooner)
    max_epochs: Positive = 10  # epochs=auto never goes beyond this...
    example_budget: Positive = 400  # ...nor beyond this many examples seen in all (bounds the run's time)
    micro_batch_size: Positive = 4  # examples per forward pass (batch_size / micro = accumulation)
    # Token budget of a micro-batch (rows x padded length): long pairs run alone, short ones together;
    # activation memory follows it. 0 = micro_batch_size examples per forward pass instead.
    micro_batch_tokens: Count = 0
    # Recompute each decoder layer in the backward pass instead of keeping its activations; auto:
    # on for CUDA, on a CPU only when the activations would take a large share of free memory.
    activation_checkpointing: Annotated[OnOff, _choice("auto", "on", "off")] = "auto"
    max_grad_norm: NonNegative = 0.3  # QLoRA paper's clipping
    optimizer: Annotated[Text, _choice("auto", "adamw_8bit", "paged_adamw_8bit", "adamw")] = "auto"
    lr_scheduler: Annotated[Text, _choice("cosine", "linear", "constant")] = "cosine"
    patience: Count = 2  # epochs without eval improvement before stopping; 0 = never stop early
    checkpoint_every: Positive = 5  # optimizer steps between resumable checkpoints (and every epoch end)
    max_steps: Count = 0  # stop after this many optimizer steps; 0 = no limit
    share_prefix: bool = True  # run the prompt prefix all rows share once per micro-batch (exact)
    # The first `opener_tokens` of each reply count `opener_weight` times in the training loss (0: off);
    # the eval loss is never weighted. A recipe trial: see the default preset's comment.
    opener_tokens: Count = 0
    opener_weight: Annotated[Float, _rule(lambda v: 0 <= v <= 1, "must be in [0, 1], for example 0.25")] = 1.0
    seed: Int = 42

    @field_validator("micro_batch_size")
    @classmethod
    def _divides_batch(cls, v: int, info: ValidationInfo) -> int:
        batch = info.data.get("batch_size")  # absent when batch_size itself was invalid
        if isinstance(batch, int) and batch % v:
            raise _whole(f"train.batch_size={batch} must be a multiple of train.micro_batch_size={v}")
        return v


class PromptConfig(Section):
    persona: Text = DEFAULT_PERSONA
    sign_off: Text = ""
    passage_tokens: Positive = DEFAULT_PASSAGE_TOKENS  # model tokens all passages of one prompt may take

    @property
    def style(self) -> PromptStyle:
        return PromptStyle(persona=self.persona.strip(), sign_off=self.sign_off.strip(),
                           passage_tokens=self.passage_tokens)


Share = Annotated[Float, _rule(lambda v: 0 <= v <= 1, "must be in [0, 1]")]


class ContextConfig(Section):
    """Context-aware training (RAFT): passages from a knowledge base in the training prompts."""

    store: Text = ""  # embedded Chroma store (as `ingest --store`); empty = no passages in training
    chroma_url: Text = ""  # or a Chroma server
    collection: Text = DEFAULT_COLLECTION  # as `ingest --collection`
    embedder: Text = DEFAULT_EMBEDDER  # the store's embedder (the store refuses another)
    top_k: Positive = 3  # as serving retrieves (RESPONDER_TOP_K)
    min_similarity: Float | None = None  # None: the store's calibrated threshold, as serving
    distractor_share: Share = 0.2  # of examples that retrieve passages: distractors instead
    none_share: Share = 0.1  # of examples that retrieve passages: no passages

    @field_validator("none_share")
    @classmethod
    def _shares_add_up(cls, v: float, info: ValidationInfo) -> float:
        other = info.data.get("distractor_share")
        if other is not None and other + v > 1:
            raise _whole(f"context.distractor_share={other} and context.none_share={v} add up to more than 1")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.store or self.chroma_url)

    def retrieval(self) -> RetrievalConfig:
        """The retrieval setup training uses and records: this section alone, never the environment."""
        store = Path(self.store).expanduser() if self.store else default_store()
        return RetrievalConfig(store=store, chroma_url=self.chroma_url or None, collection=self.collection,
                               embedder=self.embedder, top_k=self.top_k, min_similarity=self.min_similarity)


class SamplesConfig(Section):
    count: Count = 10  # held-out comments evaluated at the end (eval.json, samples.md); 0 = none
    max_new_tokens: Positive = 96  # reply budget in that evaluation (serving's default is 96)
    # Which epoch's adapter is kept: "replies" generates the adapter's replies to those comments after
    # every epoch and keeps the epoch whose replies score best (finetune.evaluation.selection_badness:
    # stock, misfit, distinct and grounded rates with the relative eval loss); "loss": eval loss alone.
    select_by: Literal["replies", "loss"] = "replies"


class RunConfig(Section):
    output: Text = Field("runs/style-adapter", validate_default=True)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    # Built unchecked so RunConfig() works; load_config and validate check data.path is given.
    data: DataConfig = Field(default_factory=DataConfig.model_construct)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    samples: SamplesConfig = Field(default_factory=SamplesConfig)

    @field_validator("output")
    @classmethod
    def _output_given(cls, v: str) -> str:
        if not v:
            raise _whole("output is empty; pass --output DIR")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# --- loading: defaults < preset < overrides < flags, validated once ------------------------------


def _sections() -> dict[str, type[Section]]:
    return {name: f.annotation for name, f in RunConfig.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, Section)}


def allowed_keys() -> list[str]:
    sections = _sections()
    keys = []
    for name in RunConfig.model_fields:
        keys += [f"{name}.{sub}" for sub in sections[name].model_fields] if name in sections else [name]
    return keys


def _unknown(key: str, allowed: list[str], origin: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; allowed keys: {', '.join(allowed)}"
    return f"{origin}: unknown key '{key}'{hint}"


_TYPE_WORDS = {"int": "an int", "float": "a float", "bool": "a bool", "string": "a str"}


def _describe(error: dict[str, Any], sources: list[tuple[str, dict[str, Any]]]) -> str:
    """One pydantic error as the sentence a user reads."""
    loc = tuple(str(part) for part in error["loc"])
    dotted, kind, value = ".".join(loc), error["type"], error.get("input")
    origin = next((name for name, data in reversed(sources) if _has(data, loc)), "config")
    if kind == "extra_forbidden":
        allowed = allowed_keys()
        if len(loc) == 2:
            allowed = [k for k in allowed if k.startswith(loc[0] + ".")]
        return _unknown(dotted, allowed, origin)
    if kind in ("model_type", "model_attributes_type", "dict_type") and loc[0] in _sections():
        return f"{origin}: '{loc[0]}' must be a mapping of {', '.join(_sections()[loc[0]].model_fields)}"
    if kind == "config_problem":
        return error["msg"]
    if kind == "value_error":
        return f"{dotted}={value!r} {error['ctx']['error']}"
    words = _TYPE_WORDS.get(kind.split("_")[0])
    if words:  # int_parsing, int_from_float, float_type, bool_parsing, string_type, ...
        return f"{dotted}={value!r} is not {words}"
    return f"{dotted}={value!r}: {error['msg']}"


def _has(data: dict[str, Any], loc: tuple[str, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _check(sources: list[tuple[str, dict[str, Any]]]) -> tuple[RunConfig | None, list[str]]:
    merged: dict[str, Any] = {name: {} for name in _sections()}  # so every section's checks run
    for _, layer in sources:
        _merge(merged, layer)
    try:
        return RunConfig.model_validate(merged), []
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # misspelt keys first
        return None, [_describe(e, sources) for e in errors]


def parse_overrides(pairs: tuple[str, ...] | list[str]) -> tuple[dict[str, Any], list[str]]:
    """`a.b=value` strings as a nested dict; values are parsed as YAML (so 16 is an int)."""
    nested: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        if "=" not in pair:
            problems.append(f"override '{pair}' is not key=value (for example lora.r=16)")
            continue
        key, raw = pair.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override '{pair}': '{part}' is not a section")
                break
        else:
            node[parts[-1]] = value
    return nested, problems


def resolve_preset(name: str) -> Path:
    """A preset given as a path or a name from finetune/presets (`demo` or `demo.yaml`)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    for candidate in (PRESETS_DIR / name, PRESETS_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    presets = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
    raise UserError(f"config '{name}' not found: pass a YAML file or one of the presets ({presets})")


def _read_preset(config: str) -> tuple[str, dict[str, Any]]:
    path = resolve_preset(config)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"config '{path}' is not valid YAML ({str(exc).splitlines()[0]}); fix the file") from exc
    if not isinstance(data, dict):
        raise UserError(f"config '{path}' must be a YAML mapping of sections such as lora:, train:")
    return path.name, data


def load_config(config: str | None, overrides: tuple[str, ...] | list[str] = (),
                flags: dict[str, Any] | None = None) -> RunConfig:
    """The resolved config: preset file (the default preset when none is named) < key=value
    overrides < flags; all checked. The preset is the one source of defaults."""
    sources = [_read_preset(config or "default")]
    nested, problems = parse_overrides(overrides)
    sources.append(("override", nested))
    given: dict[str, Any] = {}
    for dotted, value in (flags or {}).items():
        if value is not None:
            section, _, key = dotted.rpartition(".")
            (given.setdefault(section, {}) if section else given)[key] = value
    sources.append(("flag", given))
    cfg, invalid = _check(sources)
    problems += invalid
    if problems or cfg is None:
        raise UserError(join_problems("invalid config", problems))
    return cfg


def validate(cfg: RunConfig | dict[str, Any]) -> list[str]:
    """Every problem of a config (a `RunConfig`, perhaps changed after loading, or a plain mapping)."""
    data = cfg.to_dict() if isinstance(cfg, RunConfig) else cfg
    return _check([("config", data)])[1]


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True, width=100)


def resolve_schedule(train: TrainConfig, n_train: int) -> tuple[int, int, str]:
    """(effective batch, epochs, why) for `n_train` training examples.

    A few dozen pairs need small optimizer steps to get enough of them: batch 4 up to 128 pairs,
    8 up to 512, then 16. Epochs so that the run makes about `target_steps` steps, but at most
    `max_epochs` and at most `example_budget` examples seen in all, which bounds the run's time
    (early stopping on the eval loss keeps the best adapter either way).
    """
    batch = train.batch_size
    if batch == "auto":
        batch = 4 if n_train <= 128 else 8 if n_train <= 512 else 16
        batch = max(train.micro_batch_size, batch - batch % train.micro_batch_size)
    steps_per_epoch = max(1, -(-n_train // batch))
    epochs = train.epochs
    if epochs == "auto":
        wanted = -(-train.target_steps // steps_per_epoch)
        epochs = max(1, min(wanted, train.max_epochs, train.example_budget // max(1, n_train)))
    why = []
    if train.batch_size == "auto":
        why.append(f"batch {batch} for {n_train} examples")
    if train.epochs == "auto":
        why.append(f"{epochs} epoch(s): about {train.target_steps} steps wanted, at most {train.max_epochs} "
                   f"epochs and {train.example_budget} examples seen")
    return batch, epochs, "; ".join(why)
