"""The architecture as a test: `pytest -k boundary`.

The arrows: every package -> base (the kernel); ingest, finetune, responder -> knowledge and
engine, which do not import each other; nothing imports responder, ingest or finetune; the kernel
imports no other package and, with knowledge, no torch (only the engine runs the model). Inside
responder/, its rooms are layered too. import-linter checks them with the contracts in
pyproject.toml; this test runs it. A second check reads the source for the calls that load
weights, which must stay in one module per kind (language model and adapter: engine/models.py;
embedder: knowledge/embedder.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("base", "engine", "knowledge", "ingest", "finetune", "responder")
# Calls that load model weights or an adapter, and the one module allowed to make each.
LOADERS = {
    r"\bAutoModelForCausalLM\.from_(pretrained|config)\(": {"engine/models.py"},
    r"\bPeftModel\.from_pretrained\(": {"engine/models.py"},
    r"\bSentenceTransformer\(": {"knowledge/embedder.py"},
}


def test_boundary_import_contracts_hold():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


def test_boundary_weights_are_loaded_in_one_module_each():
    offenders = []
    for stage in STAGES:
        for path in (ROOT / stage).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            text = path.read_text(encoding="utf-8")
            for pattern, allowed in LOADERS.items():
                if rel not in allowed and re.search(pattern, text):
                    offenders.append(f"{rel}: {pattern}")
    assert not offenders, "model or adapter loading outside its module:\n" + "\n".join(offenders)


def test_boundary_no_function_is_longer_than_80_lines():
    """The standing rule for every package: a function fits on a screen (decorators included)."""
    import ast

    long = []
    for stage in STAGES:
        for path in (ROOT / stage).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([d.lineno for d in node.decorator_list] + [node.lineno])
                    if node.end_lineno - start + 1 > 80:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                                    f"({node.end_lineno - start + 1} lines)")
    assert not long, "functions longer than 80 lines:\n" + "\n".join(long)


def test_boundary_no_test_module_imports_another():
    """Shared test code lives in tests/support.py, tests/fakes.py and tests/review_support.py."""
    offenders = [f"{path.name}: {line.strip()}" for path in (ROOT / "tests").glob("test_*.py")
                 for line in path.read_text(encoding="utf-8").splitlines()
                 if re.match(r"\s*(from tests\.test_\w+ import|import tests\.test_)", line)]
    assert not offenders, "test modules importing other test modules:\n" + "\n".join(offenders)
