"""Training data on the image grid: label rasters read per window, spatially separated splits, windows.

torchgeo-style: geospatial windows are read on demand, never whole rasters; the label is always
read onto the image's grid (any CRS, resolution or extent), nearest-neighbour, so class values stay
class values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from ..common.card import ClassInfo
from ..common.classes import ClassMatch, match_classes_by_name
from ..common.labels import IGNORE_INDEX, LabelStats
from ..errors import TrainingDataError
from ..raster.class_names import read_class_names
from ..raster.windows import clip_window


def value_lookup(classes: Sequence[ClassInfo], ignore_values: Sequence[int] = (),
                 renumber: Optional[Dict[int, int]] = None) -> np.ndarray:
    """A 65536-entry table mapping label values (0..65535) to class indexes, ``IGNORE_INDEX`` elsewhere.

    Values named in ``classes`` map to their position; ``ignore_values`` and every value not named
    are ignored (users label sparsely, and a class list may leave values out on purpose). With ``renumber``
    (label value -> class value, from matching class names), only the label values it holds count.
    """
    table = np.full(65536, IGNORE_INDEX, dtype=np.int64)
    for index, c in enumerate(classes):
        if c.value in ignore_values and renumber is None:
            raise TrainingDataError(f"class value {c.value} ({c.name}) is also listed as an ignore value")
        table[c.value] = index
    if renumber is None:
        return table
    renumbered = np.full(65536, IGNORE_INDEX, dtype=np.int64)
    for value, class_value in renumber.items():
        if 0 <= value <= 65535 and value not in ignore_values:
            renumbered[value] = table[class_value]
    return renumbered


def label_classes_match(labels_path: Path | str, classes: Sequence[ClassInfo],
                        ignore_values: Sequence[int] = ()) -> ClassMatch:
    """How a label raster's values meet ``classes``, by the class names it carries (see
    ``match_classes_by_name``: renumbered, refused, or taken by number when it carries none)."""
    names, where = read_class_names(labels_path)
    what = Path(labels_path).name + (f" ({where})" if where else "")
    return match_classes_by_name(classes, names, what, ignore_values)


@dataclass
class TrainingSource:
    """One labelled image: an image raster with either a label raster of class values (any grid) or a
    polygon file (GeoPackage, Shapefile, GeoJSON; any CRS) whose ``class_field`` holds the classes."""

    image: Path
    labels: Optional[Path] = None
    polygons: Optional[Path] = None
    class_field: Optional[str] = None
    layer: Optional[str] = None  # layer of a multi-layer polygon file
    # Label value -> class value, where the label raster's class names were matched with a parent's by name.
    renumber: Optional[Dict[int, int]] = None

    @property
    def label_path(self) -> Path:
        return Path(self.labels if self.labels is not None else self.polygons)


def open_raster(path: Path, what: str) -> rasterio.io.DatasetReader:
    """Open a training raster, or a ``TrainingDataError`` saying it is missing or unreadable."""
    if not path.is_file():
        raise TrainingDataError(f"{what} not found: {path}")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise TrainingDataError(f"{path} is not a raster that GDAL can read ({exc})") from None


def _footprints_meet(labels: rasterio.io.DatasetReader, image: rasterio.io.DatasetReader) -> bool:
    """Whether the label raster's extent, in the image's CRS, meets the image's (True where either has no CRS:
    then they share a pixel grid)."""
    if labels.crs is None or image.crs is None:
        return True
    left, bottom, right, top = transform_bounds(labels.crs, image.crs, *labels.bounds)
    box = image.bounds
    return left < box.right and right > box.left and bottom < box.top and top > box.bottom


def nothing_labelled(labels: "RasterLabels", stats: LabelStats, classes: Sequence[ClassInfo]) -> Optional[str]:
    """Why ``labels`` give no pixel to train on or to score (they miss the image, hold only nodata, or only
    values no class names), or None when they hold some."""
    if stats.class_pixels.any():
        return None
    name = labels.path.name
    if not labels.overlaps_image:
        return f"{name} does not overlap {labels.image_name} (their extents do not meet): give labels of that image"
    if stats.unnamed:
        found = ", ".join(str(v) for v in sorted(stats.unnamed)[:10])
        named = ", ".join(f"{c.value}:{c.name}" for c in classes)
        return f"{name}: none of its values is one of the classes (values found: {found}; the classes: {named})"
    return f"{name}: no labelled pixel on the grid of {labels.image_name} (every pixel is nodata or ignored)"


class RasterLabels:
    """A label raster of class values, read onto an image's grid window by window."""

    def __init__(self, path: Path | str, image: rasterio.io.DatasetReader, classes: Sequence[ClassInfo],
                 ignore_values: Sequence[int] = (), renumber: Optional[Dict[int, int]] = None) -> None:
        self.path = Path(path)
        self._source = open_raster(self.path, "label raster")
        self.lookup = value_lookup(classes, ignore_values, renumber)
        self.num_classes = len(classes)
        self.ignore_values = set(int(v) for v in ignore_values)
        self.nodata = self._source.nodata
        self.image_name = Path(str(image.name)).name
        self.overlaps_image = _footprints_meet(self._source, image)
        same_grid = (self._source.crs == image.crs and self._source.transform == image.transform
                     and self._source.shape == image.shape)
        if same_grid or (self._source.crs is None and image.crs is None and self._source.shape == image.shape):
            self._reader = self._source
        else:
            if self._source.crs is None or image.crs is None:
                raise TrainingDataError(
                    f"{self.path.name} and the image are on different grids and one has no CRS: "
                    "give both a CRS, or a label raster of the image's size"
                )
            self._reader = WarpedVRT(self._source, crs=image.crs, transform=image.transform, width=image.width,
                                     height=image.height, resampling=Resampling.nearest,
                                     nodata=self.nodata if self.nodata is not None else 65535)
            self.nodata = self._reader.nodata

    def read(self, window: Window) -> np.ndarray:
        """h x w int64 class indexes for an image window, ``IGNORE_INDEX`` where unlabelled or outside."""
        shape, part = clip_window(window, self._reader.height, self._reader.width)
        labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
        if part is not None:
            labels[part.rows, part.cols] = self._map(self._reader.read(1, window=part.inside))
        return labels

    def _map(self, values: np.ndarray) -> np.ndarray:
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values) | (values < 0) | (values > 65535) | (values != np.round(values))
            values = np.where(bad, 65535, values)
        elif values.dtype.kind == "i" and values.min(initial=0) < 0:
            values = np.where(values < 0, 65535, values)
        values = values.astype(np.int64)
        labels = self.lookup[np.clip(values, 0, 65535)]
        if self.nodata is not None:
            labels[values == int(self.nodata)] = IGNORE_INDEX
        return labels

    def stats(self, block: int = 1024) -> LabelStats:
        """Counts over the whole label (read block by block, on the image grid)."""
        num_classes = self.num_classes
        class_pixels = np.zeros(num_classes, dtype=np.int64)
        unnamed: Dict[int, int] = {}
        for row in range(0, self._reader.height, block):
            for col in range(0, self._reader.width, block):
                window = Window(col, row, min(block, self._reader.width - col), min(block, self._reader.height - row))
                raw = self._reader.read(1, window=window).astype(np.int64)
                labels = self._map(raw)
                class_pixels += np.bincount(labels[labels != IGNORE_INDEX], minlength=num_classes)
                ignored = raw[(labels == IGNORE_INDEX)]
                if self.nodata is not None:
                    ignored = ignored[ignored != int(self.nodata)]
                for value, count in zip(*np.unique(ignored, return_counts=True)):
                    if int(value) not in self.ignore_values:  # ignored on purpose: nothing to report
                        unnamed[int(value)] = unnamed.get(int(value), 0) + int(count)
        return LabelStats(class_pixels, unnamed)

    def close(self) -> None:
        if self._reader is not self._source:
            self._reader.close()
        self._source.close()


def block_split(height: int, width: int, block: int, val_fraction: float,
                seed: int = 0) -> Tuple[List[Window], List[Window]]:
    """Split the image into square blocks, a random ``val_fraction`` of them for validation.

    Training windows are later drawn inside training blocks only, so no validation pixel is ever seen
    in training (spatial separation, unlike random pixels or overlapping windows).
    """
    if not 0 <= val_fraction < 1:
        raise TrainingDataError(f"validation fraction must lie in [0, 1), got {val_fraction}")
    blocks = [Window(col, row, min(block, width - col), min(block, height - row))
              for row in range(0, height, block) for col in range(0, width, block)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks))
    n_val = max(1, int(round(len(blocks) * val_fraction))) if val_fraction > 0 else 0
    if val_fraction > 0 and n_val >= len(blocks):
        raise TrainingDataError(
            f"the image ({width} x {height} px) has only {len(blocks)} block(s) of {block} px: too small to hold out "
            "a validation part; use a smaller tile size or validation fraction 0"
        )
    validation = [blocks[i] for i in sorted(order[:n_val])]
    training = [blocks[i] for i in sorted(order[n_val:])]
    return training, validation


def random_window(block: Window, size: int, rng: np.random.Generator, height: Optional[int] = None,
                  width: Optional[int] = None) -> Window:
    """A size x size window at a random position inside ``block``.

    A block smaller than the window: a random window covering the block, inside the image of
    ``height`` x ``width`` where it is large enough (without the image size: at the block's corner).
    """
    def offset(start: int, length: int, limit: Optional[int]) -> int:
        if length >= size:
            return start + int(rng.integers(0, length - size + 1))
        if limit is None:
            return start
        low, high = start + length - size, start
        if limit >= size:
            low, high = max(low, 0), min(high, limit - size)
        else:
            low = high = 0
        return int(rng.integers(low, high + 1))

    row = offset(int(block.row_off), int(block.height), height)
    col = offset(int(block.col_off), int(block.width), width)
    return Window(col, row, size, size)


def label_values(path: Path | str, ignore_values: Sequence[int] = (), block: int = 2048) -> List[int]:
    """The distinct label values of a raster (nodata and ``ignore_values`` left out), read block by block."""
    found: set = set()
    with rasterio.open(path) as src:
        for row in range(0, src.height, block):
            for col in range(0, src.width, block):
                window = Window(col, row, min(block, src.width - col), min(block, src.height - row))
                found.update(int(v) for v in np.unique(src.read(1, window=window)))
        if src.nodata is not None:
            found.discard(int(src.nodata))
    return sorted(found - set(ignore_values))


def read_pairs(csv_path: Path | str) -> List[Tuple[Path, Path]]:
    """(image, label) paths from a CSV with columns ``image,label``; relative paths are relative to the CSV."""
    import csv

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise TrainingDataError(f"pairs file not found: {csv_path}")
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image", "label"} <= set(reader.fieldnames):
            raise TrainingDataError(f"{csv_path} needs the columns image,label (found: {reader.fieldnames})")
        pairs = [((csv_path.parent / r["image"].strip()), (csv_path.parent / r["label"].strip())) for r in reader]
    if not pairs:
        raise TrainingDataError(f"{csv_path} lists no image/label pairs")
    for image, label in pairs:
        for path in (image, label):
            if not path.is_file():
                raise TrainingDataError(f"{csv_path}: file not found: {path}")
    return pairs
