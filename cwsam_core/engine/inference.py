"""Classify a whole SAR raster: overlapping tiles, blended probabilities, strips written as they finish.

Memory does not grow with the raster's height: only one band of ``tile_size`` rows of class
probabilities is held, and rows are written to the output as soon as no later tile can touch them.

Torch-free: the network runs through a :class:`~cwsam_core.engine.runners.TileRunner`, PyTorch's
(``torch_runner``, imported for ``.cwsam.pt`` models and ``nn.Module`` s) or ONNX Runtime's (``onnx_runner``,
for ``.onnx`` exports), so classification works where only ONNX Runtime is installed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window, from_bounds

from .. import __version__
from ..common.card import ModelCard
from ..common.paths import check_outputs, class_raster_files, file_sha256, output_file_problem, raster_input_files
from ..errors import ClassificationCancelled, ClassificationError, OutputConflictError, SceneError
from ..model.card_reader import is_onnx
from ..raster.output import CLASS_NODATA, category_names_aux_xml, colormap, publish, qml_text, remove_quietly, sidecars
from ..raster.radiometry import SarReader
from ..raster.scene import open_scene, scene_name, scene_paths
from .onnx_runner import OnnxRunner
from .runners import TileRunner, tile_size_problem

LOG = logging.getLogger("cwsam")
ProgressCallback = Callable[[float, str], None]
CONFIDENCE_NODATA = 255
# GDAL block cache while classifying: bounded, so memory does not follow the raster size (rasterio
# passes an integer to GDALSetCacheMax, which counts bytes).
GDAL_CACHE_BYTES = 64 * 2**20
# Finished rows are written in chunks of this many columns, so temporaries do not follow the width.
FLUSH_COLUMNS = 1024
# Tile overlap: the default, and past which the work grows for nothing (a warning says the cost).
DEFAULT_OVERLAP = 0.25
MAX_USUAL_OVERLAP = 0.5


@dataclass
class ClassificationResult:
    output: Path
    confidence: Optional[Path]
    record: Path
    pixel_counts: Dict[int, int]
    areas: Dict[int, float]
    area_unit: str
    class_names: Dict[int, str]
    seconds: float
    device: str
    warnings: List[str] = field(default_factory=list)


def tile_offsets(length: int, tile: int, stride: int) -> List[int]:
    """Start offsets of tiles along one axis: a regular grid, the last tile shifted to end at the edge.

    A raster shorter than a tile gets one tile at 0, padded past the edge when read.
    """
    if length <= tile:
        return [0]
    offsets = list(range(0, length - tile + 1, stride))
    if offsets[-1] != length - tile:
        offsets.append(length - tile)
    return offsets


def blend_window(tile: int) -> np.ndarray:
    """tile x tile weights, high in the centre and small (never zero) at the edges, so that overlapping
    predictions fade into each other instead of meeting at a seam."""
    ramp = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    ramp = np.maximum(ramp, 1e-3).astype(np.float32)
    return np.outer(ramp, ramp)


def pixel_areas(transform, crs, row_start: int, rows: int) -> Tuple[np.ndarray, str]:
    """Area of one pixel in each of ``rows`` rows: m^2 for projected and geographic CRSs, pixels otherwise."""
    cell = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        return np.ones(rows), "pixels"
    if crs.is_geographic:
        # Equirectangular approximation at each row's latitude: good to well under 1 % for small pixels.
        centre_rows = np.arange(row_start, row_start + rows) + 0.5
        latitudes = np.radians(transform.f + centre_rows * transform.e)
        return cell * 111_320.0 * 110_574.0 * np.cos(latitudes), "m2"
    _, factor = crs.linear_units_factor
    return np.full(rows, cell * factor * factor), "m2"


class _StripAccumulator:
    """Blended class probabilities of the ``tile`` rows still open, for the full raster width."""

    def __init__(self, num_classes: int, tile: int, width: int) -> None:
        self.top = 0
        self.probabilities = np.zeros((num_classes, tile, width), dtype=np.float32)
        self.weights = np.zeros((tile, width), dtype=np.float32)
        self.valid = np.zeros((tile, width), dtype=bool)

    def add(self, row: int, col: int, probabilities: np.ndarray, valid: np.ndarray, window: np.ndarray) -> None:
        """probabilities: N x t x t of a tile at (row, col); parts past the raster edge are cut off."""
        top = row - self.top
        width = min(probabilities.shape[-1], self.weights.shape[1] - col)
        height = min(probabilities.shape[-2], self.weights.shape[0] - top)
        weights = window[:height, :width]
        self.probabilities[:, top : top + height, col : col + width] += probabilities[:, :height, :width] * weights
        self.weights[top : top + height, col : col + width] += weights
        self.valid[top : top + height, col : col + width] |= valid[:height, :width]

    def finished(self, rows: int, col_start: int, col_stop: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the first ``rows`` rows, columns [col_start, col_stop): probabilities, weights, valid."""
        cols = slice(col_start, col_stop)
        return self.probabilities[:, :rows, cols], self.weights[:rows, cols], self.valid[:rows, cols]

    def advance(self, rows: int) -> None:
        """Drop the first ``rows`` rows (written out) and open as many empty ones at the bottom."""
        for array in (self.probabilities, self.weights, self.valid):
            array[..., : array.shape[-2] - rows, :] = array[..., rows:, :]
            array[..., array.shape[-2] - rows :, :] = 0
        self.top += rows


def _check_output_path(path: Path, what: str) -> None:
    problem = output_file_problem(path, what, "classes.tif")
    if problem:
        raise ClassificationError(problem)


def check_classify_paths(input_path: Path | str, output_path: Path | str, confidence_path: Optional[Path | str] = None,
                         other_inputs: Optional[Dict[str, Optional[Path | str]]] = None) -> None:
    """Refuse, before any work, an output that is an input or another output (sidecars included)."""
    inputs = [("SAR raster", raster_input_files(path)) for path in scene_paths(input_path)]
    inputs += [(role, [path]) for role, path in (other_inputs or {}).items()]
    outputs = [("output", class_raster_files(output_path)),
               ("confidence output", raster_input_files(confidence_path) if confidence_path else [])]
    try:
        check_outputs(inputs, outputs)
    except OutputConflictError as exc:
        raise ClassificationError(str(exc)) from None


def classify_raster(
    input_path: Path | str,
    output_path: Path | str,
    model,
    card: ModelCard,
    *,
    confidence_path: Optional[Path | str] = None,
    overlap: float = DEFAULT_OVERLAP,
    batch_size: Optional[int] = None,
    device="auto",
    input_scale: str = "auto",
    band_indexes: Optional[Sequence[int]] = None,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    model_identity: Optional[dict] = None,
    bounds: Optional[Sequence[float]] = None,
    test_time_flips: bool = False,
    cog: bool = False,
    run_info: Optional[dict] = None,
    compile_model: bool = False,
) -> ClassificationResult:
    """Classify the raster at ``input_path`` with ``model`` and write a styled uint8 class GeoTIFF.

    ``model`` is a :class:`TileRunner` (e.g. ``onnx_runner.OnnxRunner``) or a torch module mapping
    B x 3 x S x S normalised images to B x N x S x S logits, with S its ``input_size`` (the tile size),
    run on ``device`` (a name or a torch device) with ``threads`` CPU threads. Writes ``output_path`` with
    its ``.qml`` and ``.aux.xml`` sidecars, optionally a confidence GeoTIFF (max class probability in
    percent, nodata 255), and a ``.run.json`` record.
    ``bounds`` (xmin, ymin, xmax, ymax in the raster's CRS) limits the output to that window of the
    raster's grid, widened to whole pixels; tiles still read the raster around it for context.
    ``test_time_flips`` averages each tile's probabilities over four flips (4 times the compute).
    ``cog`` writes Cloud-Optimised GeoTIFFs (overviews: mode of the classes, mean of the confidence).
    ``run_info`` is added to the run record (e.g. the process of a batch under torchrun).
    ``batch_size`` None: as many tiles as fit in free GPU memory (4 without a GPU). ``compile_model``:
    ``torch.compile`` the image encoder of a torch module (falls back to eager mode with a warning where
    that fails).
    Everything is written to temporary files and renamed at the end: after an error or a cancel
    nothing is left at the output paths.
    """
    started = time.perf_counter()
    paths, output_path = scene_paths(input_path), Path(output_path)
    name = scene_name(input_path)
    confidence_path = Path(confidence_path) if confidence_path else None
    tile = int(getattr(model, "input_size", None) or getattr(model, "tile_size", None)
               or card.tile_size or card.input_size)
    problem = tile_size_problem(tile, len(card.classes))
    if problem:
        raise ClassificationError(problem)
    if not 0 <= overlap < 1:
        raise ClassificationError(f"overlap must be a fraction in [0, 1), got {overlap}")
    if batch_size is not None and batch_size < 1:
        raise ClassificationError(f"batch size must be at least 1, got {batch_size}")
    _check_threads(threads)
    for path in paths:
        if not path.is_file():
            raise ClassificationError(f"input raster not found: {path}")
    check_classify_paths(input_path, output_path, confidence_path)
    _check_output_path(output_path, "output")
    if confidence_path:
        _check_output_path(confidence_path, "confidence output")
    notes: List[str] = []

    def warn(message: str) -> None:
        notes.append(message)
        LOG.warning(message)

    if isinstance(model, TileRunner):
        runner = model
        if compile_model:
            warn("--compile applies to PyTorch models; this model runs with ONNX Runtime, without it")
    else:
        from .torch_runner import TorchRunner  # torch: only for PyTorch models (the light install has none)

        runner = TorchRunner(model, device, threads=threads, compile_model=compile_model, warn=warn)
    batch_source = "given"
    if batch_size is None:
        batch_size, batch_source = runner.batch_size(tile)
    stride = max(1, tile - int(round(tile * overlap)))
    if overlap > MAX_USUAL_OVERLAP:
        work = (tile / stride) ** 2 / (tile / (tile - round(tile * DEFAULT_OVERLAP))) ** 2
        warn(f"overlap {overlap:g} classifies every pixel about {work:.0f} times as often as the default "
             f"{DEFAULT_OVERLAP:g} ({work:.0f}x the time) for little gain: an overlap of {DEFAULT_OVERLAP:g} to "
             f"{MAX_USUAL_OVERLAP:g} is enough to hide tile seams")
    targets = [output_path, *sidecars(output_path).values()] + ([confidence_path] if confidence_path else [])
    temporaries = {t: t.with_name(f".{t.name}.{os.getpid()}.partial") for t in targets}
    record_path = output_path.with_suffix(".run.json")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), _open_raster(input_path) as dataset:
                if dataset.crs is None:
                    warn(f"{name} has no coordinate reference system (radar geometry or a plain image): "
                         "the output keeps its pixel grid and is not georeferenced")
                region = _region(dataset, bounds)
                reader = SarReader(
                    dataset, card.bands, card.input_scale, input_scale=input_scale, band_indexes=band_indexes,
                    normalization=card.normalization, warn=warn, trained_scale=card.training_input_scale,
                )
                counts, areas, area_unit = _run_tiles(
                    dataset, region, reader, runner, card, tile, stride, batch_size,
                    temporaries[output_path], temporaries.get(confidence_path) if confidence_path else None,
                    progress, should_cancel, test_time_flips,
                )
                files = [{"path": str(p.resolve()), "bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in paths]
                fingerprint = {**files[0], **({"files": files} if len(files) > 1 else {}),
                               "bands": list(dataset.descriptions), "width": dataset.width, "height": dataset.height,
                               "crs": dataset.crs.to_string() if dataset.crs else None}
                window_record = {"col_off": int(region.col_off), "row_off": int(region.row_off),
                                 "width": int(region.width), "height": int(region.height)}
                resolved = {"band_indexes": list(reader.band_indexes), "input_scale": reader.source_scale,
                            "normalization": reader.stats.to_dict(),
                            "normalization_source": "model file" if card.normalization else "whole raster sample"}
        if cog:
            _to_cog(temporaries[output_path], "MODE")
            if confidence_path:
                _to_cog(temporaries[confidence_path], "AVERAGE")
        aux, qml = sidecars(output_path)["aux"], sidecars(output_path)["qml"]
        temporaries[aux].write_text(category_names_aux_xml(card.classes))
        temporaries[qml].write_text(qml_text(card.classes))
        publish((temporaries[t], t) for t in reversed(targets))  # the class raster last
    except BaseException:
        remove_quietly([*temporaries.values(), *(t.with_name(t.name + ".aux.xml") for t in temporaries.values()),
                        *(t.with_name(t.name + ".cog") for t in temporaries.values())])
        raise
    seconds = time.perf_counter() - started
    engine = runner.record()
    record = {
        "cwsam_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {**(model_identity or {}), "backbone": card.backbone, "input_size": card.input_size,
                  "classes": [c.__dict__ for c in card.classes]},
        "input": fingerprint,
        "parameters": {"tile_size": tile, "overlap": overlap, "batch_size": batch_size,
                       "batch_size_source": batch_source, "compile": compile_model, "requested_scale": input_scale,
                       "test_time_flips": test_time_flips,
                       "bounds": list(bounds) if bounds is not None else None, "window": window_record, **resolved},
        "device": runner.device,
        "engine": engine["engine"],
        "software": {**engine["software"], "rasterio": rasterio.__version__,
                     "gdal": rasterio.__gdal_version__, "numpy": np.__version__, "python": platform.python_version()},
        "seconds": round(seconds, 3),
        "outputs": {"classes": str(output_path), "confidence": str(confidence_path) if confidence_path else None},
        "pixels_per_class": {str(v): n for v, n in counts.items()},
        "area_per_class": {str(v): a for v, a in areas.items()},
        "area_unit": area_unit,
        "warnings": notes,
        **({"cloud_optimised": True} if cog else {}),
        **({"process": run_info} if run_info else {}),
    }
    record_path.write_text(json.dumps(record, indent=2))
    return ClassificationResult(output_path, confidence_path, record_path, counts, areas, area_unit,
                                {c.value: c.name for c in card.classes}, seconds, runner.device, notes)


def _to_cog(path: Path, overview_resampling: str) -> None:
    """Rewrite the GeoTIFF at ``path`` as a Cloud-Optimised GeoTIFF (GDAL's COG driver) with overviews."""
    converted = path.with_name(path.name + ".cog")
    rasterio.shutil.copy(path, converted, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256, OVERVIEWS="AUTO",
                         RESAMPLING=overview_resampling)
    os.replace(converted, path)


def _open_raster(spec) -> rasterio.io.DatasetReader:
    """The raster to classify: one file, or several files of one scene stacked on the first one's grid."""
    try:
        return open_scene(spec)
    except SceneError as exc:
        raise ClassificationError(str(exc)) from None


def _region(dataset: rasterio.io.DatasetReader, bounds: Optional[Sequence[float]]) -> Window:
    """The window of whole pixels to classify: all of the raster, or the pixels ``bounds`` touches."""
    full = Window(0, 0, dataset.width, dataset.height)
    if bounds is None:
        return full
    if len(bounds) != 4 or not bounds[0] < bounds[2] or not bounds[1] < bounds[3]:
        raise ClassificationError(f"bounds must be xmin, ymin, xmax, ymax with xmin < xmax and ymin < ymax, got {bounds}")
    exact = from_bounds(*bounds, transform=dataset.transform)
    # Every pixel the bounds touch, with a tolerance so that bounds on pixel edges add no extra pixel.
    col0, row0 = math.floor(exact.col_off + 1e-6), math.floor(exact.row_off + 1e-6)
    col1 = math.ceil(exact.col_off + exact.width - 1e-6)
    row1 = math.ceil(exact.row_off + exact.height - 1e-6)
    try:
        return Window(col0, row0, col1 - col0, row1 - row0).intersection(full)
    except rasterio.errors.WindowError:
        raise ClassificationError(
            f"the extent {tuple(round(b, 6) for b in bounds)} does not overlap the raster "
            f"(its bounds are {tuple(round(b, 6) for b in dataset.bounds)}): choose an extent over the raster"
        ) from None


def _output_profile(dataset: rasterio.io.DatasetReader, region: Window, dtype: str, nodata: int) -> dict:
    width, height = int(region.width), int(region.height)
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype=dtype,
                   nodata=nodata, transform=dataset.window_transform(region), compress="deflate")
    if dataset.crs is not None:
        profile["crs"] = dataset.crs
    if width >= 256 and height >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


def _run_tiles(
    dataset, region: Window, reader: SarReader, runner: TileRunner, card: ModelCard, tile: int, stride: int,
    batch_size: int, output: Path, confidence: Optional[Path],
    progress: Optional[ProgressCallback], should_cancel: Optional[Callable[[], bool]], flips: bool = False,
) -> Tuple[Dict[int, int], Dict[int, float], str]:
    # Read once: the dataset is read by a background thread below and must not be touched meanwhile.
    # Tile offsets are relative to ``region``; tiles may read the raster past it, their parts outside are cut off.
    height, width, crs = int(region.height), int(region.width), dataset.crs
    row0, col0, transform = int(region.row_off), int(region.col_off), dataset.window_transform(region)
    rows, cols = tile_offsets(height, tile, stride), tile_offsets(width, tile, stride)
    values = np.array([c.value for c in card.classes], dtype=np.uint8)
    window = blend_window(tile)
    strip = _StripAccumulator(len(card.classes), tile, width)
    counts = np.zeros(len(values), dtype=np.int64)
    areas = np.zeros(len(values), dtype=np.float64)
    area_unit = "pixels"
    total_tiles, done_tiles = len(rows) * len(cols), 0
    out_dst = rasterio.open(output, "w", **_output_profile(dataset, region, "uint8", CLASS_NODATA))
    conf_dst = rasterio.open(confidence, "w", **_output_profile(dataset, region, "uint8", CONFIDENCE_NODATA)) if confidence else None
    try:
        out_dst.write_colormap(1, colormap(card.classes))

        def flush(upto: int) -> None:
            """Write the finished rows [strip.top, upto), in column chunks so temporaries stay small."""
            nonlocal area_unit
            start = strip.top
            n = min(upto, height) - start
            if n > 0:
                pixel_area, area_unit = pixel_areas(transform, crs, start, n)
                for c0 in range(0, width, FLUSH_COLUMNS):
                    c1 = min(c0 + FLUSH_COLUMNS, width)
                    probabilities, weights, valid = strip.finished(n, c0, c1)
                    valid = valid & (weights > 0)
                    best = probabilities.argmax(axis=0)
                    classes = np.where(valid, values[best], CLASS_NODATA).astype(np.uint8)
                    out_dst.write(classes[None], window=Window(c0, start, c1 - c0, n))
                    if conf_dst is not None:
                        top = probabilities.max(axis=0) / np.maximum(weights, 1e-12)
                        percent = np.where(valid, np.clip(np.round(top * 100), 0, 100), CONFIDENCE_NODATA)
                        conf_dst.write(percent.astype(np.uint8)[None], window=Window(c0, start, c1 - c0, n))
                    counted = best[valid]
                    counts[:] += np.bincount(counted, minlength=len(values))
                    row_areas = np.broadcast_to(pixel_area[:, None], best.shape)[valid]
                    areas[:] += np.bincount(counted, weights=row_areas, minlength=len(values))
            strip.advance(upto - start)

        # Batches are formed within a tile row; the next batch's windows are read in a background
        # thread while the model runs (GDAL and numpy release the GIL), so I/O hides behind compute.
        jobs = [(row, cols[i : i + batch_size]) for row in rows for i in range(0, len(cols), batch_size)]

        def load(job: Tuple[int, List[int]]) -> Tuple[int, list]:
            row, job_cols = job
            return row, [(col, *reader.read(Window(col0 + col, row0 + row, tile, tile))) for col in job_cols]

        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load, jobs[0])
            for index in range(len(jobs)):
                row, tiles = pending.result()
                if index + 1 < len(jobs):
                    pending = pool.submit(load, jobs[index + 1])
                if should_cancel is not None and should_cancel():
                    raise ClassificationCancelled("classification cancelled; nothing was written")
                if row > strip.top:
                    flush(row)  # every tile of the rows above is done: they are final
                batch = [(col, image, valid) for col, image, valid in tiles if valid.any()]  # skip all-nodata
                if batch:
                    probabilities = runner.probabilities(np.stack([b[1] for b in batch]), flips)
                    for (tile_col, _, tile_valid), tile_probabilities in zip(batch, probabilities):
                        strip.add(row, tile_col, tile_probabilities, tile_valid, window)
                done_tiles += len(tiles)
                if progress is not None:
                    progress(done_tiles / total_tiles, f"tile {done_tiles} of {total_tiles}")
        flush(rows[-1] + tile)
    finally:
        out_dst.close()
        if conf_dst is not None:
            conf_dst.close()
    return ({int(v): int(c) for v, c in zip(values, counts)},
            {int(v): float(a) for v, a in zip(values, areas)}, area_unit)


def _check_threads(threads: Optional[int]) -> None:
    if threads is not None and threads < 1:
        raise ClassificationError(f"threads must be at least 1, got {threads}")


def classify_file(
    input_path: Path | str,
    output_path: Path | str,
    model_path: Path | str,
    sam_checkpoint: Optional[Path | str] = None,
    tile_size: Optional[int] = None,
    device: str = "auto",
    **options,
) -> ClassificationResult:
    """Load a model file and classify a raster with it: the one entry point of the CLI, the plugin
    and the Processing algorithm. A ``.cwsam.pt`` model runs with PyTorch: ``tile_size`` other than the
    model's trained size rebuilds it at that size (position tables interpolated). An ``.onnx`` export
    runs with ONNX Runtime (no torch needed) at the tile size it was exported for; it holds every weight,
    so ``sam_checkpoint`` is not used."""
    if tile_size is not None and (problem := tile_size_problem(tile_size)):
        raise ClassificationError(problem)
    _check_threads(options.get("threads"))
    check_classify_paths(input_path, output_path, options.get("confidence_path"),
                         {"model file": model_path, "SAM checkpoint": sam_checkpoint})
    if is_onnx(model_path):
        runner = OnnxRunner(model_path, device=device, threads=options.pop("threads", None), tile_size=tile_size)
        identity = {"file": str(Path(model_path).resolve()), "sha256": file_sha256(model_path), "format": "onnx",
                    "exported_from": runner.export_info}
        return classify_raster(input_path, output_path, runner, runner.card, model_identity=identity, **options)
    try:  # torch: only for .cwsam.pt models, so that the light install classifies ONNX exports
        from ..model.model_file import load_model_file
        from .torch_runner import select_device
    except ImportError as exc:
        raise ClassificationError(
            f"{Path(model_path).name} is a PyTorch model file: it needs the full install with PyTorch ({exc}); "
            "with the light install, classify its ONNX export (.onnx, made by `cwsam export`)") from None
    torch_device = select_device(device)
    model, card = load_model_file(model_path, sam_checkpoint, device=torch_device, input_size=tile_size)
    identity = {"file": str(Path(model_path).resolve()), "sha256": file_sha256(model_path),
                "sam_checkpoint": card.sam_checkpoint}
    return classify_raster(input_path, output_path, model, card, device=torch_device, model_identity=identity,
                           **options)
