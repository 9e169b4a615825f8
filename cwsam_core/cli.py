"""The ``cwsam`` command line: headless use of the same engine the QGIS plugin calls."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

from . import __version__


class CliError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cwsam",
        description="ClassWise-SAM-Adapter for SAR land-cover segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"cwsam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _COMMANDS:
        register(subparsers)
    return parser


def _info(args: argparse.Namespace) -> int:
    from .model_file import ModelFileError, read_model_card

    try:
        card = read_model_card(args.model)
    except ModelFileError as exc:
        raise CliError(str(exc)) from None
    print(f"CWSAM model file: {args.model}")
    print(card.describe())
    return 0


def _register_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print the model card of a CWSAM model file")
    parser.add_argument("model", metavar="MODEL_FILE", help="a CWSAM model file (.cwsam.pt)")
    parser.set_defaults(func=_info)


# Each entry adds one subcommand to the parser; its handler is stored as the ``func`` default.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_info]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"cwsam {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
