"""The state of one review app: the replies file (drafts), the page templates, the answerer that
regenerates a draft (built on first use) and the posting settings."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from base.errors import UpstreamError, UserError
from responder.jobs.drafts import Drafts
from responder.review import drafts_view as dv
from responder.youtube.client import DEFAULT_API_BASE, DEFAULT_DAILY_QUOTA

HERE = Path(__file__).parent



@dataclass
class ReviewConfig:
    replies: Path
    api_key: str | None = None          # required for any host but loopback
    allowed_hosts: list[str] | None = None  # Host headers accepted (None: any)
    server: str | None = None           # a running `responder serve` for Regenerate
    server_key: str | None = None
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    answerer: Any = None                # injected (tests); else built on first Regenerate
    api_base: str = DEFAULT_API_BASE
    channel_id: str | None = None
    budget: int = DEFAULT_DAILY_QUOTA
    sign_off: str = ""
    wait_s: float = 5.0
    env: dict[str, str] | None = None   # for the YouTube login (default os.environ)



class Answerer:
    """The responder, built once on first use: in-process (`build_responder`) or `HttpResponder`."""

    def __init__(self, config: ReviewConfig) -> None:
        self.config, self._lock, self._answerer = config, threading.Lock(), config.answerer

    def get(self) -> Any:
        with self._lock:
            if self._answerer is None:
                from base.settings import load_settings
                from responder.factory import build_answerer

                settings = None if self.config.server else load_settings(**self.config.settings_overrides)
                self._answerer = build_answerer(settings, self.config.server, self.config.server_key, retries=1)
            return self._answerer



class Review:
    """The replies file, the templates, the answerer and the posting settings of one app."""

    def __init__(self, config: ReviewConfig) -> None:
        import jinja2

        self.config = config
        self.drafts = Drafts(config.replies, wait_s=config.wait_s)
        self.drafts.check()
        self.answerer = Answerer(config)
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                            autoescape=True, trim_blocks=True, lstrip_blocks=True)
        self.post_lock = threading.Lock()

    @property
    def env(self) -> dict[str, str]:
        return self.config.env if self.config.env is not None else dict(os.environ)

    def channel_id(self) -> str | None:
        from responder.youtube.auth import youtube_access

        try:
            return self.config.channel_id or youtube_access(self.env).channel_id or None
        except UserError:
            return self.config.channel_id

    def ledger_states(self) -> dict[str, str | None]:
        from responder.jobs.posting import read_ledgers

        ledger, _ = read_ledgers(self.drafts.path, self.channel_id())
        return ledger.states()

    def render(self, template: str, **context: Any) -> str:
        return self.templates.get_template(template).render(**context)

    def card(self, record: dict[str, Any], posted: str | None = None, repeats: int = 1) -> str:
        return self.render("card.html", d=dv.view(record, self.config.sign_off, posted, repeats))

    def change(self, comment_id: str, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return self.drafts.change(comment_id, edit)

    def regenerate(self, comment_id: str) -> dict[str, Any]:
        from base.prompt import CommentInput

        record = next((r for r in reversed(self.drafts.load()) if str(r.get("comment_id")) == comment_id), None)
        if record is None:
            raise UserError(f"no reply to comment '{comment_id}' in {self.drafts.name}; reload the page")
        if dv.draft_state(record) == "skipped":  # already answered, the channel's own, spam...: never a draft
            raise UserError(f"comment '{comment_id}' was {record.get('status')}; it gets no reply")
        request = CommentInput(str(record.get("comment") or ""), None, str(record.get("author") or "") or None)
        try:
            reply = self.answerer.get().respond_many([request])[0]
        except (UpstreamError, UserError):
            raise
        except Exception as exc:  # the comment itself could not be answered
            raise UserError(f"the responder could not answer this comment ({exc}); edit the reply by hand") from exc
        return self.change(comment_id, lambda r: dv.regenerated(r, reply))
