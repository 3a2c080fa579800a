"""The one exception type a user sees as a one-line message instead of a traceback."""


class UserError(ValueError):
    """Bad input from the user: names the problem and the fix in one line.

    A ``ValueError``, so Python callers catch it the usual way; the CLI prints it as
    ``simclrv2: error: <message>`` and exits with status 2.
    """


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (library messages run over several
    lines), or its type's name if it has none: to quote inside a one-line :class:`UserError`."""
    return next((line.strip() for line in str(error).splitlines() if line.strip()), "") or (
        type(error).__name__
    )


class Interrupted(Exception):  # noqa: N818 (a request, not a failure)
    """SIGTERM/SIGINT arrived during training and a checkpoint was written; the CLI exits 0 and
    prints how to resume."""

    def __init__(self, stage_directory: object, step: int) -> None:
        super().__init__(f"stopped at step {step}; checkpoint written in {stage_directory}")
        self.stage_directory, self.step = stage_directory, step
