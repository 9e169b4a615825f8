"""Shared by the commands: their error, band lists, labelled sources, the progress bar."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..common.paths import PathLike, same_file
from ..errors import CwsamError
from ..model.card_reader import is_onnx, read_card
from ..training.datasets import TrainingSource, read_pairs
from ..vector.vectorize_output import FIELDS


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


def refuse_to_replace(path: Optional[PathLike], option: str, ours: Callable[[Path], bool], what: str,
                      overwrite: bool, inputs: Sequence[Optional[PathLike]] = ()) -> None:
    """Refuse an output path where a file exists that cwsam did not write as ``what`` (checked by ``ours``):
    such a file (a reference map, hand-drawn labels) is replaced only with ``--overwrite``. One of the
    command's ``inputs`` is left to the engine's input/output guard, which refuses it in any case."""
    if path is None or overwrite or not Path(path).is_file() or ours(Path(path)):
        return
    if any(p and Path(p).exists() and same_file(p, path) for p in inputs):
        return
    raise CliError(f"{path} exists and is not {what} that cwsam wrote: {option} does not replace it; give another "
                   "file name, or --overwrite to replace it")


def classify_outputs(class_map: Path) -> Callable[[Path], bool]:
    """Whether a file is one of the outputs that the run record beside ``class_map`` names (an earlier
    ``cwsam classify`` to the same map)."""
    try:
        named = json.loads(class_map.with_suffix(".run.json").read_text())["outputs"]
        written = {Path(p).resolve() for p in named.values() if p}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        written = set()
    return lambda path: path.resolve() in written


def is_polygon_output(path: Path) -> bool:
    """Whether a GeoPackage holds polygons that ``cwsam vectorize`` (or ``classify --vector``) wrote."""
    try:  # a GeoPackage is an SQLite database: its feature tables' columns, read without GDAL
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [row[0] for row in db.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features'")]
            columns = [{row[1] for row in db.execute(f'PRAGMA table_info("{table}")')} for table in tables]
    except sqlite3.Error:
        return False
    return any(set(FIELDS[:3]) <= names for names in columns)


def is_model_output(path: Path) -> bool:
    """Whether a file is a CWSAM model file or ONNX export (its model card can be read)."""
    try:
        read_card(path)
    except (CwsamError, ImportError, OSError):
        return False
    return True

