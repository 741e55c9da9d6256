"""Helpers shared by the test files (fixtures are in conftest.py; these are plain code they use).

- `free_port()`, `LiveServer`: an ASGI app served by uvicorn on a free loopback port, in a thread.
- `CORPUS`, `write_corpus()`: three small articles whose answers the knowledge tests know.
- `Parrot`, `train_parrot()`: a tiny model trained until it says one reply, word for word: a
  model whose output a test can predict, sign-off and all, without the real model's cost.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from base.prompt import CommentInput, PromptStyle

# ------------------------------------------------------------------------- servers on loopback


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a thread (lifespan on, as in production)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                   log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


# ------------------------------------------------------------------------------- article corpus

CORPUS = {
    "sql-window.md": """---
title: SQL Window Functions
url: https://blog.test/sql-window
---
# SQL Window Functions

## Running totals
Use SUM(amount) OVER (ORDER BY day) to compute a running total of sales per day in Postgres.

## Previous row
LAG(revenue) OVER (ORDER BY month) gives last month's revenue, so month over month growth needs no self join.
""",
    "docker.md": """---
title: Docker for Data Scientists
---
# Docker for Data Scientists

## Layer caching
Copy requirements.txt and install packages before copying your code, so a code change does not reinstall every package.

## GPUs
Install the NVIDIA container toolkit and run the container with --gpus all so torch can see the GPU.
""",
    "bootstrap.md": """# Bootstrap Confidence Intervals

## Error bars on a median
Resample your data with replacement thousands of times, compute the median each time, and take the 2.5th and 97.5th percentiles.
""",  # noqa: E501
}


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in CORPUS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------ a parrot model

SIGN_OFF = "Keep exploring! - Nadia"
NADIA = PromptStyle(persona="You are Nadia Okafor of the channel Nadia Does Data.", sign_off=SIGN_OFF)


@dataclass(frozen=True)
class Parrot:
    """A tiny model that answers `comment` with `reply`, the sign-off, then `junk`, then `<|im_end|>`.

    The junk after the sign-off is what a model adds when nothing stops it: a test of stopping at
    the sign-off sees it unless generation really stops there.
    """

    model_dir: Path
    comment: str = "thanks!"
    reply: str = "Thanks for watching!"
    junk: str = "Note: I am an AI language model."
    style: PromptStyle = NADIA

    @property
    def says(self) -> str:
        """Everything the model writes for `comment`, special tokens aside."""
        return f"{self.reply}\n{self.style.sign_off}\n{self.junk}"


def train_parrot(out: Path, base_model_dir: Path, max_steps: int = 300) -> Parrot:
    """A 2-layer, width-64 Llama (SmolLM2's tokenizer and template) trained to say `Parrot.says`."""
    import torch

    from engine.models import load_tokenizer
    from base.prompt import encode_prompt

    parrot = Parrot(out)
    tokenizer = load_tokenizer(str(base_model_dir))
    target = tokenizer(parrot.says + "<|im_end|>", add_special_tokens=False).input_ids
    prompt = encode_prompt(tokenizer, parrot.style, CommentInput(parrot.comment))
    ids, labels = torch.tensor([prompt + target]), torch.tensor(target)
    model = tiny_llama(base_model_dir)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    loss = torch.tensor(float("inf"))
    for _ in range(max_steps):
        # Logits for the reply positions only: the prompt carries no loss, and skipping its
        # 49k-wide logits makes a step several times cheaper.
        logits = model(input_ids=ids, logits_to_keep=len(target) + 1).logits[0, :-1]  # (R, V)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if loss.item() < 0.01:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.01, f"the parrot did not learn its line (loss {loss.item():.3f})"
    model.eval()
    model.save_pretrained(out)
    copy_tokenizer_files(base_model_dir, out)
    return parrot


def tiny_llama(base_model_dir: Path, seed: int = 0):
    """A randomly initialised 2-layer, width-64 Llama with SmolLM2's vocabulary."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_model_dir)
    config.hidden_size = 64
    config.intermediate_size = 128
    config.num_hidden_layers = 2
    config.num_attention_heads = 4
    config.num_key_value_heads = 2
    config.head_dim = 16
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def seeded_lora_adapter(base_dir: Path, out: Path, rank: int, std: float, seed: int) -> Path:
    """A LoRA adapter (q and v projections) on `base_dir` with B drawn from N(0, std), so that it changes
    what the model writes, saved as `finetune run` saves one: adapter_info says NF4 and the Nadia style."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from base.adapter_info import write_adapter_info

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)  # A's initialisation too: the same adapter every run
    peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, std)
    peft_model.save_pretrained(out)
    write_adapter_info(out, str(base_dir), "nf4", NADIA)
    return out


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
