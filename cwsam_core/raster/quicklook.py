"""A PNG quick-look of a classification: the SAR image, the classes, the reference, and a legend, side by side.

Rasters are decimated on read (rasterio ``out_shape``) to the panel size, so a quick-look of a large
scene costs a few reads of small arrays. Panels are laid out in pixels and filled exactly by their
image (no letterboxing), and class colours are drawn unblended (nearest neighbour): every pixel of a
class panel has the colour of a class (or the no-data grey). matplotlib is imported, with its Agg
canvas, only when a quick-look is drawn: the rest of the library never needs it, nor a display.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioIOError
from rasterio.vrt import WarpedVRT

from ..common.card import ClassInfo
from ..errors import QuicklookError, RadiometryError
from .output import hex_to_rgba
from .radiometry import convert_scale, detect_scale, match_bands, to_model_channels, valid_mask

NODATA_RGB = (0.85, 0.85, 0.85)  # light grey: pixels without a class (or not labelled in the reference)
DPI = 100
_MARGIN, _TITLE, _LEGEND_WIDTH, _ROW, _NOTE_ROW = 12, 28, 220, 22, 14  # pixels


@dataclass
class Quicklook:
    """What ``write_quicklook`` drew.

    Attributes:
      path (Path): The PNG.
      size (tuple(int, int)): (width, height) of the PNG in pixels.
      panels (dict(str, tuple(int, int, int, int))): Pixel box (left, top, right, bottom), half-open,
        of each image panel in the PNG: "sar", "classes" and, when given, "reference".
      sar_bands (list(str)): What the SAR panel shows, e.g. ["VV dB", "VH dB", "VV-VH dB"] for R, G, B.
    """

    path: Path
    size: Tuple[int, int]
    panels: Dict[str, Tuple[int, int, int, int]] = field(default_factory=dict)
    sar_bands: List[str] = field(default_factory=list)


def write_quicklook(
    image_path: Path | str,
    class_path: Path | str,
    png_path: Path | str,
    classes: Sequence[ClassInfo],
    reference_path: Optional[Path | str] = None,
    panel_size: int = 512,
    title: Optional[str] = None,
) -> Quicklook:
    """Draw the SAR image, the class raster (model colours), the reference if given and a legend into a PNG.

    The SAR panel is a false colour composite of two bands (R: co-pol, G: cross-pol, B: their ratio,
    all in dB; bands named VV and VH, else HH and HV, else the first two), the image in dB for one band,
    or the first three bands as they are; each channel stretched between its 2nd and 98th percentiles.
    The class and reference rasters are read onto the image's grid (nearest neighbour); values that
    no class names are drawn grey.

    Arguments:
      image_path: The SAR raster that was classified.
      class_path: The class raster (class values, e.g. written by ``classify_file``).
      png_path: The PNG to write; its folder must exist. Written to a temporary file, renamed at the end.
      classes: The classes: value, name and colour (the model card's).
      reference_path: Reference labels with the same class values, or None.
      panel_size: The longer side of each panel in pixels; rasters are decimated to about that size.
      title: A line above the panels, or None for none.

    Returns:
      (Quicklook): The PNG's path and size, and where each panel lies in it.
    """
    # Agg through its own canvas: no display, and pyplot's global backend (QGIS's) is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    png_path = Path(png_path)
    if not png_path.parent.is_dir():
        raise QuicklookError(f"quick-look folder does not exist: {png_path.parent}")
    if not classes:
        raise QuicklookError("no classes given: the quick-look needs the class values, names and colours")
    if panel_size < 16:
        raise QuicklookError(f"panel size must be at least 16 pixels, got {panel_size}")

    image = _open(image_path, "SAR image")
    with image:
        scale = panel_size / max(image.height, image.width)
        shape = (max(1, round(image.height * min(1.0, scale))), max(1, round(image.width * min(1.0, scale))))
        sar_rgb, sar_bands = _sar_rgb(image, shape)
        panels = [("sar", "SAR image", sar_rgb),
                  ("classes", "Classes (model)", _class_rgb(_read_on_grid(class_path, image, shape, "class raster"), classes))]
        if reference_path is not None:
            panels.append(("reference", "Reference",
                           _class_rgb(_read_on_grid(reference_path, image, shape, "reference raster"), classes)))

    # The legend column, drawn by hand in pixels so that its height is known: a row per class, then
    # what the SAR panel shows.
    sar_note = ("SAR: " + ", ".join(f"{c} {b}" for c, b in zip("RGB", sar_bands)) if len(sar_bands) == 3
                else f"SAR: {sar_bands[0]}") + ", each stretched 2-98 %"
    note_lines = textwrap.wrap(sar_note, width=(_LEGEND_WIDTH - 2 * _MARGIN) // 6)
    entries = [(c.color, f"{c.value}  {c.name}") for c in classes] + [(NODATA_RGB, "no class / no data")]
    legend_height = _ROW * (1 + len(entries)) + _MARGIN + _NOTE_ROW * len(note_lines)

    # Panels scaled to panel_size on their longer side, a title row above each.
    pw, ph = _panel_pixels(shape, panel_size)
    top = _MARGIN + (_TITLE if title else 0) + _TITLE
    width = _MARGIN + len(panels) * (pw + _MARGIN) + _LEGEND_WIDTH
    height = top + max(ph, legend_height) + _MARGIN
    # A hair over the size: Agg truncates width * dpi, and 2.3 * 100 is 229.99999999999997.
    figure = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI, facecolor="white")
    FigureCanvasAgg(figure)
    title_size = 9 if pw >= 160 else 7
    boxes: Dict[str, Tuple[int, int, int, int]] = {}
    for index, (name, label, rgb) in enumerate(panels):
        left = _MARGIN + index * (pw + _MARGIN)
        axes = figure.add_axes([left / width, 1 - (top + ph) / height, pw / width, ph / height])
        axes.imshow(rgb, interpolation="nearest", aspect="auto", resample=False)
        axes.set_axis_off()
        axes.set_title(label, fontsize=title_size)
        boxes[name] = (left, top, left + pw, top + ph)

    legend_left = _MARGIN + len(panels) * (pw + _MARGIN)
    legend = figure.add_axes([legend_left / width, 1 - (top + legend_height) / height,
                              _LEGEND_WIDTH / width, legend_height / height])
    legend.set_xlim(0, _LEGEND_WIDTH)
    legend.set_ylim(legend_height, 0)  # pixels, downwards
    legend.set_axis_off()
    legend.text(0, _ROW / 2, "Classes", fontsize=10, fontweight="bold", va="center")
    for row, (color, text) in enumerate(entries, start=1):
        y = row * _ROW
        legend.add_patch(Rectangle((0, y + 3), 24, _ROW - 6, facecolor=color, edgecolor="black", linewidth=0.5))
        legend.text(32, y + _ROW / 2, text, fontsize=9, va="center")
    for row, line in enumerate(note_lines):
        legend.text(0, _ROW * (1 + len(entries)) + _MARGIN + (row + 0.5) * _NOTE_ROW, line, fontsize=8,
                    va="center", color="#444444")
    if title:
        figure.text(_MARGIN / width, 1 - (_MARGIN + _TITLE / 2) / height, title, fontsize=11, va="center")

    temporary = png_path.with_name(f".{png_path.name}.partial")
    try:
        figure.savefig(temporary, dpi=DPI, format="png", facecolor="white")
        temporary.replace(png_path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return Quicklook(png_path, (width, height), boxes, sar_bands)


def _open(path: Path | str, what: str) -> rasterio.io.DatasetReader:
    if not Path(path).is_file():
        raise QuicklookError(f"{what} not found: {path}")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise QuicklookError(f"{path} is not a raster that GDAL can read ({exc})") from None


def _panel_pixels(shape: Tuple[int, int], panel_size: int) -> Tuple[int, int]:
    """(width, height) in PNG pixels of a panel showing an H x W array, its longer side ``panel_size``."""
    height, width = shape
    factor = panel_size / max(height, width)
    return max(1, round(width * factor)), max(1, round(height * factor))


def _stretch(channel: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """H x W values -> [0, 1] between the 2nd and 98th percentiles of the valid ones (robust to speckle)."""
    values = channel[valid]
    if values.size == 0:
        return np.zeros(channel.shape, dtype=np.float32)
    low, high = np.percentile(values, [2, 98])
    if not high > low:
        high = low + 1.0
    return np.clip((channel - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _sar_bands(descriptions: Sequence[Optional[str]]) -> List[int]:
    """1-based bands to show: a VV/VH or HH/HV pair named by the descriptions, else the first (up to) three."""
    for pair in (["VV", "VH"], ["HH", "HV"]):
        try:
            return match_bands(descriptions, pair)
        except RadiometryError:
            continue
    return list(range(1, min(3, len(descriptions)) + 1))


def _sar_rgb(image: rasterio.io.DatasetReader, shape: Tuple[int, int]) -> Tuple[np.ndarray, List[str]]:
    """H x W x 3 float RGB of the SAR image decimated to ``shape`` (pixel averages), and what each channel shows."""
    bands = _sar_bands(image.descriptions)
    raw = image.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average).astype(np.float64)
    valid = valid_mask(raw, image.nodata)
    raw[:, ~valid] = np.nan
    names = [image.descriptions[b - 1] or f"band {b}" for b in bands]
    if len(bands) == 3:
        channels, labels = raw, names  # e.g. a Pauli composite: shown as it is
    else:
        try:
            source = detect_scale(raw)
        except RadiometryError:
            source = "db"  # all nodata: the panel is grey either way
        db = convert_scale(raw, source, "db")
        valid &= np.isfinite(db).all(axis=0)
        if len(bands) == 1:
            channels, labels = np.repeat(db, 3, axis=0), [f"{names[0]} dB"]
        else:
            channels = to_model_channels(db, "db")
            labels = [f"{names[0]} dB", f"{names[1]} dB", f"{names[0]}-{names[1]} dB"]
    rgb = np.stack([_stretch(c, valid) for c in channels], axis=-1)
    rgb[~valid] = NODATA_RGB
    return rgb, labels


def _read_on_grid(path: Path | str, image: rasterio.io.DatasetReader, shape: Tuple[int, int], what: str) -> np.ndarray:
    """Band 1 of the raster at ``path`` on the image's grid decimated to ``shape`` (nearest), int64; -1 = nodata."""
    source = _open(path, what)
    with source:
        same_grid = source.crs == image.crs and source.transform == image.transform and source.shape == image.shape
        if same_grid or (source.crs is None and image.crs is None and source.shape == image.shape):
            values = source.read(1, out_shape=shape, resampling=Resampling.nearest, masked=True)
        elif source.crs is None or image.crs is None:
            raise QuicklookError(
                f"{Path(path).name} is not on the grid of the SAR image and one of them has no CRS: "
                "give both a CRS, or a raster of the image's size"
            )
        else:
            transform = image.transform * Affine.scale(image.width / shape[1], image.height / shape[0])
            # Without a nodata value, an alpha band marks what lies outside the source as masked.
            with WarpedVRT(source, crs=image.crs, transform=transform, width=shape[1], height=shape[0],
                           resampling=Resampling.nearest, add_alpha=source.nodata is None) as warped:
                values = warped.read(1, masked=True)
    out = np.asarray(values.filled(0), dtype=np.float64)
    out = np.where(np.ma.getmaskarray(values) | ~np.isfinite(out), -1, out)
    return out.astype(np.int64)


def _class_rgb(values: np.ndarray, classes: Sequence[ClassInfo]) -> np.ndarray:
    """H x W class values -> H x W x 3 uint8 colours of their classes; any other value grey."""
    rgb = np.empty((*values.shape, 3), dtype=np.uint8)
    rgb[:] = np.round(np.asarray(NODATA_RGB) * 255).astype(np.uint8)
    for c in classes:
        rgb[values == c.value] = hex_to_rgba(c.color)[:3]
    return rgb
