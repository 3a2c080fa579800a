"""``simclrv2 <command>``: ``parser`` holds the arguments, ``commands`` the commands (each calls
a library function), and :func:`main` the exit statuses.

Training commands share ``--preset``, ``--config FILE``, ``--data SOURCE``, ``--out DIR``,
``--resume DIR`` and ``section.key=value`` overrides. Bad input ends in one line on stderr and exit
status 2; SIGTERM/SIGINT end a training command with a checkpoint, a resume hint and status 0
(outside the training loop, e.g. during an evaluation, they stop it at once, as Ctrl-C does).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

from simclrv2.cli.parser import build_parser
from simclrv2.errors import Interrupted, UserError


def _stop_at_once(signum: int, frame: object) -> None:
    """SIGTERM outside a training loop (which finishes its step first): stop as Ctrl-C does."""
    raise KeyboardInterrupt


def _parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides stand anywhere, also after options (argparse alone
    takes positionals only in one run)."""
    args, unparsed = parser.parse_known_args(argv)
    late_overrides = [item for item in unparsed if "=" in item and not item.startswith("-")]
    unknown = [item for item in unparsed if item not in late_overrides]
    if unknown or (late_overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or late_overrides)}")
    if late_overrides:
        args.overrides = [*args.overrides, *late_overrides]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from simclrv2 import distributed

    args = _parse_arguments(build_parser(), argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop_at_once) if in_main_thread else None
    try:
        args.run(args)
    except UserError as error:
        print(f"simclrv2: error: {error}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        command = f"simclrv2 {args.command} --resume {args.run_directory}"
        print(f"simclrv2: {stop}; resume with: {command}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:  # the work done is in the run's checkpoints and finished stages
        if getattr(args, "run_directory", None) is None:
            print("simclrv2: stopped", file=sys.stderr)
            return 130
        command = f"simclrv2 {args.command} --resume {args.run_directory}"
        print(f"simclrv2: stopped; resume with: {command}", file=sys.stderr)
        return 0
    finally:
        distributed.shutdown()  # the process group of a torchrun launch, if any
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0
