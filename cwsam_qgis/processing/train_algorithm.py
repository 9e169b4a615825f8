"""Processing algorithm "Fine-tune CWSAM from polygons": the dock's Fine-tune, for the Toolbox,
the Model Designer, batch mode and ``qgis_process``. Same engine call as the dock (``run_training``).
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingOutputNumber, QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource, QgsProcessingParameterField, QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination, QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString, QgsVectorLayer,
)

from .. import compat
from ..layers import LayerError, raster_source
from ..messages import for_the_dock
from ..polygon_source import PolygonFile, PolygonSourceError, check_overlap
from ..tasks.classify_task import parse_bands
from ..tasks.train_task import (
    describe_outcome, history_lines, log_to_feedback, progress_fraction, run_training, training_job,
)

DEVICES = ["auto", "cpu", "cuda"]
SCALES = ["auto", "db", "linear", "amplitude"]
DEFAULT_BACKBONE = "vit_tiny"
DEFAULT_MINUTES = 10.0


def _backbone_names() -> list:
    """The backbone registry needs no torch; without cwsam_core at all only the default is offered (the
    algorithm then reports the missing dependencies when run)."""
    try:
        from cwsam_core.model.backbones import BACKBONES
    except ImportError:
        return [DEFAULT_BACKBONE]
    return list(BACKBONES)


class TrainAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    POLYGONS = "POLYGONS"
    CLASS_FIELD = "CLASS_FIELD"
    CLASSES = "CLASSES"
    BACKBONE = "BACKBONE"
    SAM_CHECKPOINT = "SAM_CHECKPOINT"
    TIME_BUDGET = "TIME_BUDGET"
    EPOCHS = "EPOCHS"
    STEPS_PER_EPOCH = "STEPS_PER_EPOCH"
    BATCH_SIZE = "BATCH_SIZE"
    LEARNING_RATE = "LEARNING_RATE"
    VAL_FRACTION = "VAL_FRACTION"
    TILE_SIZE = "TILE_SIZE"
    BANDS = "BANDS"
    INPUT_SCALE = "INPUT_SCALE"
    MODEL_SCALE = "MODEL_SCALE"
    DEVICE = "DEVICE"
    OUTPUT = "OUTPUT"
    BEST_MIOU = "BEST_MIOU"
    BEST_EPOCH = "BEST_EPOCH"

    def name(self) -> str:
        return "train"

    def displayName(self) -> str:  # noqa: N802
        return "Fine-tune CWSAM from polygons"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Trains a CWSAM model on a SAR raster from a polygon layer whose field holds the classes (integer "
            "values or text names; polygons in any CRS; unlabelled pixels are ignored). Writes the model file of "
            "the best validation mIoU, a training log (.log.csv) and a resumable state (.state.pt) beside it. "
            "Cancelling keeps the best model so far. Classes: leave empty to take every value of the field, or "
            "give VALUE:NAME[:#RRGGBB],... (for a text field, NAME is the text). Training time: minutes to train "
            "for (epochs run until it is spent); 0 trains for Epochs x Steps per epoch, as does a call that sets "
            "Epochs but not Training time. Learning rate: empty or 0 takes 1e-3 for backbones trained from "
            "scratch (vit_tiny), 2e-4 for adapters on SAM (vit_b/l/h)."
        )

    def createInstance(self):  # noqa: N802
        return TrainAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.backbones = _backbone_names()
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR raster"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.POLYGONS, "Training polygons", [compat.SOURCE_POLYGON]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field (integer values or text names)", parentLayerParameterName=self.POLYGONS,
            type=compat.FIELD_ANY))
        self.addParameter(QgsProcessingParameterString(
            self.CLASSES, "Classes (VALUE:NAME[:#RRGGBB],...; empty: every value of the field)", optional=True))
        # Static strings: the value is the backbone's name (readable in models and qgis_process calls).
        self.addParameter(QgsProcessingParameterEnum(
            self.BACKBONE, "Backbone (vit_nano: a quick trial, not for real maps)", options=self.backbones, defaultValue=DEFAULT_BACKBONE,
            usesStaticStrings=True))
        self.addParameter(QgsProcessingParameterFile(
            self.SAM_CHECKPOINT, "SAM checkpoint (vit_b/l/h only)", optional=True,
            fileFilter="SAM checkpoint (*.pth *.pt)"))
        self.addParameter(QgsProcessingParameterNumber(
            self.TIME_BUDGET, "Training time in minutes (0: Epochs x Steps per epoch)",
            compat.NUMBER_DOUBLE, DEFAULT_MINUTES, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.EPOCHS, "Epochs (when Training time is 0)", compat.NUMBER_INTEGER, 10, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.BATCH_SIZE, "Batch size", compat.NUMBER_INTEGER, 4, minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            self.LEARNING_RATE, "Learning rate (empty: auto, by backbone)", compat.NUMBER_DOUBLE,
            None, optional=True, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            self.VAL_FRACTION, "Validation fraction", compat.NUMBER_DOUBLE, 0.2, minValue=0.0,
            maxValue=0.9))
        advanced = [
            QgsProcessingParameterNumber(self.STEPS_PER_EPOCH, "Steps per epoch",
                                         compat.NUMBER_INTEGER, 50, minValue=1),
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0: the backbone's default)",
                                         compat.NUMBER_INTEGER, 0, minValue=0),
            QgsProcessingParameterString(self.BANDS, "Bands, 1-based, in order (e.g. 1,2; empty: the raster's)",
                                         optional=True),
            QgsProcessingParameterEnum(self.INPUT_SCALE, "Input scale", options=SCALES, defaultValue="auto",
                                       usesStaticStrings=True),
            QgsProcessingParameterEnum(self.MODEL_SCALE, "Model scale (auto: dB; 8-bit images: amplitude)",
                                       options=SCALES, defaultValue="auto", usesStaticStrings=True),
            QgsProcessingParameterEnum(self.DEVICE, "Device", options=DEVICES, defaultValue="auto",
                                       usesStaticStrings=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | compat.PARAMETER_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterFileDestination(
            self.OUTPUT, "Output model file", fileFilter="CWSAM model (*.cwsam.pt)"))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_MIOU, "Best validation mIoU"))
        self.addOutput(QgsProcessingOutputNumber(self.BEST_EPOCH, "Epoch of the best model"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        raster = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if raster is None or not raster.isValid():
            raise QgsProcessingException("the SAR raster could not be opened: choose a raster layer or file")
        field_name = self.parameterAsString(parameters, self.CLASS_FIELD, context)
        try:
            image = raster_source(raster)
            # Memory layers, selections and non-file sources are written to a temporary GeoPackage here.
            path, layer_name = self.parameterAsCompatibleSourceLayerPathAndLayerName(
                parameters, self.POLYGONS, context, ["gpkg", "shp", "geojson"], "gpkg", feedback)
            polygons = PolygonFile(Path(path), layer_name or None)
            uri = f"{path}|layername={layer_name}" if layer_name else path
            vector = QgsVectorLayer(uri, "training polygons", "ogr")
            if not vector.isValid():
                raise PolygonSourceError(f"the training polygons could not be read from {path}")
            check_overlap(vector, field_name, raster.extent(), raster.crs(), raster.name())
            classes = self._classes(parameters, context, polygons, field_name)
            minutes = self.parameterAsDouble(parameters, self.TIME_BUDGET, context)
            if self.TIME_BUDGET not in parameters and parameters.get(self.EPOCHS) is not None:
                minutes = 0.0  # a call that sets Epochs alone (scripts, qgis_process) trains by epochs
            job = training_job(
                image, polygons, field_name, classes, self.parameterAsFileOutput(parameters, self.OUTPUT, context),
                self.parameterAsEnumString(parameters, self.BACKBONE, context),
                sam_checkpoint=self.parameterAsFile(parameters, self.SAM_CHECKPOINT, context) or None,
                epochs=self.parameterAsInt(parameters, self.EPOCHS, context),
                steps_per_epoch=self.parameterAsInt(parameters, self.STEPS_PER_EPOCH, context),
                batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
                lr=self.parameterAsDouble(parameters, self.LEARNING_RATE, context) or None,
                time_budget=minutes or None,
                input_scale=self.parameterAsEnumString(parameters, self.INPUT_SCALE, context) or "auto",
                model_scale=self.parameterAsEnumString(parameters, self.MODEL_SCALE, context) or "auto",
                band_indexes=parse_bands(self.parameterAsString(parameters, self.BANDS, context) or ""),
                val_fraction=self.parameterAsDouble(parameters, self.VAL_FRACTION, context),
                tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context),
                device=self.parameterAsEnumString(parameters, self.DEVICE, context),
            )
        except (LayerError, PolygonSourceError, ValueError) as exc:
            raise QgsProcessingException(for_the_dock(str(exc))) from None
        timed = job.config.time_budget is not None

        def progress(info: dict) -> None:
            fraction = progress_fraction(info)
            if fraction is not None:
                feedback.setProgress(100.0 * fraction)
            if "val_miou" in info:
                of = f"of about {info['epochs']}" if timed else f"/{info['epochs']}"
                feedback.pushInfo(f"epoch {info['epoch']}{' ' if timed else ''}{of}: training loss "
                                  f"{info['train_loss']:.4f}, validation mIoU {info['val_miou']:.3f} "
                                  f"(best {info['best_miou']:.3f})")

        log = log_to_feedback(feedback)
        try:
            outcome = run_training(job, progress, feedback.isCanceled, log=log)
        finally:
            job.remove_temporary_files()
        if outcome.details:
            feedback.reportError(outcome.details)
        if outcome.error or outcome.result is None:
            raise QgsProcessingException(describe_outcome(outcome))
        for line in history_lines(outcome.result):
            feedback.pushInfo(line)
        feedback.pushInfo(describe_outcome(outcome))
        result = outcome.result
        return {self.OUTPUT: str(result.model_path), self.BEST_MIOU: float(result.best_miou),
                self.BEST_EPOCH: int(result.best_epoch)}

    def _classes(self, parameters, context, polygons: PolygonFile, field_name: str) -> list:
        """The classes given, or every value of the field (integer values kept, text values numbered)."""
        from cwsam_core.common.classes import parse_classes
        from cwsam_core.vector.polygons import polygon_classes

        spec = self.parameterAsString(parameters, self.CLASSES, context).strip()
        if spec:
            return parse_classes(spec)
        return polygon_classes(polygons.path, field_name, layer=polygons.layer)
