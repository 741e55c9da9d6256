"""`ingest PATH...`: read articles, chunk them and store them in the knowledge base."""

from __future__ import annotations

import click

from base.clikit import run, setup_logging, store_options

from .chunker import DEFAULT_CHUNK_TOKENS, DEFAULT_MAX_CHUNK_CHARS, DEFAULT_OVERLAP_TOKENS
from .pipeline import DEFAULT_MAX_FILE_MB


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@store_options
@click.option("--embedder", default=None, metavar="NAME",
              help="sentence-transformers name or folder [env RESPONDER_EMBEDDER; default all-MiniLM-L6-v2].")
@click.option("--no-prune", is_flag=True, help="Keep articles that were deleted from the given folders.")
@click.option("--max-file-mb", type=click.FloatRange(min=0.001), default=DEFAULT_MAX_FILE_MB, show_default=True,
              help="Skip files larger than this.")
@click.option("--chunk-tokens", type=click.IntRange(32, 254), default=DEFAULT_CHUNK_TOKENS, show_default=True,
              help="Chunk size in the embedder's word pieces.")
@click.option("--overlap-tokens", type=click.IntRange(0, 128), default=DEFAULT_OVERLAP_TOKENS, show_default=True,
              help="Text shared by consecutive chunks of one section.")
@click.option("--max-chunk-chars", type=click.IntRange(200, 100_000), default=DEFAULT_MAX_CHUNK_CHARS,
              show_default=True, help="Longest chunk in characters (a very long line or word is cut).")
@click.option("--base-url", default=None, metavar="URL",
              help="Where articles without their own URL live: the file's slug is appended, or replaces "
                   "{slug} [env RESPONDER_ARTICLE_BASE_URL].")
@click.option("--videos", "videos_file", default=None, metavar="FILE",
              help="CSV with video (id or URL) and article (file or URL) columns: which articles each of "
                   "your videos is about; retrieval prefers them for that video's comments "
                   "[env RESPONDER_VIDEOS_FILE].")
@click.option("-v", "--verbose", is_flag=True, help="Log every file as it is done.")
def cli(paths: tuple[str, ...], store: str | None, chroma_url: str | None, embedder: str | None,
        no_prune: bool, max_file_mb: float, chunk_tokens: int, overlap_tokens: int, max_chunk_chars: int,
        base_url: str | None, videos_file: str | None, verbose: bool) -> None:
    """Ingest blog articles (markdown, HTML, text, PDF) from files and folders.

    Folders are read recursively (hidden files and folders are ignored; symlinks leading outside
    the given folders are skipped). Each article's URL, for the citation under replies, is its own
    (front matter url/canonical, HTML canonical or og:url, PDF metadata), else --base-url plus its
    slug, else none (cited by title). The videos an article is about come from its front matter
    (`video:`, an id, URL or list) and --videos; a video without either is linked by its title when
    its comments are answered. Re-running is incremental: unchanged files are not embedded again,
    edited ones have their chunks replaced and files deleted from a folder are removed from the
    knowledge base (unless --no-prune). Passages name their file relative to the folder given.

    An embedded store is locked while ingest writes it: a second ingest, or a `responder serve`
    using the same store, is refused (use a Chroma server, --chroma-url, to do both at once).
    """
    setup_logging(verbose)
    from pathlib import Path

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from base.settings import load_settings
    from knowledge.store import lock_store, open_knowledge_base

    from .pipeline import discover, ingest, video_links

    settings = load_settings(store=store, chroma_url=chroma_url, embedder=embedder, article_base_url=base_url,
                             videos_file=videos_file)
    mapping = Path(settings.videos_file) if settings.videos_file else None
    video_links(mapping, discover(paths), settings.article_base_url)  # bad paths or rows: errors before any write
    with lock_store(settings, exclusive=True):  # before the store is opened: the only writer
        kb = open_knowledge_base(settings)
        console = Console(stderr=True)
        with Progress(TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[name]}"), console=console, transient=True) as progress:
            task = progress.add_task("ingest", total=None, name="")
            report = ingest(paths, kb, prune=not no_prune, max_file_mb=max_file_mb, chunk_tokens=chunk_tokens,
                            overlap_tokens=overlap_tokens, max_chunk_chars=max_chunk_chars,
                            base_url=settings.article_base_url, videos_file=mapping,
                            on_start=lambda n: progress.update(task, total=n),
                            on_file=lambda path, status: progress.update(task, advance=1, name=path.name))
    print_report(report, kb.location)


def print_report(report, location: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ingest into {location}", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (("files seen", report.seen), ("added", report.added), ("updated", report.updated),
                         ("unchanged", report.unchanged), ("removed", report.removed),
                         ("skipped", len(report.skipped)), ("chunks embedded", report.chunks_embedded),
                         ("chunks stored", report.chunks_stored), ("seconds", f"{report.seconds:.1f}")):
        table.add_row(label, str(value))
    for reason, n in sorted(report.left_out.items()):
        table.add_row(f"chunks left out: {reason}", str(n))
    if report.min_similarity is not None:
        detail = f" (generic comments reach {report.generic_best:.2f})" if report.generic_best is not None else ""
        table.add_row("min similarity", f"{report.min_similarity:.2f}{detail}")
    console = Console()
    console.print(table)
    if report.skipped:
        skipped = Table(title="skipped", title_justify="left")
        skipped.add_column("file", overflow="fold")
        skipped.add_column("reason", overflow="fold")
        for path, reason in report.skipped:
            skipped.add_row(path, reason)
        console.print(skipped)


def main() -> None:
    run(cli)
