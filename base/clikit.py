"""What the three CLIs (`finetune`, `ingest`, `responder`) share: error handling and common options.

Nothing heavy is imported here: `--help` must answer without importing torch.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings
from typing import Any, Callable

import click

from base.errors import UpstreamError, UserError


def run(group: click.Group) -> None:
    """Run a click group; a `UserError` becomes one line on stderr and exit code 2, an
    `UpstreamError` (a server we depend on failed) one line and exit code 1."""
    keep_compute_threads_spinning()
    try:
        group.main(standalone_mode=False)
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except UpstreamError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except SystemExit:
        raise


def keep_compute_threads_spinning() -> None:
    """Let OpenMP's idle threads spin about 0.1 ms before they sleep (before torch loads libgomp).

    The service decodes in a worker thread, beside the pool of OpenMP threads the main thread made
    while loading the model. libgomp then manages more threads than there are cores and puts idle
    ones to sleep after 1,000 spins, so each of a forward pass's hundreds of parallel regions waits
    for a futex wake-up: one decoding step of 12 replies took 0.21 s in a worker thread and 0.09 s
    in the main thread (nf4, 2 cores); with OMP_WAIT_POLICY=active and GOMP_SPINCOUNT=100000,
    0.11 s. Left alone when either is set, or when torch is already loaded (too late then)."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["OMP_WAIT_POLICY"] = "active"
    os.environ["GOMP_SPINCOUNT"] = "100000"


def setup_logging(verbose: bool = False) -> None:
    # Library progress bars ("Loading weights") and deprecation advice bury our own output; our
    # long work shows its own progress. Set before transformers is imported: it reads this then.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # Libraries' own chatter (transformers' progress bars and advice) hides our output.
    for name in ("transformers", "httpx", "chromadb", "sentence_transformers", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    quiet_library_logs()


# Library log lines a user can do nothing about, each checked harmless: (logger, message regex).
_HARMLESS_LOGS = (
    # bitsandbytes (on CPUs with AVX512-BF16) tries an optional 4-bit inference kernel that the
    # `kernels` package downloads from the Hugging Face hub; without it bitsandbytes uses the CPU
    # kernel it ships (backends/cpu/ops.py), same results. Logged at import, by every command.
    ("bitsandbytes.backends.cpu.ops", r"^Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(record.getMessage())


def quiet_library_logs() -> None:
    """Drop the library log lines in `_HARMLESS_LOGS` (and only those); safe to call repeatedly.

    Call it before the library is imported: these lines are logged at import time.
    """
    for name, pattern in _HARMLESS_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.pattern.pattern == pattern for f in logger.filters):
            logger.addFilter(_DropMessages(pattern))


def store_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--store DIR` and `--chroma-url URL`, on `ingest` and every `responder` command."""

    @click.option("--store", type=click.Path(file_okay=False), default=None,
                  help="Directory of the embedded Chroma store [env RESPONDER_STORE].")
    @click.option("--chroma-url", default=None, metavar="URL",
                  help="Use a Chroma server instead of the embedded store [env RESPONDER_CHROMA_URL].")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper
