"""`responder`: retrieve, answer, serve and batch-answer YouTube comments.

Commands live in their own modules (knowledge, service, batch); this module only gathers them.
Nothing heavy is imported at module level, so `responder --help` is instant.
"""

from __future__ import annotations

import click

from . import cli_batch, cli_knowledge, cli_serve
from .clikit import run, setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what is loaded and chosen.")
def cli(verbose: bool) -> None:
    """Answer YouTube comments in the creator's voice, with facts from their own articles."""
    setup_logging(verbose)


for module in (cli_knowledge, cli_serve, cli_batch):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    run(cli)
