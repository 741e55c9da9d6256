"""A server we depend on that is down or failing: `UpstreamError`, never comments marked as failed.

Real HTTP on loopback: a small service that answers what the test sets (503, 422, replies), and
ports nobody listens on. `responder batch --server` runs as a user runs it, in a subprocess.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from base.errors import UpstreamError, UserError
from base.prompt import CommentInput, PromptStyle

RESPONDER = str(Path(sys.executable).parent / "responder")
TEN_TO_ANSWER = 10  # samples/youtube/commentThreads.json: 20 threads, 10 need a reply


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """POST /respond/batch: answers `status` (503, 500, ...) while `failures` > 0, else echo replies.

    A comment containing `refuse` gets a 422, as the real service answers a comment it will not take.
    """

    def __init__(self, status: int = 503, failures: int = 0, refuse: str | None = None) -> None:
        self.status, self.failures, self.refuse = status, failures, refuse
        self.requests: list[list[dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                if fake.failures > 0:
                    fake.failures -= 1
                    return self._send(fake.status, {"detail": "the model is still loading; retry shortly"})
                if fake.refuse and any(fake.refuse in x["comment"] for x in body):
                    return self._send(422, {"detail": "body.0.comment: comment refused"})
                self._send(200, [{"reply": f"Thanks! ({x['comment'][:16]})", "sources": [], "used_context": False,
                                  "model": "fake", "adapter": None, "timings": {}} for x in body])

            def _send(self, status, data):
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if status == 503:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "Service":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sample(samples_dir) -> Path:
    return samples_dir / "youtube" / "commentThreads.json"


def records(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def batch(sample: Path, out: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([RESPONDER, "batch", str(sample), "-o", str(out), "--server", url, "--backoff", "0",
                           "--batch-size", "4", *extra], capture_output=True, text=True, timeout=120, check=False)


def test_a_service_answering_503_stops_the_run_and_the_next_run_answers_everything(tmp_path, sample):
    out = tmp_path / "out.jsonl"
    with Service(status=503, failures=10**6) as svc:
        result = batch(sample, out, svc.url)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [(
            f"Error: the responder service at {svc.url} answered 503 5 times in a row (the model is still "
            "loading; retry shortly); run the same command again later: the comments not answered yet are "
            f"answered then (stopped; the replies written so far stay in {out})")]
        assert len(svc.requests) == 5  # the first batch, tried 1 + 4 times; nothing after it
        first = records(out)
        assert not any(r["status"].startswith("failed") for r in first)
        assert all(r["status"].startswith("skipped:") for r in first) and len(first) == 20 - TEN_TO_ANSWER

        svc.failures = 0  # the service is back: the same command answers the rest
        again = batch(sample, out, svc.url)
    assert again.returncode == 0, again.stderr
    final = records(out)
    assert final[: len(first)] == first
    assert len({r["comment_id"] for r in final}) == len(final) == 20
    assert sum(r["status"] == "answered" for r in final) == TEN_TO_ANSWER


def test_a_service_that_fails_for_a_moment_is_retried(tmp_path, sample):
    out = tmp_path / "out.jsonl"
    with Service(status=502, failures=3) as svc:
        result = batch(sample, out, svc.url)
    assert result.returncode == 0, result.stderr
    assert sum(r["status"] == "answered" for r in records(out)) == TEN_TO_ANSWER
    assert not any(r["status"].startswith("failed") for r in records(out))


def test_an_unreachable_service_stops_the_run_with_one_line(tmp_path, sample):
    out, url = tmp_path / "out.jsonl", f"http://127.0.0.1:{free_port()}"
    result = batch(sample, out, url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cannot reach the responder service at {url} ("), lines
    assert "start it with `responder serve` or check --server" in lines[0]
    assert not any(r["status"].startswith("failed") for r in records(out))


def test_only_the_comment_the_service_refuses_is_marked_failed(tmp_path, sample):
    out = tmp_path / "out.jsonl"
    with Service(refuse="groupby") as svc:
        result = batch(sample, out, svc.url)
    assert result.returncode == 0, result.stderr
    failed = [r for r in records(out) if r["status"].startswith("failed")]
    assert [(r["status"], "groupby" in r["comment"]) for r in failed] == [("failed:rejected", True)]
    assert sum(r["status"] == "answered" for r in records(out)) == TEN_TO_ANSWER - 1


# ---------------------------------------------------------------- the OpenAI-compatible generator

class Completions(BaseHTTPRequestHandler):
    """POST /v1/completions answered with the status and body the test put on the server."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        status, raw = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def completions():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Completions)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def generate(tokenizer, url: str):
    from responder.generators.openai_compatible import OpenAIGenerator

    gen = OpenAIGenerator(url + "/v1", "m", tokenizer, "smollm2", None, timeout_s=5)
    return gen.generate([CommentInput("hi")], PromptStyle())


def test_openai_generator_closed_port_is_upstream_503(tokenizer):
    with pytest.raises(UpstreamError, match=r"^generation server .*/v1/completions unreachable") as exc:
        generate(tokenizer, f"http://127.0.0.1:{free_port()}")
    assert exc.value.status == 503 and not isinstance(exc.value, UserError)


@pytest.mark.parametrize("status, body, expected", [
    (500, b"Internal Server Error\n  engine died", "answered 500: Internal Server Error engine died"),
    (502, b"bad gateway", "answered 502: bad gateway"),
    (200, b"<html>not json</html>", "answered 200 without JSON: <html>not json</html>"),
    (200, b'{"choices": []}', "returned 0 completions for 1 prompts"),
])
def test_openai_generator_bad_answers_are_upstream_502(tokenizer, completions, status, body, expected):
    completions.answer = (status, body)
    url = f"http://127.0.0.1:{completions.server_address[1]}"
    with pytest.raises(UpstreamError, match=expected) as exc:
        generate(tokenizer, url)
    assert exc.value.status == 502 and "\n" not in str(exc.value)


def test_openai_generator_busy_is_503_and_a_bad_request_stays_a_user_error(tokenizer, completions):
    url = f"http://127.0.0.1:{completions.server_address[1]}"
    completions.answer = (429, b"too many requests")
    with pytest.raises(UpstreamError, match="is busy") as exc:
        generate(tokenizer, url)
    assert exc.value.status == 503
    completions.answer = (404, b'{"error": "model m does not exist"}')
    with pytest.raises(UserError, match=r"refused the request \(404\).*RESPONDER_OPENAI_MODEL"):
        generate(tokenizer, url)
    completions.answer = (200, b'{"choices": [{"index": 0, "text": "Hello"}]}')
    assert generate(tokenizer, url) == ["Hello"]
