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
)
from qgis.PyQt.QtCore import QMetaType, QVariant

from . import compat

# Formats the core's reader opens directly (pyogrio), by file suffix.
FILE_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json"}
INTEGER_TYPES = {QMetaType.Type.Int, QMetaType.Type.UInt, QMetaType.Type.LongLong, QMetaType.Type.ULongLong}
REAL_TYPES = {QMetaType.Type.Double}  # accepted when every value is a whole number, as the core does
TEXT_TYPES = {QMetaType.Type.QString}
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
            and layer.geometryType() == compat.POLYGON_GEOMETRY)


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
    if error != QgsVectorFileWriter.WriterError.NoError:
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
    values 0..K-1 and keep the text as the name (the core matches polygons by name). Names that are
    known land-cover words get their usual map colour (:func:`class_colour`), the others the palette's
    colours not taken yet.
    """
    names = [f"class {v}" if kind == "integer" else str(v) for v in values]
    known: List[Optional[str]] = []
    for name in names:
        colour = class_colour(name)
        known.append(colour if colour is not None and colour not in known else None)
    spare = [c for c in palette if c not in known] or list(palette)
    rows, unknown = [], 0
    for i, (value, name) in enumerate(zip(values, names)):
        colour = known[i]
        if colour is None:
            colour, unknown = spare[unknown % len(spare)], unknown + 1
        rows.append((value, int(value) if kind == "integer" else i, name, colour))
    return rows


# Land-cover words and their usual map colours (CORINE-like hues), the first match wins.
CLASS_COLOURS: List[Tuple[Tuple[str, ...], str]] = [
    (("water", "river", "rivers", "lake", "lakes", "sea", "ocean", "reservoir", "pond", "flood", "flooded"),
     "#1f78b4"),
    (("wetland", "wetlands", "marsh", "swamp", "bog", "mangrove", "mangroves"), "#35978f"),
    (("forest", "forests", "woodland", "wood", "woods", "trees", "tree"), "#1b7837"),
    (("urban", "built", "building", "buildings", "settlement", "settlements", "city", "town", "village",
      "residential", "industrial", "artificial"), "#d7191c"),
    (("cropland", "crop", "crops", "agriculture", "agricultural", "farmland", "arable", "field", "fields",
      "cultivated", "paddy", "rice"), "#f0e442"),
    (("bare", "soil", "sand", "desert", "rock", "barren", "fallow"), "#c8a064"),
    (("grassland", "grass", "meadow", "meadows", "pasture", "pastures", "rangeland", "herbaceous"), "#a6d96a"),
    (("shrub", "shrubs", "shrubland", "scrub", "bush"), "#8c9c3c"),
    (("vegetation", "vegetated", "green"), "#4daf4a"),
    (("snow", "ice", "glacier"), "#e6f5ff"),
    (("road", "roads", "street", "streets", "railway"), "#7f7f7f"),
]
NEGATIONS = ("not", "non", "no", "other", "background", "unclassified", "nodata")
NEUTRAL_COLOUR = "#9b9b9b"


def class_colour(name: str) -> Optional[str]:
    """The usual map colour of a land-cover class name ("water" blue, "forest" dark green, "urban" red,
    "cropland" yellow, "bare soil" tan...), grey for "not water", "other", "background"; None when the
    name says nothing known."""
    words = [w for w in "".join(c if c.isalnum() else " " for c in name.lower()).split() if w]
    if not words:
        return None
    if words[0] in NEGATIONS:
        return NEUTRAL_COLOUR
    for keys, colour in CLASS_COLOURS:
        if any(word in keys for word in words):
            return colour
    return None


# Names of class fields, best first; and of identifier fields, never a class field.
CLASS_FIELD_NAMES = ("class", "classname", "class_name", "landcover", "land_cover", "lulc", "lc", "label", "labels",
                     "category", "cover", "type", "classe", "klasse", "clase", "code", "value", "name")
ID_FIELD_NAMES = ("fid", "id", "gid", "ogc_fid", "objectid", "object_id", "oid", "pk", "uid", "uuid", "rowid")


def _looks_like_an_id(name: str) -> bool:
    lowered = name.lower()
    return lowered in ID_FIELD_NAMES or lowered.endswith("_id") or lowered.endswith("_fid")


def class_field_candidates(layer: QgsVectorLayer) -> List[str]:
    """The layer's fields that could hold classes, best first.

    Never the feature id or a primary key, nor a field named like an identifier (``id``, ``osm_id``...);
    only integer, whole-number and text fields. Preferred: fields with between 2 and 254 distinct values,
    then a field named like a class field (class, landcover, label, type... in that order), then text
    fields (class names) before numbers, then the layer's field order.
    """
    fields = layer.fields()
    keys = set(layer.primaryKeyAttributes())
    scored = []
    for index in range(fields.count()):
        field = fields.at(index)
        name = field.name()
        if index in keys or _looks_like_an_id(name):
            continue
        if field.type() not in INTEGER_TYPES | REAL_TYPES | TEXT_TYPES:
            continue
        lowered = name.lower()
        named = next((rank for rank, known in enumerate(CLASS_FIELD_NAMES) if lowered == known or
                      lowered.startswith(known + "_") or lowered.endswith("_" + known)), len(CLASS_FIELD_NAMES))
        distinct = [v for v in layer.uniqueValues(index, 256) if v is not None and str(v).strip() != ""
                    and not (isinstance(v, QVariant) and v.isNull())]
        if field.type() in REAL_TYPES and any(float(v) != int(float(v)) for v in distinct):
            continue  # measurements (areas, lengths), not class values
        usable = 2 <= len(distinct) <= 254
        text = field.type() in TEXT_TYPES
        scored.append(((not usable, named, not text, index), name))
    return [name for _, name in sorted(scored)]


def guess_class_field(layer) -> str:
    """The best class field of a polygon layer (see :func:`class_field_candidates`), or "" when none."""
    if not isinstance(layer, QgsVectorLayer) or not layer.isValid():
        return ""
    candidates = class_field_candidates(layer)
    return candidates[0] if candidates else ""
