"""Processing algorithm "Classify SAR raster": the dock's Classify, for the Toolbox, the Model Designer,
batch mode and ``qgis_process``. Same engine call as the dock (``run_classification``)."""

from __future__ import annotations

import json
from pathlib import Path

from qgis.core import (
    QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputFile,
    QgsProcessingOutputString, QgsProcessingParameterEnum, QgsProcessingParameterExtent, QgsProcessingParameterFile,
    QgsProcessingParameterNumber, QgsProcessingParameterRasterDestination, QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString, QgsProcessingParameterVectorDestination,
)

from .. import compat
from ..layers import LayerError, class_renderer, confidence_renderer, polygon_renderer, raster_source
from ..tasks.classify_task import ClassifyRequest, area_summary, for_the_plugin, parse_bands, run_classification

DEVICES = ["auto", "cpu", "cuda", "mps"]
INPUT_SCALES = ["auto", "db", "linear", "amplitude"]
MODEL_FILTER = ("CWSAM model (*.pt *.pth *.onnx);;CWSAM model file (*.pt *.pth);;ONNX export (*.onnx);;"
                "All files (*.*)")

# Post-processors must outlive processAlgorithm (QGIS holds a plain pointer): keep the latest ones.
_STYLERS: list = []


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded output: the class raster paletted with the model's classes, or the confidence grey."""

    def __init__(self, classes=None) -> None:
        super().__init__()
        self.classes = classes

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        if layer is not None and layer.isValid():
            layer.setRenderer(class_renderer(layer, self.classes) if self.classes else confidence_renderer(layer))
            layer.triggerRepaint()


class _PolygonStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles the loaded polygons: categorized by class with the model's colours and names."""

    def __init__(self, classes) -> None:
        super().__init__()
        self.classes = classes

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        if layer is not None and layer.isValid():
            layer.setRenderer(polygon_renderer(self.classes))
            layer.triggerRepaint()


def _keep(styler: _Styler) -> _Styler:
    _STYLERS.append(styler)
    del _STYLERS[:-8]
    return styler


class ClassifyAlgorithm(QgsProcessingAlgorithm):
    INPUT = "INPUT"
    MODEL = "MODEL"
    SAM_CHECKPOINT = "SAM_CHECKPOINT"
    EXTENT = "EXTENT"
    TILE_SIZE = "TILE_SIZE"
    OVERLAP = "OVERLAP"
    BATCH_SIZE = "BATCH_SIZE"
    DEVICE = "DEVICE"
    INPUT_SCALE = "INPUT_SCALE"
    BANDS = "BANDS"
    OUTPUT = "OUTPUT"
    CONFIDENCE = "CONFIDENCE"
    POLYGONS = "POLYGONS"
    MIN_AREA = "MIN_AREA"
    SIMPLIFY = "SIMPLIFY"
    RECORD = "RECORD"
    SUMMARY = "SUMMARY"

    def name(self) -> str:
        return "classify"

    def displayName(self) -> str:  # noqa: N802
        return "Classify SAR raster"

    def shortHelpString(self) -> str:  # noqa: N802
        return (
            "Classifies a SAR raster into the land-cover classes of a CWSAM model file: overlapping tiles with "
            "blended probabilities, the raster's grid and CRS kept. Writes a GeoTIFF of class values (with a "
            "paletted style of the model's class names and colours), optionally the per-pixel confidence in percent, "
            "and a .run.json record beside it. Polygons (optional, a GeoPackage): one polygon per connected region "
            "with its class, name, area (m²) and mean confidence, styled with the model's colours, after an optional "
            "minimum area and simplification (advanced). Extent: only the pixels it touches are classified. Tile "
            "size 0 uses the model's. Models fine-tuned from SAM need the SAM checkpoint they were trained with. "
            "An ONNX export of a model (.onnx, made by cwsam export) holds every weight and runs with ONNX Runtime, "
            "without PyTorch, at the tile size it was exported for."
        )

    def createInstance(self):  # noqa: N802
        return ClassifyAlgorithm()

    def initAlgorithm(self, config=None) -> None:  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "SAR raster"))
        self.addParameter(QgsProcessingParameterFile(self.MODEL, "CWSAM model file (.cwsam.pt) or ONNX export (.onnx)",
                                                fileFilter=MODEL_FILTER))
        self.addParameter(QgsProcessingParameterFile(
            self.SAM_CHECKPOINT, "SAM checkpoint (models fine-tuned from SAM)", optional=True,
            fileFilter="SAM checkpoint (*.pth *.pt);;All files (*.*)"))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Extent (default: the whole raster)",
                                                       optional=True))
        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size in pixels (0: the model's)",
                                         compat.NUMBER_INTEGER, 0, minValue=0),
            QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (fraction)", compat.NUMBER_DOUBLE,
                                         0.25, minValue=0.0, maxValue=0.9),
            QgsProcessingParameterNumber(self.BATCH_SIZE, "Batch size (tiles)", compat.NUMBER_INTEGER,
                                         4, minValue=1),
            QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICES, defaultValue=0),
            QgsProcessingParameterEnum(self.INPUT_SCALE, "Input scale", INPUT_SCALES, defaultValue=0),
            QgsProcessingParameterString(self.BANDS, "Bands, in the model's order (e.g. 1,2; default: by "
                                         "description, else in order)", defaultValue="", optional=True),
            QgsProcessingParameterNumber(self.MIN_AREA, "Polygons: minimum area (m², smaller regions merged into "
                                         "a neighbour)", compat.NUMBER_DOUBLE, 0.0, minValue=0.0),
            QgsProcessingParameterNumber(self.SIMPLIFY, "Polygons: simplify boundaries (tolerance in metres)",
                                         compat.NUMBER_DOUBLE, 0.0, minValue=0.0),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | compat.PARAMETER_ADVANCED)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Classes"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            self.CONFIDENCE, "Confidence (%)", optional=True, createByDefault=False))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.POLYGONS, "Polygons (GeoPackage)", compat.SOURCE_POLYGON, optional=True,
            createByDefault=False))
        self.addOutput(QgsProcessingOutputFile(self.RECORD, "Run record (JSON)"))
        self.addOutput(QgsProcessingOutputString(self.SUMMARY, "Area per class (JSON)"))

    def processAlgorithm(self, parameters, context, feedback) -> dict:  # noqa: N802
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        given = parameters.get(self.INPUT)
        if layer is None and isinstance(given, str) and given:
            # A path QGIS could not open (batch rows are often typed or pasted paths): name it.
            raise QgsProcessingException(f"{given} is not a raster QGIS can read: choose a SAR raster file")
        try:
            source = raster_source(layer)
        except LayerError as exc:
            raise QgsProcessingException(for_the_plugin(str(exc))) from None
        model = self.parameterAsFile(parameters, self.MODEL, context)
        if not model or not Path(model).is_file():
            raise QgsProcessingException(f"model file not found: {model!r}; give a CWSAM model file")
        sam = self.parameterAsFile(parameters, self.SAM_CHECKPOINT, context)
        bounds = None
        if parameters.get(self.EXTENT):
            rect = self.parameterAsExtent(parameters, self.EXTENT, context, layer.crs())
            bounds = (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())
        try:
            bands = parse_bands(self.parameterAsString(parameters, self.BANDS, context) or "")
        except LayerError as exc:
            raise QgsProcessingException(for_the_plugin(str(exc))) from None
        output = Path(self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
        confidence = self.parameterAsOutputLayer(parameters, self.CONFIDENCE, context) \
            if parameters.get(self.CONFIDENCE) else None
        polygons = self.parameterAsOutputLayer(parameters, self.POLYGONS, context) \
            if parameters.get(self.POLYGONS) else None
        request = ClassifyRequest(
            source=source, output=output, model=Path(model), sam_checkpoint=Path(sam) if sam else None,
            tile_size=self.parameterAsInt(parameters, self.TILE_SIZE, context) or None,
            overlap=self.parameterAsDouble(parameters, self.OVERLAP, context),
            batch_size=self.parameterAsInt(parameters, self.BATCH_SIZE, context),
            device=DEVICES[self.parameterAsEnum(parameters, self.DEVICE, context)],
            input_scale=INPUT_SCALES[self.parameterAsEnum(parameters, self.INPUT_SCALE, context)],
            confidence=Path(confidence) if confidence else None, bounds=bounds, band_indexes=bands,
            polygons=Path(polygons) if polygons else None,
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            simplify=self.parameterAsDouble(parameters, self.SIMPLIFY, context),
        )
        outcome = run_classification(request, lambda f, m: feedback.setProgress(100.0 * f), feedback.isCanceled,
                                     feedback=feedback)
        if outcome.result is None:
            if outcome.details:
                feedback.reportError(outcome.details)
            raise QgsProcessingException(for_the_plugin(outcome.error or "classification failed"))
        result = outcome.result
        from cwsam_core.model.card_reader import read_card

        classes = read_card(model).classes
        for note in result.warnings:
            feedback.pushWarning(note)
        rows = area_summary(result, classes)
        for _colour, name, pixels, share, area in rows:
            feedback.pushInfo(f"{name:<20} {share:>7.1%} {area:>16} ({pixels:,} px)")
        if context.willLoadLayerOnCompletion(str(output)):
            context.layerToLoadOnCompletionDetails(str(output)).setPostProcessor(_keep(_Styler(classes)))
        if confidence and context.willLoadLayerOnCompletion(confidence):
            context.layerToLoadOnCompletionDetails(confidence).setPostProcessor(_keep(_Styler()))
        if polygons:
            if outcome.polygons is None:  # an output asked for and missing: the run failed (the classes stay)
                raise QgsProcessingException(f"the classes were written to {result.output}, but "
                                             f"{for_the_plugin(outcome.polygons_error or 'polygons not written')}")
            for note in outcome.polygons.warnings:
                feedback.pushWarning(note)
            feedback.pushInfo(f"{outcome.polygons.polygons:,} polygons written to {outcome.polygons.output}")
            if context.willLoadLayerOnCompletion(polygons):
                context.layerToLoadOnCompletionDetails(polygons).setPostProcessor(_keep(_PolygonStyler(classes)))
        summary = {name: {"pixels": pixels, "area": result.areas[value], "unit": result.area_unit}
                   for value, (_c, name, pixels, _s, _a) in zip(result.pixel_counts, rows)}
        return {self.OUTPUT: str(result.output), self.CONFIDENCE: str(result.confidence) if result.confidence else None,
                self.POLYGONS: str(outcome.polygons.output) if outcome.polygons is not None else None,
                self.RECORD: str(result.record), self.SUMMARY: json.dumps(summary)}
