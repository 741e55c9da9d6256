"""The three CLIs start fast (no torch on the --help path) and report bad settings in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "chromadb", "sentence_transformers")


@pytest.mark.parametrize("module", ["finetune.cli", "ingest.cli", "responder.cli"])
def test_importing_a_cli_module_imports_no_heavy_library(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("module", ["finetune.cli", "ingest.cli", "responder.cli"])
def test_help_answers(module):
    out = subprocess.run([sys.executable, "-c", f"import {module} as m; m.main()", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert "Usage:" in out.stdout


def test_bad_setting_in_the_environment_is_one_line_naming_the_variable(monkeypatch):
    from base.errors import UserError
    from base.settings import load_settings

    monkeypatch.setenv("RESPONDER_TOP_K", "many")
    with pytest.raises(UserError, match=r"top_k \(RESPONDER_TOP_K\)"):
        load_settings()
