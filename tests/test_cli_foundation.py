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


def test_clis_keep_openmp_threads_spinning_unless_told_otherwise():
    """The reply lane decodes in a worker thread, where libgomp's default (sleep after 1,000 spins
    when it manages more threads than cores) made each step twice as slow: the CLIs set a short
    active spin before torch loads, and leave a user's own setting alone."""
    import os

    code = ("import os, sys; from base.clikit import keep_compute_threads_spinning as k; "
            "sys.argv[1:] and __import__(sys.argv[1]); k(); "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def policy(*args: str, **extra: str) -> str:
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                             env={**env, **extra}, check=False)
        return out.stdout.strip() + out.stderr[-500:]

    assert policy() == "active 100000"
    assert policy(OMP_WAIT_POLICY="passive") == "passive None"
    assert policy("torch") == "None None"  # too late: libgomp has read its environment
