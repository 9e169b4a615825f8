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


def _parse_bands(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CliError(f"--bands takes 1-based band numbers separated by commas (e.g. 1,2), got {text!r}") from None


def _classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .inference import ClassificationCancelled, ClassificationError, classify_file
    from .model_file import ModelFileError
    from .radiometry import RadiometryError

    bar = tqdm(total=100, unit="%", desc="classify", disable=args.quiet, bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}]")

    def progress(fraction: float, message: str) -> None:
        bar.n = round(fraction * 100, 1)
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        result = classify_file(
            args.input, args.output, args.model, sam_checkpoint=args.sam_checkpoint, tile_size=args.tile_size,
            device=args.device, confidence_path=args.confidence, overlap=args.overlap, batch_size=args.batch_size,
            input_scale=args.input_scale, band_indexes=_parse_bands(args.bands), threads=args.threads,
            progress=progress,
        )
    except (ClassificationError, ModelFileError, CheckpointError, RadiometryError) as exc:
        raise CliError(str(exc)) from None
    except ClassificationCancelled as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; nothing was written") from None
    finally:
        bar.close()
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"Classes written to {result.output} on {result.device} in {result.seconds:.1f} s")
    if result.confidence:
        print(f"Confidence written to {result.confidence}")
    print(f"Run record: {result.record}")
    from .model_file import read_model_card

    names = {c.value: c.name for c in read_model_card(args.model).classes}
    total = sum(result.pixel_counts.values()) or 1
    print(f"{'class':<20} {'pixels':>12} {'share':>7} {'area (' + result.area_unit + ')':>16}")
    for value, count in result.pixel_counts.items():
        print(f"{names[value]:<20} {count:>12,} {count / total:>7.1%} {result.areas[value]:>16,.1f}")
    return 0


def _register_classify(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("classify", help="classify a SAR raster into a styled class GeoTIFF")
    parser.add_argument("input", metavar="INPUT", help="SAR raster (GeoTIFF or any format GDAL reads)")
    parser.add_argument("--model", required=True, help="CWSAM model file")
    parser.add_argument("--sam-checkpoint", help="the SAM checkpoint the model was fine-tuned from (if it needs one)")
    parser.add_argument("--output", required=True, help="class GeoTIFF to write (with .qml, .aux.xml, .run.json)")
    parser.add_argument("--confidence", help="also write the per-pixel confidence (percent) to this GeoTIFF")
    parser.add_argument("--tile-size", type=int, help="tile size in pixels, a multiple of 16 (default: the model's)")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap as a fraction (default 0.25)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per batch (default 4)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, help="CPU threads for torch")
    parser.add_argument("--input-scale", default="auto", choices=["auto", "db", "linear", "amplitude"],
                        help="scale of the input values (default: detected from the data)")
    parser.add_argument("--bands", help="1-based raster bands to use, in the model's band order (e.g. 1,2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_classify)


# Each entry adds one subcommand to the parser; its handler is stored as the ``func`` default.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_register_info, _register_classify]


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
