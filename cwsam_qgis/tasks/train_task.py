"""Fine-tuning in the background: a QgsTask around ``cwsam_core.training.loop.train``, run in the engine's worker
process.

The task only runs the engine. It reports steps and epochs through Qt signals (queued to the main
thread by Qt), stops at the next step when cancelled (the engine keeps the best model so far) and
hands its outcome to the main thread in ``finished()``. It keeps no QGIS layer: its inputs are files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..layers import LayerError
from ..messages import for_the_dock
from ..worker_client import WorkerError
from .engine_jobs import LOG_TAG, engine_job, job_error, log_and_note, log_to_panel


@dataclass
class TrainOutcome:
    """What a training run left: the engine's result, or the one-line error that stopped it.

    Attributes:
      result: ``cwsam_core.training.loop.TrainResult`` or None when the run failed or nothing was kept.
      error: the message to show, or None.
      details: a traceback for the log panel when the error was unexpected.
      cancelled: True when the user cancelled (``result`` then holds the best model so far, if any).
    """

    result: Optional[object] = None
    error: Optional[str] = None
    details: Optional[str] = None
    cancelled: bool = False

    @property
    def model_path(self) -> Optional[Path]:
        if self.result is None:
            return None
        path = Path(self.result.model_path)
        return path if path.is_file() else None


@dataclass
class TrainingJob:
    """Everything one run needs: sources and config for the engine, and files to delete afterwards.

    ``raster`` is the ``layers.RasterSource`` of the image: a layer without a file of its own is
    written to its temporary GeoTIFF in the worker, before training.
    """

    sources: list
    config: object
    raster: Optional[object] = None
    resume: bool = False
    cleanup: List[Callable[[], None]] = field(default_factory=list)

    def remove_temporary_files(self) -> None:
        remove_files(self.cleanup)


def remove_files(cleanup: Sequence[Callable[[], None]]) -> None:
    """Run a job's clean-up calls (temporary exports); a failure is logged, never raised."""
    for remove in cleanup:
        try:
            remove()
        except OSError as exc:
            QgsMessageLog.logMessage(f"could not remove a temporary file: {exc}", LOG_TAG, Qgis.MessageLevel.Warning)


def log_to_feedback(feedback) -> Callable[[int, str], None]:
    """A log sink for Processing: the engine's warnings as feedback warnings, the rest as information."""
    def log(level: int, message: str) -> None:
        (feedback.pushWarning if level >= logging.WARNING else feedback.pushInfo)(for_the_dock(message))

    return log


def run_training(job: TrainingJob, progress: Optional[Callable[[dict], None]] = None,
                 should_cancel: Optional[Callable[[], bool]] = None,
                 log: Callable[[int, str], None] = log_to_panel) -> TrainOutcome:
    """Run the engine on ``job`` in its worker process; engine errors become ``TrainOutcome.error`` instead of
    exceptions.

    Shared by the dock's task and the Processing algorithm, so both train the same way. The
    engine's information and warnings go to ``log(level, message)`` (default: the "CWSAM" log panel).
    """
    try:
        if job.raster is not None:
            job.raster.materialize()
        result = engine_job("train", {"sources": job.sources, "config": job.config, "resume": job.resume},
                            progress, log, should_cancel)
    except LayerError as exc:
        return TrainOutcome(error=str(exc))
    except WorkerError as exc:
        if exc.cancelled or (should_cancel is not None and should_cancel()):
            return TrainOutcome(cancelled=True)  # stopped before the engine wrote anything: no error to show
        return TrainOutcome(error=job_error(exc, "training"), details=exc.details)
    outcome = TrainOutcome(result=result, cancelled=bool(result.cancelled))
    if outcome.model_path is None:
        outcome.result = None
        if not outcome.cancelled:
            outcome.error = f"training ended without writing a model file at {result.model_path}"
    return outcome


class TrainTask(QgsTask):
    """Trains one model. Signals carry the engine's progress dictionaries' values.

    Signals:
      step_done(epoch, epochs, step, steps, loss): after each optimizer step (epoch and step from 1; with
        a training time, ``epochs`` is the engine's estimate of the whole run).
      epoch_done(epoch, epochs, val_miou, train_loss, best_miou): after each validation pass.
      fraction_done(fraction): how much of the run is done, in [0, 1] (of the time, or of the steps).
      note(text): an engine warning (something it adjusted or left out), worded for the dock.
      outcome_ready(TrainOutcome): in the main thread, once, when the task ends in any way.
    """

    step_done = pyqtSignal(int, int, int, int, float)
    epoch_done = pyqtSignal(int, int, float, float, float)
    fraction_done = pyqtSignal(float)
    note = pyqtSignal(str)
    outcome_ready = pyqtSignal(object)

    def __init__(self, job: TrainingJob, description: str = "CWSAM fine-tuning") -> None:
        super().__init__(description, QgsTask.Flag.CanCancel)
        self.job = job
        self.outcome = TrainOutcome()

    def _progress(self, info: dict) -> None:
        fraction = progress_fraction(info)
        if fraction is not None:
            self.setProgress(100.0 * fraction)
            self.fraction_done.emit(fraction)
        epochs = int(info["epochs"])
        if "loss" in info:
            self.step_done.emit(int(info["epoch"]), epochs, int(info["step"]), int(info["steps"]), float(info["loss"]))
        elif "val_miou" in info:
            self.epoch_done.emit(int(info["epoch"]), epochs, float(info["val_miou"]), float(info["train_loss"]),
                                 float(info["best_miou"]))

    def _log(self, level: int, message: str) -> None:  # worker thread
        log_and_note(level, message, self.note.emit)

    def run(self) -> bool:  # worker thread
        self.outcome = run_training(self.job, self._progress, self.isCanceled, log=self._log)
        # A clean cancel is no failure: False would have QGIS notify "Task failed".
        return self.outcome.result is not None or self.outcome.cancelled

    def finished(self, result: bool) -> None:  # main thread
        self.job.remove_temporary_files()
        if self.isCanceled():
            self.outcome.cancelled = True
        if self.outcome.details:
            QgsMessageLog.logMessage(self.outcome.details, LOG_TAG, Qgis.MessageLevel.Critical)
        self.outcome_ready.emit(self.outcome)


def progress_fraction(info: dict) -> Optional[float]:
    """How much of the run a progress dictionary says is done, in [0, 1]: the engine's "fraction" (of the
    training time or of the steps), else steps done over all steps; None for a dictionary without either."""
    if info.get("fraction") is not None:
        return min(1.0, max(0.0, float(info["fraction"])))
    if "step" in info:
        done = (int(info["epoch"]) - 1) * int(info["steps"]) + int(info["step"])
        return min(1.0, done / max(1, int(info["epochs"]) * int(info["steps"])))
    return None


def describe_outcome(outcome: TrainOutcome) -> str:
    """One line for the message bar, worded for the dock."""
    if outcome.error:
        return f"Fine-tuning failed: {for_the_dock(outcome.error)}"
    result = outcome.result
    if result is None:
        return "Fine-tuning cancelled before the first epoch ended: no model was written."
    if result.best_epoch > 0:
        quality = f"best validation mIoU {result.best_miou:.3f} at epoch {result.best_epoch}"
    else:
        quality = "no validation part, the last weights are kept"
    head = "Fine-tuning cancelled; the best model so far is kept" if outcome.cancelled else "Fine-tuning done"
    return f"{head} ({quality}): {result.model_path}"


def history_lines(result) -> Sequence[str]:
    """Per-epoch lines for the log panel."""
    return [f"epoch {r.epoch}: loss {r.train_loss:.4f}, val mIoU {r.val_miou:.3f}, OA {r.val_overall_accuracy:.3f}, "
            f"{r.seconds:.1f} s" for r in result.history]


MODEL_SUFFIX = ".cwsam.pt"


def model_output_path(path: str | Path) -> Path:
    """The output path with the model file suffix (``.cwsam.pt``) added when it lacks it."""
    path = Path(path)
    return path if path.name.endswith(MODEL_SUFFIX) else path.with_name(path.name + MODEL_SUFFIX)


SCALES = ("auto", "db", "linear", "amplitude")


def training_job(
    raster,
    polygons,
    class_field: str,
    classes: list,
    output: str | Path,
    backbone: str,
    sam_checkpoint: Optional[str | Path] = None,
    epochs: int = 10,
    steps_per_epoch: int = 50,
    batch_size: int = 4,
    lr: Optional[float] = None,
    val_fraction: float = 0.2,
    tile_size: Optional[int] = None,
    device: str = "auto",
    time_budget: Optional[float] = None,
    input_scale: str = "auto",
    model_scale: str = "auto",
    band_indexes: Optional[Sequence[int]] = None,
) -> TrainingJob:
    """The engine's sources and config for a raster (a ``layers.RasterSource`` or a path) and a polygon
    file (a ``PolygonFile``); the job deletes both where they are temporary exports.

    ``classes`` are ``cwsam_core.model.model_file.ClassInfo``: for an integer field, ``value`` is the field
    value; for a text field, ``name`` is the text. ``time_budget`` (minutes) trains until the time is
    spent (None or 0: ``epochs`` of ``steps_per_epoch`` steps); ``lr`` None takes the engine's rate for
    the kind of training (from scratch or adapters on SAM). Raises ValueError with a message, naming the
    dock's fields, for bad settings.
    """
    from cwsam_core.model.backbones import BACKBONES
    from cwsam_core.training.config import TrainConfig

    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}: choose one of {', '.join(BACKBONES)}")
    config = BACKBONES[backbone]
    if config.sam_checkpoint and not sam_checkpoint:
        raise ValueError(f"backbone {backbone} starts from SAM: choose its SAM checkpoint ({config.sam_checkpoint}), "
                         "or the vit_tiny backbone, which needs none")
    if not config.sam_checkpoint:
        sam_checkpoint = None  # trained from scratch: a remembered SAM checkpoint does not concern it
    if sam_checkpoint and not Path(sam_checkpoint).is_file():
        raise ValueError(f"SAM checkpoint not found: {sam_checkpoint}")
    output = model_output_path(output)
    if not output.parent.is_dir():
        raise ValueError(f"the output folder does not exist: {output.parent}")
    if tile_size and tile_size % 16:
        raise ValueError(f"Tile size must be a multiple of 16 pixels, got {tile_size}")
    if time_budget is not None and time_budget < 0:
        raise ValueError(f"Training time must be more than 0 minutes, got {time_budget:g}")
    if lr is not None and not lr > 0:
        raise ValueError(f"Learning rate must be more than 0 (or auto), got {lr:g}")
    for name, scale in (("Input scale", input_scale), ("Model scale", model_scale)):
        if scale not in SCALES:
            raise ValueError(f"{name} must be one of {', '.join(SCALES)}, got {scale!r}")
    image = Path(getattr(raster, "path", raster))
    source = {"image": str(image), "polygons": str(polygons.path), "class_field": class_field, "layer": polygons.layer}
    budget = float(time_budget) if time_budget else None
    steps = int(epochs) * int(steps_per_epoch)
    train_config = TrainConfig(
        backbone=backbone, classes=list(classes), output=output,
        sam_checkpoint=Path(sam_checkpoint) if sam_checkpoint and config.sam_checkpoint else None,
        tile_size=tile_size or None, epochs=int(epochs), steps_per_epoch=int(steps_per_epoch),
        batch_size=int(batch_size), lr=float(lr) if lr else None, val_fraction=float(val_fraction), device=device,
        time_budget=budget, input_scale=input_scale, model_scale=model_scale,
        band_indexes=[int(b) for b in band_indexes] if band_indexes else None,
        # Short runs by steps would otherwise spend most of their steps warming up.
        warmup_steps=20 if budget else min(20, max(1, steps // 10)),
    )
    cleanup = [polygons.remove] if polygons.temporary else []
    if hasattr(raster, "cleanup"):
        cleanup.append(raster.cleanup)
    return TrainingJob([source], train_config, raster=raster if hasattr(raster, "materialize") else None,
                       cleanup=cleanup)
