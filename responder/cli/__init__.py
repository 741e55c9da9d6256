"""`responder`: retrieve, answer, serve, batch-answer and post YouTube comments.

Each command lives in its own module (knowledge, serve, auth, fetch, batch, review, post, triage); this module only gathers
them. Nothing heavy is imported at module level, so `responder --help` is instant.
"""

from __future__ import annotations

import click

from base.clikit import run, setup_logging
from responder.cli import auth, batch, fetch, knowledge, post, review, serve, triage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what is loaded and chosen.")
def cli(verbose: bool) -> None:
    """Answer YouTube comments in the creator's voice, with facts from their own articles."""
    setup_logging(verbose)


for module in (knowledge, serve, auth, fetch, batch, review, post, triage):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    run(cli)
