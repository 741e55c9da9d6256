"""The typed configuration of `finetune run`: YAML preset + `key=value` overrides, validated at once.

Nothing heavy is imported here, so a bad config is reported before torch loads. Every problem is
collected and reported in one `UserError` (like `tune validate`), naming the field, the bad value
and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from base.errors import UserError
from base.prompt import DEFAULT_PERSONA, PromptStyle
from base.settings import DEFAULT_BASE_MODEL

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

NADIA_SIGN_OFF = "Keep exploring! - Nadia"


@dataclass
class ModelConfig:
    base_model: str = DEFAULT_BASE_MODEL  # hub id, local directory or the embedded alias
    quantization: str = "nf4"  # nf4 (QLoRA: NF4 + double quantization) | none (plain LoRA)
    device: str = "auto"  # auto | cpu | cuda | mps
    threads: int = 0  # torch CPU threads; 0 = one per physical core


@dataclass
class LoraConfig:
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    # "all-linear" (QLoRA: every linear layer but the output head) or a list of module names.
    target_modules: Any = "all-linear"


@dataclass
class DataConfig:
    path: str = ""  # CSV, JSONL or a `datasets` dataset saved with save_to_disk
    eval_path: str = ""  # held-out pairs; empty = a seeded split of `path`
    eval_fraction: float = 0.1
    comment_column: str = ""  # empty = found by name (comment, question, ...)
    reply_column: str = ""  # empty = found by name (reply, response, answer, ...)
    max_length: int = 512  # tokens per example; longer ones are cut (with a warning)


@dataclass
class TrainConfig:
    epochs: int = 3
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.03
    weight_decay: float = 0.01
    batch_size: int = 16  # effective batch: examples per optimizer step
    micro_batch_size: int = 4  # examples per forward pass (batch_size / micro = accumulation)
    max_grad_norm: float = 0.3  # QLoRA paper's clipping
    optimizer: str = "auto"  # auto | adamw_8bit | paged_adamw_8bit | adamw
    lr_scheduler: str = "cosine"  # cosine | linear | constant
    patience: int = 2  # epochs without eval improvement before stopping; 0 = never stop early
    checkpoint_every: int = 5  # optimizer steps between resumable checkpoints (and every epoch end)
    max_steps: int = 0  # stop after this many optimizer steps; 0 = no limit
    share_prefix: bool = True  # run the prompt prefix all rows share once per micro-batch (exact)
    seed: int = 42


@dataclass
class PromptConfig:
    persona: str = DEFAULT_PERSONA
    sign_off: str = ""

    @property
    def style(self) -> PromptStyle:
        return PromptStyle(persona=self.persona.strip(), sign_off=self.sign_off.strip())


@dataclass
class SamplesConfig:
    count: int = 8  # held-out comments answered by base and tuned model in samples.md
    max_new_tokens: int = 64


@dataclass
class RunConfig:
    output: str = "runs/style-adapter"
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    samples: SamplesConfig = field(default_factory=SamplesConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_CHOICES = {
    "model.quantization": ("nf4", "none"),
    "model.device": ("auto", "cpu", "cuda", "mps"),
    "train.optimizer": ("auto", "adamw_8bit", "paged_adamw_8bit", "adamw"),
    "train.lr_scheduler": ("cosine", "linear", "constant"),
}
_POSITIVE = {"lora.r", "lora.alpha", "train.epochs", "train.batch_size", "train.micro_batch_size",
             "data.max_length", "train.checkpoint_every", "samples.max_new_tokens"}
_NON_NEGATIVE = {"train.patience", "train.max_steps", "model.threads", "samples.count",
                 "train.weight_decay", "train.max_grad_norm"}


def _fields(cls: type) -> dict[str, Any]:
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _section_classes() -> dict[str, type]:
    return {name: typ for name, typ in _fields(RunConfig).items() if dataclasses.is_dataclass(typ)}


def _coerce(value: Any, typ: Any, key: str, problems: list[str]) -> Any:
    """`value` as `typ` (YAML already typed it; `key=value` overrides arrive as YAML too)."""
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif typ is str:
        if value is None:
            return ""
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    problems.append(f"{key}={value!r} is not a{'n' if typ is int else ''} {typ.__name__}")
    return None


def _apply(cfg: RunConfig, data: dict[str, Any], problems: list[str], origin: str) -> None:
    sections = _section_classes()
    top = _fields(RunConfig)
    for key, value in data.items():
        if key in sections:
            if not isinstance(value, dict):
                problems.append(f"{origin}: '{key}' must be a mapping of {', '.join(_fields(sections[key]))}")
                continue
            section = getattr(cfg, key)
            allowed = _fields(sections[key])
            for sub, subvalue in value.items():
                dotted = f"{key}.{sub}"
                if sub not in allowed:
                    problems.append(_unknown(dotted, [f"{key}.{a}" for a in allowed], origin))
                    continue
                coerced = _coerce(subvalue, allowed[sub], dotted, problems)
                if coerced is not None:
                    setattr(section, sub, coerced)
        elif key in top:
            coerced = _coerce(value, top[key], key, problems)
            if coerced is not None:
                setattr(cfg, key, coerced)
        else:
            problems.append(_unknown(key, allowed_keys(), origin))


def allowed_keys() -> list[str]:
    keys = []
    for name, typ in _fields(RunConfig).items():
        if dataclasses.is_dataclass(typ):
            keys += [f"{name}.{sub}" for sub in _fields(typ)]
        else:
            keys.append(name)
    return keys


def _unknown(key: str, allowed: list[str], origin: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else f"; allowed keys: {', '.join(allowed)}"
    return f"{origin}: unknown key '{key}'{hint}"


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


def load_config(config: str | None, overrides: tuple[str, ...] | list[str] = (),
                flags: dict[str, Any] | None = None) -> RunConfig:
    """The resolved config: defaults < preset file < key=value overrides < flags; all checked."""
    cfg = RunConfig()
    problems: list[str] = []
    if config:
        path = resolve_preset(config)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise UserError(f"config '{path}' is not valid YAML ({str(exc).splitlines()[0]}); fix the file") from exc
        if not isinstance(data, dict):
            raise UserError(f"config '{path}' must be a YAML mapping of sections such as lora:, train:")
        _apply(cfg, data, problems, str(path.name))
    nested, override_problems = parse_overrides(overrides)
    problems += override_problems
    _apply(cfg, nested, problems, "override")
    for dotted, value in (flags or {}).items():
        if value is not None:
            section, _, key = dotted.rpartition(".")
            setattr(getattr(cfg, section) if section else cfg, key, value)
    problems += validate(cfg)
    if problems:
        raise UserError(join_problems("invalid config", problems))
    return cfg


def join_problems(what: str, problems: list[str], limit: int = 8) -> str:
    shown = problems[:limit]
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{what}: " + "; ".join(shown) + more


def validate(cfg: RunConfig) -> list[str]:
    problems = []
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            problems.append(f"{dotted}={value!r} is not allowed; use one of {', '.join(choices)}")
    for dotted in sorted(_POSITIVE | _NON_NEGATIVE):
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if not isinstance(value, (int, float)):
            continue
        if dotted in _POSITIVE and value <= 0:
            problems.append(f"{dotted}={value} must be at least 1")
        elif dotted in _NON_NEGATIVE and value < 0:
            problems.append(f"{dotted}={value} must be 0 or more")
    if not 0 <= cfg.lora.dropout < 1:
        problems.append(f"lora.dropout={cfg.lora.dropout} must be in [0, 1)")
    if not 0 < cfg.train.learning_rate < 1:
        problems.append(f"train.learning_rate={cfg.train.learning_rate} must be in (0, 1), for example 2e-4")
    if not 0 <= cfg.train.warmup_ratio < 1:
        problems.append(f"train.warmup_ratio={cfg.train.warmup_ratio} must be in [0, 1)")
    if not 0 < cfg.data.eval_fraction < 1:
        problems.append(f"data.eval_fraction={cfg.data.eval_fraction} must be in (0, 1), for example 0.1")
    tm = cfg.lora.target_modules
    if not (tm == "all-linear" or (isinstance(tm, list) and tm and all(isinstance(x, str) and x for x in tm))):
        problems.append(f"lora.target_modules={tm!r} must be 'all-linear' or a list of module names "
                        "such as [q_proj, v_proj]")
    if (isinstance(cfg.train.batch_size, int) and isinstance(cfg.train.micro_batch_size, int)
            and cfg.train.micro_batch_size > 0 and cfg.train.batch_size % cfg.train.micro_batch_size):
        problems.append(f"train.batch_size={cfg.train.batch_size} must be a multiple of "
                        f"train.micro_batch_size={cfg.train.micro_batch_size}")
    if not cfg.data.path:
        problems.append("no training data: pass --data FILE (CSV or JSONL with comment/reply columns) "
                        "or set data.path")
    if not cfg.model.base_model:
        problems.append("model.base_model is empty; use a local model directory or a hub id")
    if not cfg.output:
        problems.append("output is empty; pass --output DIR")
    return problems


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True, width=100)
