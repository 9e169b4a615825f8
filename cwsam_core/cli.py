"""The ``cwsam`` command line: headless use of the same engine the QGIS plugin calls."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
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
    from .card import ModelFileError, is_onnx

    try:
        if is_onnx(args.model):
            from .onnx_model import describe_onnx

            text, kind = describe_onnx(args.model), "CWSAM ONNX export"
        else:
            from .model_file import read_model_card

            from .retrain import describe_parent

            card = read_model_card(args.model)
            text, kind = card.describe() + describe_parent(card), "CWSAM model file"
    except ModelFileError as exc:
        raise CliError(str(exc)) from None
    print(f"{kind}: {args.model}")
    print(text)
    return 0


def _register_info(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="print the model card of a CWSAM model file or ONNX export")
    parser.add_argument("model", metavar="MODEL_FILE", help="a CWSAM model file (.cwsam.pt) or ONNX export (.onnx)")
    parser.set_defaults(func=_info)


def _export(args: argparse.Namespace) -> int:
    from .card import CheckpointError, ModelFileError
    from .onnx_export import ExportError, export_onnx

    try:
        result = export_onnx(args.model, args.output, sam_checkpoint=args.sam_checkpoint, int8=args.int8,
                             tile_size=args.tile_size)
    except (ExportError, ModelFileError, CheckpointError) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; nothing was written") from None
    export = result.export
    print(f"ONNX export written to {result.path} ({result.bytes / 2**20:.1f} MB, {export['precision']}, "
          f"{export['tile_size']} px tiles); largest logit difference to PyTorch on a test batch: "
          f"{export.get('max_abs_logit_difference_int8', export['max_abs_logit_difference']):.2g}")
    return 0


def _register_export(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a model file as one ONNX file, to classify with ONNX Runtime (no PyTorch)",
        description="Export a CWSAM model file to ONNX for one tile size, frozen SAM weights included (the file "
        "stands alone), with the model card in its metadata. `cwsam classify --model MODEL.onnx` runs it with "
        "ONNX Runtime, as do the QGIS dock and cwsam:classify.")
    parser.add_argument("model", metavar="MODEL_FILE", help="a CWSAM model file (.cwsam.pt)")
    parser.add_argument("--sam-checkpoint", help="the SAM checkpoint the model was fine-tuned from (if it needs one)")
    parser.add_argument("--output", required=True, help="ONNX file to write (.onnx)")
    parser.add_argument("--tile-size", type=int, help="the tile size the export runs at, a multiple of 16 "
                        "(default: the model's)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the linear layers "
                        "(smaller, faster on CPUs; class maps agree with float32 on most pixels)")
    parser.set_defaults(func=_export)


def _parse_bands(text: Optional[str]) -> Optional[list[int]]:
    if not text:
        return None
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CliError(f"--bands takes 1-based band numbers separated by commas (e.g. 1,2), got {text!r}") from None


def _scene_list(args: argparse.Namespace) -> list:
    """The scenes named on the command line and in ``--list`` (one scene a line; "VV.tif,VH.tif" is one
    scene; relative paths are relative to the list file; blank lines and lines starting with # skipped)."""
    from .scene import scene_paths

    scenes = list(args.inputs)
    if args.list:
        listed = Path(args.list)
        if not listed.is_file():
            raise CliError(f"scene list not found: {listed}")
        for number, line in enumerate(listed.read_text().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            paths = [p if p.is_absolute() else listed.parent / p for p in scene_paths(line)]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise CliError(f"{listed}, line {number}: file not found: {', '.join(missing)}; fix the list")
            scenes.append(",".join(map(str, paths)) if len(paths) > 1 else str(paths[0]))
    if not scenes:
        raise CliError("name a SAR raster to classify (or several, or --list FILE)")
    return scenes


def _check_writable(folder: Path) -> None:
    """Write and remove a probe file: permissions, read-only file systems and the like all show."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cwsam-write-test-"):
            pass
    except OSError as exc:
        raise CliError(f"cannot write in the output folder {folder} ({exc.strerror or exc}); "
                       "choose another folder") from None


def _batch_outputs(scenes: list, folder: Path, with_confidence: bool) -> list:
    """(scene, class raster, confidence raster or None) for each scene, named after the scene in ``folder``."""
    from .scene import scene_name

    named, jobs = {}, []
    for scene in scenes:
        stem = scene_name(scene)
        if stem in named:
            raise CliError(f"two scenes would write {stem}_classes.tif ({named[stem]} and {scene}): "
                           "classify them into different folders")
        named[stem] = scene
        jobs.append((scene, folder / f"{stem}_classes.tif",
                     folder / f"{stem}_confidence.tif" if with_confidence else None))
    return jobs


def _classify(args: argparse.Namespace) -> int:
    from .card import CheckpointError, ModelFileError
    from .inference import ClassificationCancelled, ClassificationError, classify_file
    from .radiometry import RadiometryError

    scenes = _scene_list(args)
    if (args.output is None) == (args.output_dir is None):
        raise CliError("give --output FILE (one scene) or --output-dir FOLDER (any number of scenes)")
    if args.output is not None:
        if len(scenes) > 1:
            raise CliError(f"{len(scenes)} scenes: give --output-dir FOLDER instead of --output")
        confidence = args.confidence or (Path(args.output).with_name(Path(args.output).stem + "_confidence.tif")
                                         if args.with_confidence else None)
        jobs = [(scenes[0], Path(args.output), confidence)]
        vectors = [Path(args.vector) if args.vector else None]
    else:
        if args.confidence:
            raise CliError("--confidence names one file: with --output-dir use --with-confidence")
        folder = Path(args.output_dir)
        if not folder.is_dir():
            raise CliError(f"output folder does not exist: {folder}")
        if args.vector:
            raise CliError("--vector names one file: with --output-dir use --with-vectors")
        _check_writable(folder)
        jobs = _batch_outputs(scenes, folder, args.with_confidence)
        vectors = [output.with_name(output.name.replace("_classes.tif", "_polygons.gpkg")) if args.with_vectors
                   else None for _, output, _ in jobs]
    for name, value in (("--min-area", args.min_area), ("--simplify", args.simplify)):
        if not value >= 0:
            raise CliError(f"{name} takes a number >= 0, got {value}")
    for (scene, output, confidence), vector in zip(jobs, vectors):
        if vector is not None:
            _check_vector_path(scene, output, confidence, vector, args.model)
    # Under torchrun each process classifies its share of the scenes, on its own GPU where there are GPUs.
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world > 1 and device == "auto":
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    mine = list(zip(jobs, vectors))[rank::world]
    batch = args.output_dir is not None
    failed, skipped, done = [], [], 0
    for index, ((scene, output, confidence), vector) in enumerate(mine, start=1):
        if batch and not args.overwrite and output.exists():
            skipped.append(scene)
            print(f"[{index}/{len(mine)}] {scene}: {output.name} exists, skipped (--overwrite replaces it)")
            continue
        bar = _Bar(Path(str(scene).split(",")[0]).name if batch else "classify", args.quiet)
        try:
            result = classify_file(
                scene, output, args.model, sam_checkpoint=args.sam_checkpoint, tile_size=args.tile_size,
                device=device, confidence_path=confidence, overlap=args.overlap, batch_size=args.batch_size,
                input_scale=args.input_scale, band_indexes=_parse_bands(args.bands), threads=args.threads,
                test_time_flips=args.flips, cog=args.cog, progress=bar, compile_model=args.compile,
                run_info={"rank": rank, "world_size": world} if world > 1 else None,
            )
        except (ClassificationError, ModelFileError, CheckpointError, RadiometryError, ClassificationCancelled) as exc:
            if not batch:
                raise CliError(str(exc)) from None
            failed.append((scene, str(exc)))
            print(f"[{index}/{len(mine)}] {scene}: FAILED: {exc}", file=sys.stderr)
            continue
        except KeyboardInterrupt:
            raise CliError("interrupted; the scene being classified was not written") from None
        finally:
            bar.close()
        _report(result, f"[{index}/{len(mine)}] {scene}: " if batch else "")
        if vector is not None:
            try:
                _vectorize_result(result, vector, args)
            except CliError as exc:
                if not batch:
                    raise
                failed.append((scene, str(exc)))
                print(f"[{index}/{len(mine)}] {scene}: FAILED: {exc}", file=sys.stderr)
                continue
        done += 1
    if batch:
        print(f"{done} classified, {len(skipped)} skipped, {len(failed)} failed"
              + (f" (process {rank} of {world})" if world > 1 else ""))
        for scene, message in failed:
            print(f"failed: {scene}: {message}", file=sys.stderr)
    return 1 if failed else 0


def _check_vector_path(scene: str, output: Path, confidence: Optional[Path], vector: Path, model: str) -> None:
    """Refuse, before any work, a polygon file that is an input or another output."""
    from .paths import OutputConflictError, check_outputs, class_raster_files, raster_input_files
    from .scene import scene_paths

    inputs = [("SAR raster", raster_input_files(p)) for p in scene_paths(scene)] + [("model file", [model])]
    outputs = [("output", class_raster_files(output)), ("confidence output", [confidence]),
               ("polygon output", [vector])]  # its style goes inside the GeoPackage
    try:
        check_outputs(inputs, outputs)
    except OutputConflictError as exc:
        raise CliError(str(exc)) from None


def _vectorize_result(result, vector: Path, args: argparse.Namespace) -> None:
    """The polygons of a class raster just written, as ``cwsam vectorize`` makes them."""
    from .vectorize import VectorizeCancelled, VectorizeError, vectorize_file

    try:
        polygons = vectorize_file(result.output, vector, confidence=result.confidence, min_area=args.min_area,
                                  simplify=args.simplify)
    except (VectorizeError, VectorizeCancelled) as exc:
        raise CliError(str(exc)) from None
    print(f"{polygons.polygons:,} polygons written to {polygons.output}")


def _report(result, prefix: str = "") -> None:
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"{prefix}Classes written to {result.output} on {result.device} in {result.seconds:.1f} s")
    if result.confidence:
        print(f"Confidence written to {result.confidence}")
    print(f"Run record: {result.record}")
    names = result.class_names
    total = sum(result.pixel_counts.values()) or 1
    print(f"{'class':<20} {'pixels':>12} {'share':>7} {'area (' + result.area_unit + ')':>16}")
    for value, count in result.pixel_counts.items():
        print(f"{names[value]:<20} {count:>12,} {count / total:>7.1%} {result.areas[value]:>16,.1f}")


def _register_classify(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("classify", help="classify SAR rasters into styled class GeoTIFFs")
    parser.add_argument("inputs", metavar="SCENE", nargs="*",
                        help="SAR raster (GeoTIFF or any format GDAL reads); polarisations in separate files as "
                        "one scene: VV.tif,VH.tif; several scenes need --output-dir")
    parser.add_argument("--list", metavar="FILE", help="a text file naming one scene a line (also VV.tif,VH.tif)")
    parser.add_argument("--model", required=True, help="CWSAM model file (.cwsam.pt, runs with PyTorch) or ONNX "
                        "export (.onnx, runs with ONNX Runtime: see cwsam export)")
    parser.add_argument("--sam-checkpoint", help="the SAM checkpoint the model was fine-tuned from (if it needs one)")
    parser.add_argument("--output", help="class GeoTIFF to write for one scene (with .qml, .aux.xml, .run.json)")
    parser.add_argument("--output-dir", metavar="FOLDER", help="folder for the class rasters of any number of "
                        "scenes (<scene>_classes.tif); scenes whose output exists are skipped")
    parser.add_argument("--overwrite", action="store_true", help="with --output-dir: replace existing outputs")
    parser.add_argument("--confidence", help="also write the per-pixel confidence (percent) to this GeoTIFF")
    parser.add_argument("--with-confidence", action="store_true",
                        help="also write <name>_confidence.tif beside each class raster")
    parser.add_argument("--cog", action="store_true", help="write Cloud-Optimised GeoTIFFs with overviews")
    parser.add_argument("--vector", metavar="GPKG", help="also write the map as polygons (one per region, with class, "
                        "area and mean confidence) to this GeoPackage")
    parser.add_argument("--with-vectors", action="store_true",
                        help="with --output-dir: also write <scene>_polygons.gpkg beside each class raster")
    parser.add_argument("--min-area", type=float, default=0.0, metavar="M2",
                        help="polygons: minimum mapping unit in m² (smaller regions merge into a neighbour)")
    parser.add_argument("--simplify", type=float, default=0.0, metavar="METRES",
                        help="polygons: simplification tolerance in metres (shared boundaries stay shared)")
    parser.add_argument("--tile-size", type=int, help="tile size in pixels, a multiple of 16 (default: the model's)")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap as a fraction (default 0.25)")
    parser.add_argument("--batch-size", type=int, help="tiles per batch (default: as many as fit in free GPU "
                        "memory, at most 32; 4 without a GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder (GPU: faster once "
                        "compiled, the first tiles take minutes); falls back with a warning where it fails")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps "
                        "(ONNX models: CUDA where onnxruntime-gpu finds a GPU, else CPU)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch or ONNX Runtime")
    parser.add_argument("--input-scale", default="auto", choices=["auto", "db", "linear", "amplitude"],
                        help="scale of the input values (default: detected from the data)")
    parser.add_argument("--bands", help="1-based raster bands to use, in the model's band order (e.g. 1,2)")
    parser.add_argument("--flips", action="store_true", help="test-time flips: average each tile over four "
                        "mirrored copies (smoother maps, 4 times the compute; recorded in the run record)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_classify)


def _sources(args: argparse.Namespace):
    """The training/evaluation sources named on the command line: one of three forms."""
    from .datasets import TrainingSource, read_pairs

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


def _classes_from_data(sources, ignore_values) -> list:
    """Classes found in the labels when the user names none: label values, or the polygons' class field."""
    from .datasets import label_values
    from .model_file import ClassInfo, default_color
    from .polygons import polygon_classes

    if sources[0].polygons is not None:
        return polygon_classes(sources[0].polygons, sources[0].class_field, sources[0].layer)
    values = sorted({v for s in sources for v in label_values(s.labels, ignore_values)})
    if not values or min(values) < 0 or max(values) > 254:
        raise CliError(f"cannot derive classes from the label values {values[:10]}: give --classes")
    return [ClassInfo(v, f"class {v}", default_color(i)) for i, v in enumerate(values)]


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


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .checkpoint import CheckpointError
    from .classes import ClassSpecError, parse_classes
    from .datasets import TrainingDataError
    from .radiometry import RadiometryError
    from .training import PAPER_EPOCHS, TrainConfig, train

    paper = args.recipe == "paper"
    epochs = args.epochs if args.epochs is not None else (PAPER_EPOCHS if paper else 10)
    # The paper recipe's epoch is one pass over the training data (None: resolved by the engine).
    steps_per_epoch = args.steps_per_epoch if args.steps_per_epoch is not None else (None if paper else 50)
    try:
        sources = _sources(args)
        common = dict(
            output=Path(args.output), sam_checkpoint=args.sam_checkpoint, tile_size=args.tile_size,
            band_indexes=_parse_bands(args.bands), input_scale=args.input_scale,
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
            classes = parse_classes(args.classes) if args.classes else _classes_from_data(sources,
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
    from .retrain import warm_start_config

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


def _register_train(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--classes", help='VALUE:NAME[:#RRGGBB],... or a CSV/JSON file; unnamed values are ignored')
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
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(func=_train)


def _evaluate(args: argparse.Namespace) -> int:
    from .card import CheckpointError, ModelFileError
    from .datasets import TrainingDataError
    from .evaluation import evaluate
    from .inference import ClassificationError
    from .radiometry import RadiometryError

    try:
        pairs = ([(s.image, s.labels) for s in _sources(args)])
        metrics, card = evaluate(args.model, pairs, sam_checkpoint=args.sam_checkpoint,
                                 ignore_values=args.ignore_value or [], device=args.device,
                                 test_time_flips=args.flips)
    except (TrainingDataError, ClassificationError, ModelFileError, CheckpointError, RadiometryError) as exc:
        raise CliError(str(exc)) from None
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


def _register_evaluate(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_evaluate)


def _import_authors(args: argparse.Namespace) -> int:
    from .authors import AuthorsImportError, parse_authors_classes, read_authors_config, write_authors_model_file
    from .checkpoint import CheckpointError
    from .classes import ClassSpecError
    from .model_file import ModelFileError

    try:
        config = read_authors_config(args.config) if args.config else None
        classes = parse_authors_classes(args.classes) if args.classes else None
        path, card = write_authors_model_file(args.checkpoint, args.sam_checkpoint, args.output, classes, config)
    except (AuthorsImportError, CheckpointError, ClassSpecError, ModelFileError) as exc:
        raise CliError(str(exc)) from None
    print(f"Model file written to {path}: {card.backbone}, {len(card.classes)} classes "
          f"({', '.join(c.name for c in card.classes)}); it needs the SAM checkpoint {card.sam_checkpoint['name']}")
    return 0


def _register_import_authors(subparsers: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(func=_import_authors)


class _Bar:
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


def _vectorize(args: argparse.Namespace) -> int:
    from .vectorize import VectorizeCancelled, VectorizeError, vectorize_file

    bar = _Bar("vectorize", args.quiet)
    try:
        result = vectorize_file(args.input, args.output, confidence=args.confidence, min_area=args.min_area,
                                simplify=args.simplify, classes=args.classes, progress=bar)
    except (VectorizeError, VectorizeCancelled) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; nothing was written") from None
    finally:
        bar.close()
    for message in result.warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"{result.polygons:,} polygons written to {result.output} (layer {result.layer}) in {result.seconds:.1f} s")
    if result.min_area_pixels > 1:
        print(f"Minimum mapping unit {result.min_area:g} m² ({result.min_area_pixels} pixels): "
              f"{result.merged_regions:,} smaller regions merged into their neighbours")
    unit = "m²" if result.area_unit == "m2" else result.area_unit
    print(f"{'class':<20} {'polygons':>10} {'area (' + unit + ')':>18}")
    for value, count in result.polygons_per_class.items():
        print(f"{result.class_names[value]:<20} {count:>10,} {result.areas[value]:>18,.1f}")
    return 0


def _register_vectorize(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "vectorize", help="turn a class raster into a styled GeoPackage of polygons",
        description="One polygon per connected region of a class raster written by classify, with its class, "
        "name, area (m²) and mean confidence; the model's colours are stored as the layer's QGIS style.")
    parser.add_argument("input", metavar="CLASSES", help="class GeoTIFF written by classify (uint8, nodata 255)")
    parser.add_argument("--output", required=True, help="GeoPackage to write (.gpkg)")
    parser.add_argument("--confidence", help="the confidence GeoTIFF of the same classification: mean "
                        "confidence (%%) of each polygon (default: none, the field is empty)")
    parser.add_argument("--min-area", type=float, default=0.0, metavar="M2", help="minimum mapping unit in m²: "
                        "smaller regions are merged into the neighbour they share the most boundary with (default 0)")
    parser.add_argument("--simplify", type=float, default=0.0, metavar="METRES", help="simplify boundaries to this "
                        "tolerance in metres, neighbours keeping a shared boundary (default 0: pixel edges)")
    parser.add_argument("--classes", help="VALUE:NAME[:#RRGGBB],... or a CSV/JSON file naming the values (default: "
                        "the raster's category names and colour table)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=_vectorize)


# Each entry adds one subcommand to the parser; its handler is stored as the ``func`` default.
_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _register_info, _register_classify, _register_export, _register_train, _register_evaluate, _register_import_authors,
    _register_vectorize,
]


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
    except ImportError as exc:
        if not _needs_full_install(exc):
            raise
        print(f"cwsam {args.command}: error: this needs the full install with PyTorch ({exc}): make setup, or pip "
              "install -r requirements.txt; the light install classifies with ONNX models (.onnx)", file=sys.stderr)
        return 2


# What the light install (requirements-classify.txt) leaves out: training, export and .cwsam.pt models need it.
FULL_INSTALL_MODULES = ("torch", "torchvision", "segment_anything", "onnx")


def _needs_full_install(exc: ImportError) -> bool:
    """Whether ``exc`` is a module of the full install missing (not a broken install of something else)."""
    name = (exc.name or "").split(".")[0]
    return name in FULL_INSTALL_MODULES or any(f"'{module}'" in str(exc) for module in FULL_INSTALL_MODULES)


if __name__ == "__main__":
    sys.exit(main())
