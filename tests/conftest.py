"""Shared fixtures: the real embedded models and tiny models built from a config.

Tiny models use the real SmolLM2 tokenizer and chat template (so prompts are the real ones) on a
2-layer, width-64 Llama: fast enough to train and generate in unit tests.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once into the user's model cache."""
    from base.models import embedded_base_model

    return embedded_base_model()


@pytest.fixture(scope="session")
def tokenizer(base_model_dir):
    from base.models import load_tokenizer

    return load_tokenizer(str(base_model_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, base_model_dir) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer, saved like a real checkpoint."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-model")
    config = AutoConfig.from_pretrained(base_model_dir)
    config.hidden_size = 64
    config.intermediate_size = 128
    config.num_hidden_layers = 2
    config.num_attention_heads = 4
    config.num_key_value_heads = 2
    config.head_dim = 16
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (base_model_dir / name).exists():
            shutil.copy(base_model_dir / name, out / name)
    return out


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def samples_dir(repo_root) -> Path:
    return repo_root / "samples"
