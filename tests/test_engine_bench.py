"""benchmarks/engine_bench.py's own guard: a bad LLAMA_SERVER is one line, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_bad_llama_server_path_is_one_line_and_exit_code_2(tmp_path):
    env = {**os.environ, "LLAMA_SERVER": str(tmp_path / "no-such-llama-server")}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_bench.py"), "--count", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LLAMA_SERVER=" in lines[0] and "not an executable file" in lines[0]
