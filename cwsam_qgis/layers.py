"""QGIS layers in and out: which file the engine reads for a raster layer, and how results come back.

The engine reads files with rasterio, in a worker thread, so a layer is reduced to a path: its own
file when it has one, else a temporary GeoTIFF written from a clone of its data provider (in the
worker, as Processing does). Web maps (WMS/XYZ/WCS tiles) are refused: their pixels are rendered
colours, not backscatter. Results are added to the project, in the "CWSAM" group, only from the
main thread.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple

from qgis.core import (
    QgsCategorizedSymbolRenderer, QgsContrastEnhancement, QgsCoordinateTransformContext, QgsFillSymbol, QgsMapLayer,
    QgsPalettedRasterRenderer, QgsProject, QgsProviderRegistry, QgsRasterFileWriter, QgsRasterLayer, QgsRasterPipe,
    QgsRendererCategory, QgsSingleBandGrayRenderer, QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from . import compat

GROUP_NAME = "CWSAM"
OUTPUT_PROPERTY = "cwsam/output"  # custom property of the layers the plugin adds: "classes", "confidence", "polygons"
# Providers whose pixels are rendered images, not measurements.
RENDERED_PROVIDERS = {"wms", "wcs", "arcgismapserver", "arcgisfeatureserver", "xyz", "vectortile"}


class LayerError(ValueError):
    """A layer the plugin cannot use, with what to do instead."""


@dataclass
class RasterSource:
    """The file the engine reads for a raster layer.

    ``export`` is a clone of the layer's data provider when the layer has no file of its own: call
    ``materialize()`` (in a worker thread is fine) to write ``path`` from it before reading.
    """

    path: Path
    layer_name: str
    crs_wkt: str
    export: Optional[object] = None  # QgsRasterDataProvider clone
    width: int = 0
    height: int = 0
    extent: Optional[object] = None  # QgsRectangle
    crs: Optional[object] = None  # QgsCoordinateReferenceSystem

    @property
    def temporary(self) -> bool:
        return self.export is not None

    def materialize(self, feedback=None) -> Path:
        """Write the temporary GeoTIFF of a layer without a file (no-op for file layers)."""
        if self.export is None or self.path.is_file():
            return self.path
        pipe = QgsRasterPipe()
        if not pipe.set(self.export):
            raise LayerError(f"cannot read the data of layer {self.layer_name!r}: save it as a GeoTIFF first")
        writer = QgsRasterFileWriter(str(self.path))
        writer.setOutputFormat("GTiff")
        status = writer.writeRaster(pipe, self.width, self.height, self.extent, self.crs,
                                    QgsCoordinateTransformContext(), feedback)
        if status != compat.RASTER_WRITE_OK or not self.path.is_file():
            self.cleanup()
            raise LayerError(f"could not export layer {self.layer_name!r} to a temporary GeoTIFF (error {status}): "
                             "save it as a GeoTIFF (Export > Save As) and use that")
        return self.path

    def cleanup(self) -> None:
        """Delete the temporary GeoTIFF, if one was made."""
        if self.export is not None:
            for path in (self.path, self.path.with_name(self.path.name + ".aux.xml")):
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass


def layer_file(layer: QgsRasterLayer) -> Optional[Path]:
    """The local file behind a GDAL raster layer, or None (memory, /vsimem, web, database...)."""
    if layer.providerType() != "gdal":
        return None
    path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or ""
    if path.startswith("/vsi") or not os.path.isfile(path):
        return None
    return Path(path)


def raster_source(layer: Optional[QgsMapLayer]) -> RasterSource:
    """The file the engine should read for ``layer``; raises ``LayerError`` saying why a layer cannot be used.

    Call from the main thread (it clones the provider of layers that have no file).
    """
    if layer is None:
        raise LayerError("no raster layer chosen: load a SAR raster (e.g. a Sentinel-1 GeoTIFF) and choose it")
    if not isinstance(layer, QgsRasterLayer):
        raise LayerError(f"layer {layer.name()!r} is not a raster layer: choose a SAR raster layer")
    if not layer.isValid():
        raise LayerError(f"layer {layer.name()!r} cannot be read (invalid source {layer.source()!r})")
    crs_wkt = layer.crs().toWkt() if layer.crs().isValid() else ""
    path = layer_file(layer)
    if path is not None:
        return RasterSource(path, layer.name(), crs_wkt)
    if layer.providerType() in RENDERED_PROVIDERS:
        raise LayerError(
            f"layer {layer.name()!r} is a web map ({layer.providerType()}): its pixels are rendered colours, not "
            "SAR backscatter. Load the SAR data itself (e.g. a GeoTIFF of VV, VH in dB)"
        )
    provider = layer.dataProvider()
    if provider is None or provider.xSize() <= 0 or provider.ySize() <= 0:
        raise LayerError(f"layer {layer.name()!r} has no pixel grid to read: save it as a GeoTIFF and use that")
    handle, name = tempfile.mkstemp(prefix="cwsam-layer-", suffix=".tif")
    os.close(handle)
    os.unlink(name)  # the writer creates it; an empty file would read as "already exported"
    return RasterSource(Path(name), layer.name(), crs_wkt, export=provider.clone(), width=provider.xSize(),
                        height=provider.ySize(), extent=provider.extent(), crs=layer.crs())


# --- results --------------------------------------------------------------------------------------


def class_renderer(layer: QgsRasterLayer, classes: Sequence) -> QgsPalettedRasterRenderer:
    """A paletted renderer of band 1 with each class's value, colour and name (``ClassInfo``-like items)."""
    entries = [QgsPalettedRasterRenderer.Class(int(c.value), QColor(c.color), c.name) for c in classes]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)


def confidence_renderer(layer: QgsRasterLayer) -> QgsSingleBandGrayRenderer:
    """Grey from 0 % (black) to 100 % (white) confidence."""
    renderer = QgsSingleBandGrayRenderer(layer.dataProvider(), 1)
    enhancement = QgsContrastEnhancement(layer.dataProvider().dataType(1))
    stretch = QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum
    enhancement.setContrastEnhancementAlgorithm(stretch)
    enhancement.setMinimumValue(0)
    enhancement.setMaximumValue(100)
    renderer.setContrastEnhancement(enhancement)
    return renderer


def polygon_renderer(classes: Sequence, others: str = "") -> QgsCategorizedSymbolRenderer:
    """Polygons categorized by their ``class`` field: each class's colour (outline a darker shade) and name,
    as the style ``cwsam_core.vector.vectorize`` stores in the GeoPackage. With ``others`` (its legend text),
    polygons of no class or another value are drawn too (a red hatched outline), never invisible."""
    categories = []
    for c in classes:
        symbol = QgsFillSymbol.createSimple({"color": QColor(c.color).name(), "style": "solid",
                                            "outline_color": QColor(c.color).darker(165).name(),
                                            "outline_width": "0.2", "outline_width_unit": "MM"})
        categories.append(QgsRendererCategory(int(c.value), symbol, c.name))
    if others:  # the "all other values" category: an empty value
        symbol = QgsFillSymbol.createSimple({"color": "#e31a1c", "style": "b_diagonal", "outline_color": "#e31a1c",
                                            "outline_width": "0.6", "outline_width_unit": "MM"})
        categories.append(QgsRendererCategory("", symbol, others))
    return QgsCategorizedSymbolRenderer("class", categories)


def add_polygons(path: Path, classes: Sequence, layer: Optional[str] = None,
                 project: Optional[QgsProject] = None) -> QgsVectorLayer:
    """Add the polygons written by ``cwsam_core.vector.vectorize`` (layer ``layer`` of the GeoPackage ``path``,
    named after the file) at the top of the "CWSAM" group, styled with ``classes``. Main thread only."""
    project = project or QgsProject.instance()
    path = Path(path)
    polygons = QgsVectorLayer(f"{path}|layername={layer or path.stem}", path.stem, "ogr")
    if not polygons.isValid():
        raise LayerError(f"QGIS cannot open the polygons {path}")
    polygons.setRenderer(polygon_renderer(classes))
    polygons.setCustomProperty(OUTPUT_PROPERTY, "polygons")
    project.addMapLayer(polygons, False)
    cwsam_group(project).insertLayer(0, polygons)
    return polygons


def cwsam_group(project: QgsProject):
    root = project.layerTreeRoot()
    return root.findGroup(GROUP_NAME) or root.insertGroup(0, GROUP_NAME)


def add_classification(
    output: Path, classes: Sequence, name: Optional[str] = None, confidence: Optional[Path] = None,
    project: Optional[QgsProject] = None,
) -> Tuple[QgsRasterLayer, Optional[QgsRasterLayer]]:
    """Add the class raster (paletted with ``classes``) at the top of the "CWSAM" group, with the
    confidence raster below it. Layers are named after their files (``name`` overrides the class
    raster's), so a layer leads to its file, and marked as CWSAM outputs. Main thread only."""
    project = project or QgsProject.instance()
    layer = QgsRasterLayer(str(output), name or Path(output).stem, "gdal")
    if not layer.isValid():
        raise LayerError(f"QGIS cannot open the classification {output}")
    layer.setRenderer(class_renderer(layer, classes))
    layer.setCustomProperty(OUTPUT_PROPERTY, "classes")
    group = cwsam_group(project)
    project.addMapLayer(layer, False)
    group.insertLayer(0, layer)
    confidence_layer = None
    if confidence is not None:
        confidence_layer = QgsRasterLayer(str(confidence), Path(confidence).stem, "gdal")
        if confidence_layer.isValid():
            confidence_layer.setRenderer(confidence_renderer(confidence_layer))
            confidence_layer.setCustomProperty(OUTPUT_PROPERTY, "confidence")
            project.addMapLayer(confidence_layer, False)
            group.insertLayer(1, confidence_layer)
        else:
            confidence_layer = None
    return layer, confidence_layer


def is_cwsam_output(layer) -> bool:
    """True for a class map or confidence raster written by CWSAM: added by the plugin (marked), or a
    file with CWSAM's run record beside it (``classes.run.json`` for ``classes.tif`` and
    ``classes_confidence.tif``). Such layers are results, not SAR inputs."""
    if layer is None:
        return False
    if layer.customProperty(OUTPUT_PROPERTY):
        return True
    path = layer_file(layer) if isinstance(layer, QgsRasterLayer) else None
    if path is None:
        return False
    if path.with_suffix(".run.json").is_file():
        return True
    stem = path.stem
    return stem.endswith("_confidence") and path.with_name(stem[: -len("_confidence")] + ".run.json").is_file()


def cwsam_output_layers(project: Optional[QgsProject] = None) -> list:
    """The project's raster layers that are CWSAM outputs (see :func:`is_cwsam_output`)."""
    project = project or QgsProject.instance()
    return [layer for layer in project.mapLayers().values()
            if isinstance(layer, QgsRasterLayer) and is_cwsam_output(layer)]


def safe_stem(name: str, default: str = "raster") -> str:
    """A file-name stem from a layer name: letters, digits, '-' and '_' kept, the rest '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or default


def _writable_folder(folder) -> bool:
    return bool(folder) and os.path.isdir(folder) and os.access(folder, os.W_OK)


# How the dock says where outputs go by default.
BESIDE_PROJECT = "beside the project"
BESIDE_INPUT = "beside the input raster"
LAST_FOLDER = "in the last output folder"
TEMPORARY = "in a temporary folder (choose an output file, or save the project, to keep it)"


def output_folder(project: Optional[QgsProject] = None, beside: Optional[Path] = None,
                  fallback: str = "") -> Tuple[Path, str]:
    """The folder of default outputs and the words that say where it is: beside the saved project, else
    beside the input file ``beside``, else ``fallback`` (e.g. the last output folder), else a temporary
    "cwsam" folder (the only case the dock warns about: it is emptied by the system, not by the user)."""
    project = project or QgsProject.instance()
    if project.fileName() and _writable_folder(project.homePath()):
        return Path(project.homePath()), BESIDE_PROJECT
    if beside is not None and _writable_folder(str(Path(beside).parent)):
        return Path(beside).parent, BESIDE_INPUT
    if _writable_folder(fallback):
        return Path(fallback), LAST_FOLDER
    base = Path(tempfile.gettempdir()) / "cwsam"
    base.mkdir(exist_ok=True)
    return base, TEMPORARY


def free_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/<stem><suffix>``, or ``<stem>_2<suffix>``, ``_3``... : the first name not taken."""
    candidate, index = folder / f"{stem}{suffix}", 1
    while candidate.exists():
        index += 1
        candidate = folder / f"{stem}_{index}{suffix}"
    return candidate


def default_output(layer_name: str, project: Optional[QgsProject] = None, folder: str = "",
                   beside: Optional[Path] = None) -> Path:
    """A free file name ``<layer>_classes.tif``: beside the saved project, else beside the input file
    ``beside``, else in ``folder``, else in a temporary "cwsam" folder (see :func:`output_folder`)."""
    base, _ = output_folder(project, beside, folder)
    return free_path(base, f"{safe_stem(layer_name)}_classes", ".tif")
