"""`ingest PATH...`: read articles, chunk them and store them in the knowledge base."""

from __future__ import annotations

import click

from responder.clikit import run, setup_logging


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("paths", nargs=-1, required=True, type=click.Path())
def cli(paths: tuple[str, ...]) -> None:
    """Ingest blog articles (markdown, HTML, text, PDF) from files and folders."""
    setup_logging()
    raise click.ClickException("not implemented yet")


def main() -> None:
    run(cli)
