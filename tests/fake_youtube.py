"""A local fake of YouTube's `comments` endpoint: a real HTTP server on loopback, in a thread.

It checks what a real client must get right (method, path, `part=snippet`, the Bearer token, the
exact body `{"snippet": {"parentId": ..., "textOriginal": ...}}`) and answers like YouTube:
shape errors are 400s and are also recorded in `shape_errors` so a test can assert there were none.

Behaviours of the next inserts are queued by the test (`fake.script.extend([...])`):
  "ok"                    store the reply, answer 200 (the default when the queue is empty)
  429 / 500 / 503         answer that status, store nothing
  "quotaExceeded"         403 youtube.quota quotaExceeded, store nothing
  "commentTextTooLong"    400, store nothing
  "operationNotSupported" 403, store nothing
  "drop"                  store the reply, then close the connection without answering
  "hang"                  store the reply, then wait (until `release()` or 60 s) before answering:
                          the client can be killed while it waits, the reply already exists
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ERRORS = {
    "quotaExceeded": (403, "youtube.quota", "The request cannot be completed because you have exceeded your quota."),
    "commentTextTooLong": (400, "youtube.comment", "The comment text is too long."),
    "operationNotSupported": (403, "youtube.comment", "The operation is not supported for this comment."),
}


class FakeYouTube:
    def __init__(self, token: str = "test-token", channel_id: str = "UCnadiaDoesData000000001") -> None:
        self.token = token
        self.channel_id = channel_id
        self.script: deque = deque()
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)  # parentId -> stored replies
        self.calls: list[tuple[str, str]] = []  # (method, "insert" | "list")
        self.shape_errors: list[str] = []
        self._release = threading.Event()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --------------------------------------------------------------------------- test helpers
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "FakeYouTube":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def release(self) -> None:
        self._release.set()

    def count(self, kind: str) -> int:
        return sum(1 for _, k in self.calls if k == kind)

    def texts_under(self, parent_id: str) -> list[str]:
        return [r["snippet"]["textOriginal"] for r in self.replies.get(parent_id, [])]

    def total_replies(self) -> int:
        return sum(len(v) for v in self.replies.values())

    def wait_for_replies(self, n: int, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.total_replies() >= n:
                return True
            time.sleep(0.02)
        return False

    # --------------------------------------------------------------------------------- server
    def _store(self, parent_id: str, text: str) -> dict[str, Any]:
        with self.lock:
            n = sum(len(v) for v in self.replies.values()) + 1
            resource = {
                "kind": "youtube#comment", "id": f"{parent_id}.reply{n:04d}",
                "snippet": {"parentId": parent_id, "textOriginal": text, "textDisplay": text,
                            "authorChannelId": {"value": self.channel_id},
                            "authorDisplayName": "@NadiaDoesData",
                            "publishedAt": "2026-11-28T10:00:00Z"},
            }
            self.replies[parent_id].append(resource)
            return resource

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, reason: str, message: str, domain: str = "global") -> None:
                self._send(status, {"error": {"code": status, "message": message,
                                              "errors": [{"domain": domain, "reason": reason, "message": message}]}})

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._error(401, "authError", "Invalid Credentials")
                    return False
                return True

            def do_GET(self) -> None:  # comments.list?parentId=...
                url = urlparse(self.path)
                query = parse_qs(url.query)
                fake.calls.append(("GET", "list"))
                if url.path != "/youtube/v3/comments" or query.get("part") != ["snippet"] or "parentId" not in query:
                    fake.shape_errors.append(f"bad list request {self.path}")
                    self._error(400, "badRequest", f"bad list request {self.path}")
                    return
                if not self._authorized():
                    return
                items = list(fake.replies.get(query["parentId"][0], []))
                self._send(200, {"kind": "youtube#commentListResponse", "items": items})

            def do_POST(self) -> None:  # comments.insert?part=snippet
                url = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake.calls.append(("POST", "insert"))
                problem, snippet = None, None
                if url.path != "/youtube/v3/comments":
                    problem = f"wrong path {url.path}"
                elif parse_qs(url.query).get("part") != ["snippet"]:
                    problem = f"part must be snippet, got {url.query!r}"
                elif "application/json" not in (self.headers.get("Content-Type") or ""):
                    problem = "body is not JSON"
                else:
                    try:
                        body = json.loads(raw)
                    except json.JSONDecodeError:
                        body = None
                    snippet = body.get("snippet") if isinstance(body, dict) else None
                    if (not isinstance(snippet, dict) or set(body) != {"snippet"}
                            or set(snippet) != {"parentId", "textOriginal"}
                            or not isinstance(snippet["parentId"], str) or not snippet["parentId"]
                            or not isinstance(snippet["textOriginal"], str) or not snippet["textOriginal"].strip()):
                        problem = f"body must be {{snippet: {{parentId, textOriginal}}}}, got {raw[:200]!r}"
                if problem:
                    fake.shape_errors.append(problem)
                    self._error(400, "invalidCommentMetadata", problem)
                    return
                if not self._authorized():
                    return
                behaviour = fake.script.popleft() if fake.script else "ok"
                parent, text = snippet["parentId"], snippet["textOriginal"]
                if isinstance(behaviour, int):
                    self._error(behaviour, "backendError" if behaviour >= 500 else "rateLimitExceeded",
                                f"simulated {behaviour}")
                elif behaviour in ERRORS:
                    status, domain, message = ERRORS[behaviour]
                    self._error(status, behaviour, message, domain)
                elif behaviour == "drop":
                    fake._store(parent, text)
                    self.close_connection = True
                    self.connection.shutdown(2)
                elif behaviour == "hang":
                    resource = fake._store(parent, text)
                    fake._release.wait(60)
                    self._send(200, resource)
                else:
                    self._send(200, fake._store(parent, text))

        return Handler
