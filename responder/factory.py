"""Build a `Responder` from `Settings`: the adapter's record, the generator, the knowledge base.

`plan_serving` reads and checks everything cheap first (the adapter's responder.json, the base
model and quantization it was trained with), so a mismatch is refused in one clear line before
any weights are loaded; `build_responder` then loads what the plan says.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from base.adapter_info import AdapterInfo, adapter_display_name, read_adapter_info
from base.errors import UserError
from base.prompt import PromptStyle
from base.settings import Settings
from engine.decoding import decoding_of
from knowledge.config import RetrievalConfig, for_adapter
from responder.responder import Responder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingPlan:
    """What will be served, known before anything heavy is loaded."""

    base_model: str
    quantization: str  # "nf4" or "none"; "gguf" on llama.cpp (the file's own)
    adapter: AdapterInfo | None
    style: PromptStyle
    backend: str  # "local", "llama.cpp" or "openai"
    retrieval: RetrievalConfig  # the adapter's recorded setup unless a setting says otherwise
    retrieval_notes: tuple[str, ...] = ()  # what differs from the adapter's training, in words

    @property
    def adapter_label(self) -> str:
        return str(self.adapter.path) if self.adapter else "no adapter"

    @property
    def merged(self) -> bool:
        return self.adapter is not None and self.quantization == "none" and self.backend == "local"


def _same_base_model(a: str, b: str, cache_dir: Path | None) -> bool:
    from engine.models import EMBEDDED_ALIASES

    if a.strip().lower() == b.strip().lower():
        return True
    if a.strip().lower() in EMBEDDED_ALIASES and b.strip().lower() in EMBEDDED_ALIASES:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.is_dir() and pb.is_dir():
        return pa.resolve() == pb.resolve()
    # One is a directory, the other an alias of the embedded default: compare where they lead.
    from engine.models import resolve_base_model

    try:
        return Path(resolve_base_model(a, cache_dir)).resolve() == Path(resolve_base_model(b, cache_dir)).resolve()
    except UserError:
        return False


def plan_serving(settings: Settings) -> ServingPlan:
    """The base model, quantization, adapter and style to serve; refuses a mismatch with training.

    Base model and quantization not set by the user follow the adapter's record. Set explicitly,
    they must match it, with one exception: an adapter trained on NF4 weights may be served on
    float weights with the adapter merged (`quantization: none`), the usual way to serve a QLoRA
    adapter fast; the reverse (an adapter trained on float weights, served on 4-bit ones) is refused.
    """
    explicit = settings.model_fields_set
    info = read_adapter_info(settings.adapter) if settings.adapter is not None else None
    base_model, quantization = settings.base_model, settings.quantization
    if info is not None:
        if info.base_model:
            if "base_model" not in explicit:
                base_model = info.base_model
            elif not _same_base_model(settings.base_model, info.base_model, settings.model_cache):
                raise UserError(
                    f"adapter '{info.path}' was trained on base model '{info.base_model}', not "
                    f"'{settings.base_model}'; drop --base-model (or RESPONDER_BASE_MODEL) to use "
                    "the adapter's own base model")
        if "quantization" not in explicit:
            quantization = info.quantization
        elif quantization != info.quantization:
            if info.quantization == "none" and quantization == "nf4":
                raise UserError(
                    f"adapter '{info.path}' was trained on float weights (quantization 'none'), "
                    "not on a 4-bit NF4 base; serve it with --quantization none")
            if info.quantization not in ("nf4", "none"):
                raise UserError(f"adapter '{info.path}' records quantization '{info.quantization}', "
                                "which this service does not know; re-run `finetune run`")
            log.info("Adapter trained on NF4 weights, served merged into float weights")
    persona = settings.persona if settings.persona is not None else (info.persona if info else None)
    sign_off = settings.sign_off if settings.sign_off is not None else (info.sign_off if info else "")
    style = replace(info.style if info else PromptStyle(), sign_off=sign_off)
    if persona:
        style = replace(style, persona=persona)
    retrieval, notes = for_adapter(RetrievalConfig.of(settings), explicit, info.retrieval if info else None)
    if settings.backend == "llama.cpp":
        quantization = "gguf"  # the GGUF file's own (the shipped one is Q4_1); the adapter rides on it
    return ServingPlan(base_model, quantization, info, style, settings.backend, retrieval, tuple(notes))


def build_generator(settings: Settings, plan: ServingPlan) -> Any:
    adapter_name = _adapter_name(plan.adapter)
    if plan.backend == "llama.cpp":
        from responder.generators.llama_cpp import LlamaCppGenerator

        return LlamaCppGenerator.from_settings(settings, plan.base_model, plan.adapter.path if plan.adapter else None,
                                               slots=settings.max_batch_size)
    if plan.backend == "openai":
        from responder.generators.openai_compatible import OpenAIGenerator

        return OpenAIGenerator.from_settings(settings.model_copy(update={"base_model": plan.base_model}),
                                             plan.base_model, adapter_name)
    from engine.generation import LocalGenerator

    return LocalGenerator.load(plan.base_model, plan.adapter.path if plan.adapter else None,
                               plan.quantization, settings.device, settings.max_new_tokens,
                               settings.model_cache, model_name=plan.base_model, decoding=decoding_of(settings))


def _adapter_name(info: AdapterInfo | None) -> str | None:
    if info is None:
        return None
    return adapter_display_name(info.path)


def build_retriever(config: RetrievalConfig, notes: Sequence[str] = ()) -> Any | None:
    """The knowledge base, or None (with a warning) when no store has been ingested yet; `notes`
    (how serving differs from the adapter's training) are logged here, once per build."""
    for note in notes:
        log.warning("%s", note)
    if not config.chroma_url and not config.embedded_store_here:
        log.warning("No knowledge base at %s: replies get no article context (run `ingest` first)", config.store)
        return None
    from knowledge.store import open_knowledge_base

    return open_knowledge_base(config)


def build_triage(settings: Settings, retriever: Any | None = None) -> Callable[[list[str]], list[Any]]:
    """The triage classifier's `classify`, over the knowledge base's embedder when there is one (loaded
    once for both), else the configured embedder."""
    from knowledge.triage import TriageClassifier

    embedder = getattr(retriever, "embedder", None)
    if embedder is None:
        from knowledge.embedder import load_embedder

        embedder = load_embedder(settings.embedder, settings.device)
    return TriageClassifier.load(embedder).classify


def build_answerer(settings: Settings | None, server: str | None = None, api_key: str | None = None,
                   **client_options: Any) -> Any:
    """What answers comments for `batch` and the review page: a running `responder serve` over HTTP
    when `server` is given (`client_options` go to its client), else the responder built here."""
    if server:
        from responder.jobs.service_client import HttpResponder

        return HttpResponder(server, api_key, **client_options)
    assert settings is not None, "the in-process responder is built from settings"
    return build_responder(settings)


def build_responder(settings: Settings, plan: ServingPlan | None = None) -> Responder:
    """The responder `responder serve`, `responder respond` and `responder batch` all use (`plan`:
    the serving plan when the caller made it already)."""
    plan = plan or plan_serving(settings)
    retriever = build_retriever(plan.retrieval, plan.retrieval_notes)
    generator = build_generator(settings, plan)
    classify = None
    if settings.redrafts and getattr(generator, "avoids_openings", False):
        triage = build_triage(settings, retriever)
        classify = lambda texts: [t.intent for t in triage(texts)]  # noqa: E731
    return Responder(generator, plan.style, retriever, top_k=plan.retrieval.top_k, citation=settings.citation,
                     confident=plan.retrieval.confident_similarity, classify=classify, redrafts=settings.redrafts)
