"""Writing the polygons: the classes a class raster names, their QGIS style, areas in m² and the GeoPackage.

Part of :mod:`cwsam_core.vector.vectorize` (its entry point and method): the classes come from the raster's
``.aux.xml`` category names and colour table, areas are planar in a projected CRS and on the
ellipsoid in a geographic one, features are appended to the GeoPackage in batches and its default
QGIS style is stored in its ``layer_styles`` table.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely
from affine import Affine

# Never torch: vectorising a map needs only rasterio, shapely and pyogrio (the card and the raster styling
# are torch-free), and works with the light install.
from ..common.card import ClassInfo, default_color
from ..raster.output import CLASS_NODATA, hex_to_rgba

with warnings.catch_warnings():
    # pyogrio imports Debian's pyproj when present, which warns about its own data directory; pyogrio
    # (its bundled GDAL and PROJ) never uses it here.
    warnings.simplefilter("ignore", UserWarning)
    from pyogrio.raw import write as write_vector

PathLike = Union[str, os.PathLike]

WRITE_BATCH = 20_000  # features per append to the GeoPackage
FIELDS = ["class", "class_name", "area_m2", "confidence"]
GEOMETRY_COLUMN = "geom"  # GDAL's GeoPackage default
_WGS84 = (6378137.0, 298.257223563)

# --- classes and style -------------------------------------------------------------------------


def category_names(path: PathLike) -> Dict[int, str]:
    """Category names of band 1 from a raster's GDAL ``.aux.xml`` (index = class value); empty names left out."""
    aux = Path(f"{os.fspath(path)}.aux.xml")
    if not aux.is_file():
        return {}
    try:
        root = ET.parse(aux).getroot()
    except (ET.ParseError, OSError):
        return {}
    for band in root.iter("PAMRasterBand"):
        if band.get("band", "1") != "1":
            continue
        names = band.find("CategoryNames")
        if names is None:
            return {}
        return {i: (c.text or "").strip() for i, c in enumerate(names.findall("Category")) if (c.text or "").strip()}
    return {}


def raster_classes(dataset, path: PathLike) -> Dict[int, ClassInfo]:
    """The classes a class raster names: category names (``.aux.xml``), else ``class_N`` tags (the
    simulated label rasters), with the colour table's colours; values without a name are "class N"."""
    names = category_names(path)
    if not names:
        tags = dataset.tags(1)
        names = {int(k[6:]): v for k, v in tags.items() if k.startswith("class_") and k[6:].isdigit() and v}
    table = colour_table(dataset)
    classes = {}
    for index, value in enumerate(sorted(v for v in names if v != CLASS_NODATA)):
        classes[value] = ClassInfo(value, names[value], _table_colour(table, value) or default_color(index))
    return classes


def colour_table(dataset) -> Dict[int, tuple]:
    try:
        return dataset.colormap(1)
    except ValueError:
        return {}


def _table_colour(table: Dict[int, tuple], value: int) -> Optional[str]:
    """A value's colour in a GDAL colour table, or None (absent, or the black GDAL pads tables with)."""
    colour = table.get(value)
    if not colour or tuple(colour[:3]) == (0, 0, 0):
        return None
    return "#%02x%02x%02x" % tuple(colour[:3])


def class_info(classes: Dict[int, ClassInfo], value: int, table: Optional[Dict[int, tuple]] = None) -> ClassInfo:
    """The class of ``value``; a value the classes do not name becomes "class N", in its colour-table colour."""
    if value not in classes:
        classes[value] = ClassInfo(value, f"class {value}",
                                   _table_colour(table or {}, value) or default_color(len(classes)))
    return classes[value]


def polygon_style_qml(classes: Sequence[ClassInfo], attribute: str = "class") -> str:
    """A QGIS style (.qml) categorizing polygons by ``attribute`` with each class's colour and name."""
    categories = "\n".join(
        f'      <category value="{c.value}" symbol="{i}" label={quoteattr(c.name)} render="true"/>'
        for i, c in enumerate(classes))
    symbols = "\n".join(_fill_symbol(str(i), c.color) for i, c in enumerate(classes))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(attribute)} symbollevels="0" '
        'enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{categories}\n    </categories>\n"
        f"    <symbols>\n{symbols}\n    </symbols>\n"
        "  </renderer-v2>\n"
        "</qgis>\n"
    )


def _fill_symbol(name: str, colour: str) -> str:
    r, g, b, _ = hex_to_rgba(colour)
    outline = "%d,%d,%d,255" % tuple(int(v * 0.6) for v in (r, g, b))
    props = {"color": f"{r},{g},{b},255", "style": "solid", "outline_color": outline, "outline_style": "solid",
             "outline_width": "0.2", "outline_width_unit": "MM", "joinstyle": "bevel"}
    options = "\n".join(f'            <Option name="{k}" value="{v}" type="QString"/>' for k, v in props.items())
    return (
        f'      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleFill" enabled="1" locked="0" pass="0">\n'
        '          <Option type="Map">\n'
        f"{options}\n"
        "          </Option>\n"
        "        </layer>\n"
        "      </symbol>"
    )


# --- grid metrics ------------------------------------------------------------------------------


def _ellipsoid(crs) -> Tuple[float, float]:
    """Semi-major axis (m) and eccentricity of a CRS's ellipsoid, from its WKT; WGS 84 if not found."""
    match = re.search(r'(?:SPHEROID|ELLIPSOID)\["[^"]*",\s*([0-9.eE+-]+),\s*([0-9.eE+-]+)', crs.to_wkt())
    a, inverse_flattening = (float(match.group(1)), float(match.group(2))) if match else _WGS84
    flattening = 1.0 / inverse_flattening if inverse_flattening else 0.0
    return a, math.sqrt(max(flattening * (2.0 - flattening), 0.0))


class Metric:
    """Areas and lengths of the raster's grid in metres: planar for projected CRSs, on the ellipsoid
    for geographic ones; ``unit`` is "pixels" for a raster without CRS (no metric areas)."""

    def __init__(self, crs, transform: Affine, height: int) -> None:
        self.crs = crs
        cell = abs(transform.a * transform.e - transform.b * transform.d)
        self.geographic = bool(crs is not None and crs.is_geographic)
        self.centre_latitude: Optional[float] = None
        if crs is None:
            self.unit, self.pixel_area = "pixels", 1.0
        elif self.geographic:
            self.unit = "m2"
            self.radians = crs.units_factor[1] if crs.units_factor and crs.units_factor[1] else math.pi / 180
            self.a, self.e = _ellipsoid(crs)
            row, col = height / 2.0, 0.0
            latitude = (transform * (col, row))[1] * self.radians
            self.centre_latitude = math.degrees(latitude)
            s = math.sin(latitude)
            density = self.a ** 2 * (1 - self.e ** 2) * math.cos(latitude) / (1 - self.e ** 2 * s * s) ** 2
            self.pixel_area = cell * self.radians ** 2 * density
        else:
            self.unit = "m2"
            self.factor = crs.linear_units_factor[1]
            self.pixel_area = cell * self.factor ** 2

    def areas(self, geometries: np.ndarray) -> np.ndarray:
        """Areas in m² of polygons in the raster's CRS (NaN without CRS)."""
        if self.unit != "m2":
            return np.full(len(geometries), np.nan)
        if not self.geographic:
            return shapely.area(geometries) * self.factor ** 2
        return shapely.area(shapely.transform(geometries, self._equal_area))

    def _equal_area(self, xy: np.ndarray) -> np.ndarray:
        """Lambert's cylindrical equal-area projection on the ellipsoid: x = a lon, y = a q(lat) / 2."""
        lon, lat = xy[:, 0] * self.radians, np.clip(xy[:, 1] * self.radians, -np.pi / 2, np.pi / 2)
        s, e = np.sin(lat), self.e
        if e < 1e-12:
            q = 2.0 * s
        else:
            q = (1 - e * e) * (s / (1 - e * e * s * s) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))
        return np.column_stack([self.a * lon, self.a * q / 2.0])


# --- the GeoPackage ------------------------------------------------------------------------------


class Writer:
    """Features appended to a GeoPackage layer (pyogrio) in batches; areas computed per batch.
    Geometries come valid, in pixel coordinates (column, row), and are written in the raster's CRS."""

    def __init__(self, path: Path, layer: str, crs, transform: Affine, metric: Metric,
                 classes: Dict[int, ClassInfo], table: Dict[int, tuple]) -> None:
        self.path, self.layer, self.metric, self.classes = path, layer, metric, classes
        self.table = table  # the raster's colour table: colours of values the classes do not name
        self.crs = crs.to_wkt() if crs is not None else None
        self.matrix = np.array([[transform.a, transform.d], [transform.b, transform.e]])
        self.offset = np.array([transform.c, transform.f])
        self.cell = abs(transform.a * transform.e - transform.b * transform.d) or 1.0
        self.geometries: list = []
        self.values: list = []
        self.confidence: list = []
        self.created = False
        self.per_class: Dict[int, int] = {}
        self.areas: Dict[int, float] = {}

    def add(self, value: int, geometry: shapely.Geometry, confidence: float) -> None:
        """One region: its class value, its geometry in pixel coordinates and its mean confidence."""
        geometry = shapely.transform(geometry, lambda xy: xy @ self.matrix + self.offset)
        self.geometries.append(geometry)
        self.values.append(value)
        self.confidence.append(confidence)
        if len(self.geometries) >= WRITE_BATCH:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Append the buffered features; with ``final``, create the layer even if it has none."""
        if not self.geometries and (self.created or not final):
            return
        geometries = np.array(self.geometries, dtype=object)
        values = np.array(self.values, dtype=np.int32)
        areas = self.metric.areas(geometries) if len(geometries) else np.zeros(0)
        counted = areas if self.metric.unit == "m2" else shapely.area(geometries) / self.cell if len(geometries) \
            else np.zeros(0)
        names = np.array([class_info(self.classes, int(v), self.table).name for v in values], dtype=object)
        for value, area in zip(values.tolist(), counted.tolist()):
            self.per_class[value] = self.per_class.get(value, 0) + 1
            self.areas[value] = self.areas.get(value, 0.0) + area
        fields = [values, names, areas.astype(np.float64), np.array(self.confidence, dtype=np.float64)]
        wkb = np.array(shapely.to_wkb(geometries), dtype=object) if len(geometries) else np.zeros(0, dtype=object)
        write_vector(self.path, wkb, fields, FIELDS, layer=self.layer, driver="GPKG", geometry_type="MultiPolygon",
                     promote_to_multi=True, crs=self.crs, append=self.created,
                     # GeoPackage 1.2: what QGIS's GDAL (3.4 and later) reads without a warning.
                     dataset_options=None if self.created else {"VERSION": "1.2"})
        self.created = True
        self.geometries, self.values, self.confidence = [], [], []

    def write_style(self, classes: Sequence[ClassInfo]) -> None:
        """The layer's default QGIS style in the GeoPackage's layer_styles table (QGIS applies it on load)."""
        qml = polygon_style_qml(classes)
        row = {"f_table_catalog": "", "f_table_schema": "", "f_table_name": self.layer,
               "f_geometry_column": GEOMETRY_COLUMN, "styleName": self.layer, "styleQML": qml, "styleSLD": "",
               "useAsDefault": True, "description": "CWSAM classes: colours and names of the model's classes",
               "owner": "", "ui": ""}
        fields = [np.array([v], dtype=bool if isinstance(v, bool) else object) for v in row.values()]
        fields.append(np.array([np.datetime64(int(time.time() * 1000), "ms")]))
        write_vector(self.path, None, fields, list(row) + ["update_time"], layer="layer_styles", driver="GPKG",
                     geometry_type=None, append=True)

