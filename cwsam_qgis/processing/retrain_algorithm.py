"""Processing algorithm "Retrain CWSAM from corrections" (``cwsam:retrain``): the Review tab's retraining,
for the Toolbox, the Model Designer, batch mode and ``qgis_process``. Same engine call as the dock
(``cwsam_core.training.retrain.retrain``): the next version of the model, written beside it."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingOutputString,
    QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource, QgsProcessingParameterField,
    QgsProcessingParameterFile, QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
)

from .. import compat
from ..layers import LayerError, layer_file, raster_source
from ..messages import for_the_dock
from ..tasks.engine_jobs import engine_job, job_error
from ..tasks.retrain_task import DEFAULT_MINUTES, DEFAULT_REPLAY
from ..tasks.train_task import log_to_feedback, progress_fraction
from ..worker_client import WorkerError

DEVICES = ["auto", "cpu", "cuda"]
MODEL_FILTER = "CWSAM model file (*.pt *.pth);;All files (*.*)"


class RetrainAlgorithm(QgsProcessingAlgorithm):
    MODEL = "MODEL"
    INPUT = "INPUT"
    CORRECTIONS = "CORRECTIONS"
    CLASS_FIELD = "CLASS_FIELD"
    TIME_BUDGET = "TIME_BUDGET"
    STEPS = "STEPS"
    REPLAY = "REPLAY"
    MAP = "MAP"
    SAM_CHECKPOINT = "SAM_CHECKPOINT"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    VERSION = "VERSION"
    PARENT_SHA256 = "PARENT_SHA256"

    def name(self) -> str:
        return "retrain"

    def displayName(self) -> str:  # noqa: N802
        return "Retrain CWSAM from corrections"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Continues training a CWSAM model file on correction polygons drawn over a SAR raster (their class "
            "field holds the model's class values or names; a class the model does not have is refused) and writes "
            "the next version beside it: model.cwsam.pt -> model.v2.cwsam.pt -> model.v3.cwsam.pt, never over an "
            "existing file, and only once training finished and the model file is unchanged. The new file names "
            "its parent (file name and SHA-256). Training time: minutes (0: Steps optimizer steps). Replay: share "
            "of the training windows drawn from the model's own training data where it is still on disk, and from "
            "Class map (the model's map of this raster, e.g. from Classify SAR raster) outside the corrections. "
            "Classify the raster with the new version with Classify SAR raster."
        )

    def createInstance(self):  # noqa: N802
        return RetrainAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "Model file (*.cwsam.pt)", fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.CORRECTIONS, "Correction polygons", [compat.SOURCE_POLYGON]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field (the model's class values or names)", defaultValue="class",
            parentLayerParameterName=self.CORRECTIONS, type=compat.FIELD_ANY))
        self.addParameter(QgsProcessingParameterNumber(
            self.TIME_BUDGET, "Training time in minutes (0: Steps)", compat.NUMBER_DOUBLE,
            DEFAULT_MINUTES, minValue=0.0))
        advanced = [
            QgsProcessingParameterNumber(self.STEPS, "Steps (when Training time is 0)",
                                         compat.NUMBER_INTEGER, 60, minValue=1),
            QgsProcessingParameterNumber(self.REPLAY, "Replay: share of windows from the model's own training data",
                                         compat.NUMBER_DOUBLE, DEFAULT_REPLAY, minValue=0.0,
                                         maxValue=0.95),
            QgsProcessingParameterRasterLayer(self.MAP, "Class map of the raster by this model (replayed outside the "
                                              "corrections)", optional=True),
            QgsProcessingParameterFile(self.SAM_CHECKPOINT, "SAM checkpoint (models fine-tuned from SAM)",
                                       optional=True, fileFilter="SAM checkpoint (*.pth *.pt)"),
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue="auto",
                                       usesStaticStrings=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | compat.PARAMETER_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "New version (empty: the next name.vN.cwsam.pt beside the model)",
            fileFilter="CWSAM model (*.cwsam.pt)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputNumber(self.VERSION, "Version number"))
        self.addOutput(QgsProcessingOutputString(self.PARENT_SHA256, "SHA-256 of the model it was trained from"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster is None or not raster.isValid():
            raise QgsProcessingException("the SAR raster could not be opened: choose a raster layer or file")
        model = self.parameterAsFile(parameters, self.MODEL, context)
        try:
            image = raster_source(raster)
            path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
                parameters, self.CORRECTIONS, context, ["gpkg", "shp", "geojson"], "gpkg", feedback)
        except LayerError as exc:
            raise QgsProcessingException(for_the_dock(str(exc))) from None
        minutes = self.parameterAsDouble(parameters, self.TIME_BUDGET, context)
        output = self.parameterAsFileOutput(parameters, self.OUTPUT, context) or None
        class_map = self.parameterAsRasterLayer(parameters, self.MAP, context)
        if class_map is not None and layer_file(class_map) is None:
            raise QgsProcessingException("the class map must be a GeoTIFF written by Classify SAR raster")

        def progress(info: dict) -> None:
            fraction = progress_fraction(info)
            if fraction is not None:
                feedback.setProgress(100.0 * fraction)

        log = log_to_feedback(feedback)
        try:
            image.materialize(feedback)
            result = engine_job("retrain", {
                "model": model, "image": str(image.path), "corrections": path,
                "class_field": self.parameterAsString(parameters, self.CLASS_FIELD, context),
                "layer": layer_name or None, "output": output,
                "sam_checkpoint": self.parameterAsFile(parameters, self.SAM_CHECKPOINT, context) or None,
                "time_budget": minutes or None, "steps": self.parameterAsInt(parameters, self.STEPS, context),
                "replay": self.parameterAsDouble(parameters, self.REPLAY, context),
                "anchor_map": str(layer_file(class_map)) if class_map is not None else None,
                "device": self.parameterAsEnumString(parameters, self.DEVICE, context) or "auto"},
                progress, log, feedback.isCanceled)
        except LayerError as exc:
            raise QgsProcessingException(for_the_dock(str(exc))) from None
        except WorkerError as exc:
            raise QgsProcessingException(job_error(exc, "retraining")) from None
        finally:
            image.cleanup()
        feedback.pushInfo(f"version {result.version}: {result.model_path} (from {Path(model).name}, sha256 "
                          f"{result.parent_sha256[:12]}...)")
        return {self.OUTPUT: str(result.model_path), self.VERSION: result.version,
                self.PARENT_SHA256: result.parent_sha256}
