"""`responder serve` (the HTTP service) and `responder respond` (one comment, one shot)."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import click

from .clikit import store_options


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `serve` and `respond`: which model, adapter and backend."""

    @click.option("--adapter", type=click.Path(file_okay=False), default=None,
                  help="LoRA adapter directory (`finetune run` output) [env RESPONDER_ADAPTER].")
    @click.option("--base-model", default=None,
                  help="Base model hub id or directory (default: the adapter's) [env RESPONDER_BASE_MODEL].")
    @click.option("--quantization", type=click.Choice(["nf4", "none"]), default=None,
                  help="nf4: 4-bit base + adapter (least memory); none: float32 weights with the adapter "
                       "merged (faster on a CPU). Default: as the adapter was trained.")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
    @click.option("--backend", type=click.Choice(["local", "openai"]), default=None,
                  help="local: the model in this process; openai: an OpenAI-compatible server (vLLM).")
    @click.option("--openai-base-url", default=None, metavar="URL",
                  help="OpenAI-compatible server, e.g. http://vllm:8000/v1 [env RESPONDER_OPENAI_BASE_URL].")
    @click.option("--openai-model", default=None,
                  help="Model name on that server: the LoRA module name given to vLLM's --lora-modules.")
    @click.option("--max-new-tokens", type=int, default=None)
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


@click.command()
@click.option("--host", default=None, help="Interface to listen on [default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [default 8000].")
@click.option("--workers", type=int, default=None,
              help="Worker processes, each with its own model (more than 1 needs a Chroma server).")
@click.option("--max-batch-size", type=int, default=None, help="Comments per batched generate [16].")
@click.option("--max-wait-ms", type=int, default=None, help="How long a batch waits to fill up [50].")
@click.option("--queue-size", type=int, default=None, help="Waiting requests before 503 [64].")
@click.option("--timeout", "request_timeout_s", type=float, default=None,
              help="Seconds before a request is answered 504 [300].")
@model_options
@store_options
def serve(**options: Any) -> None:
    """Serve POST /respond, /respond/batch and /retrieve over HTTP (docs at /docs).

    Set RESPONDER_API_KEY to require `Authorization: Bearer <key>` (/healthz and /readyz stay open).
    """
    import uvicorn

    from .factory import plan_serving
    from .service import SETTINGS_ENV, create_app, settings_to_env
    from .settings import load_settings

    settings = load_settings(**options)
    plan = plan_serving(settings)  # a wrong adapter or base model is refused before anything loads
    from knowledge.store import check_workers

    check_workers(settings, settings.workers)
    click.echo(f"Serving {plan.base_model} + {plan.adapter_label} ({plan.quantization}, {plan.backend}) "
               f"on http://{settings.host}:{settings.port}  (docs: /docs, health: /healthz)", err=True)
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings_to_env(settings)
        uvicorn.run("responder.service:app_from_env", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level="warning")
    else:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


@click.command()
@click.argument("comment")
@click.option("--video-title", default=None, help="Title of the video the comment is under.")
@click.option("--author", default=None, help="The commenter's display name.")
@click.option("--no-context", is_flag=True, help="Answer without retrieving article passages.")
@click.option("--json", "as_json", is_flag=True, help="Print the reply and sources as JSON.")
@model_options
@store_options
def respond(comment: str, video_title: str | None, author: str | None, no_context: bool, as_json: bool,
            **options: Any) -> None:
    """Answer one COMMENT and print the reply with its sources."""
    from .core import CommentRequest, validate_comment
    from .factory import build_responder
    from .schemas import RespondResponse
    from .settings import load_settings

    validate_comment(comment)  # before loading a model
    responder = build_responder(load_settings(**options))
    reply = responder.respond(CommentRequest(comment, video_title, author, use_context=not no_context))
    if as_json:
        click.echo(json.dumps(RespondResponse.of(reply).model_dump(), indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(reply.reply, markup=False, highlight=False)
    if reply.sources:
        table = Table("#", "Title", "Section", "Source", "Similarity", title="Sources")
        for n, p in enumerate(reply.sources, 1):
            table.add_row(str(n), p.title, p.section, p.url or p.source, f"{p.similarity:.2f}")
        console.print(table)
    else:
        console.print("[dim]No article passages used.[/dim]")
    console.print(f"[dim]{reply.model} + {reply.adapter or 'no adapter'}; "
                  f"retrieve {reply.timings['retrieve_ms']:.0f} ms, generate {reply.timings['generate_ms']:.0f} ms[/dim]")


COMMANDS = [serve, respond]
