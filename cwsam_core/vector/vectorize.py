"""Polygons from a class raster: one feature per connected region, styled with the classes' colours.

:func:`vectorize_file` turns a class raster written by the engine (uint8, nodata 255, class names
in its ``.aux.xml`` category names and colours in its colour table) into a GeoPackage polygon layer
with, per feature, the class value and name, the area in m² and the mean confidence in percent.

How it works, and why it holds for any raster height:

* **Blocks of rows.** The raster is read a block of rows at a time (at most ``MAX_BLOCK_ROWS``, fewer
  for wide rasters so a block holds about ``BLOCK_PIXELS`` pixels). Its regions (4-connected pixels
  of one value) are labelled (:mod:`.vectorize_sieve`) and the labels polygonised by GDAL
  (``rasterio.features.shapes``, in pixel coordinates, so every vertex is an exact integer). A
  region cut by block edges is one label per block; labels of one class on either side of an edge
  are joined, and a region is dissolved and written as soon as none of its pieces reaches the
  current bottom edge (:mod:`.vectorize_polygons`): ``shapely.coverage_union_all`` of the pieces'
  outlines, their vertices matched along the block edges first, with the pieces' holes added back
  (a hole never reaches a block edge). Memory follows the block and the regions still open, not the
  raster's height (bench/bench_vectorize.py).
* **Minimum mapping unit** (``min_area``, m²). A region smaller than it is merged into the
  neighbouring region it shares the longest boundary with (ties: the larger one), smallest regions
  first, before polygonising; a region whose neighbours are all nodata stays. Regions are found by
  the same blocks in a first pass (region sizes, adjacency and boundary lengths kept per region,
  never per pixel), so the result does not depend on the block size. The pixel count of the unit
  is ``min_area`` over the pixel area; in a geographic CRS that area is taken at the raster's centre
  latitude (on the CRS's ellipsoid), which the result's notes say.
* **Simplification** (``simplify``, metres, converted to pixels with the pixel size, at the centre
  latitude in a geographic CRS). Boundaries are simplified as a coverage
  (``shapely.coverage_simplify``: Visvalingam-Whyatt, the tolerance about the square root of the
  largest triangle a removed vertex cuts off), so neighbours keep sharing their boundary exactly,
  nodata included, a strip of ``ANCHOR_ROWS`` rows at a time with the strip's frame fixed: the
  points where boundaries cross those row lines stay, and the result is the same whatever the block
  size (a multiple of ``ANCHOR_ROWS``). Pieces under (2 x tolerance)² keep their pixel outline
  (they would become triangles); a strip whose result fails a check keeps its exact boundaries.
* **Areas** are those of the written polygons: planar in a projected CRS (times the linear unit
  squared), and on the CRS's ellipsoid in a geographic CRS (an exact equal-area cylindrical
  projection: pixel edges along meridians and parallels keep their exact ellipsoidal area).
* **Validity**: every polygon is checked, in pixel coordinates; an invalid one is repaired
  (``make_valid``, polygons kept) and written only if the repair is valid. A union whose ring
  touches itself where two pieces meet at a single point is made valid the same way, without
  counting as a repair (its area is unchanged). The layer keeps the raster's CRS.
* **Atomic**: the GeoPackage is written (pyogrio) to a temporary file beside the output and renamed at
  the end; after an error or a cancel nothing is left. Its default style (categorized by class with
  the classes' colours and names) is stored in the GeoPackage's ``layer_styles`` table, which QGIS
  applies when the layer is loaded; no ``.qml`` is written beside it, since ``classes.qml`` is the
  class raster's own style when the GeoPackage is named after the raster.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

# Never torch: only rasterio, shapely and pyogrio (the light install).
from ..common.card import ClassInfo, default_color  # noqa: F401 (default_color: the engine's palette, tests compare it)
from ..common.classes import parse_classes
from ..common.paths import check_outputs, output_file_problem, raster_input_files
from ..errors import ClassSpecError, OutputConflictError, VectorizeCancelled, VectorizeError
from ..raster.output import CLASS_NODATA
from .vectorize_output import (  # noqa: F401 (the module's names, as before the split)
    Metric, Writer, category_names, class_info, colour_table, polygon_style_qml, raster_classes,
)
from .vectorize_polygons import ANCHOR_ROWS, CoverageSimplifier, Stitcher, polygonize, read_block, release_memory
from .vectorize_sieve import Sieve, label_regions

with warnings.catch_warnings():
    # pyogrio imports Debian's pyproj when present, which warns about its own data directory; pyogrio
    # (its bundled GDAL and PROJ) never uses it here.
    warnings.simplefilter("ignore", UserWarning)
    import pyogrio.errors

LOG = logging.getLogger("cwsam")
ProgressCallback = Callable[[float, str], None]
PathLike = Union[str, os.PathLike]

MAX_BLOCK_ROWS = 2048
BLOCK_PIXELS = 8 * 2**20  # pixels per block of rows (fewer rows for wide rasters)
GDAL_CACHE_BYTES = 16 * 2**20  # each tile is read once, in order: a small cache is enough


@dataclass
class VectorizeResult:
    """What :func:`vectorize_file` wrote."""

    output: Path
    layer: str
    polygons: int
    polygons_per_class: Dict[int, int]
    areas: Dict[int, float]  # per class value, in area_unit
    area_unit: str  # "m2", or "pixels" for a raster without CRS (its polygons then have no area_m2)
    class_names: Dict[int, str]
    seconds: float
    min_area: float
    min_area_pixels: int
    simplify: float
    merged_regions: int = 0  # regions under the minimum area merged into a neighbour
    warnings: List[str] = field(default_factory=list)


def _block_rows(width: int, requested: Optional[int]) -> int:
    """Rows per block: ``requested`` (a multiple of ``ANCHOR_ROWS``), else about ``BLOCK_PIXELS`` pixels."""
    if requested is not None:
        if requested <= 0 or requested % ANCHOR_ROWS:
            raise VectorizeError(f"block rows must be a positive multiple of {ANCHOR_ROWS}, got {requested}")
        return requested
    rows = (BLOCK_PIXELS // max(width, 1)) // ANCHOR_ROWS * ANCHOR_ROWS
    return int(min(MAX_BLOCK_ROWS, max(ANCHOR_ROWS, rows)))


# --- the entry point ---------------------------------------------------------------------------


# --- the entry point ---------------------------------------------------------------------------


def _open(path: Path, what: str):
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise VectorizeError(f"{what} {path} is not a raster that GDAL can read ({exc})") from None


def _check_class_raster(dataset, path: Path) -> None:
    if dataset.count != 1 or dataset.dtypes[0] != "uint8":
        raise VectorizeError(
            f"{path} is not a class raster: it has {dataset.count} band(s) of {dataset.dtypes[0]}; give the class "
            "GeoTIFF written by cwsam classify (one uint8 band of class values, nodata 255)")


def _check_confidence(dataset, reference, path: Path) -> None:
    if dataset.count != 1:
        raise VectorizeError(f"confidence raster {path} has {dataset.count} bands; give the one-band confidence "
                             "GeoTIFF written with the classes (cwsam classify --confidence)")
    if (dataset.width, dataset.height) != (reference.width, reference.height) or \
            not dataset.transform.almost_equals(reference.transform):
        raise VectorizeError(f"confidence raster {path} is not on the class raster's grid "
                             f"({dataset.width} x {dataset.height} pixels against {reference.width} x "
                             f"{reference.height}): give the confidence written with these classes")


def _check_output(output: Path) -> None:
    if output.suffix.lower() != ".gpkg":
        raise VectorizeError(f"the output must be a GeoPackage file name ending in .gpkg, got {output}")
    problem = output_file_problem(output, "output", "classes.gpkg")
    if problem:
        raise VectorizeError(problem)


def _resolve_classes(classes) -> Optional[Dict[int, ClassInfo]]:
    if classes is None:
        return None
    if isinstance(classes, str):
        try:
            classes = parse_classes(classes)
        except ClassSpecError as exc:
            raise VectorizeError(str(exc)) from None
    if isinstance(classes, dict):
        classes = list(classes.values())
    return {int(c.value): ClassInfo(int(c.value), c.name, c.color) for c in classes}


def _remove_partial(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        try:
            Path(str(path) + suffix).unlink()
        except OSError:  # not there (or never creatable there)
            pass


def vectorize_file(
    class_raster: PathLike,
    output_gpkg: PathLike,
    confidence: Optional[PathLike] = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes=None,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    *,
    block_rows: Optional[int] = None,
    layer: Optional[str] = None,
) -> VectorizeResult:
    """Write the connected regions of a class raster as a styled GeoPackage polygon layer.

    ``class_raster``: the uint8 class GeoTIFF written by ``cwsam classify`` (nodata 255). ``output_gpkg``:
    the GeoPackage to write (replaced if it exists; one layer, named ``layer`` or after the file).
    ``confidence``: the confidence GeoTIFF of the same classification, for each polygon's mean
    confidence in percent (null without it). ``min_area``: minimum mapping unit in m² (0: every
    region). ``simplify``: tolerance in metres of the boundary simplification (0: exact pixel edges).
    ``classes``: ``ClassInfo`` items (or a ``VALUE:NAME[:#RRGGBB],...`` string) naming the values,
    instead of the raster's category names and colour table. ``block_rows``: rows per block (a
    multiple of ``ANCHOR_ROWS``; default from the raster's width). Fields: ``class``, ``class_name``,
    ``area_m2`` (null without CRS) and ``confidence``. See the module docstring for the method.
    """
    started = time.perf_counter()
    class_raster, output = Path(class_raster), Path(output_gpkg)
    confidence = Path(confidence) if confidence else None
    for name, value in (("minimum area", min_area), ("simplification tolerance", simplify)):
        if value is None or not math.isfinite(value) or value < 0:
            raise VectorizeError(f"the {name} must be a number of metres (m² for the area) >= 0, got {value}")
    if not class_raster.is_file():
        raise VectorizeError(f"class raster not found: {class_raster}")
    if confidence is not None and not confidence.is_file():
        raise VectorizeError(f"confidence raster not found: {confidence}")
    try:
        check_outputs([("class raster", raster_input_files(class_raster)),
                       ("confidence raster", raster_input_files(confidence) if confidence else [])],
                      [("output", [output])])
    except OutputConflictError as exc:
        raise VectorizeError(str(exc)) from None
    _check_output(output)
    given = _resolve_classes(classes)
    layer = layer or output.stem
    notes: List[str] = []
    temporary = output.with_name(f".{output.stem}.{os.getpid()}.partial.gpkg")
    _remove_partial(temporary)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), _open(class_raster, "class raster") as dataset:
                _check_class_raster(dataset, class_raster)
                conf = _open(confidence, "confidence raster") if confidence else None
                try:
                    if conf is not None:
                        _check_confidence(conf, dataset, confidence)
                    result = _vectorize(dataset, class_raster, conf, temporary, layer, min_area, simplify,
                                        given, progress, should_cancel, block_rows, notes)
                finally:
                    if conf is not None:
                        conf.close()
        os.replace(temporary, output)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, pyogrio.errors.CRSError, OSError) as exc:
        _remove_partial(temporary)
        raise VectorizeError(f"cannot write {output}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    except BaseException:
        _remove_partial(temporary)
        raise
    result.output = output
    result.seconds = time.perf_counter() - started
    for note in notes:
        LOG.info(note)
    return result


def _vectorize(dataset, path: Path, conf, temporary: Path, layer: str, min_area: float, simplify: float,
               given: Optional[Dict[int, ClassInfo]], progress: Optional[ProgressCallback],
               should_cancel: Optional[Callable[[], bool]], block_rows: Optional[int], notes: List[str]
               ) -> VectorizeResult:
    height, width = dataset.height, dataset.width
    classes = dict(given) if given is not None else raster_classes(dataset, path)
    metric = Metric(dataset.crs, dataset.transform, height)
    if metric.unit != "m2" and (min_area > 0 or simplify > 0):
        raise VectorizeError(f"{path.name} has no coordinate reference system: the minimum area (m²) and the "
                             "simplification (metres) need one; leave them at 0 or give a georeferenced raster")
    threshold = int(math.ceil(min_area / metric.pixel_area - 1e-9)) if min_area > 0 else 0
    tolerance = simplify / math.sqrt(metric.pixel_area) if simplify > 0 else 0.0
    if metric.geographic and (min_area > 0 or simplify > 0):
        notes.append(f"{path.name} is in a geographic CRS: the minimum area and the simplification are converted "
                     f"to pixels with the pixel size at its centre latitude ({metric.centre_latitude:.4f}°: "
                     f"{metric.pixel_area:,.1f} m² per pixel)")
    if dataset.crs is None:
        notes.append(f"{path.name} has no coordinate reference system: the polygons have none and no areas")
    rows = _block_rows(width, block_rows)
    blocks = [(r, min(rows, height - r)) for r in range(0, height, rows)]
    passes = 2 if threshold > 1 else 1
    nodata = dataset.nodata
    step = 0

    def report(message: str) -> None:
        nonlocal step
        if should_cancel is not None and should_cancel():
            raise VectorizeCancelled("vectorisation cancelled; nothing was written")
        if progress is not None:
            progress(step / (passes * len(blocks)), message)
        step += 1

    sieve = None
    merged = 0
    if threshold > 1:
        sieve = Sieve(threshold)
        for number, (row0, count) in enumerate(blocks, start=1):
            report(f"regions: block {number} of {len(blocks)}")
            labels, values = label_regions(read_block(dataset, row0, count, nodata))
            sieve.add(values, labels)
            del labels
            release_memory()
        merged = sieve.solve()

    writer = Writer(temporary, layer, dataset.crs, dataset.transform, metric, classes, colour_table(dataset))
    simplifier = CoverageSimplifier(tolerance) if tolerance > 0 else None
    stitcher = Stitcher(ANCHOR_ROWS if simplifier is not None else rows)  # the row lines pieces meet along
    conf_nodata = conf.nodata if conf is not None else None
    base = 0
    for number, (row0, count) in enumerate(blocks, start=1):
        report(f"polygons: block {number} of {len(blocks)}")
        block = read_block(dataset, row0, count, nodata)
        if sieve is not None:
            labels, values = label_regions(block)
            block = sieve.apply(labels, base)
            base += len(values)
        labels, values = label_regions(block)
        del block
        keep = values != CLASS_NODATA
        if simplifier is not None:
            polygons, owners = simplifier.polygonize(labels, row0, keep)
        else:
            polygons, owners = polygonize(labels, row0, mask=keep[labels])
        n = len(values)
        sums, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
        if conf is not None:
            scores = conf.read(1, window=Window(0, row0, width, count)).astype(np.float64)
            valid = np.isfinite(scores)
            if conf_nodata is not None:
                valid &= scores != conf_nodata
            sums = np.bincount(labels[valid], weights=scores[valid], minlength=n)
            counts = np.bincount(labels[valid], minlength=n)
            del scores, valid
        complete = stitcher.add(labels, values, polygons, owners, sums, counts, last=number == len(blocks))
        # The block's arrays go before regions are dissolved: a large region's union then does not
        # add to the block's own peak.
        del labels, values, keep, polygons, owners, sums, counts
        release_memory()
        for region in complete:
            geometry = stitcher.dissolve(region)
            if geometry is not None:
                writer.add(region.value, geometry, region.confidence)
        del complete
        writer.flush()  # what this block completed goes to the file now: memory follows the block
        release_memory()
    writer.flush(final=True)
    present = sorted(set(writer.per_class) | set(classes))
    writer.write_style([class_info(classes, v, writer.table) for v in present])
    if merged:
        LOG.info("%s regions under %g m² (%d pixels) merged into their neighbours", f"{merged:,}", min_area, threshold)
    if simplifier is not None and simplifier.fallbacks:
        notes.append(f"{simplifier.fallbacks} strip(s) of {ANCHOR_ROWS} rows kept their exact pixel boundaries: "
                     "simplifying them would have broken the coverage")
    if stitcher.repaired:
        notes.append(f"{stitcher.repaired} polygon(s) were repaired (make_valid) before writing")
    if stitcher.dropped:
        notes.append(f"{stitcher.dropped} polygon(s) could not be made valid and were left out")
    if progress is not None:
        progress(1.0, "done")
    names = {v: class_info(classes, v).name for v in present}
    return VectorizeResult(
        output=temporary, layer=layer, polygons=sum(writer.per_class.values()),
        polygons_per_class={v: writer.per_class.get(v, 0) for v in present if v in writer.per_class},
        areas={v: writer.areas.get(v, 0.0) for v in present if v in writer.per_class},
        area_unit=metric.unit, class_names=names, seconds=0.0, min_area=min_area, min_area_pixels=threshold,
        simplify=simplify, merged_regions=merged, warnings=notes)
