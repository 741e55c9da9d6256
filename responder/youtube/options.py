"""The click options every command that talks to YouTube shares: one definition each.

Light on purpose (no client, no HTTP library): `--help` reads them.
"""

from __future__ import annotations

import click

from responder.youtube.client import DEFAULT_API_BASE, DEFAULT_DAILY_QUOTA

API_BASE_OPTION = click.option("--api-base", default=DEFAULT_API_BASE, envvar="YOUTUBE_API_BASE", show_default=True,
                               help="YouTube Data API base URL [env YOUTUBE_API_BASE].")
QUOTA_BUDGET_OPTION = click.option("--quota-budget", type=click.IntRange(min=0), default=DEFAULT_DAILY_QUOTA,
                                   show_default=True, envvar="YOUTUBE_QUOTA_BUDGET",
                                   help="Daily YouTube API units posting may spend (50 per reply) "
                                        "[env YOUTUBE_QUOTA_BUDGET].")
CHANNEL_ID_OPTION = click.option("--channel-id", default=None, envvar="YOUTUBE_CHANNEL_ID", metavar="ID",
                                 help="Your channel id: names the ledger and recognises your replies "
                                      "[default: from the login].")
