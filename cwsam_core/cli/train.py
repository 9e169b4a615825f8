"""``cwsam train``: a model trained from labelled rasters or polygons, or continued from one."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Optional

from rasterio.errors import RasterioIOError

from ..common.card import ClassInfo, default_color
from ..common.classes import parse_classes
from ..errors import CheckpointError, ClassSpecError, RadiometryError, TrainingDataError
from ..raster.class_names import read_class_list
from ..training.config import PAPER_EPOCHS, TrainConfig
from ..training.datasets import label_values
from ..vector.polygons import polygon_classes
from .common import CliError, is_model_output, labelled_sources, parse_bands, refuse_to_replace


def _classes_from_data(sources, ignore_values) -> list:
    """Classes found in the labels when the user names none: label values, or the polygons' class field."""
    if sources[0].polygons is not None:
        return polygon_classes(sources[0].polygons, sources[0].class_field, sources[0].layer)
    values = sorted({v for s in sources for v in label_values(s.labels, ignore_values)})
    if not values or min(values) < 0 or max(values) > 254:
        raise CliError(f"cannot derive classes from the label values {values[:10]}: give --classes")
    named = read_class_list(sources[0].labels, values)  # names (and colours) the labels carry
    return named or [ClassInfo(v, f"class {v}", default_color(i)) for i, v in enumerate(values)]


def _classes_option(spec: str) -> list:
    """--classes: VALUE:NAME,... or a CSV/JSON file, or a class raster that names its classes (a reference map:
    the new model numbers and names its classes as it does)."""
    path = Path(spec)
    if path.suffix.lower() not in (".csv", ".json") and path.is_file():
        try:
            classes = read_class_list(path)
        except RasterioIOError:
            classes = None
        if classes is not None:
            if not classes:
                raise CliError(f"--classes {path.name}: the raster names no classes (no class_<value> band tags, "
                               "category names, attribute table or .qml beside it): give VALUE:NAME,...")
            return classes
    return parse_classes(spec)


def _parse_weights(text: Optional[str], num_classes: int) -> Optional[list[float]]:
    if not text:
        return None
    try:
        weights = [float(part) for part in text.split(",")]
    except ValueError:
        raise CliError(f"--class-weights takes numbers separated by commas, got {text!r}") from None
    if len(weights) != num_classes or min(weights) < 0 or max(weights) <= 0:
        raise CliError(f"--class-weights needs {num_classes} non-negative numbers (one per class, not all 0), "
                       f"got {text!r}")
    return weights


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..training.loop import train  # torch: only when training runs (the light install has no torch)

    refuse_to_replace(args.output, "--output", is_model_output, "a model file", args.overwrite,
                      [args.image, args.labels, args.polygons, args.pairs, args.init_model, args.sam_checkpoint])
    paper = args.recipe == "paper"
    epochs = args.epochs if args.epochs is not None else (PAPER_EPOCHS if paper else 10)
    # The paper recipe's epoch is one pass over the training data (None: resolved by the engine).
    steps_per_epoch = args.steps_per_epoch if args.steps_per_epoch is not None else (None if paper else 50)
    try:
        sources = labelled_sources(args)
        common = dict(
            output=Path(args.output), sam_checkpoint=args.sam_checkpoint, tile_size=args.tile_size,
            band_indexes=parse_bands(args.bands), input_scale=args.input_scale,
            ignore_values=args.ignore_value or [], epochs=epochs, steps_per_epoch=steps_per_epoch,
            batch_size=args.batch_size, accumulate=args.accumulate, lr=args.lr, val_fraction=args.val_fraction,
            time_budget=args.time_budget, balanced_sampling=args.balanced_sampling,
            device=args.device, seed=args.seed, dice_weight=args.dice,
            gradient_checkpointing=args.gradient_checkpointing, recipe=args.recipe,
            compile_encoder=args.compile,
        )
        if args.init_model:
            config = _warm_start(args, common)
        else:
            if not args.backbone:
                raise CliError("name the backbone (--backbone vit_tiny, or vit_b with --sam-checkpoint), or continue "
                               "from a model file with --init-model")
            if args.replay:
                raise CliError("--replay mixes in the training data of the model given with --init-model: give one")
            classes = _classes_option(args.classes) if args.classes else _classes_from_data(sources,
                                                                                          args.ignore_value or [])
            config = TrainConfig(
                backbone=args.backbone, classes=classes, model_scale=args.model_scale,
                bands=[b.strip() for b in args.band_names.split(",")] if args.band_names else None,
                class_weights=_parse_weights(args.class_weights, len(classes)), **common)
        # Under torchrun only rank 0 reports. With a time budget the bar counts percent of the time.
        main_process = int(os.environ.get("RANK", "0")) == 0
        total = 100 if args.time_budget else epochs * (steps_per_epoch or 1)
        bar = tqdm(total=total, desc="train", unit="%" if args.time_budget else "step",
                   disable=args.quiet or not main_process)

        def progress(info: dict) -> None:
            if "val_miou" in info:
                bar.write(f"epoch {info['epoch']}: train loss {info['train_loss']:.4f}, "
                          f"validation mIoU {info['val_miou']:.4f} (best {info['best_miou']:.4f})")
            else:
                if not args.time_budget:
                    bar.total = int(info["epochs"]) * int(info["steps"])  # known once the data are read
                bar.n = (round(100 * float(info["fraction"]), 1) if args.time_budget
                         else (int(info["epoch"]) - 1) * int(info["steps"]) + int(info["step"]))
                bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
                bar.refresh()

        try:
            result = train(sources, config, resume=args.resume, progress=progress)
        finally:
            bar.close()
    except (TrainingDataError, ClassSpecError, CheckpointError, RadiometryError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; the best model so far and the training state are kept (continue with --resume)") from None
    if not main_process:
        return 0
    if result.best_epoch > 0:
        print(f"Best validation mIoU {result.best_miou:.4f} at epoch {result.best_epoch}: model written to {result.model_path}")
    else:
        print(f"Model written to {result.model_path} (no validation part: the last epoch is kept)")
    return 0


def _warm_start(args: argparse.Namespace, common: dict):
    """The config of ``cwsam train --init-model``: what the model file fixes may not be given otherwise."""
    from ..training.parent import warm_start_config  # torch: the full install

    for given, option in ((args.classes, "--classes"), (args.band_names, "--band-names"),
                          (args.model_scale != "auto", "--model-scale")):
        if given:
            raise CliError(f"{option} comes from the model given with --init-model: leave it out")
    if not 0 <= args.replay < 1:
        raise CliError(f"--replay takes a share of the windows in [0, 1), got {args.replay}")
    config = warm_start_config(args.init_model, replay=args.replay, **common)
    if args.backbone and args.backbone != config.backbone:
        raise CliError(f"{Path(args.init_model).name} is a {config.backbone} model: leave out --backbone "
                       f"{args.backbone}")
    config.class_weights = _parse_weights(args.class_weights, len(config.classes))
    return config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="fine-tune CWSAM on labelled rasters")
    parser.add_argument("--image", help="SAR image raster")
    parser.add_argument("--labels", help="label raster of class values (any grid; read onto the image's)")
    parser.add_argument("--polygons", help="polygon file (GeoPackage, Shapefile, GeoJSON; any CRS) of labelled areas")
    parser.add_argument("--class-field", help="attribute of --polygons holding the class (integer value or name)")
    parser.add_argument("--layer", help="layer of a multi-layer --polygons file")
    parser.add_argument("--pairs", help="CSV with columns image,label (paths relative to the CSV)")
    parser.add_argument("--backbone", help="vit_b, vit_l, vit_h (with --sam-checkpoint) or vit_tiny (not needed "
                        "with --init-model)")
    parser.add_argument("--init-model", metavar="MODEL_FILE",
                        help="continue from this CWSAM model file (its backbone, classes, bands, scales, normalisation "
                        "and tile size; a model fine-tuned from SAM also needs --sam-checkpoint); the new file names "
                        "it as its parent. Labels may only use its classes")
    parser.add_argument("--replay", type=float, default=0.0, metavar="FRACTION",
                        help="with --init-model: this share of the training windows from the model's own training "
                        "data, where still on disk unchanged, so that new labels do not unlearn the rest (default 0)")
    parser.add_argument("--sam-checkpoint", help="official SAM checkpoint of the backbone")
    parser.add_argument("--classes", help='VALUE:NAME[:#RRGGBB],... or a CSV/JSON file, or a class raster that names '
                        'its classes (numbered and named as it does); unnamed values are ignored')
    parser.add_argument("--ignore-value", type=int, nargs="+", action="extend", metavar="V",
                        help="label values to ignore, e.g. --ignore-value -1 255 (also repeatable)")
    parser.add_argument("--bands", help="1-based raster bands to use, in the model's band order (e.g. 1,2; "
                        "default: the image's bands, up to three)")
    parser.add_argument("--band-names", help="names of the model's bands, in order (default: the image's band "
                        "descriptions, else band 1, band 2, ...)")
    parser.add_argument("--input-scale", default="auto", choices=["auto", "db", "linear", "amplitude"],
                        help="scale of the images' values (default: detected; 8-bit images are amplitude)")
    parser.add_argument("--model-scale", default="auto", choices=["auto", "db", "linear", "amplitude"],
                        help="scale the model works in (default: amplitude for 8-bit images, which are never "
                        "log-transformed, else db)")
    parser.add_argument("--tile-size", type=int, help="input size S, a multiple of 16 (default: the backbone's)")
    parser.add_argument("--time-budget", type=float, metavar="MINUTES",
                        help="train for this many minutes (epochs then run until the time is spent, and the "
                        "learning rate follows the elapsed time)")
    parser.add_argument("--epochs", type=int, help="epochs (default 10, 200 with --recipe paper; not used with "
                        "--time-budget)")
    parser.add_argument("--steps-per-epoch", type=int, help="optimizer steps per epoch (default 50; with --recipe "
                        "paper one pass over the training data)")
    parser.add_argument("--recipe", default="default", choices=["default", "paper"],
                        help="paper: the authors' training (AdamW 2e-4, cosine per epoch to 1e-7 over 200 epochs of "
                        "one pass over the data, their class weights for the FUSAR-Map classes, loss divided by the "
                        "pixel count, no augmentation), to compare results with theirs")
    parser.add_argument("--batch-size", type=int, default=4, help="windows per step (per process under torchrun)")
    parser.add_argument("--accumulate", type=int, default=1, help="batches whose gradients add up to one step")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 1e-3 from scratch, 2e-4 with a SAM "
                        "checkpoint)")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of files, or of blocks of a single "
                        "image, held out for validation (default 0.2; 0: none, the last epoch is kept)")
    parser.add_argument("--balanced-sampling", type=float, default=0.5, metavar="SHARE",
                        help="share of training windows centred on a pixel of a class drawn uniformly, so rare "
                        "classes are seen (default 0.5)")
    parser.add_argument("--class-weights", help="loss weight per class, in class order, e.g. 1,4 "
                        "(default: equal weights from scratch; with a SAM checkpoint the inverse square root of the training "
                        "labels' class frequencies)")
    parser.add_argument("--dice", type=float, default=0.0, help="weight of a Dice term added to cross-entropy")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="less memory, more compute")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder (GPU: faster steps "
                        "once compiled, the first take minutes); falls back with a warning where it fails")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT.state.pt")
    parser.add_argument("--output", required=True, help="model file to write (the best epoch's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --output that cwsam did not write")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=run)
