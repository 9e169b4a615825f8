"""Pixel windows that may reach past a raster's edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from rasterio.windows import Window


@dataclass(frozen=True)
class ClippedWindow:
    """The part of a requested window that lies inside the raster, and where it goes in the output."""

    shape: Tuple[int, int]  # (height, width) of the requested window
    inside: Window  # what to read from the raster
    rows: slice  # where the read data goes in an array of ``shape``
    cols: slice

    @property
    def whole(self) -> bool:
        """True when the requested window lies entirely inside the raster."""
        return (self.rows.stop - self.rows.start, self.cols.stop - self.cols.start) == self.shape


def clip_window(window: Window, raster_height: int, raster_width: int) -> Tuple[Tuple[int, int], Optional[ClippedWindow]]:
    """Round ``window`` to whole pixels and clip it to the raster.

    Returns the requested (height, width) and the clipped part, or None when nothing of the window
    lies inside the raster.
    """
    row, col = int(round(window.row_off)), int(round(window.col_off))
    height, width = int(round(window.height)), int(round(window.width))
    top, left = max(row, 0), max(col, 0)
    bottom, right = min(row + height, raster_height), min(col + width, raster_width)
    if bottom <= top or right <= left:
        return (height, width), None
    return (height, width), ClippedWindow(
        (height, width), Window(left, top, right - left, bottom - top),
        slice(top - row, bottom - row), slice(left - col, right - col),
    )
