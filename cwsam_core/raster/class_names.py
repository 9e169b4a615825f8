"""The class names a class raster carries, wherever GIS tools put them: our band tags (``class_<value>``),
GDAL's category names and raster attribute table (in the ``.aux.xml`` beside a GeoTIFF), or the QGIS style
(``.qml``) beside it. Reading them lets two class rasters numbered differently be matched by name."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import rasterio

from ..common.card import ClassInfo, default_color

_TAG = re.compile(r"^class_(\d+)$", re.IGNORECASE)
# GDAL's raster attribute table field usages (GDALRATFieldUsage): the value columns and the name column.
_RAT_NAME, _RAT_MIN, _RAT_MINMAX = 2, 3, 5


def read_class_names(path: Path | str) -> Tuple[Dict[int, str], str]:
    """``(value -> class name, where they were found)`` for band 1 of the class raster at ``path``; ``({}, "")``
    when it names no classes. The first source that names any class wins, in the order of the module's doc."""
    path = Path(path)
    with rasterio.open(path) as dataset:
        tags = dataset.tags(1)
    names = {int(m.group(1)): str(text).strip() for key, text in tags.items()
             if (m := _TAG.match(key)) and str(text).strip()}
    if names:
        return names, "its band tags"
    aux = path.with_name(path.name + ".aux.xml")
    for reader, where in ((_category_names, "its category names"), (_attribute_table, "its raster attribute table")):
        names = reader(aux)
        if names:
            return names, f"{where} ({aux.name})"
    names = _qml_names(path.with_suffix(".qml"))
    if names:
        return names, f"its QGIS style ({path.with_suffix('.qml').name})"
    return {}, ""


def read_class_list(path: Path | str, values: Optional[Sequence[int]] = None) -> List[ClassInfo]:
    """The classes a class raster names (``values``: those only, the others named "class V"), coloured as
    its colour table colours them, else by the default palette; [] when it names none."""
    names, _ = read_class_names(path)
    if not names:
        return []
    with rasterio.open(path) as dataset:
        try:
            table = dataset.colormap(1)
        except ValueError:  # no colour table
            table = {}
    chosen = sorted(names) if values is None else sorted(set(values))
    classes = []
    for index, value in enumerate(chosen):
        rgba = table.get(value)
        colour = "#{:02x}{:02x}{:02x}".format(*rgba[:3]) if rgba else default_color(index)
        classes.append(ClassInfo(value, names.get(value, f"class {value}"), colour))
    return classes


def _band_one(aux: Path) -> Optional[ElementTree.Element]:
    if not aux.is_file():
        return None
    try:
        root = ElementTree.parse(aux).getroot()
    except ElementTree.ParseError:
        return None  # a sidecar GDAL would not read either: as if it named nothing
    for band in root.iter("PAMRasterBand"):
        if band.get("band", "1") == "1":
            return band
    return None


def _category_names(aux: Path) -> Dict[int, str]:
    """GDAL's convention: the category at position ``i`` names value ``i``; empty entries name nothing."""
    band = _band_one(aux)
    categories = band.find("CategoryNames") if band is not None else None
    if categories is None:
        return {}
    return {value: (item.text or "").strip() for value, item in enumerate(categories.findall("Category"))
            if (item.text or "").strip()}


def _attribute_table(aux: Path) -> Dict[int, str]:
    """A raster attribute table's name column, by its value column (else by row, GDAL's rule for tables
    without one)."""
    band = _band_one(aux)
    table = band.find("GDALRasterAttributeTable") if band is not None else None
    if table is None:
        return {}
    usages = [int(field.findtext("Usage", "0") or 0) for field in table.findall("FieldDefn")]
    columns = [(field.findtext("Name") or "").strip().lower() for field in table.findall("FieldDefn")]
    name_column = next((i for i, usage in enumerate(usages) if usage == _RAT_NAME), None)
    if name_column is None:
        name_column = next((i for i, column in enumerate(columns) if column in ("class", "name", "class_name")), None)
    if name_column is None:
        return {}
    value_column = next((i for i, usage in enumerate(usages) if usage in (_RAT_MINMAX, _RAT_MIN)), None)
    if value_column is None:
        value_column = next((i for i, column in enumerate(columns) if column == "value"), None)
    names: Dict[int, str] = {}
    for row in table.findall("Row"):
        cells = [(cell.text or "").strip() for cell in row.findall("F")]
        try:
            value = int(float(cells[value_column])) if value_column is not None else int(row.get("index", ""))
            name = cells[name_column]
        except (IndexError, ValueError):
            continue
        if name:
            names[value] = name
    return names


def _qml_names(qml: Path) -> Dict[int, str]:
    """A paletted renderer's entries, or the items of a classified colour ramp (pseudocolor)."""
    if not qml.is_file():
        return {}
    try:
        root = ElementTree.parse(qml).getroot()
    except ElementTree.ParseError:
        return {}
    names: Dict[int, str] = {}
    for entry in [*root.iter("paletteEntry"), *root.iter("item")]:
        try:
            value = float(entry.get("value", ""))
        except ValueError:
            continue
        label = (entry.get("label") or "").strip()
        if label and value == int(value):
            names.setdefault(int(value), label)
    return names
