"""`finetune merge`: the adapter merged into a 16-bit copy of the base model.

Merging into 4-bit weights would round the adapter's small updates away (and re-quantize the
base), so the base is loaded unquantized in 16-bit, merged, and saved as safetensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from base.fileio import replace_dir_atomic


def merge(info: Any, base_dir: str, out: Path, dtype: str) -> None:
    from peft import PeftModel

    from base.models import Precision, load_base_model, load_tokenizer

    base = load_base_model(base_dir, "none", Precision("cpu", dtype, "merge: 16-bit copy of the base"))
    model = PeftModel.from_pretrained(base, str(info.path)).merge_and_unload()
    tokenizer = load_tokenizer(base_dir)

    def build(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # Persona and sign-off travel with the merged model so serving uses the training prompt.
        (tmp / "responder.json").write_text(json.dumps(
            {"base_model": info.base_model, "quantization": "none", "persona": info.persona,
             "sign_off": info.sign_off, "merged_from": str(info.path)}, indent=2) + "\n")

    replace_dir_atomic(out, build)
