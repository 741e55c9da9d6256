"""`finetune merge`: the adapter merged into a 16-bit copy of the base model.

Merging into 4-bit weights would round the adapter's small updates away (and re-quantize the
base), so the base is loaded unquantized in 16-bit, merged, and saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from base.adapter_info import write_adapter_info
from base.fileio import replace_dir_atomic


def merge(info: Any, base_dir: str, out: Path, dtype: str) -> None:
    from engine.models import Precision, load_adapter, load_base_model, load_tokenizer

    base = load_base_model(base_dir, "none", Precision("cpu", dtype, "merge: 16-bit copy of the base"))
    model = load_adapter(base, info.path, merge=True)
    tokenizer = load_tokenizer(base_dir)

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # Persona and sign-off travel with the merged model so serving uses the training prompt.
        write_adapter_info(tmp, info.base_model, "none", info.style, merged_from=str(info.path))

    replace_dir_atomic(out, build)
