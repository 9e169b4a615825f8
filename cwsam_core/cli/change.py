"""``cwsam change``: the from -> to transitions between two class maps of the same place."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..common.paths import check_outputs, raster_input_files
from ..engine.change import ChangeResult, change_files, compare_dates
from ..errors import Cancelled, ChangeError, ClassificationError, ClassSpecError
from .common import CliError, ProgressBar, refuse_to_replace


def is_change_output(path: Path) -> bool:
    """Whether a file is a transition raster an earlier ``cwsam change`` wrote (its run record says so)."""
    record = Path(path).with_suffix(".run.json")
    try:
        return json.loads(record.read_text()).get("command") == "change"
    except (OSError, ValueError, AttributeError):
        return False


def run(args: argparse.Namespace) -> int:
    check_outputs([("BEFORE", raster_input_files(args.before)), ("AFTER", raster_input_files(args.after)),
                   ("--model", [args.model]), ("--sam-checkpoint", [args.sam_checkpoint])],
                  [("--output", change_files(args.output))])
    refuse_to_replace(args.output, "--output", is_change_output, "a transition raster", args.overwrite,
                      [args.before, args.after])
    bar = ProgressBar("change", args.quiet or args.json)
    try:
        result = compare_dates(args.before, args.after, args.output, model=args.model,
                               sam_checkpoint=args.sam_checkpoint, device=args.device, progress=bar)
    except (ChangeError, ClassSpecError, ClassificationError, Cancelled) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; nothing was written") from None
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summary(result)))
        return 0
    unit = "ha" if result.area_unit == "m2" else "pixels"
    print(f"Transitions written to {result.output} (table {result.table.name})")
    print(f"{'value':>5}  {'from':<20} {'to':<20} {'pixels':>12} {unit:>12}")
    for t in result.transitions:
        area = result.hectares(t.area)
        print(f"{t.value:>5}  {t.before:<20} {t.after:<20} {t.pixels:>12,} "
              f"{area if area is not None else t.pixels:>12,.2f}")
    area = result.hectares(result.unchanged_area)
    print(f"{0:>5}  {'(no change)':<41} {result.unchanged_pixels:>12,} "
          f"{area if area is not None else result.unchanged_pixels:>12,.2f}")
    return 0


def summary(result: ChangeResult) -> dict:
    """The JSON object of ``--json``: the transitions (from, to, pixels, hectares) and the unchanged part."""
    return {"output": str(result.output), "table": str(result.table),
            "transitions": [{"value": t.value, "from": t.before, "to": t.after, "pixels": t.pixels,
                             "hectares": result.hectares(t.area)} for t in result.transitions],
            "unchanged": {"pixels": result.unchanged_pixels, "hectares": result.hectares(result.unchanged_area)},
            "notes": result.notes}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "change", help="from -> to transitions between two class maps, with areas",
        description="Compare two class maps of the same place (e.g. two dates classified with the same model): "
        "AFTER is read on BEFORE's grid over their overlap (any CRS), classes meet by name where both maps name "
        "them, and a transition raster (0: no change), a table of pixels and hectares per from -> to pair "
        "(<output>_transitions.csv) and a run record are written.")
    parser.add_argument("before", metavar="BEFORE", help="class map of the first date (e.g. written by classify), "
                        "or its SAR scene with --model")
    parser.add_argument("after", metavar="AFTER", help="class map (or SAR scene) of the second date")
    parser.add_argument("--model", help="classify BEFORE and AFTER (SAR scenes) with this model file or ONNX "
                        "export first, each on its own grid")
    parser.add_argument("--sam-checkpoint", help="with --model: the SAM checkpoint of a model fine-tuned from SAM")
    parser.add_argument("--device", default="auto", help="with --model: auto, cpu, cuda, mps (default auto)")
    parser.add_argument("--output", required=True, help="transition GeoTIFF to write")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --output that cwsam did not write")
    parser.add_argument("--json", action="store_true", help="print one JSON object (transitions, areas) instead")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
