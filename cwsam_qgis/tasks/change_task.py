"""Change between two dates in the background: ``cwsam_core.engine.change.compare_dates`` in the engine's worker."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ..layers import LayerError, RasterSource
from ..worker_client import WorkerError
from .engine_jobs import engine_job, job_error, log_to_panel


@dataclass
class ChangeJob:
    """Two dates (class maps, or SAR scenes with ``model``) and the transition raster to write."""

    before: RasterSource
    after: RasterSource
    output: Path
    model: Optional[Path] = None
    device: str = "auto"


def gains_and_losses(result) -> List[Tuple[str, float, float]]:
    """(class, hectares gained, hectares lost) of a change result's transitions, largest movement first."""
    gained: Dict[str, float] = defaultdict(float)
    lost: Dict[str, float] = defaultdict(float)
    for t in result.transitions:
        area = t.area / 1e4 if result.area_unit == "m2" else float(t.pixels)
        gained[t.after] += area
        lost[t.before] += area
    names = sorted(set(gained) | set(lost), key=lambda n: -(gained[n] + lost[n]))
    return [(name, gained[name], lost[name]) for name in names]


class ChangeTask(QgsTask):
    """Compares two dates. ``outcome_ready(task)`` in the main thread once it ends: ``result`` (the engine's
    ``ChangeResult`` as a record), else ``error`` or ``cancelled``."""

    fraction_done = pyqtSignal(float, str)
    outcome_ready = pyqtSignal(object)

    def __init__(self, job: ChangeJob) -> None:
        super().__init__("CWSAM: change between two dates", QgsTask.Flag.CanCancel)
        self.job = job
        self.result = None
        self.error: Optional[str] = None
        self.cancelled = False

    def _progress(self, fraction: float, message: str) -> None:  # worker thread
        self.setProgress(100.0 * fraction)
        self.fraction_done.emit(fraction, message)

    def run(self) -> bool:  # worker thread
        job = self.job
        try:
            before, after = job.before.materialize(), job.after.materialize()
            self.result = engine_job("change", {
                "before": str(before), "after": str(after), "output": str(job.output),
                "model": str(job.model) if job.model else None, "device": job.device},
                self._progress, log_to_panel, self.isCanceled, outputs=[job.output])
        except LayerError as exc:
            self.error = str(exc)
        except WorkerError as exc:
            self.cancelled = exc.cancelled or self.isCanceled()
            self.error = None if self.cancelled else job_error(exc, "the comparison")
        finally:
            job.before.cleanup()
            job.after.cleanup()
        # A clean cancel is no failure: False would have QGIS notify "Task failed".
        return self.result is not None or self.cancelled

    def finished(self, result: bool) -> None:  # main thread
        if self.result is None and self.isCanceled():
            self.cancelled, self.error = True, None
        self.outcome_ready.emit(self)
