"""Polygon layers as training labels: the file the core reads, the classes of a field, overlap checks.

The core reads polygons from a file (GeoPackage, shapefile, GeoJSON) in any CRS and reprojects them
itself. Layers that are not such a file as they stand (memory layers, layers filtered by a subset
string, database or web layers) are written to a temporary GeoPackage first, in the main thread,
keeping their CRS and only the class field. Nothing here imports torch or cwsam_core at import time.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsFeatureRequest,
    QgsGeometry,
    QgsProject,
    QgsProviderRegistry,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QVariant

# Formats the core's reader opens directly (pyogrio), by file suffix.
FILE_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json"}
INTEGER_TYPES = {QVariant.Int, QVariant.UInt, QVariant.LongLong, QVariant.ULongLong}
REAL_TYPES = {QVariant.Double}  # accepted when every value is a whole number, as the core does
TEXT_TYPES = {QVariant.String}
EXPORT_LAYER_NAME = "polygons"


class PolygonSourceError(ValueError):
    """A polygon layer that cannot be used for training, with what to do about it."""


@dataclass
class PolygonFile:
    """A polygon file the core can read: ``path`` (and ``layer`` inside it); ``temporary`` when exported."""

    path: Path
    layer: Optional[str]
    temporary: bool = False

    def remove(self) -> None:
        """Delete an exported temporary file and its folder; a user's file is never touched."""
        if not self.temporary:
            return
        folder = self.path.parent
        for item in folder.glob(self.path.name + "*"):
            item.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass  # something else lives there: leave the folder


def is_polygon_layer(layer) -> bool:
    """True for a valid vector layer of (multi)polygons."""
    return (isinstance(layer, QgsVectorLayer) and layer.isValid()
            and layer.geometryType() == QgsWkbTypes.PolygonGeometry)


def field_kind(layer: QgsVectorLayer, field_name: str) -> str:
    """"integer" or "text": how the core matches the field's values to classes (by value or by name)."""
    index = layer.fields().lookupField(field_name)
    if index < 0:
        raise PolygonSourceError(f"the layer {layer.name()} has no field {field_name!r}: choose its class field")
    field = layer.fields().at(index)
    if field.type() in INTEGER_TYPES or field.type() in REAL_TYPES:
        return "integer"
    if field.type() in TEXT_TYPES:
        return "text"
    raise PolygonSourceError(
        f"the class field {field_name!r} of {layer.name()} is of type {field.typeName()}: choose an integer "
        "field (class values) or a text field (class names)"
    )


def field_values(layer: QgsVectorLayer, field_name: str) -> Tuple[str, list]:
    """The field's kind and its distinct non-empty values, sorted (integers or strings)."""
    kind = field_kind(layer, field_name)
    index = layer.fields().lookupField(field_name)
    values = []
    for value in layer.uniqueValues(index):
        if value is None or (isinstance(value, QVariant) and value.isNull()):
            continue  # features without a class are unlabelled, not a class
        if kind == "integer":
            if float(value) != int(float(value)):
                raise PolygonSourceError(
                    f"the class field {field_name!r} of {layer.name()} holds {value}, not a whole number: choose a "
                    "field of integer class values or of class names"
                )
            values.append(int(float(value)))
        elif str(value).strip():
            values.append(str(value))
    return kind, sorted(set(values))


def plain_file(layer: QgsVectorLayer) -> Optional[PolygonFile]:
    """The layer's own file when the core can read it unchanged (OGR file, no filter), else None."""
    if layer.providerType() != "ogr" or layer.subsetString():
        return None
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = Path(parts.get("path") or "")
    if path.suffix.lower() not in FILE_SUFFIXES or not path.is_file():
        return None
    name = parts.get("layerName") or None
    if name is None and parts.get("layerId") not in (None, "", 0):
        return None  # a layer picked by index inside a multi-layer file: export it instead
    return PolygonFile(path, name)


def polygon_file(layer: QgsVectorLayer, field_name: str, folder: Optional[Path] = None) -> PolygonFile:
    """A file of ``layer``'s polygons the core can read, exporting it when it is not one already.

    Runs in the main thread (it reads the layer). The export keeps the layer's CRS and only
    ``field_name``; ``folder`` defaults to a new temporary folder.
    """
    if not is_polygon_layer(layer):
        raise PolygonSourceError(f"{getattr(layer, 'name', lambda: 'the layer')()} is not a valid polygon layer")
    field_kind(layer, field_name)
    own = plain_file(layer)
    if own is not None:
        return own
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="cwsam-polygons-"))
    path = folder / f"{_safe_name(layer.name())}.gpkg"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = EXPORT_LAYER_NAME
    options.attributes = [layer.fields().lookupField(field_name)]
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(path), QgsProject.instance().transformContext(), options
    )
    if error != QgsVectorFileWriter.NoError:
        PolygonFile(path, EXPORT_LAYER_NAME, temporary=True).remove()
        raise PolygonSourceError(f"could not export {layer.name()} to a temporary GeoPackage: {message}")
    return PolygonFile(path, EXPORT_LAYER_NAME, temporary=True)


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name).strip("_")
    return cleaned or "polygons"


def raster_extent_in(extent: QgsRectangle, raster_crs: QgsCoordinateReferenceSystem,
                     crs: QgsCoordinateReferenceSystem) -> QgsRectangle:
    """A raster extent expressed in another CRS (its bounding box after reprojection)."""
    if not raster_crs.isValid() or not crs.isValid() or raster_crs == crs:
        return QgsRectangle(extent)
    transform = QgsCoordinateTransform(raster_crs, crs, QgsProject.instance().transformContext())
    return transform.transformBoundingBox(extent)


def labelled_features_over(layer: QgsVectorLayer, field_name: str, extent: QgsRectangle,
                           raster_crs: QgsCoordinateReferenceSystem, limit: int = 0) -> int:
    """How many polygons with a class value intersect the raster's extent (counting stops at ``limit``)."""
    raster_crs = raster_crs if raster_crs.isValid() else layer.crs()
    area = raster_extent_in(extent, raster_crs, layer.crs())
    area_geometry = QgsGeometry.fromRect(area)
    index = layer.fields().lookupField(field_name)
    request = QgsFeatureRequest().setFilterRect(area).setSubsetOfAttributes([index])
    count = 0
    for feature in layer.getFeatures(request):
        value = feature.attribute(index)
        if value is None or (isinstance(value, QVariant) and value.isNull()) or str(value).strip() == "":
            continue
        if feature.hasGeometry() and feature.geometry().intersects(area_geometry):
            count += 1
            if limit and count >= limit:
                break
    return count


def check_overlap(layer: QgsVectorLayer, field_name: str, extent: QgsRectangle,
                  raster_crs: QgsCoordinateReferenceSystem, raster_name: str) -> None:
    """Raise a PolygonSourceError naming both layers when no labelled polygon touches the raster."""
    if labelled_features_over(layer, field_name, extent, raster_crs, limit=1) == 0:
        raise PolygonSourceError(
            f"no polygon of {layer.name()} with a value in {field_name!r} overlaps the raster {raster_name}: "
            "draw training polygons over the raster (the two layers' CRSs may differ; both are honoured)"
        )


def default_class_rows(kind: str, values: list, palette: List[str]) -> List[Tuple[object, int, str, str]]:
    """Table rows (field value, class value, name, colour) for a field's distinct values.

    Integer fields keep their values (the core matches polygons by value); text fields get class
    values 0..K-1 and keep the text as the name (the core matches polygons by name).
    """
    rows = []
    for i, value in enumerate(values):
        color = palette[i % len(palette)]
        if kind == "integer":
            rows.append((value, int(value), f"class {value}", color))
        else:
            rows.append((value, i, str(value), color))
    return rows
