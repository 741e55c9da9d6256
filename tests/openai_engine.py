"""A real OpenAI-compatible engine on loopback: `transformers serve`, and the one translation it needs.

`transformers serve` (transformers >= 5, extras `transformers[serving]`: openai, fastapi, uvicorn)
runs on a CPU, offline, and loads local model directories on demand (the request's `model` is the
directory). Its `/v1/completions` speaks a narrower dialect than vLLM's, which the backend targets:

- `prompt` must be one string: no token ids, no list of prompts (400 "prompt must be a string.");
- unknown fields are refused (422 "Unexpected fields in the request: {'repetition_penalty'}");
  its `frequency_penalty` f becomes transformers' `repetition_penalty` 1 + f, the same processor.

`VLLMDialect` is an httpx transport that carries the backend's request across that gap and nothing
more: each token-id prompt becomes its exact text (refused unless the server's tokenizer gives the
same ids back, so the engine computes on the ids the backend built), one request per prompt, the
answers joined in prompt order; status codes and error bodies come back untouched. Everything else
(`max_tokens`, `stop`, `temperature`, the model name, the answer's `choices`) is the engine's own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tests.support import free_port

if TYPE_CHECKING:
    from typing_extensions import Self


def serve_missing() -> str | None:
    """Why `transformers serve` cannot run here, or None when it can."""
    if importlib.util.find_spec("transformers.cli.serving.completion") is None:
        return "this transformers has no `transformers serve` /v1/completions (needs transformers >= 5)"
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        return "`transformers serve` needs its serving extras: pip install 'transformers[serving]' (openai)"
    return None


class TransformersServe:
    """`transformers serve` as a subprocess on a free loopback port, float32 on the CPU, offline."""

    def __init__(self, log: Path, startup_s: float = 120) -> None:
        self.log_path, self.startup_s = log, startup_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        cli = Path(sys.executable).with_name("transformers")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(cli), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--device", "cpu", "--dtype", "float32", "--log-level", "info"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_s
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"transformers serve did not answer /health within {self.startup_s:.0f} s:\n"
                                   + self.log_path.read_text()[-3000:])
            time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text()


class VLLMDialect(httpx.BaseTransport):
    """Carries the backend's vLLM-style completions request to `transformers serve` (see the module doc).

    `exchanges` records, per prompt, the body sent to the engine and the engine's JSON answer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.inner = httpx.HTTPTransport()
        self.exchanges: list[tuple[dict, Any]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or not request.url.path.endswith("/completions"):
            return self.inner.handle_request(request)
        body = json.loads(request.read())
        prompts = body.pop("prompt")
        if "repetition_penalty" in body:
            body["frequency_penalty"] = body.pop("repetition_penalty") - 1.0
        choices = []
        for n, ids in enumerate(prompts):
            one = {**body, "prompt": self._text(ids)}
            response = self.inner.handle_request(httpx.Request("POST", request.url, json=one,
                                                               extensions=request.extensions))
            response.read()
            if response.status_code != 200:
                return response
            answer = response.json()
            self.exchanges.append((one, answer))
            choices += [{**c, "index": n} for c in answer["choices"]]
        return httpx.Response(200, json={"object": "text_completion", "choices": choices}, request=request)

    def _text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)
        if self.tokenizer(text)["input_ids"] != ids:
            raise AssertionError("this prompt does not survive decode/re-encode (special-token text in the "
                                 "comment?): the engine would compute on other ids than the backend built")
        return text

    def close(self) -> None:
        self.inner.close()
