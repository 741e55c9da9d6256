"""What an adapter directory records about how it was trained, read by the serving side.

`finetune run` writes `responder.json` inside the PEFT adapter directory (beside
adapter_config.json; PEFT and vLLM ignore it). Serving reads it to use the same persona and
sign-off (the same prompt) and to refuse a base model or quantization that differs from training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from base.errors import UserError


def adapter_display_name(path: Path | str) -> str:
    """How an adapter is called in logs, /healthz and replies: a run's adapter, saved by `finetune run`
    as `<run>/adapter`, by its run's name; any other folder by its own."""
    path = Path(path)
    return path.parent.name if path.name == "adapter" else path.name
from base.prompt import DEFAULT_PASSAGE_TOKENS, PromptStyle

INFO_FILE = "responder.json"


@dataclass(frozen=True)
class AdapterInfo:
    path: Path  # the PEFT adapter directory (holds adapter_config.json)
    base_model: str  # as the user named it at training time (hub id, alias or path)
    quantization: str  # "nf4" or "none"
    persona: str
    sign_off: str
    passage_tokens: int = DEFAULT_PASSAGE_TOKENS
    retrieval: dict | None = None  # how training retrieved passages (context-aware training), if it did

    @property
    def style(self) -> PromptStyle:
        return PromptStyle(persona=self.persona, sign_off=self.sign_off, passage_tokens=self.passage_tokens)


def write_adapter_info(adapter_dir: Path, base_model: str, quantization: str, style: PromptStyle,
                       **extra: object) -> None:
    """responder.json: base model, quantization and prompt style, plus any `extra` facts
    (how training retrieved passages, what a merged model was merged from)."""
    info = {"base_model": base_model, "quantization": quantization, "persona": style.persona,
            "sign_off": style.sign_off, "passage_tokens": style.passage_tokens, **extra}
    (Path(adapter_dir) / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def find_adapter_dir(path: Path | str) -> Path:
    """The adapter directory, given it or a `finetune run` output directory."""
    path = Path(path).expanduser()
    for candidate in (path, path / "adapter"):
        if (candidate / "adapter_config.json").exists():
            return candidate
    if not path.exists():
        raise UserError(f"adapter '{path}' does not exist; pass the output directory of `finetune run`")
    raise UserError(f"adapter '{path}' has no adapter_config.json; pass the output directory of "
                    "`finetune run` or its adapter/ folder")


def read_adapter_info(path: Path | str) -> AdapterInfo:
    adapter_dir = find_adapter_dir(path)
    info_path = adapter_dir / INFO_FILE
    if info_path.exists():
        try:
            data = json.loads(info_path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{info_path} is not valid JSON ({exc}); re-run `finetune run`") from exc
    else:  # a PEFT adapter trained elsewhere: take the base model from PEFT's own config
        peft_cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        data = {"base_model": peft_cfg.get("base_model_name_or_path") or "", "quantization": "none",
                "persona": PromptStyle().persona, "sign_off": ""}
    return AdapterInfo(path=adapter_dir, base_model=data["base_model"], quantization=data["quantization"],
                       persona=data["persona"], sign_off=data["sign_off"],
                       passage_tokens=int(data.get("passage_tokens") or DEFAULT_PASSAGE_TOKENS),
                       retrieval=data.get("retrieval"))


def as_dict(info: AdapterInfo) -> dict:
    d = asdict(info)
    d["path"] = str(info.path)
    return d
