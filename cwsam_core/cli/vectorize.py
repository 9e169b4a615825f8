"""``cwsam vectorize``: polygons of a class map."""

from __future__ import annotations

import argparse

from ..errors import VectorizeCancelled, VectorizeError
from ..vector.vectorize import vectorize_file
from .common import CliError, ProgressBar, is_polygon_output, refuse_to_replace


def run(args: argparse.Namespace) -> int:
    refuse_to_replace(args.output, "--output", is_polygon_output, "a polygon file", args.overwrite,
                      [args.input, args.confidence])
    bar = ProgressBar("vectorize", args.quiet)
    try:
        result = vectorize_file(args.input, args.output, confidence=args.confidence, min_area=args.min_area,
                                simplify=args.simplify, classes=args.classes, progress=bar)
    except (VectorizeError, VectorizeCancelled) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; nothing was written") from None
    finally:
        bar.close()
    print(f"{result.polygons:,} polygons written to {result.output} (layer {result.layer}) in {result.seconds:.1f} s")
    if result.min_area_pixels > 1:
        print(f"Minimum mapping unit {result.min_area:g} m² ({result.min_area_pixels} pixels): "
              f"{result.merged_regions:,} smaller regions merged into their neighbours")
    unit = "m²" if result.area_unit == "m2" else result.area_unit
    print(f"{'class':<20} {'polygons':>10} {'area (' + unit + ')':>18}")
    for value, count in result.polygons_per_class.items():
        print(f"{result.class_names[value]:<20} {count:>10,} {result.areas[value]:>18,.1f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vectorize", help="turn a class raster into a styled GeoPackage of polygons",
        description="One polygon per connected region of a class raster written by classify, with its class, "
        "name, area (m²) and mean confidence; the model's colours are stored as the layer's QGIS style.")
    parser.add_argument("input", metavar="CLASSES", help="class GeoTIFF written by classify (uint8, nodata 255)")
    parser.add_argument("--output", required=True, help="GeoPackage to write (.gpkg)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --output that cwsam did not write")
    parser.add_argument("--confidence", help="the confidence GeoTIFF of the same classification: mean "
                        "confidence (%%) of each polygon (default: none, the field is empty)")
    parser.add_argument("--min-area", type=float, default=0.0, metavar="M2", help="minimum mapping unit in m²: "
                        "smaller regions are merged into the neighbour they share the most boundary with (default 0)")
    parser.add_argument("--simplify", type=float, default=0.0, metavar="METRES", help="simplify boundaries to this "
                        "tolerance in metres, neighbours keeping a shared boundary (default 0: pixel edges)")
    parser.add_argument("--classes", help="VALUE:NAME[:#RRGGBB],... or a CSV/JSON file naming the values (default: "
                        "the raster's category names and colour table)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
