"""Shared by the commands: their error, band lists, labelled sources, the progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from ..errors import CwsamError
from ..model.card_reader import is_onnx, read_card
from ..training.datasets import TrainingSource, read_pairs


class CliError(CwsamError):
    """A command line the user can fix; printed as one line, exit status 2 (as every ``CwsamError``)."""


def parse_bands(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CliError(f"--bands takes 1-based band numbers separated by commas (e.g. 1,2), got {text!r}") from None


def labelled_sources(args: argparse.Namespace):
    """The training/evaluation sources named on the command line: one of three forms."""
    polygons = getattr(args, "polygons", None)
    given = [name for name, value in (("--pairs", args.pairs), ("--labels", args.labels), ("--polygons", polygons))
             if value]
    if len(given) != 1:
        raise CliError("give exactly one of --image IMG --labels LABELS, --image IMG --polygons VEC --class-field "
                       f"FIELD, or --pairs PAIRS.csv (got {' and '.join(given) or 'none'})")
    if args.pairs:
        if args.image:
            raise CliError("--pairs lists its images: leave out --image")
        return [TrainingSource(image, label) for image, label in read_pairs(args.pairs)]
    if not args.image:
        raise CliError(f"{given[0]} needs --image IMG")
    if polygons:
        if not args.class_field:
            raise CliError("--polygons needs --class-field FIELD (the attribute holding the class of each polygon)")
        return [TrainingSource(Path(args.image), polygons=Path(polygons), class_field=args.class_field,
                               layer=args.layer)]
    return [TrainingSource(Path(args.image), Path(args.labels))]


class ProgressBar:
    """A progress bar made at the first progress report: input refused before any work shows no bar."""
    def __init__(self, description: str, quiet: bool) -> None:
        self.description, self.quiet, self.bar = description, quiet, None

    def __call__(self, fraction: float, message: str) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", desc=self.description, disable=self.quiet,
                            bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}]")
        self.bar.n = round(fraction * 100, 1)
        self.bar.set_postfix_str(message, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def warn_unused_sam_checkpoint(model: str, sam_checkpoint: Optional[str]) -> None:
    """Say that ``--sam-checkpoint`` is not used when the model holds every weight itself."""
    if not sam_checkpoint:
        return
    try:
        card = read_card(model)
    except (CwsamError, ImportError):  # an unreadable model is reported by the command itself
        return
    if card.self_contained:
        kind = "an ONNX export" if is_onnx(model) else f"a {card.backbone} model trained from scratch"
        print(f"warning: --sam-checkpoint is not used: {Path(model).name} is {kind} and holds every weight",
              file=sys.stderr)

