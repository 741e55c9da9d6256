"""`finetune`: train the style adapter (QLoRA), preview data, estimate memory, merge."""

from __future__ import annotations

import click

from responder.clikit import run, setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Train a LoRA style adapter on past comment/reply pairs (QLoRA: 4-bit NF4 base)."""
    setup_logging()


def main() -> None:
    run(cli)
