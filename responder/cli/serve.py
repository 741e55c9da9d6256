"""`responder serve` (the HTTP service) and `responder respond` (one comment, one shot)."""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Callable

import click

from base.clikit import store_options


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
    @click.option("--backend", type=click.Choice(["local", "llama.cpp", "openai"]), default=None,
                  help="local: the model in this process; llama.cpp: llama.cpp's server, started and "
                       "supervised here (`make llama-server`); openai: an OpenAI-compatible server (vLLM).")
    @click.option("--llama-server", type=click.Path(dir_okay=False), default=None, metavar="PATH",
                  help="llama-server binary [env RESPONDER_LLAMA_SERVER; default: LLAMA_SERVER, PATH, .venv/bin].")
    @click.option("--llama-model", type=click.Path(dir_okay=False), default=None, metavar="FILE.gguf",
                  help="Base model's GGUF for llama.cpp [default: the embedded model's shipped Q4_1 file].")
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
@click.option("--max-wait-ms", type=int, default=None, help="How long a static batch waits to fill up [250].")
@click.option("--batching", type=click.Choice(["static", "continuous"]), default=None,
              help="continuous: comments join the running batch at the next step [default]; "
                   "static: one batched generate per gathered batch.")
@click.option("--queue-size", type=int, default=None, help="Waiting requests before 503 [64].")
@click.option("--timeout", "request_timeout_s", type=float, default=None,
              help="Seconds before a request is answered 504 [300].")
@click.option("--allow-no-auth", is_flag=True, default=None,
              help="Serve on a non-loopback address without RESPONDER_API_KEY (anyone who reaches it "
                   "can use the model) [env RESPONDER_ALLOW_NO_AUTH].")
@model_options
@store_options
def serve(**options: Any) -> None:
    """Serve POST /respond, /respond/batch and /retrieve over HTTP (docs at /docs).

    Set RESPONDER_API_KEY to require `Authorization: Bearer <key>` on every route but /healthz and
    /readyz (/docs and /metrics included). Without a key the service only listens on loopback,
    unless --allow-no-auth is given. Limits: see docs/deploy.md ("Limits").
    """
    import uvicorn

    from base.settings import load_settings
    from responder.service.app import SETTINGS_ENV, create_app, settings_to_env
    from responder.service.settings import ServiceSettings

    settings = load_settings(ServiceSettings, **options)
    plan = checked_plan(settings)  # every problem at once, before anything loads
    click.echo(f"Serving {plan.base_model} + {plan.adapter_label} ({plan.quantization}, {plan.backend}) "
               f"on http://{settings.host}:{settings.port}  (docs: /docs, health: /healthz)", err=True)
    # Uvicorn's own limit is a backstop: the service answers every queued request within the grace period.
    common = dict(host=settings.host, port=settings.port, log_level="warning",
                  timeout_graceful_shutdown=settings.shutdown_grace_s + 5)
    if settings.workers > 1:
        os.environ[SETTINGS_ENV] = settings_to_env(settings)
        uvicorn.run("responder.service.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings, plan=plan), **common)


def checked_plan(settings: Any) -> Any:
    """The serving plan, once every check passed; otherwise one `UserError` naming every problem
    (the API key, exposure, the adapter and base model, workers and the store, the triage policy)."""
    from base.errors import UserError, join_problems
    from knowledge.store import check_workers
    from knowledge.triage_policy import TriagePolicy
    from responder.factory import plan_serving
    from responder.service.gate import check_api_key

    problems: list[str] = []

    def check(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except UserError as exc:
            problems.append(str(exc))
            return None

    check(lambda: check_api_key(settings))
    check(lambda: check_exposure(settings))
    check(lambda: TriagePolicy.parse(settings.triage_policy))
    plan = check(lambda: plan_serving(settings))  # a wrong adapter or base model is refused here
    if settings.backend == "llama.cpp" and plan is not None:
        from responder.generators.llama_cpp import llama_cpp_files

        check(lambda: llama_cpp_files(settings, plan.base_model))
    check(lambda: check_workers(settings, settings.workers))
    if plan is not None:
        check(lambda: _check_store_free(plan.retrieval))
    if len(problems) == 1:
        raise UserError(problems[0])
    if problems:
        raise UserError(join_problems(f"cannot serve ({len(problems)} problems)", problems))
    return plan


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def check_exposure(settings: Any) -> None:
    """Refuse to listen beyond loopback with no API key, unless told to (--allow-no-auth)."""
    from base.errors import UserError

    if settings.api_key is None and not settings.allow_no_auth and not is_loopback(settings.host):
        raise UserError(
            f"refusing to serve on {settings.host} without an API key: anyone who can reach it could use "
            "the model; set RESPONDER_API_KEY (e.g. `export RESPONDER_API_KEY=$(openssl rand -hex 32)`), "
            "listen on 127.0.0.1, or pass --allow-no-auth if something in front of it checks callers")


def _check_store_free(config: Any) -> None:
    """Fail now, in one line, if an `ingest` is writing the embedded store (the service holds a shared
    lock on it while it runs, see responder/service/state.py)."""
    from knowledge.store import shared_lock

    shared_lock(config).release()


@click.command()
@click.argument("comments", nargs=-1)
@click.option("--file", "comments_file", type=click.Path(dir_okay=False), default=None,
              help="A text file with one comment per line (answered together, as one batch).")
@click.option("--video-title", default=None, help="Title of the video the comments are under.")
@click.option("--author", default=None, help="The commenter's display name.")
@click.option("--no-context", is_flag=True, help="Answer without retrieving article passages.")
@click.option("--json", "as_json", is_flag=True, help="Print the replies and sources as JSON.")
@model_options
@store_options
def respond(comments: tuple[str, ...], comments_file: str | None, video_title: str | None,
            author: str | None, no_context: bool, as_json: bool, **options: Any) -> None:
    """Answer one or more COMMENTS (or --file) and print the replies with their sources."""
    from base.errors import UserError
    from base.prompt import CommentInput
    from base.settings import load_settings
    from responder.responder import CommentFailed, validate_comment
    from responder.service.schemas import RespondResponse

    texts = list(comments) + _read_comment_lines(comments_file)
    if not texts:
        raise UserError("no comment given; pass COMMENT arguments or --file with one comment per line")
    for text in texts:
        validate_comment(text)  # before loading a model
    requests = [CommentInput(t, video_title, author, use_context=not no_context) for t in texts]
    try:
        replies = _answer(load_settings(**options), requests)
    except CommentFailed as exc:
        raise UserError(str(exc)) from None
    if as_json:
        payload = [RespondResponse.of(r).model_dump() for r in replies]
        click.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2, ensure_ascii=False))
        return
    _print_replies(texts, replies)


def _answer(settings: Any, requests: list[Any]) -> list[Any]:
    """Replies from an in-process responder, holding a shared lock on an embedded store meanwhile."""
    from knowledge.store import shared_lock
    from responder.factory import build_responder, plan_serving

    plan = plan_serving(settings)
    with shared_lock(plan.retrieval):
        responder = build_responder(settings, plan)
        responder.max_comment_tokens = settings.max_comment_tokens
        return responder.respond_many(requests)


def _read_comment_lines(path: str | None) -> list[str]:
    if path is None:
        return []
    from base.errors import UserError

    try:
        with open(path, encoding="utf-8") as handle:
            return [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        raise UserError(f"cannot read comments file {path}: {exc.strerror}; pass a readable text file") from None
    except UnicodeDecodeError:
        raise UserError(f"comments file {path} is not UTF-8 text; save it as UTF-8") from None


def _print_replies(texts: list[str], replies: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("Comment", "Reply", "Sources", show_lines=True, expand=True)
    for text, reply in zip(texts, replies):
        sources = "\n".join(f"{p.title} > {p.section} ({p.similarity:.2f})" if p.section
                            else f"{p.title} ({p.similarity:.2f})" for p in reply.sources)
        table.add_row(text, reply.reply, sources or "[dim]none[/dim]")
    console = Console()
    console.print(table)
    first = replies[0]
    console.print(f"[dim]{first.model} + {first.adapter or 'no adapter'}; {len(replies)} comment(s) in one batch: "
                  f"retrieve {first.timings['retrieve_ms']:.0f} ms, generate {first.timings['generate_ms']:.0f} ms"
                  "[/dim]")


COMMANDS = [serve, respond]
