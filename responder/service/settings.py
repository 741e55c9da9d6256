"""`responder serve`'s own settings, on top of those every command shares (`base.settings`).

The same environment variables (`RESPONDER_HOST`, `RESPONDER_QUEUE_SIZE`, ...); only the service
reads them, so they live beside it. Limits a hostile caller could push against are listed in
docs/deploy.md ("Limits").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from base.settings import Settings


class ServiceSettings(Settings):
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    # continuous: a comment joins the running batch at the next decoding step and a finished reply
    # is answered at once (engine/inflight.py); static: one batched generate per gathered batch.
    # The OpenAI-compatible backend batches on its server: static there.
    batching: Literal["static", "continuous"] = "continuous"
    # The prompt's shared start (system turn) computed once and reused by every prompt (continuous).
    prefix_cache: bool = True
    # A CPU batch takes seconds, so a quarter second to let concurrent clients join it costs
    # little latency and fills batches (serve_bench: 4.6x -> 5.8x the one-at-a-time rate).
    max_wait_ms: int = Field(250, ge=0)
    queue_size: int = Field(64, ge=1)
    # Hardening (docs/deploy.md "Limits"): every limit a hostile caller could push against.
    allow_no_auth: bool = Field(False, description="Serve on a non-loopback address without an API key.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body; raise it for big /respond/batch bodies.")
    retrieve_queue_size: int = Field(8, ge=1, description="/retrieve requests waiting before 503.")
    retrieve_timeout_s: float = Field(10.0, gt=0, description="Seconds before a /retrieve request is 504.")
    retrieve_share: float = Field(
        0.1, gt=0, le=1, description="Share of the time /retrieve may compute while replies generate.")
    shutdown_grace_s: float = Field(
        8.0, ge=0, description="On SIGTERM, seconds to finish queued requests before answering the rest 503.")
