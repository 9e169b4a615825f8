"""``cwsam import-authors``: a checkpoint of the authors' code as a model file."""

from __future__ import annotations

import argparse

from ..errors import AuthorsImportError, CheckpointError, ClassSpecError, ModelFileError
from .common import CliError, is_model_output, refuse_to_replace


def run(args: argparse.Namespace) -> int:
    from ..model.authors import (  # torch: the full install
        parse_authors_classes, read_authors_config, write_authors_model_file,
    )

    refuse_to_replace(args.output, "--output", is_model_output, "a model file", args.overwrite,
                      [args.checkpoint, args.sam_checkpoint, args.config])
    try:
        config = read_authors_config(args.config) if args.config else None
        classes = parse_authors_classes(args.classes) if args.classes else None
        path, card = write_authors_model_file(args.checkpoint, args.sam_checkpoint, args.output, classes, config)
    except (AuthorsImportError, CheckpointError, ClassSpecError, ModelFileError) as exc:
        raise CliError(str(exc)) from None
    print(f"Model file written to {path}: {card.backbone}, {len(card.classes)} classes "
          f"({', '.join(c.name for c in card.classes)}); it needs the SAM checkpoint {card.sam_checkpoint['name']}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-authors", help="turn a model trained with the authors' CWSAM code into a model file",
        description="Import a checkpoint saved by the authors' code (xypu98/CWSAM train.py, e.g. "
        "model_epoch_best.pth) as a CWSAM model file for classify, the QGIS dock and Processing.")
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="their checkpoint (a state dict; a 'model' key "
                        "or DistributedDataParallel's 'module.' prefix is accepted)")
    parser.add_argument("--sam-checkpoint", required=True, help="the official SAM checkpoint it was trained from "
                        "(e.g. sam_vit_b_01ec64.pth); its frozen encoder must equal the one in CHECKPOINT")
    parser.add_argument("--classes", help="class names in the model's order (building,vegetation,...), or "
                        "VALUE:NAME[:#RRGGBB],... or a CSV/JSON file (default: FUSAR-Map's for 5 classes)")
    parser.add_argument("--config", help="their YAML config: class names and palette, class count, loss weights")
    parser.add_argument("--output", required=True, help="model file to write (.cwsam.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --output that cwsam did not write")
    parser.set_defaults(func=run)
