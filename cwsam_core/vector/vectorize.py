"""Polygons from a class raster: one feature per connected region, styled with the classes' colours.

:func:`vectorize_file` turns a class raster written by the engine (uint8, nodata 255, class names
in its ``.aux.xml`` category names and colours in its colour table) into a GeoPackage polygon layer
with, per feature, the class value and name, the area in m² and the mean confidence in percent.

How it works, and why it holds for any raster height:

* **Blocks of rows.** The raster is read a block of rows at a time (at most ``MAX_BLOCK_ROWS``, fewer
  for wide rasters so a block holds about ``BLOCK_PIXELS`` pixels, ``SIMPLIFY_BLOCK_PIXELS`` when
  simplifying). Regions are labelled with a vectorised union-find over runs of pixels and
  polygonised with GDAL (4-connected, in pixel coordinates, so every vertex is an exact integer).
  Pieces of a region cut by a block edge are joined through the pixels on either side of the edge:
  a piece that reaches the open bottom edge stays pending (as compact integer arrays), is linked
  with the pieces of the same class that continue it in the next block, and its region is
  dissolved and written as soon as none of its pieces reaches the current bottom edge. The dissolve
  cancels the stretches of block edge two pieces share and follows the rest of their outlines into
  rings (:func:`_merge_outlines`), so even a region spanning the whole map (a class matrix with
  thousands of islands) costs a few arrays of its vertices, not a general overlay. Memory follows
  the block and the regions still open, not the raster's height (bench/bench_vectorize.py).
* **Minimum mapping unit** (``min_area``, m²). A region smaller than it is merged into the
  neighbouring region it shares the longest boundary with (ties: the larger one), smallest regions
  first, before polygonising; a region whose neighbours are all nodata stays. Regions are found by
  the same blocks in a first pass (region sizes, adjacency and boundary lengths kept per region,
  never per pixel), so the result does not depend on the block size. The pixel count of the unit
  is ``min_area`` over the pixel area; in a geographic CRS that area is taken at the raster's centre
  latitude (on the CRS's ellipsoid), which the result's notes say.
* **Simplification** (``simplify``, metres, converted to pixels with the pixel size, at the centre
  latitude in a geographic CRS). Boundaries are simplified as a coverage, so neighbours keep
  sharing their boundary exactly: the block's boundaries are noded into arcs (between junctions
  where three or more regions, nodata or the raster's edge meet), every arc is simplified once
  (Douglas-Peucker, in a canonical direction) and both regions on its sides are rebuilt from the same
  simplified arc. A shortcut is only taken when the area between it and the part of the arc it
  replaces holds no vertex of any other arc or of the arc itself (Saalfeld's condition), which
  keeps arcs from crossing each other and islands on their side; arcs still found to touch another
  one are kept unsimplified. Arcs are also cut at every ``ANCHOR_ROWS``-th row line, which fixes the
  points where boundaries cross block edges: the result is the same whatever the block size (a
  multiple of ``ANCHOR_ROWS``). shapely 2.0 has no coverage simplification (``coverage_simplify`` is
  2.1), hence this.
* **Areas** are those of the written polygons: planar in a projected CRS (times the linear unit
  squared), and on the CRS's ellipsoid in a geographic CRS (an exact equal-area cylindrical
  projection: pixel edges along meridians and parallels keep their exact ellipsoidal area).
* **Validity**: every polygon is checked; an invalid one is repaired (``make_valid``, polygons kept)
  and written only if the repair is valid. The layer keeps the raster's CRS.
* **Atomic**: the GeoPackage is written to a temporary file beside the output and renamed at the
  end; after an error or a cancel nothing is left. Its default style (categorized by class with the
  classes' colours and names) is stored in the GeoPackage's ``layer_styles`` table, which QGIS
  applies when the layer is loaded; no ``.qml`` is written beside it, since ``classes.qml`` is the
  class raster's own style when the GeoPackage is named after the raster.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import re
import time
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.features import shapes
from rasterio.windows import Window

# Never torch: vectorising a map needs only rasterio, shapely and pyogrio (the card and the raster styling
# are torch-free), and works with the light install.
from ..common.card import ClassInfo, default_color
from ..common.paths import check_outputs, output_file_problem, raster_input_files
from ..errors import OutputConflictError, VectorizeCancelled, VectorizeError
from ..raster.output import CLASS_NODATA, hex_to_rgba

with warnings.catch_warnings():
    # pyogrio imports Debian's pyproj when present, which warns about its own data directory; pyogrio
    # (its bundled GDAL and PROJ) never uses it here.
    warnings.simplefilter("ignore", UserWarning)
    import pyogrio
    import pyogrio.errors
    from pyogrio.raw import write as write_vector

LOG = logging.getLogger("cwsam")
ProgressCallback = Callable[[float, str], None]
PathLike = Union[str, os.PathLike]

MAX_BLOCK_ROWS = 2048
BLOCK_PIXELS = 8 * 2**20  # pixels per block of rows (fewer rows for wide rasters)
SIMPLIFY_BLOCK_PIXELS = 2 * 2**20  # simplifying holds the block's noded boundaries: smaller blocks
ANCHOR_ROWS = 64  # arcs are cut on these row lines when simplifying; block sizes are multiples of it
WRITE_BATCH = 20_000  # features per append to the GeoPackage
GDAL_CACHE_BYTES = 16 * 2**20  # each tile is read once, in order: a small cache is enough
FIELDS = ["class", "class_name", "area_m2", "confidence"]
GEOMETRY_COLUMN = "geom"  # GDAL's GeoPackage default
_WGS84 = (6378137.0, 298.257223563)


@dataclass
class VectorizeResult:
    output: Path
    layer: str
    polygons: int
    polygons_per_class: Dict[int, int]
    areas: Dict[int, float]  # per class value, in area_unit
    area_unit: str  # "m2", or "pixels" for a raster without CRS (its polygons then have no area_m2)
    class_names: Dict[int, str]
    seconds: float
    min_area: float
    min_area_pixels: int
    simplify: float
    merged_regions: int = 0  # regions under the minimum area merged into a neighbour
    warnings: List[str] = field(default_factory=list)


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


def _class_info(classes: Dict[int, ClassInfo], value: int, table: Optional[Dict[int, tuple]] = None) -> ClassInfo:
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


class _Metric:
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


# --- polygonising a block ----------------------------------------------------------------------


def _block_rows(width: int, requested: Optional[int], pixels: int = BLOCK_PIXELS) -> int:
    if requested is not None:
        if requested <= 0 or requested % ANCHOR_ROWS:
            raise VectorizeError(f"block rows must be a positive multiple of {ANCHOR_ROWS}, got {requested}")
        return requested
    rows = (pixels // max(width, 1)) // ANCHOR_ROWS * ANCHOR_ROWS
    return int(min(MAX_BLOCK_ROWS, max(ANCHOR_ROWS, rows)))


def _connected(block: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """4-connected regions of one value in a block (nodata included): the label of every pixel
    (0..n-1, numbered in row-major order of their first pixel), each region's value and the flat
    index of its first pixel. Runs of equal values along rows are joined where they overlap the
    run above; everything is vectorised."""
    height, width = block.shape
    change = np.ones(block.shape, dtype=bool)
    change[:, 1:] = block[:, 1:] != block[:, :-1]
    rows, starts = np.nonzero(change)
    ends = np.empty_like(starts)
    ends[:-1] = np.where(rows[1:] == rows[:-1], starts[1:], width)
    ends[-1] = width
    values = block[rows, starts].astype(np.int64)
    stride = width + 1
    start_keys, end_keys = rows * stride + starts, rows * stride + ends
    below = np.flatnonzero(rows > 0)  # runs with a row above: which runs there overlap them
    above_row = (rows[below] - 1) * stride
    low = np.searchsorted(end_keys, above_row + starts[below], side="right")
    high = np.searchsorted(start_keys, above_row + ends[below], side="left")
    counts = np.maximum(high - low, 0)
    lower = np.repeat(below, counts)
    upper = np.repeat(low, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    same = values[lower] == values[upper]
    run_region = _components(len(starts), upper[same], lower[same])
    firsts, run_label = np.unique(run_region, return_inverse=True)  # the smallest run comes first
    labels = np.repeat(run_label.astype(np.int32), ends - starts).reshape(height, width)
    return labels, values[firsts], rows[firsts] * width + starts[firsts]


def _pieces(block: np.ndarray, row0: int, first_pixels: np.ndarray) -> np.ndarray:
    """The regions of :func:`_connected` as polygons in pixel coordinates (x = column, y = row of the
    whole raster), polygonised by GDAL and put in the regions' order."""
    coordinates, ring_sizes, ring_polygon = [], [], []
    for number, (geometry, _) in enumerate(shapes(block, connectivity=4, transform=Affine(1, 0, 0, 0, 1, row0))):
        for ring in geometry["coordinates"]:  # to arrays at once: no Python floats for the whole block
            coordinates.append(np.fromiter(chain.from_iterable(ring), dtype=np.float64, count=2 * len(ring)))
            ring_sizes.append(len(ring))
            ring_polygon.append(number)
    flat = np.concatenate(coordinates).reshape(-1, 2)
    del coordinates
    rings = shapely.linearrings(flat, indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes))
    polygons = shapely.polygons(rings, indices=np.array(ring_polygon))
    width = block.shape[1]
    probes = shapely.points(np.column_stack([first_pixels % width + 0.5, first_pixels // width + row0 + 0.5]))
    # Polygons query a tree of the points: each polygon is prepared once (fast on long boundaries).
    piece, region = shapely.STRtree(probes).query(polygons, predicate="contains")
    if len(region) != len(first_pixels) or len(polygons) != len(first_pixels):
        raise RuntimeError(f"rows from {row0}: GDAL's polygons do not match the block's regions")
    ordered = np.empty(len(first_pixels), dtype=object)
    ordered[region] = polygons[piece]
    return ordered


def _read_block(dataset, row0: int, rows: int, nodata: Optional[float]) -> np.ndarray:
    block = dataset.read(1, window=Window(0, row0, dataset.width, rows))
    if nodata is not None and 0 <= nodata <= 255 and nodata != CLASS_NODATA:
        block[block == int(nodata)] = CLASS_NODATA
    return block


def _components(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of ``count`` nodes joined by the edges (a, b): for each node, the smallest
    node of its component. Vectorised union-find: roots hook onto smaller roots, then paths are
    compressed, until no edge joins two roots."""
    parent = np.arange(count, dtype=np.int64)
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    while len(a):
        ra, rb = parent[a], parent[b]
        joined = ra != rb
        if not joined.any():
            break
        a, b, ra, rb = a[joined], b[joined], ra[joined], rb[joined]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique pairs of pieces sharing pixel edges in a label block, with the edge count: rows (a, b, n)."""
    keys = []
    for first, second in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        differ = first != second
        a, b = first[differ].astype(np.int64), second[differ].astype(np.int64)
        keys.append(np.minimum(a, b) << 32 | np.maximum(a, b))
    return _count_pairs(np.concatenate(keys))


def _count_pairs(keys: np.ndarray) -> np.ndarray:
    unique, counts = np.unique(keys, return_counts=True)
    return np.column_stack([unique >> 32, unique & 0xFFFFFFFF, counts]).astype(np.int64)


class _Sieve:
    """The minimum mapping unit over the whole raster, one block at a time: regions (4-connected, of
    one class) smaller than ``threshold`` pixels take the class of the neighbour they share the most
    boundary with. Memory grows with the number of regions, never with the number of pixels."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.sizes: List[np.ndarray] = []
        self.values: List[np.ndarray] = []
        self.pairs: List[np.ndarray] = []  # (piece, piece, shared edges) within and across blocks
        self.joins: List[np.ndarray] = []  # (piece, piece) of one class across block edges
        self.count = 0
        self.previous: Optional[np.ndarray] = None  # global piece ids of the last row of the previous block
        self.final: Optional[np.ndarray] = None  # per global piece: its class after the sieve

    def add(self, block_values: np.ndarray, labels: np.ndarray) -> None:
        base = self.count
        n = len(block_values)
        self.values.append(block_values.astype(np.uint8))
        self.sizes.append(np.bincount(labels.ravel(), minlength=n).astype(np.int64))
        pairs = _adjacent_pairs(labels)
        pairs[:, :2] += base
        self.pairs.append(pairs)
        first = labels[0].astype(np.int64) + base
        if self.previous is not None:
            values = np.concatenate(self.values)
            same = values[self.previous] == values[first]
            keys = np.minimum(self.previous, first) << 32 | np.maximum(self.previous, first)
            joins = np.unique(keys[same])
            self.joins.append(np.column_stack([joins >> 32, joins & 0xFFFFFFFF]))
            self.pairs.append(_count_pairs(keys[~same]))
        self.previous = labels[-1].astype(np.int64) + base
        self.count += n

    def solve(self) -> int:
        """Decide the class of every piece; returns the number of regions merged."""
        values = np.concatenate(self.values).astype(np.int64)
        sizes = np.concatenate(self.sizes)
        joins = np.concatenate(self.joins) if self.joins else np.zeros((0, 2), np.int64)
        region = _components(self.count, joins[:, 0], joins[:, 1])
        region_size = np.bincount(region, weights=sizes, minlength=self.count).astype(np.int64)
        pairs = np.concatenate(self.pairs) if self.pairs else np.zeros((0, 3), np.int64)
        ra, rb = region[pairs[:, 0]], region[pairs[:, 1]]
        keep = (ra != rb) & (values[ra] != CLASS_NODATA) & (values[rb] != CLASS_NODATA)
        keys = np.minimum(ra, rb)[keep] << 32 | np.maximum(ra, rb)[keep]
        unique, inverse = np.unique(keys, return_inverse=True)
        lengths = np.bincount(inverse, weights=pairs[keep, 2], minlength=len(unique))
        ua, ub = unique >> 32, unique & 0xFFFFFFFF
        self.sizes = self.pairs = self.joins = []  # type: ignore[assignment]

        small = np.flatnonzero((region == np.arange(self.count)) & (region_size < self.threshold)
                               & (values != CLASS_NODATA))
        tracked = set(small.tolist())
        adjacency: Dict[int, Dict[int, float]] = {r: {} for r in tracked}
        for a, b, length in zip(ua.tolist(), ub.tolist(), lengths.tolist()):
            if a in tracked:
                adjacency[a][b] = adjacency[a].get(b, 0.0) + length
            if b in tracked:
                adjacency[b][a] = adjacency[b].get(a, 0.0) + length
        parent: Dict[int, int] = {}
        size = {r: int(region_size[r]) for r in tracked}

        def find(r: int) -> int:
            path = []
            while r in parent:
                path.append(r)
                r = parent[r]
            for p in path:
                parent[p] = r
            return r

        def size_of(r: int) -> int:
            return size[r] if r in size else int(region_size[r])

        def absorb(target: int, other: int) -> None:
            """Region ``other`` becomes part of ``target``, which keeps its class. Only regions still
            under the threshold keep their adjacency (the others never merge again)."""
            parent[other] = target
            size[target] = size_of(target) + size_of(other)
            if other in adjacency:
                if target in adjacency:
                    merged = adjacency[target]
                    for n, length in adjacency[other].items():
                        merged[n] = merged.get(n, 0.0) + length
                del adjacency[other]
            if size[target] >= self.threshold:
                adjacency.pop(target, None)

        merges = 0
        heap = [(int(region_size[r]), int(r)) for r in small]
        heapq.heapify(heap)
        while heap:
            current, r = heapq.heappop(heap)
            if find(r) != r or size_of(r) >= self.threshold:
                continue
            if size_of(r) != current:
                heapq.heappush(heap, (size_of(r), r))
                continue
            neighbours: Dict[int, float] = {}
            for n, length in adjacency.get(r, {}).items():
                root = find(n)
                if root != r:
                    neighbours[root] = neighbours.get(root, 0.0) + length
            if not neighbours:
                continue  # surrounded by nodata or the raster's edge only
            target = max(neighbours, key=lambda n: (neighbours[n], size_of(n), -n))
            klass = int(values[target])
            absorb(target, r)
            merges += 1
            # Neighbours of r of the target's class now touch the target through r: one region.
            for n in neighbours:
                root = find(n)
                if root != target and int(values[root]) == klass:
                    absorb(target, root)
            if size_of(target) < self.threshold:
                heapq.heappush(heap, (size_of(target), target))
        region_value = values.copy()
        for r in list(parent):
            region_value[r] = values[find(r)]
        self.final = region_value[region].astype(np.uint8)
        self.values = []  # type: ignore[assignment]
        return merges

    def apply(self, labels: np.ndarray, base: int) -> np.ndarray:
        """A block's pixels with the classes the sieve gave their regions."""
        return self.final[labels.astype(np.int64) + base]


# --- simplification --------------------------------------------------------------------------


def _key(point: np.ndarray) -> Tuple[float, float]:
    """Lexicographic order of points: row first, then column."""
    return float(point[1]), float(point[0])


def _drop_collinear(points: np.ndarray, pinned: np.ndarray) -> np.ndarray:
    """An open polyline without its straight-through vertices (pinned ones and the ends kept)."""
    if len(points) < 3:
        return points
    before, after = points[1:-1] - points[:-2], points[2:] - points[1:-1]
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = (before * after).sum(axis=1)
    keep = np.ones(len(points), dtype=bool)
    keep[1:-1] = (cross != 0) | (dot <= 0) | pinned[1:-1]
    return points[keep]


def _segment_distances(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    direction = end - start
    length2 = float(direction @ direction)
    if length2 == 0.0:
        return np.hypot(*(points - start).T)
    t = np.clip(((points - start) @ direction) / length2, 0.0, 1.0)
    return np.hypot(*(points - (start + t[:, None] * direction)).T)


def _inside_or_on(points: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Whether each point lies inside (non-zero winding) or on the closed ring (exact for integer
    coordinates)."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0, x1, y1 = ring[:-1, 0][None], ring[:-1, 1][None], ring[1:, 0][None], ring[1:, 1][None]
    cross = (x1 - x0) * (y - y0) - (x - x0) * (y1 - y0)
    on = (cross == 0) & (np.minimum(x0, x1) <= x) & (x <= np.maximum(x0, x1)) & \
        (np.minimum(y0, y1) <= y) & (y <= np.maximum(y0, y1))
    winding = ((y0 <= y) & (y1 > y) & (cross > 0)).sum(axis=1) - ((y0 > y) & (y1 <= y) & (cross < 0)).sum(axis=1)
    return on.any(axis=1) | (winding != 0)


@dataclass
class _Arc:
    points: np.ndarray  # k x 2, in canonical direction
    keep_one: bool = False  # half of a closed loop: keeps at least one inner vertex
    kept: Optional[np.ndarray] = None  # indices of the simplified arc's vertices


class _Simplifier:
    """Simplifies the boundaries of a block's pieces as one coverage (see the module docstring)."""

    def __init__(self, tolerance: float, anchor: int = ANCHOR_ROWS) -> None:
        self.tolerance = float(tolerance)
        self.anchor = anchor
        self.fallbacks = 0  # blocks left unsimplified because a check failed

    def faces(self, geometries: np.ndarray, width: int, row1: int) -> np.ndarray:
        """The pieces (a partition of the block, nodata included) with simplified shared boundaries.
        ``width`` and ``row1`` (the row line below the block) frame the block with the anchor rows."""
        if len(geometries) == 0:
            return geometries
        self.width, self.row1 = width, row1
        arcs = self._arcs(geometries)
        self._simplify(arcs)
        lines = np.array([shapely.linestrings(a.points[a.kept]) for a in arcs], dtype=object)
        originals = np.array([shapely.linestrings(a.points) for a in arcs], dtype=object)
        self._revert_touching(arcs, lines, originals)
        # The faces on either side of each arc: the pieces whose boundary holds an inner point of it.
        probes = shapely.points(np.array([(a.points[0] + a.points[1]) / 2.0 for a in arcs]))
        face_index, arc_index = shapely.STRtree(probes).query(geometries, predicate="intersects")
        order = np.lexsort((arc_index, face_index))
        arc_index, face_index = arc_index[order], face_index[order]
        if not np.array_equal(np.unique(face_index), np.arange(len(geometries))):
            self.fallbacks += 1  # a piece without boundary arcs: cannot happen for a partition
            return geometries
        built = shapely.build_area(shapely.multilinestrings(lines[arc_index], indices=face_index))
        total, new_total = shapely.area(geometries).sum(), shapely.area(built).sum()
        if (not shapely.is_valid(built).all() or shapely.is_empty(built).any()
                or abs(new_total - total) > 1e-6 * max(total, 1.0)):
            self.fallbacks += 1
            return geometries
        return built

    def _arcs(self, geometries: np.ndarray) -> List[_Arc]:
        """The noded boundaries of the pieces, cut at junctions and anchor rows, in canonical direction."""
        merged = shapely.line_merge(shapely.union_all(shapely.boundary(geometries)))
        parts = shapely.get_parts(merged)
        coords, index = shapely.get_coordinates(parts, return_index=True)
        coords, index = self._insert_anchor_crossings(coords, index)
        starts = np.searchsorted(index, np.arange(len(parts) + 1))
        # Junctions: points where three or more boundary edges meet. Merged lines may run through one
        # (a region touching itself at a corner), so they are found from the edges, not the line ends.
        ends = np.zeros(len(coords), dtype=bool)
        ends[starts[:-1]] = ends[starts[1:] - 1] = True
        keys = coords[:, 0] * (self.row1 + 2.0) + coords[:, 1]
        unique, inverse = np.unique(keys, return_inverse=True)
        degree = np.bincount(inverse, weights=np.where(ends, 1.0, 2.0), minlength=len(unique))
        fixed = (degree[inverse] >= 3) | self._pinned(coords)
        arcs: List[_Arc] = []
        for p in range(len(parts)):
            points = coords[starts[p]:starts[p + 1]]
            pinned = fixed[starts[p]:starts[p + 1]]
            closed = len(points) > 3 and np.array_equal(points[0], points[-1])
            if closed:
                ring = points[:-1]
                if pinned[:-1].any():
                    first = int(np.flatnonzero(pinned[:-1])[0])
                    ring = np.roll(ring, -first, axis=0)
                    points = np.vstack([ring, ring[:1]])
                    pinned = np.roll(pinned[:-1], -first)
                    pinned = np.append(pinned, pinned[0])
                else:
                    self._add_loop(arcs, ring)
                    continue
            cuts = [0] + [int(i) for i in np.flatnonzero(pinned[1:-1]) + 1] + [len(points) - 1]
            for i, j in zip(cuts[:-1], cuts[1:]):
                self._add_open(arcs, _drop_collinear(points[i:j + 1], pinned[i:j + 1]))
        return arcs

    def _pinned(self, points: np.ndarray) -> np.ndarray:
        """Vertices no simplification moves: on anchor rows and on the block's frame."""
        x, y = points[:, 0], points[:, 1]
        return (y % self.anchor == 0) | (y == self.row1) | (x == 0) | (x == self.width)

    def _frame_line(self, a: np.ndarray, b: np.ndarray) -> Optional[Tuple[int, float]]:
        """The pinned line (axis, coordinate) both points lie on, if any: an anchor row or the frame."""
        if a[1] == b[1] and (a[1] % self.anchor == 0 or a[1] == self.row1):
            return 1, float(a[1])
        if a[0] == b[0] and a[0] in (0, self.width):
            return 0, float(a[0])
        return None

    def _insert_anchor_crossings(self, coords: np.ndarray, index: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """A vertex wherever a vertical boundary crosses an anchor row (boundaries are axis-parallel)."""
        if len(coords) < 2:
            return coords, index
        same = index[1:] == index[:-1]
        y0, y1 = coords[:-1, 1], coords[1:, 1]
        low, high = np.minimum(y0, y1), np.maximum(y0, y1)
        first, last = np.floor(low / self.anchor) + 1, np.ceil(high / self.anchor) - 1
        counts = np.where(same, np.maximum(last - first + 1, 0), 0).astype(np.int64)
        segments = np.flatnonzero(counts)
        if not len(segments):
            return coords, index
        positions, values = [], []
        for s in segments:
            rows = np.arange(first[s], last[s] + 1) * self.anchor
            if y1[s] < y0[s]:
                rows = rows[::-1]
            positions += [s + 1] * len(rows)
            values += [(coords[s, 0], r) for r in rows]
        return (np.insert(coords, positions, np.array(values), axis=0),
                np.insert(index, positions, index[np.array(positions) - 1]))

    def _add_loop(self, arcs: List[_Arc], ring: np.ndarray) -> None:
        """A closed boundary with no junction (an island): from its first vertex in row-major order,
        in the direction of the smaller next vertex, cut at the vertex farthest from the start."""
        ring = _drop_collinear_ring(ring)
        start = min(range(len(ring)), key=lambda i: _key(ring[i]))
        ring = np.roll(ring, -start, axis=0)
        if _key(ring[-1]) < _key(ring[1]):
            ring = np.vstack([ring[:1], ring[:0:-1]])
        points = np.vstack([ring, ring[:1]])
        far = int(np.argmax(((points - points[0]) ** 2).sum(axis=1)))
        for piece in (points[:far + 1], points[far:]):
            self._add_open(arcs, piece, keep_one=True)

    def _add_open(self, arcs: List[_Arc], points: np.ndarray, keep_one: bool = False) -> None:
        if _key(points[0]) > _key(points[-1]) or (
                np.array_equal(points[0], points[-1]) and len(points) > 2 and _key(points[-2]) < _key(points[1])):
            points = points[::-1]
        if len(points) > 2 and np.array_equal(points[0], points[-1]):
            far = int(np.argmax(((points - points[0]) ** 2).sum(axis=1)))
            for piece in (points[:far + 1], points[far:]):
                self._add_open(arcs, piece, keep_one=True)
            return
        line = self._frame_line(points[0], points[-1]) if len(points) > 2 else None
        offsets = np.abs(points[:, line[0]] - line[1]) if line else None
        if line is not None and offsets.max() > 0:
            # Both ends on one pinned line: keep the farthest vertex, so no shortcut runs along the line.
            far = int(np.argmax(offsets))
            for piece in (points[:far + 1], points[far:]):
                self._add_open(arcs, piece, keep_one)
            return
        arcs.append(_Arc(np.ascontiguousarray(points, dtype=np.float64), keep_one))

    def _simplify(self, arcs: List[_Arc]) -> None:
        """Douglas-Peucker on each arc, a shortcut taken only when no other vertex lies between it and
        the vertices it drops (Saalfeld's condition)."""
        points = np.concatenate([a.points for a in arcs])
        owner = np.repeat(np.arange(len(arcs)), [len(a.points) for a in arcs])
        position = np.concatenate([np.arange(len(a.points)) for a in arcs])
        order = np.argsort(points[:, 0], kind="stable")
        xs, sorted_points = points[order, 0], points[order]
        sorted_owner, sorted_position = owner[order], position[order]

        def clear(arc_id: int, arc: _Arc, i: int, j: int) -> bool:
            chain = arc.points[i:j + 1]
            low, high = chain.min(axis=0), chain.max(axis=0)
            a, b = np.searchsorted(xs, low[0], "left"), np.searchsorted(xs, high[0], "right")
            candidates = sorted_points[a:b]
            inside = (candidates[:, 1] >= low[1]) & (candidates[:, 1] <= high[1])
            own = (sorted_owner[a:b] == arc_id) & (sorted_position[a:b] >= i) & (sorted_position[a:b] <= j)
            ends = ((candidates == chain[0]).all(axis=1)) | ((candidates == chain[-1]).all(axis=1))
            test = candidates[inside & ~own & ~ends]
            if not len(test):
                return True
            return not _inside_or_on(test, np.vstack([chain, chain[:1]])).any()

        for arc_id, arc in enumerate(arcs):
            k = len(arc.points)
            if k <= 2 or (k == 3 and arc.keep_one):
                arc.kept = np.arange(k)
                continue
            kept = [0, k - 1]
            stack = [(0, k - 1)]
            while stack:
                i, j = stack.pop()
                if j - i < 2:
                    continue
                distances = _segment_distances(arc.points[i + 1:j], arc.points[i], arc.points[j])
                far = i + 1 + int(np.argmax(distances))
                if (distances.max() > self.tolerance or (arc.keep_one and (i, j) == (0, k - 1))
                        or not clear(arc_id, arc, i, j)):
                    kept.append(far)
                    stack += [(i, far), (far, j)]
            arc.kept = np.array(sorted(kept))

    @staticmethod
    def _revert_touching(arcs: List[_Arc], lines: np.ndarray, originals: np.ndarray) -> None:
        """Arcs that still cross or touch another arc (other than at shared ends) are left unsimplified."""
        changed = np.array([len(a.kept) < len(a.points) for a in arcs])
        for _ in range(10):
            candidates = np.flatnonzero(changed)
            if not len(candidates):
                return
            bad = set(candidates[~shapely.is_simple(lines[candidates])].tolist())
            left, right = shapely.STRtree(lines).query(lines[candidates], predicate="intersects")
            left = candidates[left]
            pairs = left != right
            left, right = left[pairs], right[pairs]
            touching = ~shapely.relate_pattern(lines[left], lines[right], "FF*F*****")
            bad |= set(left[touching].tolist()) | set(right[touching].tolist())
            bad = {b for b in bad if changed[b]}
            if not bad:
                return
            for b in bad:
                lines[b] = originals[b]
                arcs[b].kept = np.arange(len(arcs[b].points))
                changed[b] = False


def _drop_collinear_ring(ring: np.ndarray) -> np.ndarray:
    """A closed ring (first vertex not repeated) without its straight-through vertices."""
    before = ring - np.roll(ring, 1, axis=0)
    after = np.roll(ring, -1, axis=0) - ring
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    dot = (before * after).sum(axis=1)
    keep = (cross != 0) | (dot <= 0)
    return ring[keep] if keep.sum() >= 3 else ring


# --- output ------------------------------------------------------------------------------------


class _Group:
    """A region being assembled from the pieces of consecutive blocks."""

    __slots__ = ("value", "pieces", "confidence_sum", "confidence_count", "parent")

    def __init__(self, value: int, piece, confidence_sum: float, confidence_count: int) -> None:
        self.value = value
        self.pieces = [piece]
        self.confidence_sum = confidence_sum
        self.confidence_count = confidence_count
        self.parent: Optional[_Group] = None

    def root(self) -> "_Group":
        group = self
        while group.parent is not None:
            group = group.parent
        node = self
        while node.parent is not None and node.parent is not group:
            node.parent, node = group, node.parent
        return group

    def join(self, other: "_Group") -> "_Group":
        a, b = self.root(), other.root()
        if a is not b:
            a.pieces += b.pieces
            a.confidence_sum += b.confidence_sum
            a.confidence_count += b.confidence_count
            b.pieces = []
            b.parent = a
        return a


class _Writer:
    """Features appended to a GeoPackage layer in batches; areas computed per batch."""

    def __init__(self, path: Path, layer: str, crs, transform: Affine, metric: _Metric,
                 classes: Dict[int, ClassInfo]) -> None:
        self.path, self.layer, self.metric, self.classes = path, layer, metric, classes
        self.table: Dict[int, tuple] = {}  # the raster's colour table: colours of values the classes do not name
        self.crs = crs.to_wkt() if crs is not None else None
        self.matrix = np.array([[transform.a, transform.d], [transform.b, transform.e]])
        self.offset = np.array([transform.c, transform.f])
        self.geometries: list = []
        self.values: list = []
        self.confidence: list = []
        self.written = 0
        self.created = False
        self.cell = abs(transform.a * transform.e - transform.b * transform.d) or 1.0
        self.repaired = 0
        self.dropped = 0
        self.per_class: Dict[int, int] = {}
        self.areas: Dict[int, float] = {}

    def transform_coordinates(self, xy: np.ndarray) -> np.ndarray:
        """Pixel coordinates (column, row) to the raster's CRS."""
        return xy @ self.matrix + self.offset

    def add(self, group: _Group) -> None:
        geometry = _dissolve(group.pieces, self.transform_coordinates)
        if len(group.pieces) > 1:  # a region of several blocks may be large: its pieces go first
            group.pieces = []
            _release_memory()
        if not shapely.is_valid(geometry):
            geometry = _polygonal(shapely.make_valid(geometry))
            if geometry is None or not shapely.is_valid(geometry):
                self.dropped += 1
                return
            self.repaired += 1
        if shapely.is_empty(geometry):
            self.dropped += 1
            return
        self.geometries.append(geometry)
        self.values.append(group.value)
        self.confidence.append(group.confidence_sum / group.confidence_count if group.confidence_count else np.nan)
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
        names = np.array([_class_info(self.classes, int(v), self.table).name for v in values], dtype=object)
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
        self.written += len(geometries)
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


Piece = Union[shapely.Geometry, Tuple[np.ndarray, List[np.ndarray]]]


def _compact(piece: Piece) -> Tuple[np.ndarray, List[np.ndarray]]:
    """A piece as integer arrays of its rings (outline, holes): a third of GEOS's memory. Every
    vertex is a pixel corner (simplification only drops vertices), so int32 is exact."""
    if isinstance(piece, tuple):
        return piece
    coords, ring = shapely.get_coordinates(shapely.get_rings(piece), return_index=True)
    rings = np.split(coords.astype(np.int32), np.flatnonzero(np.diff(ring)) + 1)
    return rings[0], rings[1:]


def _dissolve(pieces: List[Piece], to_map: Callable[[np.ndarray], np.ndarray]):
    """The region made of ``pieces`` (from consecutive blocks), in map coordinates.

    Pieces meet only along block edges (horizontal lines), and a piece's holes never touch a block
    edge (they are enclosed in its block), so they stay holes of the region as they are. Only the
    outlines are merged, by :func:`_merge_outlines`, without a general overlay (GEOS's union of a
    region with a million vertices costs hundreds of MB); an outline that does not come out as one
    ring falls back to that union."""
    if len(pieces) == 1 and not isinstance(pieces[0], tuple):
        return shapely.transform(pieces[0], to_map)
    compact = [_compact(p) for p in pieces]
    try:
        outline, closed = _merge_outlines([outline for outline, _ in compact])
    except ValueError:
        polygons = np.array([shapely.polygons(shapely.linearrings(o.astype(np.float64)),
                                              holes=[shapely.linearrings(h.astype(np.float64)) for h in holes] or None)
                             for o, holes in compact], dtype=object)
        return shapely.transform(shapely.union_all(polygons), to_map)
    holes = [to_map(ring.astype(np.float64)) for ring in closed]
    holes += [to_map(h.astype(np.float64)) for _, piece_holes in compact for h in piece_holes]
    rings = np.array([shapely.linearrings(h) for h in holes], dtype=object)
    return shapely.polygons(shapely.linearrings(to_map(outline.astype(np.float64))),
                            holes=rings if len(rings) else None)


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + x[-1] * y[0] - x[0] * y[-1])


def _merge_outlines(outlines: List[np.ndarray]) -> Tuple[np.ndarray, List[np.ndarray]]:
    """The outline and the new holes of the union of polygons that meet along horizontal lines.

    Outlines are oriented alike, so where two of them share a stretch of a horizontal line they run
    along it in opposite directions: those stretches cancel. What is left of each outline are
    chains from one cancelled stretch to the next, linked end to start (where the region touches
    itself at a corner two chains start at one point, and the one turning most towards the inside
    is taken, which keeps rings simple). The work is per chain and per edge on a shared line, plus
    array slices: nothing per vertex in Python. Rings are closed arrays; raises ValueError when the
    result is not one outline."""
    rings = []
    for ring in outlines:
        ring = ring[:-1] if len(ring) > 1 and (ring[0] == ring[-1]).all() else ring
        rings.append(ring if _signed_area(ring) > 0 else ring[::-1])
    lines = {int(r[:, 1].min()) for r in rings} & {int(r[:, 1].max()) for r in rings}
    # Horizontal edges on the lines where outlines meet, by direction.
    forward: Dict[int, list] = {}
    backward: Dict[int, list] = {}
    for index, ring in enumerate(rings):
        following = np.roll(ring, -1, axis=0)
        on_line = (ring[:, 1] == following[:, 1]) & (ring[:, 0] != following[:, 0]) & \
            np.isin(ring[:, 1], np.array(sorted(lines), dtype=ring.dtype))
        for edge in np.flatnonzero(on_line).tolist():
            x0, x1, y = int(ring[edge, 0]), int(following[edge, 0]), int(ring[edge, 1])
            (forward if x1 > x0 else backward).setdefault(y, []).append((min(x0, x1), max(x0, x1), index, edge))
    cancelled: Dict[Tuple[int, int], List[Tuple[int, int]]] = {}
    for y, ahead in forward.items():
        behind = sorted(backward.get(y, []))
        ahead = sorted(ahead)
        i = j = 0
        while i < len(ahead) and j < len(behind):
            low, high = max(ahead[i][0], behind[j][0]), min(ahead[i][1], behind[j][1])
            if low < high:
                for item in (ahead[i], behind[j]):
                    cancelled.setdefault((item[2], item[3]), []).append((low, high))
            if ahead[i][1] <= behind[j][1]:
                i += 1
            else:
                j += 1
    chains: List[np.ndarray] = []
    for index, ring in enumerate(rings):
        edges = sorted(e for r, e in cancelled if r == index)
        if not edges:
            chains.append(np.vstack([ring, ring[:1]]))  # untouched: a closed chain of its own
            continue
        # The ring as points, each with whether the stretch leaving it is cancelled.
        positions, points, cut_after = [], [], []
        leaving = np.zeros(len(ring), dtype=bool)
        for edge in edges:
            x0, y = int(ring[edge, 0]), int(ring[edge, 1])
            x1 = int(ring[(edge + 1) % len(ring), 0])
            step = 1 if x1 > x0 else -1
            marks = sorted({x for part in cancelled[(index, edge)] for x in part} - {x0, x1}, key=lambda x: step * x)
            inside = lambda a, b: any(lo <= min(a, b) and max(a, b) <= hi for lo, hi in cancelled[(index, edge)])
            stops = [x0] + marks + [x1]
            leaving[edge] = inside(stops[0], stops[1])
            for a, b in zip(stops[1:-1], stops[2:]):
                positions.append(edge + 1)
                points.append((a, y))
                cut_after.append(inside(a, b))
        if positions:
            ring = np.insert(ring, positions, np.array(points, dtype=ring.dtype), axis=0)
            leaving = np.insert(leaving, positions, cut_after)
        cuts = np.flatnonzero(leaving)
        # Start right after a cancelled stretch; each chain runs to the start of the next one.
        ring = np.roll(ring, -(cuts[0] + 1), axis=0)
        leaving = np.roll(leaving, -(cuts[0] + 1))
        ends = np.flatnonzero(leaving)
        begin = 0
        for stop in ends.tolist():
            if stop > begin:
                chains.append(ring[begin:stop + 1])
            begin = stop + 1
    # Link chains end to start.
    starting: Dict[Tuple[int, int], List[int]] = {}
    for number, link in enumerate(chains):
        starting.setdefault((int(link[0, 0]), int(link[0, 1])), []).append(number)
    successor = []
    for link in chains:
        options = starting.get((int(link[-1, 0]), int(link[-1, 1])), [])
        if not options or len(options) > 2:
            raise ValueError("chains do not close into rings")
        if len(options) == 2:
            incoming = (link[-1] - link[-2]).astype(np.float64)
            turns = []
            for option in options:
                out = (chains[option][1] - chains[option][0]).astype(np.float64)
                turns.append(math.atan2(incoming[0] * out[1] - incoming[1] * out[0], float(incoming @ out)))
            options = [options[int(np.argmax(turns))]]
        successor.append(options[0])
    seen = [False] * len(chains)
    found, closed = [], []
    for begin in range(len(chains)):
        if seen[begin]:
            continue
        parts, current = [], begin
        while not seen[current]:
            seen[current] = True
            parts.append(chains[current][:-1])
            current = successor[current]
        if current != begin:
            raise ValueError("chains do not close into rings")
        for loop in _split_touching(np.vstack(parts + [parts[0][:1]])):
            (found if _signed_area(loop[:-1]) > 0 else closed).append(loop)
    if len(found) != 1:
        raise ValueError("not one outline")
    return found[0], closed


def _split_touching(ring: np.ndarray) -> List[np.ndarray]:
    """A closed ring that passes a point more than once (a region touching itself at a corner) as
    simple closed loops, one per visit: the valid form of an outline with a hole touching it."""
    points = ring[:-1]
    keys = points[:, 0].astype(np.float64) * (float(np.abs(points[:, 1]).max()) + 2.0) + points[:, 1]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts[inverse] > 1)
    if not len(repeated):
        return [ring]
    parts: List[np.ndarray] = []
    open_at: Dict[float, int] = {}  # point -> the part that starts at it
    loops, last = [], 0
    for index in repeated.tolist():
        parts.append(points[last:index])
        last = index
        key = keys[index]
        if key in open_at:
            start = open_at[key]
            loop = np.vstack(parts[start:])
            loops.append(np.vstack([loop, loop[:1]]))
            del parts[start:]
            open_at = {k: p for k, p in open_at.items() if p < start}
        open_at[key] = len(parts)
    parts.append(points[last:])
    rest = np.vstack([p for p in parts if len(p)])
    return loops + [np.vstack([rest, rest[:1]])]


def _release_memory() -> None:
    """Give the memory freed by a block back to the system before the next one (glibc's
    malloc_trim; nothing elsewhere). Without it, freed blocks' arrays fragment the heap and the
    process's resident size creeps up block after block."""
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes
            import ctypes.util

            _TRIM = getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "malloc_trim", False)
        except OSError:
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM = None


def _polygonal(geometry):
    """The polygons of a repaired geometry (lines and points a repair can leave are dropped)."""
    if geometry is None or shapely.is_empty(geometry):
        return None
    if shapely.get_type_id(geometry) in (3, 6):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if shapely.get_type_id(p) in (3, 6)]
    return shapely.union_all(np.array(parts, dtype=object)) if parts else None


# --- the entry point ---------------------------------------------------------------------------


def _open(path: Path, what: str):
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise VectorizeError(f"{what} {path} is not a raster that GDAL can read ({exc})") from None


def _check_class_raster(dataset, path: Path) -> None:
    if dataset.count != 1 or dataset.dtypes[0] != "uint8":
        raise VectorizeError(
            f"{path} is not a class raster: it has {dataset.count} band(s) of {dataset.dtypes[0]}; give the class "
            "GeoTIFF written by cwsam classify (one uint8 band of class values, nodata 255)")


def _check_confidence(dataset, reference, path: Path) -> None:
    if dataset.count != 1:
        raise VectorizeError(f"confidence raster {path} has {dataset.count} bands; give the one-band confidence "
                             "GeoTIFF written with the classes (cwsam classify --confidence)")
    if (dataset.width, dataset.height) != (reference.width, reference.height) or \
            not dataset.transform.almost_equals(reference.transform):
        raise VectorizeError(f"confidence raster {path} is not on the class raster's grid "
                             f"({dataset.width} x {dataset.height} pixels against {reference.width} x "
                             f"{reference.height}): give the confidence written with these classes")


def _check_output(output: Path) -> None:
    if output.suffix.lower() != ".gpkg":
        raise VectorizeError(f"the output must be a GeoPackage file name ending in .gpkg, got {output}")
    problem = output_file_problem(output, "output", "classes.gpkg")
    if problem:
        raise VectorizeError(problem)


def _resolve_classes(classes) -> Optional[Dict[int, ClassInfo]]:
    if classes is None:
        return None
    if isinstance(classes, str):
        from ..common.classes import parse_classes
        from ..errors import ClassSpecError

        try:
            classes = parse_classes(classes)
        except ClassSpecError as exc:
            raise VectorizeError(str(exc)) from None
    if isinstance(classes, dict):
        classes = list(classes.values())
    return {int(c.value): ClassInfo(int(c.value), c.name, c.color) for c in classes}


def _remove_partial(path: Path) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        try:
            Path(str(path) + suffix).unlink()
        except OSError:  # not there (or never creatable there)
            pass


def vectorize_file(
    class_raster: PathLike,
    output_gpkg: PathLike,
    confidence: Optional[PathLike] = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes=None,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    *,
    block_rows: Optional[int] = None,
    layer: Optional[str] = None,
) -> VectorizeResult:
    """Write the connected regions of a class raster as a styled GeoPackage polygon layer.

    ``class_raster``: the uint8 class GeoTIFF written by ``cwsam classify`` (nodata 255). ``output_gpkg``:
    the GeoPackage to write (replaced if it exists; one layer, named ``layer`` or after the file).
    ``confidence``: the confidence GeoTIFF of the same classification, for each polygon's mean
    confidence in percent (null without it). ``min_area``: minimum mapping unit in m² (0: every
    region). ``simplify``: tolerance in metres of the boundary simplification (0: exact pixel edges).
    ``classes``: ``ClassInfo`` items (or a ``VALUE:NAME[:#RRGGBB],...`` string) naming the values,
    instead of the raster's category names and colour table. ``block_rows``: rows per block (a
    multiple of ``ANCHOR_ROWS``; default from the raster's width). Fields: ``class``, ``class_name``,
    ``area_m2`` (null without CRS) and ``confidence``. See the module docstring for the method.
    """
    started = time.perf_counter()
    class_raster, output = Path(class_raster), Path(output_gpkg)
    confidence = Path(confidence) if confidence else None
    for name, value in (("minimum area", min_area), ("simplification tolerance", simplify)):
        if value is None or not math.isfinite(value) or value < 0:
            raise VectorizeError(f"the {name} must be a number of metres (m² for the area) >= 0, got {value}")
    if not class_raster.is_file():
        raise VectorizeError(f"class raster not found: {class_raster}")
    if confidence is not None and not confidence.is_file():
        raise VectorizeError(f"confidence raster not found: {confidence}")
    try:
        check_outputs([("class raster", raster_input_files(class_raster)),
                       ("confidence raster", raster_input_files(confidence) if confidence else [])],
                      [("output", [output])])
    except OutputConflictError as exc:
        raise VectorizeError(str(exc)) from None
    _check_output(output)
    given = _resolve_classes(classes)
    layer = layer or output.stem
    notes: List[str] = []
    temporary = output.with_name(f".{output.stem}.{os.getpid()}.partial.gpkg")
    _remove_partial(temporary)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES), _open(class_raster, "class raster") as dataset:
                _check_class_raster(dataset, class_raster)
                conf = _open(confidence, "confidence raster") if confidence else None
                try:
                    if conf is not None:
                        _check_confidence(conf, dataset, confidence)
                    result = _vectorize(dataset, class_raster, conf, temporary, layer, min_area, simplify,
                                        given, progress, should_cancel, block_rows, notes)
                finally:
                    if conf is not None:
                        conf.close()
        os.replace(temporary, output)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError,
            pyogrio.errors.GeometryError, pyogrio.errors.CRSError, OSError) as exc:
        _remove_partial(temporary)
        raise VectorizeError(f"cannot write {output}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    except BaseException:
        _remove_partial(temporary)
        raise
    result.output = output
    result.seconds = time.perf_counter() - started
    for note in notes:
        LOG.info(note)
    return result


def _vectorize(dataset, path: Path, conf, temporary: Path, layer: str, min_area: float, simplify: float,
               given: Optional[Dict[int, ClassInfo]], progress, should_cancel, block_rows, notes: List[str]
               ) -> VectorizeResult:
    height, width = dataset.height, dataset.width
    classes = dict(given) if given is not None else raster_classes(dataset, path)
    metric = _Metric(dataset.crs, dataset.transform, height)
    if metric.unit != "m2" and (min_area > 0 or simplify > 0):
        raise VectorizeError(f"{path.name} has no coordinate reference system: the minimum area (m²) and the "
                             "simplification (metres) need one; leave them at 0 or give a georeferenced raster")
    threshold = int(math.ceil(min_area / metric.pixel_area - 1e-9)) if min_area > 0 else 0
    tolerance = simplify / math.sqrt(metric.pixel_area) if simplify > 0 else 0.0
    if metric.geographic and (min_area > 0 or simplify > 0):
        notes.append(f"{path.name} is in a geographic CRS: the minimum area and the simplification are converted "
                     f"to pixels with the pixel size at its centre latitude ({metric.centre_latitude:.4f}°: "
                     f"{metric.pixel_area:,.1f} m² per pixel)")
    if dataset.crs is None:
        notes.append(f"{path.name} has no coordinate reference system: the polygons have none and no areas")
    rows = _block_rows(width, block_rows, SIMPLIFY_BLOCK_PIXELS if tolerance > 0 else BLOCK_PIXELS)
    blocks = [(r, min(rows, height - r)) for r in range(0, height, rows)]
    passes = 2 if threshold > 1 else 1
    nodata = dataset.nodata
    step = 0

    def report(message: str) -> None:
        nonlocal step
        if should_cancel is not None and should_cancel():
            raise VectorizeCancelled("vectorisation cancelled; nothing was written")
        if progress is not None:
            progress(step / (passes * len(blocks)), message)
        step += 1

    sieve = None
    merged = 0
    if threshold > 1:
        sieve = _Sieve(threshold)
        for number, (row0, count) in enumerate(blocks, start=1):
            report(f"regions: block {number} of {len(blocks)}")
            labels, values, _ = _connected(_read_block(dataset, row0, count, nodata))
            sieve.add(values, labels)
            del labels
            _release_memory()
        merged = sieve.solve()

    writer = _Writer(temporary, layer, dataset.crs, dataset.transform, metric, classes)
    writer.table = colour_table(dataset)
    simplifier = _Simplifier(tolerance) if tolerance > 0 else None
    conf_nodata = conf.nodata if conf is not None else None
    base = 0
    pending: Dict[int, _Group] = {}  # piece of the previous block's last row -> its region
    previous_last: Optional[np.ndarray] = None
    previous_values: Optional[np.ndarray] = None
    for number, (row0, count) in enumerate(blocks, start=1):
        report(f"polygons: block {number} of {len(blocks)}")
        block = _read_block(dataset, row0, count, nodata)
        if sieve is not None:
            labels, values, _ = _connected(block)
            block = sieve.apply(labels, base)
            base += len(values)
        labels, values, first_pixels = _connected(block)
        geometries = _pieces(block, row0, first_pixels)
        faces = simplifier.faces(geometries, width, row0 + count) if simplifier is not None else geometries
        n = len(geometries)
        sums, counts = np.zeros(n), np.zeros(n, dtype=np.int64)
        if conf is not None:
            scores = conf.read(1, window=Window(0, row0, width, count)).astype(np.float64)
            valid = np.isfinite(scores)
            if conf_nodata is not None:
                valid &= scores != conf_nodata
            sums = np.bincount(labels[valid], weights=scores[valid], minlength=n)
            counts = np.bincount(labels[valid], minlength=n)
            del scores, valid
        groups: Dict[int, _Group] = {
            i: _Group(int(values[i]), faces[i], float(sums[i]), int(counts[i]))
            for i in range(n) if values[i] != CLASS_NODATA}
        if previous_last is not None:
            first = labels[0]
            same = (previous_values[previous_last] == values[first]) & (values[first] != CLASS_NODATA)
            for a, b in set(zip(previous_last[same].tolist(), first[same].tolist())):
                pending[a].join(groups[b])
        last_row = np.unique(labels[-1]) if number < len(blocks) else np.zeros(0, dtype=np.int64)
        still_open = {id(groups[i].root()) for i in last_row.tolist() if i in groups}
        previous_last, previous_values = labels[-1].copy(), values
        involved = list(pending.values()) + list(groups.values())
        pending = {i: groups[i] for i in last_row.tolist() if i in groups}
        # The block's arrays go before regions are finished: a large region's assembly then does not
        # add to the block's own peak.
        del labels, faces, geometries, groups, block, sums, counts, first_pixels
        _release_memory()
        seen = set()
        for group in involved:
            root = group.root()
            if id(root) in seen or id(root) in still_open:
                continue
            seen.add(id(root))
            writer.add(root)
            root.pieces = []  # written: its geometry is no longer needed
        del involved
        writer.flush()  # what this block finished goes to the file now: memory follows the block
        for group in {id(g.root()): g.root() for g in pending.values()}.values():
            group.pieces = [_compact(piece) for piece in group.pieces]  # open regions kept small
        _release_memory()
    writer.flush(final=True)
    present = sorted(set(writer.per_class) | set(classes))
    writer.write_style([_class_info(classes, v, writer.table) for v in present])
    if merged:
        LOG.info("%s regions under %g m² (%d pixels) merged into their neighbours", f"{merged:,}", min_area, threshold)
    if simplifier is not None and simplifier.fallbacks:
        notes.append(f"{simplifier.fallbacks} block(s) of rows kept their exact pixel boundaries: simplifying "
                     "them would have broken the coverage")
    if writer.repaired:
        notes.append(f"{writer.repaired} polygon(s) were repaired (make_valid) before writing")
    if writer.dropped:
        notes.append(f"{writer.dropped} polygon(s) could not be made valid and were left out")
    if progress is not None:
        progress(1.0, "done")
    names = {v: _class_info(classes, v).name for v in present}
    return VectorizeResult(
        output=temporary, layer=layer, polygons=sum(writer.per_class.values()),
        polygons_per_class={v: writer.per_class.get(v, 0) for v in present if v in writer.per_class},
        areas={v: writer.areas.get(v, 0.0) for v in present if v in writer.per_class},
        area_unit=metric.unit, class_names=names, seconds=0.0, min_area=min_area, min_area_pixels=threshold,
        simplify=simplify, merged_regions=merged, warnings=notes)
