"""The one exception type meant for users.

Anything a user got wrong (a missing file, a bad value, a model that is not installed) is raised
as `UserError` with a message that names the input, the problem and the fix. The CLIs print it as
one line (`Error: ...`) and exit with code 2; the service turns it into an HTTP error.
"""


class UserError(Exception):
    """A problem the user can fix; its message is shown as is, without a traceback."""

    exit_code = 2


def join_problems(what: str, problems: list[str], limit: int = 8) -> str:
    """Every problem of one input in one line: "WHAT: first; second; and N more"."""
    shown = problems[:limit]
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{what}: " + "; ".join(shown) + more


class UpstreamError(Exception):
    """A server we depend on (an OpenAI-compatible engine) is down, timed out or answered 5xx.

    Not the user's input: the service answers 502 (bad answer) or 503 (unreachable), and
    `responder batch --server` retries or stops instead of marking comments as failed.
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(message)
        self.status = status
