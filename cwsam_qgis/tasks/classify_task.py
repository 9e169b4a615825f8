"""Classification in the background: a QgsTask around ``cwsam_core.engine.inference.classify_file``, which runs in
the engine's worker process (``engine_jobs``), never in QGIS's.

The task only runs the engine on files; the layer (if it had no file of its own) was reduced to a
provider clone in the main thread and is exported here. Results reach the main thread through
Python attributes and ``finished()``; layers are added there, never in ``run()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from qgis.core import QgsTask

from cwsam_core.common.paths import check_outputs, class_raster_files, raster_input_files
from cwsam_core.errors import OutputConflictError

from ..layers import LayerError, RasterSource
from ..messages import for_the_dock
from ..worker_client import WorkerError
from .engine_jobs import engine_job, job_error


@dataclass
class ClassifyRequest:
    """One classification: the engine's arguments, plus the source of the input raster."""

    source: RasterSource
    output: Path
    model: Path
    sam_checkpoint: Optional[Path] = None
    tile_size: Optional[int] = None  # None: the model's
    overlap: float = 0.25
    batch_size: int = 4
    device: str = "auto"
    confidence: Optional[Path] = None
    bounds: Optional[Tuple[float, float, float, float]] = None  # in the raster's CRS
    input_scale: str = "auto"
    band_indexes: Optional[Sequence[int]] = None
    polygons: Optional[Path] = None  # also write the class map's polygons to this GeoPackage
    min_area: float = 0.0  # the polygons' minimum mapping unit, m²
    simplify: float = 0.0  # the polygons' simplification tolerance, metres


@dataclass
class ClassifyOutcome:
    """The engine's ``ClassificationResult``, or the one-line error that stopped it; with polygons asked
    for, the ``VectorizeResult`` or why they were not written (the class raster is kept either way)."""

    result: Optional[object] = None
    error: Optional[str] = None
    details: Optional[str] = None  # traceback of an unexpected error, for the log panel
    cancelled: bool = False
    polygons: Optional[object] = None
    polygons_error: Optional[str] = None


# Share of the progress bar taken by the classification when polygons follow it.
CLASSIFY_SHARE = 0.9


def parse_bands(text: str) -> Optional[List[int]]:
    """"1,2" -> [1, 2]; "" -> None (bands found by description, else in order)."""
    text = text.replace(" ", "").strip(",")
    if not text:
        return None
    try:
        return [int(part) for part in text.split(",") if part]
    except ValueError:
        raise LayerError(f"Bands takes 1-based band numbers separated by commas (e.g. 1,2), got {text!r}") from None


def for_the_plugin(message: str) -> str:
    """Engine messages name the command line's options; in the plugin they are the dock's fields."""
    return for_the_dock(message)


def run_classification(
    request: ClassifyRequest, progress: Optional[Callable[[float, str], None]] = None,
    should_cancel: Optional[Callable[[], bool]] = None, feedback=None,
    log: Optional[Callable[[int, str], None]] = None,
) -> ClassifyOutcome:
    """Export the input if needed, classify it in the engine's worker process; errors become
    ``ClassifyOutcome.error``, never exceptions.

    Shared by the dock's task and the Processing algorithm, so both classify the same way.
    """
    if not request.model.is_file():
        return ClassifyOutcome(error=f"model file not found: {request.model}; choose a CWSAM model file (.cwsam.pt) or ONNX export (.onnx)")
    problem = check_polygons_path(request)
    if problem:
        request.source.cleanup()
        return ClassifyOutcome(error=problem)
    share = CLASSIFY_SHARE if request.polygons is not None else 1.0
    classify_progress = None if progress is None else (lambda fraction, message: progress(share * fraction, message))
    try:
        path = request.source.materialize(feedback)
        if should_cancel is not None and should_cancel():
            return ClassifyOutcome(error="classification cancelled; nothing was written", cancelled=True)
        result = engine_job("classify", {
            "input": str(path), "output": str(request.output), "model": str(request.model),
            "sam_checkpoint": request.sam_checkpoint, "tile_size": request.tile_size, "device": request.device,
            "confidence": request.confidence, "overlap": request.overlap, "batch_size": request.batch_size,
            "input_scale": request.input_scale, "band_indexes": request.band_indexes, "bounds": request.bounds,
        }, classify_progress, log, should_cancel, outputs=[*class_raster_files(request.output), request.confidence])
    except LayerError as exc:
        return ClassifyOutcome(error=str(exc))
    except WorkerError as exc:
        return ClassifyOutcome(error=job_error(exc, "classification"), cancelled=exc.cancelled, details=exc.details)
    finally:
        request.source.cleanup()
    outcome = ClassifyOutcome(result=result)
    if request.polygons is not None:
        outcome.polygons, outcome.polygons_error = write_polygons(result, request, progress, should_cancel)
    return outcome


def check_polygons_path(request: ClassifyRequest) -> Optional[str]:
    """Why the polygons cannot go where asked (checked before classifying), or None."""
    if request.polygons is None:
        return None
    if request.polygons.suffix.lower() != ".gpkg":
        return f"the polygons are written as a GeoPackage: give a file name ending in .gpkg, not {request.polygons.name}"
    inputs = [("SAR raster", raster_input_files(request.source.path)), ("model file", [request.model]),
              ("SAM checkpoint", [request.sam_checkpoint])]
    outputs = [("output", class_raster_files(request.output)), ("confidence output", [request.confidence]),
               ("polygon output", [request.polygons])]
    try:
        check_outputs(inputs, outputs)
    except OutputConflictError as exc:
        return str(exc)
    return None


def write_polygons(result, request: ClassifyRequest, progress=None, should_cancel=None) -> Tuple[Optional[object],
                                                                                                Optional[str]]:
    """The class raster just written as polygons (``cwsam_core.vector.vectorize``, the engine of ``cwsam vectorize``,
    in the worker): (VectorizeResult, None), or (None, why not). Never raises: the classification stands either way."""
    def step(fraction: float, message: str) -> None:
        if progress is not None:
            progress(CLASSIFY_SHARE + (1 - CLASSIFY_SHARE) * fraction, f"polygons: {message}")

    try:
        return engine_job("vectorize", {"class_raster": str(result.output), "output": str(request.polygons),
                                        "confidence": result.confidence, "min_area": request.min_area,
                                        "simplify": request.simplify}, step, None, should_cancel,
                          outputs=[request.polygons]), None
    except WorkerError as exc:
        if exc.cancelled:
            return None, "polygons cancelled: none were written (the class raster is kept)"
        return None, f"polygons not written: {job_error(exc, 'vectorize')}"


class ClassifyTask(QgsTask):
    """Runs one ``ClassifyRequest``; ``on_done(outcome)`` is called in the main thread when it ends."""

    def __init__(self, request: ClassifyRequest, on_done: Callable[[ClassifyOutcome], None]) -> None:
        super().__init__(f"CWSAM: classify {request.source.layer_name}", QgsTask.Flag.CanCancel)
        self.request = request
        self.on_done = on_done
        self.outcome = ClassifyOutcome()
        self.last_message = ""

    def run(self) -> bool:
        def progress(fraction: float, message: str) -> None:
            self.last_message = message
            self.setProgress(100.0 * fraction)

        self.outcome = run_classification(self.request, progress, self.isCanceled)
        if self.isCanceled() and not self.outcome.cancelled and self.outcome.result is None:
            self.outcome.cancelled = True
        # A clean cancel is no failure: False would have QGIS notify "Task failed".
        return self.outcome.result is not None or self.outcome.cancelled

    def finished(self, result: bool) -> None:  # main thread
        if not result and self.isCanceled() and self.outcome.result is None:
            self.outcome.cancelled = True  # also when cancelled before run() started
            self.request.source.cleanup()
        self.on_done(self.outcome)


def area_summary(result, classes: Sequence) -> List[Tuple[str, str, int, float, str]]:
    """Rows (colour, name, pixels, share of classified pixels, area text) for a ``ClassificationResult``;
    every row's area in the same unit (see :func:`area_unit`)."""
    total = sum(result.pixel_counts.values()) or 1
    colours = {c.value: c.color for c in classes}
    unit = area_unit(sum(result.areas.values()), result.area_unit)
    rows = []
    for value, count in result.pixel_counts.items():
        rows.append((colours.get(value, "#000000"), result.class_names.get(value, str(value)), count,
                     count / total, format_area(result.areas.get(value, 0.0), result.area_unit, unit)))
    return rows


def area_unit(total: float, unit: str) -> str:
    """The one unit of a table of areas: hectares up to 100 km² in all, square kilometres above."""
    if unit != "m2":
        return unit
    return "km²" if total >= 1e8 else "ha"


def format_area(area: float, unit: str, display: Optional[str] = None) -> str:
    """An area in ``unit`` (``m2``, or pixels when the raster has no metric CRS) as text, in ``display``
    (``ha`` or ``km²``; by default the unit :func:`area_unit` picks for ``area`` alone)."""
    if unit != "m2":
        return f"{area:,.0f} {unit}"
    display = display or area_unit(area, unit)
    if display == "km²":
        return f"{area / 1e6:,.2f} km²"
    return f"{area / 1e4:,.2f} ha"
