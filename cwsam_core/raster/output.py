"""Styled class rasters: colour table, category names, QGIS style sidecar, atomic publication."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, List, Sequence
from xml.sax.saxutils import quoteattr

from ..common.card import ClassInfo

CLASS_NODATA = 255


def hex_to_rgba(color: str) -> tuple[int, int, int, int]:
    value = color.lstrip("#")
    if len(value) != 6:
        raise ValueError(f"colour must look like #rrggbb, got {color!r}")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16), 255


def colormap(classes: Sequence[ClassInfo]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table entries for the class values; the nodata value is transparent."""
    table = {c.value: hex_to_rgba(c.color) for c in classes}
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


def qml_text(classes: Sequence[ClassInfo]) -> str:
    """A QGIS style (.qml) with a paletted renderer of the classes; QGIS loads it with the raster."""
    entries = "\n".join(
        f"        <paletteEntry value=\"{c.value}\" color={quoteattr(c.color)} label={quoteattr(c.name)} alpha=\"255\"/>"
        for c in classes
    )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        "      <colorPalette>\n"
        f"{entries}\n"
        "      </colorPalette>\n"
        "    </rasterrenderer>\n"
        "  </pipe>\n"
        "</qgis>\n"
    )


def category_names_aux_xml(classes: Sequence[ClassInfo]) -> str:
    """GDAL PAM sidecar (.aux.xml) with category names indexed by class value (GDAL's convention)."""
    names: List[str] = [""] * (max(c.value for c in classes) + 1)
    for c in classes:
        names[c.value] = c.name
    categories = "\n".join(f"      <Category>{_escape(n)}</Category>" for n in names)
    return (
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        "    <CategoryNames>\n"
        f"{categories}\n"
        "    </CategoryNames>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n"
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def sidecars(path: Path) -> dict[str, Path]:
    """The files that travel with a class raster at ``path``."""
    return {
        "aux": path.with_name(path.name + ".aux.xml"),
        "qml": path.with_suffix(".qml"),
    }


def publish(pairs: Iterable[tuple[Path, Path]]) -> None:
    """Rename finished temporary files onto their targets (each rename is atomic)."""
    for temporary, target in pairs:
        os.replace(temporary, target)


def remove_quietly(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            Path(path).unlink()
        except FileNotFoundError:
            pass
