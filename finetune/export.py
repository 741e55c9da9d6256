"""`finetune export`: the adapter as llama.cpp reads it, and optionally the merged model as one GGUF.

The LoRA file is what `responder serve --backend llama.cpp` loads beside the base model's GGUF (it
writes the same file itself when it is missing); the merged GGUF is for deployments without this
service or an adapter-aware server. Both are converted by llama.cpp's own converters
(`engine.llama_cpp`), written atomically.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from engine.llama_cpp import LORA_FILE, MERGED_FILE, convert_lora, convert_model


def export(info: Any, base_dir: str, out: Path, merged: bool, outtype: str) -> list[Path]:
    """Files written: `out/adapter.gguf`, and with `merged` `out/merged.gguf`."""
    written = [convert_lora(info.path, base_dir, out / LORA_FILE, outtype)]
    if merged:
        from .merge import merge

        with tempfile.TemporaryDirectory(prefix="merged-", dir=out) as tmp:
            model_dir = Path(tmp) / "model"
            merge(info, base_dir, model_dir, "bfloat16" if outtype == "bf16" else "float16")
            written.append(convert_model(model_dir, out / MERGED_FILE, outtype))
    return written
