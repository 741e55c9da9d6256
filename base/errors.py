"""The one exception type meant for users.

Anything a user got wrong (a missing file, a bad value, a model that is not installed) is raised
as `UserError` with a message that names the input, the problem and the fix. The CLIs print it as
one line (`Error: ...`) and exit with code 2; the service turns it into an HTTP error.
"""


class UserError(Exception):
    """A problem the user can fix; its message is shown as is, without a traceback."""

    exit_code = 2
