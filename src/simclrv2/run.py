"""A run's life around its stages: the runtime, the process group of a torchrun launch, the run
directory (new, or one to resume) and the log, in one context manager that the CLI and Python
callers share.

The same command with the same ``out``, config and inputs continues the run there, as ``--resume``
does: what ``torchrun --max-restarts N`` needs, since it re-runs the command line unchanged.

Called once every input has been checked: a new run that fails with a :class:`UserError` before
its first checkpoint leaves nothing behind, so the same ``out`` can be given again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from simclrv2 import distributed
from simclrv2.config import Config
from simclrv2.errors import UserError
from simclrv2.metrics import LOG, setup_logging
from simclrv2.rundir import CONFIG, check_writable, load_run_config, load_run_inputs, new_run
from simclrv2.runtime import Runtime, resolve_runtime


@dataclass(frozen=True)
class Run:
    """Where a run writes (``directory``) and how its tensors run (``runtime``)."""

    directory: Path
    runtime: Runtime


@contextlib.contextmanager
def open_run(
    command: str,
    config: Config,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    inputs: dict | None = None,
) -> Iterator[Run]:
    """The run of ``command``: ``resume`` continues the run in that directory; else a new one in
    ``out`` (default ``runs/<command>-<preset>-<time>``) that records ``config`` and the
    command's ``inputs``, which rank 0 creates and every process of a torchrun launch joins."""
    runtime = resolve_runtime(config.runtime)
    distributed.init_from_environment(runtime.device, config.runtime.process_group_timeout)
    inputs = {"command": command, **(inputs or {})}
    if resume is None and _holds_this_run(out, config, inputs):
        LOG.info("%s holds this run (same command, config and inputs): continuing it", out)
        resume = out
    with contextlib.ExitStack() as cleanup:
        if resume is not None:
            directory = Path(resume)
            check_writable(directory)
        else:
            directory = _new_directory(cleanup, command, config, out, inputs)
        setup_logging(directory / "log.txt", enabled=distributed.rank() == 0)
        yield Run(directory, runtime)


def _holds_this_run(out: str | Path | None, config: Config, inputs: dict) -> bool:
    """Whether ``out`` holds a run of this command with this config and these inputs."""
    if out is None or not (Path(out) / CONFIG).exists():
        return False
    saved = load_run_inputs(Path(out))
    if saved.get("command", inputs["command"]) != inputs["command"]:
        return False
    same_inputs = all(saved.get(key) == value for key, value in inputs.items() if key != "command")
    return same_inputs and load_run_config(Path(out)) == config


def _new_directory(
    cleanup: contextlib.ExitStack,
    command: str,
    config: Config,
    out: str | Path | None,
    inputs: dict | None,
) -> Path:
    """Rank 0 creates the new run's directory and gives it, or the error that refused it, to every
    process; the directory is removed again if the run fails before its first checkpoint."""
    outcome: Path | UserError | None = None
    if distributed.rank() == 0:
        try:
            outcome = cleanup.enter_context(new_run(command, config, out, inputs))
        except UserError as error:
            outcome = error
    outcome = distributed.broadcast_object(outcome)
    if isinstance(outcome, UserError):
        raise outcome
    return outcome
