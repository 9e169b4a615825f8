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
    QgsContrastEnhancement, QgsCoordinateTransformContext, QgsMapLayer, QgsPalettedRasterRenderer,
    QgsProject, QgsProviderRegistry, QgsRasterFileWriter, QgsRasterLayer, QgsRasterPipe, QgsSingleBandGrayRenderer,
)
from qgis.PyQt.QtGui import QColor

GROUP_NAME = "CWSAM"
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
        if status != QgsRasterFileWriter.NoError or not self.path.is_file():
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
    enhancement.setContrastEnhancementAlgorithm(QgsContrastEnhancement.StretchToMinimumMaximum)
    enhancement.setMinimumValue(0)
    enhancement.setMaximumValue(100)
    renderer.setContrastEnhancement(enhancement)
    return renderer


def cwsam_group(project: QgsProject):
    root = project.layerTreeRoot()
    return root.findGroup(GROUP_NAME) or root.insertGroup(0, GROUP_NAME)


def add_classification(
    output: Path, classes: Sequence, name: str, confidence: Optional[Path] = None,
    project: Optional[QgsProject] = None,
) -> Tuple[QgsRasterLayer, Optional[QgsRasterLayer]]:
    """Add the class raster (paletted with ``classes``) at the top of the "CWSAM" group, with the
    confidence raster below it. Main thread only."""
    project = project or QgsProject.instance()
    layer = QgsRasterLayer(str(output), name, "gdal")
    if not layer.isValid():
        raise LayerError(f"QGIS cannot open the classification {output}")
    layer.setRenderer(class_renderer(layer, classes))
    group = cwsam_group(project)
    project.addMapLayer(layer, False)
    group.insertLayer(0, layer)
    confidence_layer = None
    if confidence is not None:
        confidence_layer = QgsRasterLayer(str(confidence), f"{name} confidence (%)", "gdal")
        if confidence_layer.isValid():
            confidence_layer.setRenderer(confidence_renderer(confidence_layer))
            project.addMapLayer(confidence_layer, False)
            group.insertLayer(1, confidence_layer)
        else:
            confidence_layer = None
    return layer, confidence_layer


def default_output(layer_name: str, project: Optional[QgsProject] = None, folder: str = "") -> Path:
    """A free file name ``<layer>_classes.tif``: in ``folder``, else beside the saved project, else in a
    temporary "cwsam" folder."""
    project = project or QgsProject.instance()
    if folder and os.path.isdir(folder):
        base = Path(folder)
    elif project.fileName() and os.path.isdir(project.homePath()) and os.access(project.homePath(), os.W_OK):
        base = Path(project.homePath())
    else:
        base = Path(tempfile.gettempdir()) / "cwsam"
        base.mkdir(exist_ok=True)
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in layer_name) or "raster"
    candidate, index = base / f"{stem}_classes.tif", 1
    while candidate.exists():
        index += 1
        candidate = base / f"{stem}_classes_{index}.tif"
    return candidate
