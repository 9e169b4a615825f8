"""The ``cwsam`` command line: headless use of the same engine the QGIS plugin calls.

One module a command (``register`` adds its arguments, ``run`` runs it); the parser and the error handling
are here. Commands import what needs PyTorch only when they run, so the light install's commands (classify,
evaluate and info with ONNX models, vectorize) work without it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from contextlib import contextmanager
from typing import Optional, Sequence

from .. import __version__
from ..errors import CwsamError
from . import change, classify, evaluate, export, import_authors, info, train, vectorize

COMMANDS = (info, classify, export, train, evaluate, import_authors, vectorize, change)
# What the light install (requirements-classify.txt) leaves out: training, export and .cwsam.pt models need it.
FULL_INSTALL_MODULES = ("torch", "torchvision", "segment_anything", "onnx")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cwsam",
        description="ClassWise-SAM-Adapter for SAR land-cover segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"cwsam {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(subparsers)
    return parser


@contextmanager
def _engine_warnings_on_stderr():
    """The engine's warnings (logger "cwsam") shown once each, as ``warning: ...`` lines on stderr, while a
    command runs (not a second time through Python's last-resort handler); the logger is left as it was."""
    engine = logging.getLogger("cwsam")
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    engine.addHandler(handler)
    propagate, engine.propagate = engine.propagate, False
    try:
        yield
    finally:
        engine.removeHandler(handler)
        engine.propagate = propagate


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        with _engine_warnings_on_stderr():
            return int(args.func(args) or 0)
    except CwsamError as exc:  # every error the engine raises for the user, and the command line's own
        print(f"cwsam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a command that says what its interrupt left has done so above, as a CliError
        print(f"cwsam {args.command}: interrupted", file=sys.stderr)
        return 130
    except ImportError as exc:
        if not _needs_full_install(exc):
            raise
        print(f"cwsam {args.command}: error: this needs the full install with PyTorch ({exc}): make setup, or pip "
              "install -r requirements.txt; the light install classifies with ONNX models (.onnx)", file=sys.stderr)
        return 2


def _needs_full_install(exc: ImportError) -> bool:
    """Whether ``exc`` is a module of the full install missing (not a broken install of something else)."""
    name = (exc.name or "").split(".")[0]
    return name in FULL_INSTALL_MODULES or any(f"'{module}'" in str(exc) for module in FULL_INSTALL_MODULES)
