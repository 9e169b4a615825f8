"""Every command-line option that an engine message names exists in the command that shows the message."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import cwsam_core
from cwsam_core.cli import build_parser

ENGINE = Path(cwsam_core.__file__).parent
# The commands whose users can see a module's messages (radiometry serves classify and train alike).
SHOWN_BY = {
    "training/loop.py": {"train"}, "training/sampling.py": {"train"}, "training/config.py": {"train"},
    "training/datasets.py": {"train"}, "vector/polygons.py": {"train"}, "common/classes.py": {"train"},
    "engine/inference.py": {"classify"}, "raster/radiometry.py": {"classify", "train", "evaluate"},
    "training/evaluation.py": {"evaluate"},
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*[a-z]")


def subcommand_options() -> dict:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in sub._actions for o in a.option_strings} for name, sub in action.choices.items()}


def message_strings(path: Path) -> list:
    """String constants of a module that are not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_options_named_in_messages_exist():
    options = subcommand_options()
    every = set().union(*options.values())
    checked = 0
    for path in sorted(ENGINE.rglob("*.py")):
        name = path.relative_to(ENGINE).as_posix()
        if name.startswith("cli/"):
            continue
        commands = SHOWN_BY.get(name)
        for text in message_strings(path):
            for option in OPTION.findall(text):
                checked += 1
                if commands is None:
                    assert option in every, f"{name} names {option}, which no cwsam command has: {text!r}"
                for command in commands or ():
                    assert option in options[command], f"{name} names {option}, which cwsam {command} lacks"
    assert checked >= 10  # the scan found the messages it is meant to check
