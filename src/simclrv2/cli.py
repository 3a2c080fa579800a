"""``simclrv2 <command>``: argument parsing only; every command calls a library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from simclrv2.errors import UserError


def _int_at_least(low: int):
    """argparse type: an integer >= ``low``, else a one-line error naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _models(args: argparse.Namespace) -> None:
    from simclrv2.models.stats import architecture_table
    from simclrv2.tables import format_table

    rows = architecture_table(args.image_size)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="simclrv2",
        description="SimCLR / SimCLRv2: pretrain, fine-tune and distil ResNets on your images.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser(
        "models", help="table of the named architectures: parameters, paper figure, FLOPs"
    )
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    models.add_argument(
        "--image-size",
        type=_int_at_least(16),
        default=224,
        help="input side for the FLOP count (default 224)",
    )
    models.set_defaults(run=_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except UserError as error:
        print(f"simclrv2: error: {error}", file=sys.stderr)
        return 2
    return 0
