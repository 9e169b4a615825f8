"""Processing algorithm "Change between two dates": the from -> to transitions of two class maps (or two SAR
scenes classified first with one model) with ``cwsam_core.engine.change.compare_dates``, in the engine's worker."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputFile, QgsProcessingOutputNumber,
    QgsProcessingParameterEnum, QgsProcessingParameterFile, QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
)

from ..layers import LayerError, raster_source
from ..tasks.engine_jobs import engine_job, job_error
from ..tasks.train_task import log_to_feedback
from ..worker_client import WorkerError
from .classify_algorithm import DEVICES, MODEL_FILTER


class ChangeAlgorithm(QgsProcessingAlgorithm):
    BEFORE = "BEFORE"
    AFTER = "AFTER"
    MODEL = "MODEL"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    TABLE = "TABLE"
    CHANGED_HECTARES = "CHANGED_HECTARES"

    def name(self) -> str:
        return "change"

    def displayName(self) -> str:  # noqa: N802
        return "Change between two dates"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Compares two class maps of the same place (e.g. two dates classified with the same model), or two SAR "
            "scenes classified first with the model given. The second map is read on the first one's grid over "
            "their overlap (any CRS); classes meet by name where both maps name them. Writes a transition raster "
            "(0: no change; one value per from -> to pair, named 'forest → urban') and a table of pixels and "
            "hectares per pair (<output>_transitions.csv) beside it."
        )

    def createInstance(self):  # noqa: N802
        return ChangeAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        for name, label in ((self.BEFORE, "Before"), (self.AFTER, "After")):
            self.addParameter(QgsProcessingParameterRasterLayer(name, f"{label} (class map, or SAR scene with a model)"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model to classify SAR scenes with (empty: the inputs are class maps)", optional=True,
            fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Transitions"))
        self.addOutput(QgsProcessingOutputFile(self.TABLE, "Transition table (CSV)"))
        self.addOutput(QgsProcessingOutputNumber(self.CHANGED_HECTARES, "Changed area (ha)"))

    def processAlgorithm(self, parameters, context, feedback) -> dict:  # noqa: N802
        model = self.parameterAsFile(parameters, self.MODEL, context) or None
        if model and not Path(model).is_file():
            raise QgsProcessingException(f"model file not found: {model!r}; give a CWSAM model file, or none for "
                                         "two class maps")
        output = Path(self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        sources = []
        try:
            for name in (self.BEFORE, self.AFTER):
                sources.append(raster_source(self.parameterAsRasterLayer(parameters, name, context)))
            before, after = (s.materialize(feedback) for s in sources)
            result = engine_job("change", {
                "before": str(before), "after": str(after), "output": str(output), "model": model,
                "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]},
                lambda fraction, _message: feedback.setProgress(100.0 * fraction),
                log=log_to_feedback(feedback), should_cancel=feedback.isCanceled)
        except LayerError as exc:
            raise QgsProcessingException(str(exc)) from None
        except WorkerError as exc:
            if exc.details:
                feedback.reportError(exc.details)
            raise QgsProcessingException(job_error(exc, "the comparison")) from None
        finally:
            for source in sources:
                source.cleanup()
        hectares = 0.0
        for t in result.transitions:
            area = t.area / 1e4 if result.area_unit == "m2" else None
            hectares += area or 0.0
            feedback.pushInfo(f"{t.before} \u2192 {t.after}: {t.pixels:,} pixels"
                              + (f", {area:,.2f} ha" if area is not None else ""))
        feedback.pushInfo(f"no change: {result.unchanged_pixels:,} pixels")
        return {self.OUTPUT: str(result.output), self.TABLE: str(result.table),
                self.CHANGED_HECTARES: hectares if result.area_unit == "m2" else None}
