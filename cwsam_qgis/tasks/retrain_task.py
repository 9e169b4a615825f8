"""Retraining from corrections in the background: a QgsTask around ``cwsam_core.training.retrain.retrain``, then
the classification of the same raster with the new version and its comparison with the previous map.

Shared by the dock's Review tab and the ``cwsam:retrain`` algorithm (``run_retrain``). The task only
runs the engine on files; the new map reaches the project in the dock, from ``finished()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..layers import LayerError, RasterSource
from ..worker_client import WorkerError
from .classify_task import ClassifyRequest, area_unit, format_area, run_classification
from .engine_jobs import LOG_TAG, engine_job, job_error, log_and_note, log_to_panel
from .train_task import progress_fraction, remove_files

# Share of the progress bar taken by training; classifying with the new version takes the rest.
TRAIN_SHARE = 0.8
DEFAULT_MINUTES = 2.0
DEFAULT_REPLAY = 0.2


@dataclass
class ReviewedMap:
    """A CWSAM class map under review, from its run record (``<map>.run.json``): the model file and the
    SHA-256 it was classified with, the raster it classified and over which bounds."""

    path: Path
    model: Path
    model_sha256: str
    raster: str  # the scene: one file, or "VV.tif,VH.tif"
    bounds: Optional[Tuple[float, float, float, float]] = None
    band_indexes: Optional[List[int]] = None  # the raster bands it was read with
    input_scale: str = "auto"  # the scale it was read in


def reviewed_map(path: Path | str) -> ReviewedMap:
    """The run record of a class map written by CWSAM; ``LayerError`` saying what is missing."""
    path = Path(path)
    record_path = path.with_suffix(".run.json")
    try:
        record = json.loads(record_path.read_text())
        model = record["model"]
        files = record["input"].get("files") or [record["input"]]
        raster = ",".join(f["path"] for f in files)
        parameters = record.get("parameters", {})
        bounds = parameters.get("bounds")
        reviewed = ReviewedMap(path, Path(model["file"]), model["sha256"], raster, tuple(bounds) if bounds else None,
                               parameters.get("band_indexes"), parameters.get("input_scale") or "auto")
    except (OSError, ValueError, KeyError, TypeError):
        raise LayerError(f"{path.name} has no CWSAM run record ({record_path.name}) naming its model and raster: "
                         "review a class map made by the Classify tab") from None
    if reviewed.model.suffix.lower() == ".onnx":
        raise LayerError(f"{path.name} was made with the ONNX export {reviewed.model.name}, which cannot be trained: "
                         "classify with its .cwsam.pt model file, then review that map")
    missing = [p for p in raster.split(",") if not Path(p).is_file()]
    if missing:
        raise LayerError(f"the SAR raster {missing[0]} of {path.name} is no longer on disk: classify the raster "
                         "again, then review that map")
    if not reviewed.model.is_file():
        raise LayerError(f"the model file {reviewed.model} of {path.name} is no longer on disk: classify with an "
                         "existing model, then review that map")
    return reviewed


@dataclass
class RetrainJob:
    """One review step: retrain the map's model on the corrections, classify again, compare.

    ``corrections`` is a ``polygon_source.PolygonFile``; ``time_budget`` minutes, or ``steps`` optimizer
    steps when it is None; ``bounds`` (the raster's CRS) limits the new classification, None: whole raster;
    ``output`` is the new class map's file.
    """

    reviewed: ReviewedMap
    corrections: object
    class_field: str
    output: Path
    time_budget: Optional[float] = DEFAULT_MINUTES
    steps: int = 60
    replay: float = DEFAULT_REPLAY
    bounds: Optional[Tuple[float, float, float, float]] = None
    sam_checkpoint: Optional[Path] = None
    device: str = "auto"
    batch_size: int = 4
    cleanup: List[Callable[[], None]] = field(default_factory=list)

    def remove_temporary_files(self) -> None:
        remove_files(self.cleanup)


@dataclass
class RetrainOutcome:
    """What a review step left: the new version (``cwsam_core.training.retrain.RetrainResult``), its class map
    (``ClassificationResult``) and the change against the previous map (``MapChange``), or why not.
    A version whose classification failed stays written: ``retrained`` is set and ``error`` says why."""

    retrained: Optional[object] = None
    classification: Optional[object] = None
    change: Optional[object] = None
    error: Optional[str] = None
    details: Optional[str] = None
    cancelled: bool = False


def run_retrain(job: RetrainJob, progress: Optional[Callable[[float, str], None]] = None,
                should_cancel: Optional[Callable[[], bool]] = None,
                log: Callable[[int, str], None] = log_to_panel) -> RetrainOutcome:
    """Retrain, classify with the new version and compare, in the engine's worker process; errors become
    ``RetrainOutcome.error``."""
    def training(info: dict) -> None:
        fraction = progress_fraction(info)
        if progress is not None and fraction is not None:
            progress(TRAIN_SHARE * fraction, f"training, step {info.get('step', '')}" if "loss" in info else "training")

    try:
        retrained = engine_job("retrain", {
            "model": str(job.reviewed.model), "image": job.reviewed.raster, "corrections": str(job.corrections.path),
            "class_field": job.class_field, "layer": job.corrections.layer,
            "expected_sha256": job.reviewed.model_sha256, "sam_checkpoint": job.sam_checkpoint,
            "time_budget": job.time_budget, "steps": job.steps, "batch_size": job.batch_size, "replay": job.replay,
            "anchor_map": str(job.reviewed.path), "band_indexes": job.reviewed.band_indexes,
            "input_scale": job.reviewed.input_scale, "device": job.device}, training, log, should_cancel)
    except WorkerError as exc:
        return RetrainOutcome(error=job_error(exc, "retraining"), cancelled=exc.cancelled, details=exc.details)
    outcome = RetrainOutcome(retrained=retrained)
    first = job.reviewed.raster.split(",")[0]
    request = ClassifyRequest(source=RasterSource(Path(first), Path(first).name, ""), output=job.output,
                              model=retrained.model_path, sam_checkpoint=job.sam_checkpoint, device=job.device,
                              batch_size=job.batch_size, bounds=job.bounds, band_indexes=job.reviewed.band_indexes,
                              input_scale=job.reviewed.input_scale)
    if "," in job.reviewed.raster:
        request.source.path = Path(job.reviewed.raster)  # the files of one scene, as the engine reads them
    classify_progress = None if progress is None else (
        lambda fraction, message: progress(TRAIN_SHARE + (1 - TRAIN_SHARE) * fraction, f"classifying: {message}"))
    classified = run_classification(request, classify_progress, should_cancel, log=log)
    if classified.result is None:
        outcome.error = (f"the new version {retrained.model_path.name} was written, but classifying with it "
                         f"{'was cancelled' if classified.cancelled else 'failed'}: {classified.error}")
        outcome.details = classified.details
        return outcome
    outcome.classification = classified.result
    try:
        outcome.change = engine_job("compare", {"before": str(job.reviewed.path),
                                                "after": str(classified.result.output)})
    except WorkerError as exc:  # the comparison is a summary: its failure is a note
        outcome.error = f"the maps could not be compared: {exc}"
    return outcome


class RetrainTask(QgsTask):
    """Runs one ``RetrainJob``.

    Signals:
      fraction_done(fraction, message): how much is done, in [0, 1], and what runs.
      note(text): an engine warning (something it adjusted or left out), worded for the dock.
      outcome_ready(RetrainOutcome): in the main thread, once, when the task ends in any way.
    """

    fraction_done = pyqtSignal(float, str)
    note = pyqtSignal(str)
    outcome_ready = pyqtSignal(object)

    def __init__(self, job: RetrainJob, description: str = "CWSAM: retrain from corrections") -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.job = job
        self.outcome = RetrainOutcome()

    def _progress(self, fraction: float, message: str) -> None:  # worker thread
        self.setProgress(100.0 * fraction)
        self.fraction_done.emit(fraction, message)

    def _log(self, level: int, message: str) -> None:  # worker thread
        log_and_note(level, message, self.note.emit)

    def run(self) -> bool:  # worker thread
        self.outcome = run_retrain(self.job, self._progress, self.isCanceled, log=self._log)
        # A clean cancel is no failure: False would have QGIS notify "Task failed".
        return self.outcome.retrained is not None or self.outcome.cancelled

    def finished(self, result: bool) -> None:  # main thread
        self.job.remove_temporary_files()
        if self.isCanceled() and self.outcome.retrained is None:
            self.outcome.cancelled = True
        if self.outcome.details:
            QgsMessageLog.logMessage(self.outcome.details, LOG_TAG, Qgis.MessageLevel.Critical)
        self.outcome_ready.emit(self.outcome)


def change_rows(change, classes: Sequence) -> List[Tuple[str, str, str, str]]:
    """Rows (colour, name, area before, area after) of a ``MapChange``, in one unit (ha or km²)."""
    unit = area_unit(max(sum(change.before.values()), sum(change.after.values())), change.area_unit)
    return [(c.color, c.name, format_area(change.before.get(c.value, 0.0), change.area_unit, unit),
             format_area(change.after.get(c.value, 0.0), change.area_unit, unit)) for c in classes]
