"""A local fake of the YouTube Data API v3: a real HTTP server on loopback, in a thread.

Endpoints: `commentThreads.list` (videoId or allThreadsRelatedToChannelId, paginated),
`comments.list` (parentId), `comments.insert`, `channels.list` (mine=true, forHandle).
It checks what a real client must get right (method, path, `part`, `textFormat`, the Bearer token
or `key=`, the exact insert body `{"snippet": {"parentId": ..., "textOriginal": ...}}`) and answers
like YouTube: shape errors are 400s and are also recorded in `shape_errors` so a test can assert
there were none; refusals carry `error.errors[0].reason` (keyInvalid, videoNotFound,
commentsDisabled, quotaExceeded, authError).

Data: `add_thread(...)` puts a thread under a video (and its channel); replies posted through
`comments.insert` show up under their thread in later listings, as on YouTube. `page_size`
overrides maxResults so a test gets several pages from a few threads; `inline_replies` is how many
replies a thread shows inline (YouTube: at most 5; the rest need comments.list).

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
CHANNEL = "UCnadiaDoesData000000001"


def comment(cid: str, text: str, author: str = "@viewer", author_channel: str = "UCviewer00000000000000001",
            published: str = "2026-11-01T10:00:00Z", video_id: str = "", parent: str = "") -> dict[str, Any]:
    snippet = {"textOriginal": text, "textDisplay": text, "authorDisplayName": author,
               "authorChannelId": {"value": author_channel}, "publishedAt": published, "likeCount": 0}
    if video_id:
        snippet["videoId"] = video_id
    if parent:
        snippet["parentId"] = parent
    return {"kind": "youtube#comment", "id": cid, "snippet": snippet}


class FakeYouTube:
    def __init__(self, token: str = "test-token", channel_id: str = CHANNEL, api_key: str = "test-key") -> None:
        self.token = token
        self.tokens = {token}          # access tokens accepted (a fake OAuth server adds the ones it issues)
        self.api_keys = {api_key}
        self.channel_id = channel_id
        self.handle = "@NadiaDoesData"
        self.script: deque = deque()
        self.replies: dict[str, list[dict[str, Any]]] = defaultdict(list)  # parentId -> replies posted here
        self.threads: list[dict[str, Any]] = []  # newest first, as order=time lists them
        self.thread_replies: dict[str, list[dict[str, Any]]] = {}  # top comment id -> replies given by add_thread
        self.disabled: set[str] = set()  # videos with comments turned off
        self.quota_exhausted = False
        self.videos: dict[str, dict[str, str]] = {}  # id -> {"title", "description"} for videos.list
        self.videos_refused: str | None = None  # a reason videos.list answers 403 with (threads still work)
        self.page_size: int | None = None
        self.inline_replies = 5
        self.calls: list[tuple[str, str]] = []  # (method, "insert" | "list" | "threads" | "channels")
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

    def add_thread(self, video_id: str, cid: str, text: str, *, author: str = "@viewer",
                   author_channel: str = "UCviewer00000000000000001", published: str = "2026-11-01T10:00:00Z",
                   replies: list[dict[str, Any]] | None = None, channel_id: str | None = None) -> dict[str, Any]:
        """A top-level comment (and replies, from `comment(...)`) on `video_id`; kept newest first."""
        thread = {"kind": "youtube#commentThread", "id": cid,
                  "snippet": {"channelId": channel_id or self.channel_id, "videoId": video_id, "canReply": True,
                              "isPublic": True, "totalReplyCount": 0,
                              "topLevelComment": comment(cid, text, author, author_channel, published, video_id)}}
        self.thread_replies[cid] = list(replies or [])
        self.threads.append(thread)
        self.threads.sort(key=lambda t: t["snippet"]["topLevelComment"]["snippet"]["publishedAt"], reverse=True)
        return thread

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

    def all_replies(self, parent_id: str) -> list[dict[str, Any]]:
        return [*self.thread_replies.get(parent_id, []), *self.replies.get(parent_id, [])]

    def _thread_view(self, thread: dict[str, Any]) -> dict[str, Any]:
        replies = self.all_replies(thread["id"])
        view = json.loads(json.dumps(thread))
        view["snippet"]["totalReplyCount"] = len(replies)
        if replies:
            view["replies"] = {"comments": replies[: self.inline_replies]}
        return view

    def list_threads(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """(status, body) of commentThreads.list."""
        if "videoId" in query:
            video = query["videoId"][0]
            threads = [t for t in self.threads if t["snippet"]["videoId"] == video]
            if video in self.disabled:
                return 403, _error_body(403, "commentsDisabled", "The video has disabled comments.")
            if not threads:
                return 404, _error_body(404, "videoNotFound", "The video could not be found.")
        else:
            channel = query["allThreadsRelatedToChannelId"][0]
            threads = [t for t in self.threads if t["snippet"]["channelId"] == channel]
            if not threads:
                return 404, _error_body(404, "channelNotFound", "The channel could not be found.")
        size = self.page_size or int(query["maxResults"][0])
        start = int((query.get("pageToken") or ["0"])[0].removeprefix("page-") or 0)
        page = threads[start:start + size]
        body: dict[str, Any] = {"kind": "youtube#commentThreadListResponse",
                                "pageInfo": {"totalResults": len(page), "resultsPerPage": size},
                                "items": [self._thread_view(t) for t in page]}
        if start + size < len(threads):
            body["nextPageToken"] = f"page-{start + size}"
        return 200, body

    def _handler(self):
        return _make_handler(self)


def _error_body(status: int, reason: str, message: str, domain: str = "youtube.commentThread") -> dict[str, Any]:
    return {"error": {"code": status, "message": message,
                      "errors": [{"domain": domain, "reason": reason, "message": message}]}}


class _Handler(BaseHTTPRequestHandler):
    fake: FakeYouTube  # set by _make_handler
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
        self._send(status, _error_body(status, reason, message, domain))

    def _authorized(self, query: dict[str, list[str]] | None = None) -> bool:
        if query and "key" in query:
            if query["key"][0] in self.fake.api_keys:
                return True
            self._error(400, "keyInvalid", "API key not valid. Please pass a valid API key.", "usageLimits")
            return False
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer ") or auth[7:] not in self.fake.tokens:
            self._error(401, "authError", "Invalid Credentials")
            return False
        if self.fake.quota_exhausted:
            self._error(403, "quotaExceeded", ERRORS["quotaExceeded"][2], "youtube.quota")
            return False
        return True

    def _shape(self, ok: bool, what: str) -> bool:
        if not ok:
            self.fake.shape_errors.append(f"bad {what} request {self.path}")
            self._error(400, "badRequest", f"bad {what} request {self.path}")
        return ok

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        route = {"/youtube/v3/comments": self._comments_list, "/youtube/v3/commentThreads": self._threads,
                 "/youtube/v3/channels": self._channels, "/youtube/v3/videos": self._videos}.get(url.path)
        if route is None:
            self.fake.shape_errors.append(f"unknown path {url.path}")
            self._error(404, "notFound", f"unknown path {url.path}")
            return
        route(query)

    def _comments_list(self, query: dict[str, list[str]]) -> None:
        self.fake.calls.append(("GET", "list"))
        if not self._shape(query.get("part") == ["snippet"] and "parentId" in query, "list"):
            return
        if self._authorized(query):
            self._send(200, {"kind": "youtube#commentListResponse",
                             "items": self.fake.all_replies(query["parentId"][0])})

    def _threads(self, query: dict[str, list[str]]) -> None:
        self.fake.calls.append(("GET", "threads"))
        scopes = [k for k in ("videoId", "allThreadsRelatedToChannelId") if k in query]
        ok = (query.get("part") == ["snippet,replies"] and query.get("textFormat") == ["plainText"]
              and query.get("maxResults") == ["100"] and len(scopes) == 1)
        if not self._shape(ok, "commentThreads") or not self._authorized(query):
            return
        if self.fake.quota_exhausted:
            self._error(403, "quotaExceeded", ERRORS["quotaExceeded"][2], "youtube.quota")
            return
        self._send(*self.fake.list_threads(query))

    def _videos(self, query: dict[str, list[str]]) -> None:
        self.fake.calls.append(("GET", "videos"))
        ids = query.get("id", [""])[0].split(",")
        if not self._shape(query.get("part") == ["snippet"] and 0 < len(ids) <= 50 and all(ids), "videos"):
            return
        if not self._authorized(query):
            return
        if self.fake.videos_refused:
            self._error(403, self.fake.videos_refused, "videos.list refused", "youtube.quota")
            return
        items = [{"kind": "youtube#video", "id": i, "snippet": self.fake.videos[i]} for i in ids if i in self.fake.videos]
        self._send(200, {"kind": "youtube#videoListResponse", "items": items})

    def _channels(self, query: dict[str, list[str]]) -> None:
        self.fake.calls.append(("GET", "channels"))
        if not self._shape("part" in query and ("mine" in query or "forHandle" in query), "channels"):
            return
        if not self._authorized(query):
            return
        mine = query.get("mine") == ["true"]
        found = mine or query.get("forHandle", [""])[0].lower() == self.fake.handle.lower()
        items = [{"kind": "youtube#channel", "id": self.fake.channel_id,
                  "snippet": {"title": "Nadia Does Data", "customUrl": self.fake.handle}}] if found else []
        self._send(200, {"kind": "youtube#channelListResponse", "items": items})

    def do_POST(self) -> None:  # comments.insert?part=snippet
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        self.fake.calls.append(("POST", "insert"))
        problem, snippet = _insert_problem(url, self.headers, raw)
        if problem:
            self.fake.shape_errors.append(problem)
            self._error(400, "invalidCommentMetadata", problem)
            return
        if not self._authorized():
            return
        behaviour = self.fake.script.popleft() if self.fake.script else "ok"
        parent, text = snippet["parentId"], snippet["textOriginal"]
        if isinstance(behaviour, int):
            self._error(behaviour, "backendError" if behaviour >= 500 else "rateLimitExceeded",
                        f"simulated {behaviour}")
        elif behaviour in ERRORS:
            status, domain, message = ERRORS[behaviour]
            self._error(status, behaviour, message, domain)
        elif behaviour == "drop":
            self.fake._store(parent, text)
            self.close_connection = True
            self.connection.shutdown(2)
        elif behaviour == "hang":
            resource = self.fake._store(parent, text)
            self.fake._release.wait(60)
            self._send(200, resource)
        else:
            self._send(200, self.fake._store(parent, text))


def _make_handler(fake: FakeYouTube) -> type:
    return type("Handler", (_Handler,), {"fake": fake})


def _insert_problem(url, headers, raw: bytes) -> tuple[str | None, dict[str, Any] | None]:
    if url.path != "/youtube/v3/comments":
        return f"wrong path {url.path}", None
    if parse_qs(url.query).get("part") != ["snippet"]:
        return f"part must be snippet, got {url.query!r}", None
    if "application/json" not in (headers.get("Content-Type") or ""):
        return "body is not JSON", None
    try:
        body = json.loads(raw)
    except json.JSONDecodeError:
        body = None
    snippet = body.get("snippet") if isinstance(body, dict) else None
    if (not isinstance(snippet, dict) or set(body) != {"snippet"} or set(snippet) != {"parentId", "textOriginal"}
            or not isinstance(snippet["parentId"], str) or not snippet["parentId"]
            or not isinstance(snippet["textOriginal"], str) or not snippet["textOriginal"].strip()):
        return f"body must be {{snippet: {{parentId, textOriginal}}}}, got {raw[:200]!r}", None
    return None, snippet
