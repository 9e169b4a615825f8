"""``cwsam info``: what a model file or ONNX export holds."""

from __future__ import annotations

import argparse

from ..errors import ModelFileError
from ..model.card_reader import is_onnx
from ..model.onnx_card import describe_onnx
from .common import CliError


def run(args: argparse.Namespace) -> int:
    try:
        if is_onnx(args.model):
            text, kind = describe_onnx(args.model), "CWSAM ONNX export"
        else:
            # torch: only for .cwsam.pt files, so that the light install reads ONNX exports' cards
            from ..model.model_file import read_model_card
            from ..training.parent import describe_parent

            card = read_model_card(args.model)
            text, kind = card.describe() + describe_parent(card), "CWSAM model file"
    except ModelFileError as exc:
        raise CliError(str(exc)) from None
    print(f"{kind}: {args.model}")
    print(text)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print the model card of a CWSAM model file or ONNX export")
    parser.add_argument("model", metavar="MODEL_FILE", help="a CWSAM model file (.cwsam.pt) or ONNX export (.onnx)")
    parser.set_defaults(func=run)
