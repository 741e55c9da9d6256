"""Runtime settings shared by `ingest` and `responder`: one pydantic-settings class.

Every field can be set in the environment with the `RESPONDER_` prefix (for example
`RESPONDER_STORE=/data/chroma`, `RESPONDER_CHROMA_URL=http://chroma:8000`) or in a `.env` file;
command-line flags override both. Settings are built by `load_settings()`, never at import time,
so tests and commands construct exactly what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_COLLECTION = "articles"


def _data_home() -> Path:
    return Path.home() / ".local" / "share" / "comment-responder"


def default_store() -> Path:
    """Where `ingest` puts the embedded store when no --store is given."""
    return _data_home() / "chroma"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RESPONDER_", env_file=".env", extra="ignore")

    # Knowledge base
    store: Path = Field(default_factory=default_store,
                        description="Directory of the embedded Chroma store.")
    chroma_url: str | None = Field(None, description="URL of a Chroma server (server mode).")
    collection: str = DEFAULT_COLLECTION
    embedder: str = Field(DEFAULT_EMBEDDER, description="sentence-transformers name or path.")
    top_k: int = Field(3, ge=1, le=20)
    min_similarity: float | None = Field(
        None, description="Cosine similarity below which passages are dropped (None: calibrated default).")
    hybrid: bool = Field(True, description="BM25 beside the embedder, fused by rank (README: Hybrid retrieval).")
    focus: bool = Field(True, description="Search with the part of a comment that asks, each question too.")

    # Model
    base_model: str = Field(DEFAULT_BASE_MODEL, description="Hub id or local directory.")
    model_cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "comment-responder",
                              description="Where converted base models are cached.")
    adapter: Path | None = Field(None, description="LoRA adapter directory (finetune output).")
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    quantization: Literal["nf4", "none"] = Field(
        "nf4", description="nf4: 4-bit base + adapter (least memory); none: float weights, adapter merged.")
    persona: str | None = Field(None, description="Overrides the persona recorded with the adapter.")
    sign_off: str | None = Field(None, description="Overrides the sign-off recorded with the adapter.")
    max_new_tokens: int = Field(96, ge=1, le=1024, description="Token budget of a reply to a question.")
    # Decoding (engine/decoding.py; defaults measured with `finetune eval`, README "Reply quality").
    short_reply_tokens: int = Field(40, ge=1, le=1024,
                                    description="Token budget of a reply to a short remark (thanks, praise).")
    repetition_penalty: float = Field(1.1, ge=1.0, le=2.0,
                                      description="Penalty on tokens the reply already used (1.0: off).")
    no_repeat_ngram_size: int = Field(4, ge=0, le=20,
                                      description="No token n-gram twice within a reply (0: off).")
    context_weight: float = Field(0.0, ge=0.0, le=5.0, description=(
        "Context-aware decoding: how much the passages' effect on each token is amplified (0: off)."))
    redrafts: int = Field(2, ge=0, le=5, description=(
        "A weak draft (a question answered with thanks or with nothing from its comment or passages, or a "
        "reply already given to another comment) is decoded again, opening differently, up to this many "
        "times (0: off; base/redraft.py)."))

    # The citation line under a reply drawn from a confident passage (base/citation.py); "" turns it off.
    citation: str = Field(
        'More in my post "{title}": {url}',
        description="Template with {title} and {url}; an article without a URL is cited by its title alone.")

    # Where an article without its own URL (front matter, HTML canonical, PDF metadata) lives: a base
    # URL its slug (the file's name without extension) is appended to, or a pattern with {slug}.
    article_base_url: str | None = Field(
        None, description="e.g. https://blog.example.com/posts/ or https://blog.example.com/{slug}.html")

    # The creator's video -> article mapping read at ingest (ingest/video_map.py): a CSV of video,article.
    videos_file: str | None = Field(None, description="CSV with video (id or URL) and article (file or URL) columns.")

    @field_validator("article_base_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        from base.citation import check_base_url

        return check_base_url(value) if value else None

    @field_validator("citation")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        from base.citation import check_template

        return check_template(value)

    # Triage (knowledge/triage_policy.py): what each intent gets, e.g. "criticism=skip,thanks=flag".
    triage_policy: str | None = Field(
        None, description="intent=action pairs (draft, flag, skip); unnamed intents keep their default.")

    # Generation backend: the in-process model, llama.cpp's server (started and supervised by the
    # service: engine/llama_cpp.py), or an OpenAI-compatible server (vLLM).
    backend: Literal["local", "llama.cpp", "openai"] = "local"
    openai_base_url: str | None = None
    openai_model: str | None = None
    openai_api_key: SecretStr | None = None
    llama_server: Path | None = Field(
        None, description="llama-server binary (default: $LLAMA_SERVER, PATH, the virtual environment's bin/).")
    llama_model: Path | None = Field(
        None, description="GGUF file of the base model for llama.cpp (default: the embedded model's shipped Q4_1 file).")
    llama_threads: int | None = Field(None, ge=1, description="llama-server's threads (default: every core).")

    # Shared by `serve` and the commands that call it (`batch --server`, `respond`): the rest of the
    # service's settings are responder/service/settings.py's.
    api_key: SecretStr | None = None
    max_batch_size: int = Field(16, ge=1)
    request_timeout_s: float = Field(300.0, gt=0)
    max_comment_tokens: int = Field(
        3072, ge=16, description="Longest comment in model tokens (after cleaning); 10,000 characters of "
                                 "English prose are about 2,700.")


S = TypeVar("S", bound=Settings)


def load_settings(settings_class: type[S] = Settings, **overrides) -> S:  # type: ignore[assignment]
    """Settings from the environment, with the given non-None overrides applied on top
    (`settings_class`: a service's own subclass, e.g. `responder.service.settings.ServiceSettings`).

    Every invalid value is reported at once, naming the setting and its environment variable.
    """
    from pydantic import ValidationError

    from base.errors import UserError

    try:
        return settings_class(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])} (RESPONDER_{str(err['loc'][0]).upper()}): {err['msg']}"
            for err in exc.errors()
        )
        raise UserError(f"invalid settings: {problems}") from None
