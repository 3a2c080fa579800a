"""The one exception type a user sees as a one-line message instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: names the problem and the fix in one line.

    The CLI prints it as ``simclrv2: error: <message>`` and exits with status 2.
    """
