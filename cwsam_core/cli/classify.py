"""``cwsam classify``: class maps of one scene or of many into a folder, optionally with polygons."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from ..common.paths import check_outputs, class_raster_files, previous_kept_until_done, raster_input_files
from ..engine.inference import DEFAULT_OVERLAP, check_classify_paths, classify_file
from ..errors import CwsamError, OutputConflictError, VectorizeCancelled, VectorizeError
from ..raster.scene import scene_name, scene_paths
from ..vector.vectorize import vectorize_file
from .common import (
    CliError, ProgressBar, classify_outputs, is_polygon_output, parse_bands, refuse_to_replace,
    warn_unused_sam_checkpoint,
)


def _scene_list(args: argparse.Namespace) -> list:
    """The scenes named on the command line and in ``--list`` (one scene a line; "VV.tif,VH.tif" is one
    scene; relative paths are relative to the list file; blank lines and lines starting with # skipped)."""

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
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".cwsam-write-test-"):
            pass
    except OSError as exc:
        raise CliError(f"cannot write in the output folder {folder} ({exc.strerror or exc}); "
                       "choose another folder") from None


def _batch_outputs(scenes: list, folder: Path, with_confidence: bool) -> list:
    """(scene, class raster, confidence raster or None) for each scene, named after the scene in ``folder``."""
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


def run(args: argparse.Namespace) -> int:
    scenes = _scene_list(args)
    warn_unused_sam_checkpoint(args.model, args.sam_checkpoint)
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
    if args.output is not None:  # after the guards against inputs and output collisions, which say more
        scene, output, confidence = jobs[0]
        check_classify_paths(scene, output, confidence,
                             {"model file": args.model, "SAM checkpoint": args.sam_checkpoint})
        ours = classify_outputs(output)
        refuse_to_replace(output, "--output", ours, "a class map", args.overwrite)
        refuse_to_replace(confidence, "--confidence" if args.confidence else "--with-confidence", ours,
                          "a confidence raster", args.overwrite)
        refuse_to_replace(vectors[0], "--vector", is_polygon_output, "a polygon file", args.overwrite)
    # Under torchrun each process classifies its share of the scenes, on its own GPU where there are GPUs.
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world > 1 and device == "auto":
        import torch  # torchrun only starts ranks where the full install is

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
        bar = ProgressBar(Path(str(scene).split(",")[0]).name if batch else "classify", args.quiet)
        run_info = {"rank": rank, "world_size": world} if world > 1 else None
        try:
            # With polygons a scene's outputs are one set: an error or an interrupt leaves the previous set whole.
            with previous_kept_until_done([*class_raster_files(output), confidence, vector] if vector else []):
                result = _classify_scene(scene, output, confidence, args, device, bar, run_info)
                _report(result, f"[{index}/{len(mine)}] {scene}: " if batch else "")
                if vector is not None:
                    _vectorize_result(result, vector, args)
        except CwsamError as exc:
            if not batch:
                raise
            failed.append((scene, str(exc)))
            print(f"[{index}/{len(mine)}] {scene}: FAILED: {exc}", file=sys.stderr)
            continue
        except KeyboardInterrupt:
            raise CliError("interrupted; " + ("the previous outputs of the scene are as they were" if vector else
                                              "the scene being classified was not written")) from None
        finally:
            bar.close()
        done += 1
    if batch:
        print(f"{done} classified, {len(skipped)} skipped, {len(failed)} failed"
              + (f" (process {rank} of {world})" if world > 1 else ""))
        for scene, message in failed:
            print(f"failed: {scene}: {message}", file=sys.stderr)
    return 1 if failed else 0


def _classify_scene(scene: str, output: Path, confidence: Optional[Path], args: argparse.Namespace, device: str,
                    bar: ProgressBar, run_info: Optional[dict]):
    return classify_file(
        scene, output, args.model, sam_checkpoint=args.sam_checkpoint, tile_size=args.tile_size,
        device=device, confidence_path=confidence, overlap=args.overlap, batch_size=args.batch_size,
        input_scale=args.input_scale, band_indexes=parse_bands(args.bands), threads=args.threads,
        test_time_flips=args.flips, cog=args.cog, progress=bar, compile_model=args.compile, run_info=run_info,
    )


def _check_vector_path(scene: str, output: Path, confidence: Optional[Path], vector: Path, model: str) -> None:
    """Refuse, before any work, a polygon file that is an input or another output."""
    inputs = [("SAR raster", raster_input_files(p)) for p in scene_paths(scene)] + [("model file", [model])]
    outputs = [("output", class_raster_files(output)), ("confidence output", [confidence]),
               ("polygon output", [vector])]  # its style goes inside the GeoPackage
    try:
        check_outputs(inputs, outputs)
    except OutputConflictError as exc:
        raise CliError(str(exc)) from None


def _vectorize_result(result, vector: Path, args: argparse.Namespace) -> None:
    """The polygons of a class raster just written, as ``cwsam vectorize`` makes them."""
    try:
        polygons = vectorize_file(result.output, vector, confidence=result.confidence, min_area=args.min_area,
                                  simplify=args.simplify)
    except (VectorizeError, VectorizeCancelled) as exc:
        raise CliError(str(exc)) from None
    print(f"{polygons.polygons:,} polygons written to {polygons.output}")


def _report(result, prefix: str = "") -> None:
    print(f"{prefix}Classes written to {result.output} on {result.device} in {result.seconds:.1f} s")
    if result.confidence:
        print(f"Confidence written to {result.confidence}")
    print(f"Run record: {result.record}")
    names = result.class_names
    total = sum(result.pixel_counts.values()) or 1
    print(f"{'class':<20} {'pixels':>12} {'share':>7} {'area (' + result.area_unit + ')':>16}")
    for value, count in result.pixel_counts.items():
        print(f"{names[value]:<20} {count:>12,} {count / total:>7.1%} {result.areas[value]:>16,.1f}")


def register(subparsers: argparse._SubParsersAction) -> None:
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
    parser.add_argument("--overwrite", action="store_true", help="replace existing files at the outputs (without it, "
                        "--output-dir skips scenes already classified and --output only replaces files an earlier "
                        "cwsam classify wrote there)")
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
    parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                        help=f"tile overlap as a fraction (default {DEFAULT_OVERLAP:g})")
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
    parser.set_defaults(func=run)
