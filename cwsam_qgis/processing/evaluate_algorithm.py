"""Processing algorithm "Evaluate CWSAM model": classify a labelled SAR raster the way a user would and
score it (IoU per class, mIoU, overall accuracy, kappa) with ``cwsam_core.training.evaluation.evaluate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingParameterEnum,
    QgsProcessingParameterFile, QgsProcessingParameterFileDestination, QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..layers import LayerError, raster_source
from ..tasks.engine_jobs import engine_job, job_error
from ..tasks.train_task import log_to_feedback
from ..worker_client import WorkerError
from .classify_algorithm import DEVICES, MODEL_FILTER


def _number(value: float):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


class EvaluateAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    LABELS = "LABELS"
    MODEL = "MODEL"
    SAM_CHECKPOINT = "SAM_CHECKPOINT"
    IGNORE = "IGNORE"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    MIOU = "MIOU"
    OVERALL_ACCURACY = "OVERALL_ACCURACY"
    KAPPA = "KAPPA"

    def name(self) -> str:
        return "evaluate"

    def displayName(self) -> str:  # noqa: N802
        return "Evaluate CWSAM model"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Classifies a SAR raster with a CWSAM model file (same tiling and radiometry as Classify) and compares "
            "the result with a label raster (read onto the SAR raster's grid). Label values the model does not "
            "name, the ignore values and nodata are left out. Writes a JSON report: IoU, precision, recall and F1 "
            "per class, mIoU, overall accuracy, frequency-weighted IoU and kappa."
        )

    def createInstance(self):  # noqa: N802
        return EvaluateAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR raster"))
        self.addParameter(QgsProcessingParameterRasterLayer(self.LABELS, "Label raster (class values)"))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "CWSAM model file", fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFile(
            self.SAM_CHECKPOINT, "SAM checkpoint (models fine-tuned from SAM)", optional=True,
            fileFilter="SAM checkpoint (*.pth *.pt);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterString(
            self.IGNORE, "Label values to ignore (comma separated)", defaultValue="", optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0))
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Evaluation report", fileFilter="JSON (*.json)"))
        self.addOutput(QgsProcessingOutputNumber(self.MIOU, "mIoU"))
        self.addOutput(QgsProcessingOutputNumber(self.OVERALL_ACCURACY, "Overall accuracy"))
        self.addOutput(QgsProcessingOutputNumber(self.KAPPA, "Kappa"))

    def processAlgorithm(self, parameters, context, feedback) -> dict:  # noqa: N802
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model or not Path(model).is_file():
            raise QgsProcessingException(f"model file not found: {model!r}; give a CWSAM model file")
        text = self.parameterAsString(parameters, self.IGNORE, context) or ""
        try:
            ignore = [int(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise QgsProcessingException(f"ignore values must be integers separated by commas, got {text!r}") from None
        sam = self.parameterAsFile(parameters, self.SAM_CHECKPOINT, context)
        output = Path(self.parameterAsFileOutput(parameters, self.OUTPUT, context))
        sources = []
        try:
            for name in (self.INPUT, self.LABELS):
                sources.append(raster_source(self.parameterAsRasterLayer(parameters, name, context)))
            image, labels = (s.materialize(feedback) for s in sources)
            scores = engine_job("evaluate", {
                "model": model, "image": str(image), "labels": str(labels), "sam_checkpoint": sam or None,
                "ignore_values": ignore, "device": DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)]},
                lambda fraction, _message: feedback.setProgress(100.0 * fraction),
                log=log_to_feedback(feedback),  # e.g. the classes matched by name
                should_cancel=feedback.isCanceled)
        except LayerError as exc:
            raise QgsProcessingException(str(exc)) from None
        except WorkerError as exc:
            if exc.details:
                feedback.reportError(exc.details)
            raise QgsProcessingException(job_error(exc, "evaluation")) from None
        finally:
            for source in sources:
                source.cleanup()
        rows = scores["per_class"]
        report = {"model": str(model), "image": self.parameterAsRasterLayer(parameters, self.INPUT, context).source(),
                  "miou": _number(scores["miou"]), "overall_accuracy": _number(scores["overall_accuracy"]),
                  "fwiou": _number(scores["fwiou"]), "kappa": _number(scores["kappa"]), "pixels": scores["pixels"],
                  "per_class": rows}
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2))
        for row in rows:
            iou = row["iou"]
            feedback.pushInfo(f"{row['value']:>5} {row['name']:<20} IoU {'-' if iou is None else f'{iou:.4f}'}")
        feedback.pushInfo(f"mIoU {scores['miou']:.4f}, OA {scores['overall_accuracy']:.4f}, kappa "
                          f"{scores['kappa']:.4f} ({scores['pixels']:,} labelled pixels)")
        return {self.OUTPUT: str(output), self.MIOU: _number(scores["miou"]),
                self.OVERALL_ACCURACY: _number(scores["overall_accuracy"]), self.KAPPA: _number(scores["kappa"])}
