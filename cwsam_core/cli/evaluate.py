"""``cwsam evaluate``: a model scored against labelled rasters."""

from __future__ import annotations

import argparse
import json

from ..training.evaluation import evaluate
from .common import labelled_sources, parse_bands, warn_unused_sam_checkpoint


def run(args: argparse.Namespace) -> int:
    warn_unused_sam_checkpoint(args.model, args.sam_checkpoint)
    pairs = [(s.image, s.labels) for s in labelled_sources(args)]
    metrics, card = evaluate(args.model, pairs, sam_checkpoint=args.sam_checkpoint,
                             ignore_values=args.ignore_value or [], device=args.device, test_time_flips=args.flips,
                             band_indexes=parse_bands(args.bands), input_scale=args.input_scale)
    rows = metrics.per_class([c.value for c in card.classes], [c.name for c in card.classes])
    if args.json:
        nan_free = lambda v: None if v != v else v  # noqa: E731 (NaN is not JSON)
        print(json.dumps({"miou": nan_free(metrics.miou), "overall_accuracy": nan_free(metrics.overall_accuracy),
                          "fwiou": nan_free(metrics.fwiou), "kappa": nan_free(metrics.kappa),
                          "pixels": metrics.pixels, "per_class": rows}))
        return 0
    fmt = lambda v: "   -" if v is None else f"{v:.4f}"  # noqa: E731
    print(f"{'value':>5}  {'class':<20} {'IoU':>7} {'prec.':>7} {'recall':>7} {'F1':>7} {'pixels':>12}")
    for r in rows:
        print(f"{r['value']:>5}  {r['name']:<20} {fmt(r['iou']):>7} {fmt(r['precision']):>7} "
              f"{fmt(r['recall']):>7} {fmt(r['f1']):>7} {r['pixels']:>12,}")
    print(f"mIoU {metrics.miou:.4f}  OA {metrics.overall_accuracy:.4f}  FWIoU {metrics.fwiou:.4f}  "
          f"kappa {metrics.kappa:.4f}  ({metrics.pixels:,} labelled pixels)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("evaluate", help="score a model file against labelled rasters")
    parser.add_argument("--model", required=True)
    parser.add_argument("--sam-checkpoint")
    parser.add_argument("--image")
    parser.add_argument("--labels")
    parser.add_argument("--pairs")
    parser.add_argument("--ignore-value", type=int, nargs="+", action="extend", metavar="V",
                        help="label values to ignore (e.g. -1 255)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--flips", action="store_true", help="test-time flips, as in classify")
    parser.add_argument("--bands", help="1-based raster bands in the model's band order, e.g. 2,1 (default: by "
                        "band description, else in order), as in classify")
    parser.add_argument("--input-scale", default="auto", choices=["auto", "db", "linear", "amplitude"],
                        help="scale of the images' values (default: detected), as in classify")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)
