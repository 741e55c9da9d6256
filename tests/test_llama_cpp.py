"""The llama.cpp backend against a real `llama-server` on loopback (skipped when it is not installed:
`make llama-server` builds it, about 13 minutes on 2 cores; CI builds it).

The server is the one users run, on the embedded model's shipped Q4_1 file with real LoRA adapters
converted by llama.cpp's own converter, and on the parrot (a tiny model that says one line, the
sign-off, then junk) converted to GGUF, whose reply the local engine knows exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from base.adapter_info import adapter_display_name
from base.errors import UpstreamError, UserError
from base.prompt import CommentInput
from engine.decoding import Decoding
from engine.llama_cpp import LlamaServer, convert_model, exported_lora, installed_llama_server
from tests.support import DECODE_QUESTIONS, DECODE_STYLE, DECODE_THANKS, free_port, seeded_lora_adapter

BINARY = installed_llama_server()
needs_llama = pytest.mark.skipif(BINARY is None, reason="llama-server is not installed: `make llama-server` "
                                                         "builds it (about 13 minutes on 2 cores)")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, base_model_dir) -> dict[str, Path]:
    """Two LoRA adapters on the embedded model that change what it writes, converted for llama.cpp."""
    made = {}
    for name, seed in (("a", 1), ("b", 2)):
        out = seeded_lora_adapter(base_model_dir, tmp_path_factory.mktemp(f"run-{name}") / "adapter",
                                  rank=8, std=0.05, seed=seed)
        exported_lora(out, base_model_dir)
        made[name] = out
    return made


@pytest.fixture(scope="module")
def llama(adapters, tokenizer):
    """A generator on one llama-server holding both adapters; `a` is the default."""
    from engine.models import embedded_gguf
    from responder.generators.llama_cpp import LlamaCppGenerator

    server = LlamaServer(BINARY, embedded_gguf(), [p / "adapter.gguf" for p in adapters.values()], slots=4).start()
    generator = LlamaCppGenerator(server, tokenizer, "smollm2", {"a": 0, "b": 1}, "a",
                                  Decoding(max_new_tokens=32, short_reply_tokens=12))
    yield generator
    generator.close()


@needs_llama
def test_replies_keep_their_budget_and_end_at_a_sentence_past_60_percent(llama, tokenizer):
    for comment in (DECODE_THANKS, *DECODE_QUESTIONS):
        budget = llama.decoding.budget(comment)
        tokens = llama.reply_tokens(CommentInput(comment), DECODE_STYLE)
        assert 0 < len(tokens) <= budget - 1, (comment, len(tokens))
        ended = tokens[-1] in tokenizer.all_special_ids or tokenizer.decode(tokens[-1:]).rstrip().endswith(
            (".", "!", "?", "…"))
        assert len(tokens) == budget - 1 or ended or len(tokens) < 0.6 * budget, tokenizer.decode(tokens)
    assert llama.decoding.budget(DECODE_THANKS) < llama.decoding.budget(DECODE_QUESTIONS[0])


@needs_llama
def test_the_parrot_says_on_llama_cpp_what_it_says_locally_and_stops_at_the_sign_off(parrot, tmp_path):
    from engine.generation import LocalGenerator
    from engine.models import load_tokenizer
    from responder.generators.llama_cpp import LlamaCppGenerator

    gguf = convert_model(parrot.model_dir, tmp_path / "parrot.gguf", "f32")
    server = LlamaServer(BINARY, gguf, slots=2).start()
    generator = LlamaCppGenerator(server, load_tokenizer(str(parrot.model_dir)), "parrot",
                                  decoding=Decoding(max_new_tokens=40))
    try:
        raw = generator.generate([CommentInput(parrot.comment)], parrot.style)[0]
    finally:
        generator.close()
    local = LocalGenerator.load(str(parrot.model_dir), None, "none", "cpu", max_new_tokens=40)
    assert raw == local.generate([CommentInput(parrot.comment)], parrot.style)[0]
    assert raw.strip().endswith(parrot.style.sign_off) and parrot.junk not in raw


@needs_llama
def test_a_redraft_opens_differently_and_the_comment_beside_it_is_unchanged(llama, tokenizer):
    items = [CommentInput(q) for q in DECODE_QUESTIONS]
    first = llama.generate(items, DECODE_STYLE)
    again = llama.generate([replace(items[0], avoid_openings=[first[0]]), items[1]], DECODE_STYLE)
    opening = lambda text: tokenizer.encode(text.lstrip(), add_special_tokens=False)[0]  # noqa: E731
    assert opening(again[0]) != opening(first[0])
    # Unchanged beside it (to llama.cpp's last bits, which vary with the batch a request shares).
    assert again[1].split()[:3] == first[1].split()[:3]


@needs_llama
def test_each_comment_is_written_by_the_adapter_it_names(llama):
    question = CommentInput(DECODE_QUESTIONS[0])
    by_a = llama.generate([question], DECODE_STYLE)[0]
    by_b = llama.generate([replace(question, adapter="b")], DECODE_STYLE)[0]
    assert by_a != by_b  # the adapters write differently
    mixed = llama.generate([replace(question, adapter="b"), question, replace(question, adapter="a")], DECODE_STYLE)
    # In one call each keeps its own adapter. llama.cpp's sums differ in the last bits with the batch
    # a request shares (its README says so), so a greedy reply may part from its lone twin later on:
    # each is judged by its opening words, where the two adapters already differ.
    opening = lambda text: text.split()[:3]  # noqa: E731
    assert opening(by_a) != opening(by_b)
    assert [opening(m) for m in mixed] == [opening(by_b), opening(by_a), opening(by_a)], mixed
    with pytest.raises(UserError, match="adapter 'c' is not served here; served: a, b"):
        llama.generate([replace(question, adapter="c")], DECODE_STYLE)


@needs_llama
def test_a_killed_engine_fails_the_batch_as_upstream_and_is_restarted_for_the_next(llama):
    items = [CommentInput(f"{q} ({n})") for n in range(6) for q in DECODE_QUESTIONS]
    before = llama.generate(items[:1], DECODE_STYLE)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            llama.generate(items, DECODE_STYLE)
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            failed.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    os.kill(llama.server.process.pid, signal.SIGKILL)
    worker.join(120)
    assert failed and isinstance(failed[0], UpstreamError) and failed[0].status == 503
    assert "exited with code" in str(failed[0]) and "\n" not in str(failed[0])
    restarts = llama.server.restarts
    after = llama.generate(items[:1], DECODE_STYLE)  # restarted: the same reply (to llama.cpp's last bits)
    assert after[0].split()[:3] == before[0].split()[:3], (before, after)
    assert llama.server.restarts == restarts + 1


def _on_llama(adapter: Path, store: Path) -> dict:
    return {**os.environ, "RESPONDER_BACKEND": "llama.cpp", "RESPONDER_ADAPTER": str(adapter),
            "RESPONDER_MAX_NEW_TOKENS": "24", "RESPONDER_STORE": str(store)}


def _serve(adapter: Path, port: int, store: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from responder.cli import main; main()", "serve",
                             "--port", str(port)], env=_on_llama(adapter, store),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


@needs_llama
def test_the_service_answers_over_http_on_llama_cpp_and_stops_its_engine(adapters, tmp_path):
    port = free_port()
    service = _serve(adapters["a"], port, tmp_path / "no-store")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert service.poll() is None, service.stderr.read()
            assert time.time() < deadline, httpx.get(url + "/healthz").text
            time.sleep(0.5)
        answers = [httpx.post(url + "/respond", json={"comment": q, "use_context": False}, timeout=120)
                   for q in DECODE_QUESTIONS]
        assert [a.status_code for a in answers] == [200, 200]
        bodies = [a.json() for a in answers]
        assert all(b["reply"].strip() and b["adapter"] == adapter_display_name(adapters["a"]) for b in bodies)
        engine = _children_named(service.pid, "llama-server")
        assert len(engine) == 1
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(60)
    time.sleep(1)
    assert not any(Path(f"/proc/{pid}").exists() for pid in engine), "llama-server outlived the service"


@needs_llama
def test_batch_loses_nothing_when_the_engine_is_killed_mid_run(adapters, samples_dir, tmp_path):
    """`responder batch` on llama.cpp, its engine killed with SIGKILL while answering, then run again."""
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-c", "from responder.cli import main; main()", "batch",
           str(samples_dir / "youtube" / "commentThreads.json"), "-o", str(out), "--batch-size", "2"]
    env = _on_llama(adapters["a"], tmp_path / "no-store")
    run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out.exists() and out.read_text().count('"status": "answered"') >= 2):
        assert run.poll() is None and time.monotonic() < deadline, "the batch never got going"
        time.sleep(0.05)
    for pid in _children_named(run.pid, "llama-server"):
        os.kill(pid, signal.SIGKILL)
    stderr = run.communicate(timeout=240)[1]
    # Killed during a request: the run stops with one line (rc 1); between batches: restarted, it goes on.
    assert run.returncode in (0, 1), stderr
    if run.returncode == 1:
        assert stderr.strip().splitlines()[-1].startswith("Error:") and "llama-server" in stderr
    killed = [json.loads(line) for line in out.read_text().splitlines()]
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["comment_id"] for r in records]
    assert len(ids) == len(set(ids)) and records[:len(killed)] == killed
    assert all(r["status"] != "answered" or r["reply"].strip() for r in records)
    assert sum(r["status"] == "answered" for r in records) >= sum(r["status"] == "answered" for r in killed)


def _children_named(pid: int, name: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        if comm == name and int(rest[1]) == pid:
            found.append(int(proc.name))
    return found


def test_backend_llama_cpp_without_the_binary_is_one_line_and_exit_code_2(tmp_path):
    env = {**os.environ, "LLAMA_SERVER": "", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", "from responder.cli import main; main()", "serve", "--backend",
                           "llama.cpp", "--llama-server", str(tmp_path / "no-such-llama-server")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-llama-server is not an executable file" in lines[0], done.stderr


@needs_llama
def test_finetune_export_writes_a_lora_file_and_a_merged_gguf_that_llama_server_serves(adapters, tokenizer, tmp_path):
    from responder.generators.llama_cpp import LlamaCppGenerator

    done = subprocess.run([sys.executable, "-c", "from finetune.cli import main; main()", "export",
                           str(adapters["a"]), "-o", str(tmp_path), "--merged"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ("adapter.gguf", "merged.gguf"):
        assert (tmp_path / name).read_bytes()[:4] == b"GGUF" and f"Wrote {tmp_path / name}" in done.stdout
    server = LlamaServer(BINARY, tmp_path / "merged.gguf", slots=1).start()
    generator = LlamaCppGenerator(server, tokenizer, "merged", decoding=Decoding(max_new_tokens=12))
    try:
        assert generator.generate([CommentInput(DECODE_QUESTIONS[0])], DECODE_STYLE)[0].strip()
    finally:
        generator.close()


def test_finetune_export_without_the_converters_is_one_line_and_exit_code_2(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "smollm2"}')
    env = {**os.environ, "LLAMA_CPP_CONVERTERS": str(tmp_path / "nowhere")}
    done = subprocess.run([sys.executable, "-c", "from finetune.cli import main; main()", "export", str(adapter)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "llama.cpp's converters are not in LLAMA_CPP_CONVERTERS=" in lines[0], done.stderr
