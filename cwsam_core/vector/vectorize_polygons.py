"""Polygons of a labelled block of rows: GDAL's polygons, simplified as a coverage, stitched across blocks.

Part of :mod:`cwsam_core.vector.vectorize` (its docstring tells the method). Coordinates here are the
raster's pixel coordinates (x = column, y = row of the whole raster): every vertex is an integer,
so comparisons are exact.
"""

from __future__ import annotations

from itertools import chain
from typing import Dict, List, Optional, Tuple

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window

from ..raster.output import CLASS_NODATA

ANCHOR_ROWS = 64  # rows of the strips simplified at a time; block sizes are multiples of it


def read_block(dataset, row0: int, rows: int, nodata: Optional[float]) -> np.ndarray:
    """Rows [row0, row0 + rows) of band 1, with the raster's nodata value as ``CLASS_NODATA``."""
    block = dataset.read(1, window=Window(0, row0, dataset.width, rows))
    if nodata is not None and 0 <= nodata <= 255 and nodata != CLASS_NODATA:
        block[block == int(nodata)] = CLASS_NODATA
    return block


def polygonize(labels: np.ndarray, row0: int, mask: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The 4-connected regions of ``labels`` (rows from ``row0``) as polygons, by GDAL
    (``rasterio.features.shapes``), with the label of each; ``mask``: the pixels to polygonise."""
    coordinates, ring_sizes, ring_polygon, owners = [], [], [], []
    for number, (geometry, label) in enumerate(
            shapes(labels, mask=mask, connectivity=4, transform=Affine(1, 0, 0, 0, 1, row0))):
        owners.append(label)
        for ring in geometry["coordinates"]:  # to arrays at once: no shapely object per ring
            coordinates.append(np.fromiter(chain.from_iterable(ring), dtype=np.float64, count=2 * len(ring)))
            ring_sizes.append(len(ring))
            ring_polygon.append(number)
    if not owners:
        return np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
    flat = np.concatenate(coordinates).reshape(-1, 2)
    del coordinates
    rings = shapely.linearrings(flat, indices=np.repeat(np.arange(len(ring_sizes)), ring_sizes))
    return shapely.polygons(rings, indices=np.array(ring_polygon)), np.array(owners, dtype=np.int64)


class CoverageSimplifier:
    """Boundaries simplified as a coverage (``shapely.coverage_simplify``: Visvalingam-Whyatt, each
    shared edge once, edges never crossing), a strip of ``ANCHOR_ROWS`` rows at a time.

    The strip's frame is left as it is (``simplify_boundary=False``), so the strips fit together
    whatever the block size, and the edges a strip's regions share with nodata are simplified like
    any other. GDAL's polygons do not match vertex for vertex where a straight edge meets two
    neighbours, so every pixel corner along an edge is made a vertex first (``segmentize``); the
    straight-through vertices left on the frame are dropped after (``simplify`` with tolerance 0).
    Pieces smaller than a square of twice the tolerance are left out of the coverage, so they and
    the edges around them keep their pixel outline: Visvalingam-Whyatt would make them triangles."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = float(tolerance)
        self.fallbacks = 0  # strips left unsimplified because the result failed a check

    def polygonize(self, labels: np.ndarray, row0: int, keep: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """A block's simplified polygons with their labels (as :func:`polygonize`), without those whose
        label ``keep`` says not to (nodata, which is simplified with the rest)."""
        polygons, owners = [], []
        for top in range(0, labels.shape[0], ANCHOR_ROWS):
            strip, strip_owners = polygonize(labels[top:top + ANCHOR_ROWS], row0 + top)
            wanted = keep[strip_owners]
            polygons.append(self._simplify(strip)[wanted])
            owners.append(strip_owners[wanted])
        return np.concatenate(polygons), np.concatenate(owners)

    def _simplify(self, polygons: np.ndarray) -> np.ndarray:
        """One strip's polygons (a partition of the strip), simplified; as they are if the result is
        invalid, has an empty polygon or does not cover the strip's area."""
        matched = shapely.transform(shapely.segmentize(polygons, 1.0), np.round)  # segmentize's floats made exact
        areas = shapely.area(polygons)
        large = areas >= (2.0 * self.tolerance) ** 2
        simple = matched.copy()
        simple[large] = shapely.coverage_simplify(matched[large], self.tolerance, simplify_boundary=False)
        simple = shapely.simplify(simple, 0.0)
        total = areas.sum()
        if (not shapely.is_valid(simple).all() or shapely.is_empty(simple).any()
                or abs(shapely.area(simple).sum() - total) > 1e-9 * total):
            self.fallbacks += 1
            return polygons
        return simple


class _Region:
    """A region being assembled from its pieces in consecutive blocks (a union-find node)."""

    __slots__ = ("value", "pieces", "confidence_sum", "confidence_count", "parent")

    def __init__(self, value: int, confidence_sum: float, confidence_count: int) -> None:
        self.value = value
        self.pieces: List[shapely.Geometry] = []
        self.confidence_sum = confidence_sum
        self.confidence_count = confidence_count
        self.parent: Optional[_Region] = None

    @property
    def confidence(self) -> float:
        """Mean confidence of the region's pixels (NaN without any)."""
        return self.confidence_sum / self.confidence_count if self.confidence_count else float("nan")

    def root(self) -> "_Region":
        """The region this one is part of (paths compressed on the way)."""
        region = self
        while region.parent is not None:
            region = region.parent
        node = self
        while node.parent is not None and node.parent is not region:
            node.parent, node = region, node.parent
        return region

    def join(self, other: "_Region") -> None:
        """Make this region and ``other`` one, its pieces and confidence gathered in the root."""
        a, b = self.root(), other.root()
        if a is not b:
            a.pieces += b.pieces
            a.confidence_sum += b.confidence_sum
            a.confidence_count += b.confidence_count
            b.pieces = []
            b.parent = a


class Stitcher:
    """Regions across blocks of rows. Within a block a region is one label (its polygons: one, or
    one per strip it crosses); across a block edge, labels of one class on either side of it are one
    region. A region is complete once none of its pieces reaches the open bottom edge; its pieces
    meet only along row lines that are multiples of ``step`` (block or strip edges)."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.pending: Dict[int, _Region] = {}  # label in the previous block's last row -> its region
        self.previous_last: Optional[np.ndarray] = None
        self.previous_values: Optional[np.ndarray] = None
        self.repaired = 0  # regions made valid by make_valid
        self.dropped = 0  # regions left out: no valid repair

    def add(self, labels: np.ndarray, values: np.ndarray, polygons: np.ndarray, owners: np.ndarray,
            sums: np.ndarray, counts: np.ndarray, last: bool) -> List[_Region]:
        """A block's labels, the value of each label, its polygons (pixel coordinates) with their labels
        and the confidence sum and count of each label; returns the regions that are now complete."""
        regions: Dict[int, _Region] = {}
        order = np.argsort(owners, kind="stable")  # regions in the order of their labels, whatever the strips
        for polygon, owner in zip(polygons[order].tolist(), owners[order].tolist()):
            if owner not in regions:
                regions[owner] = _Region(int(values[owner]), float(sums[owner]), int(counts[owner]))
            regions[owner].pieces.append(polygon)
        if self.previous_last is not None:
            first = labels[0]
            same = (self.previous_values[self.previous_last] == values[first]) & (values[first] != CLASS_NODATA)
            for a, b in set(zip(self.previous_last[same].tolist(), first[same].tolist())):
                self.pending[a].join(regions[b])
        bottom = [] if last else np.unique(labels[-1]).tolist()
        still_open = {id(regions[i].root()) for i in bottom if i in regions}
        involved = list(self.pending.values()) + list(regions.values())
        self.pending = {i: regions[i] for i in bottom if i in regions}
        self.previous_last, self.previous_values = (None, None) if last else (labels[-1].copy(), values)
        complete, seen = [], set()
        for region in involved:
            root = region.root()
            if id(root) not in seen and id(root) not in still_open:
                seen.add(id(root))
                complete.append(root)
        return complete

    def dissolve(self, region: _Region) -> Optional[shapely.Geometry]:
        """A complete region as one valid geometry (``shapely.coverage_union_all`` of its pieces), or
        None if it cannot be made valid; its pieces are released. Checked here, in pixel coordinates,
        where every vertex is exact; an invalid one is repaired (``make_valid``, polygons kept). Where
        pieces also meet at a single point the union's ring touches itself there: made valid (an
        outline and a hole), its area unchanged, which is not counted as a repair."""
        pieces_count = len(region.pieces)
        if pieces_count == 1:
            geometry = region.pieces.pop()
        else:
            geometry = self._union(region)
            release_memory()  # what the union freed, before the validity check allocates as much again
        if shapely.is_valid(geometry):
            return geometry
        fixed = _polygonal(shapely.make_valid(geometry, method="structure"))
        if fixed is None or not shapely.is_valid(fixed):
            self.dropped += 1
            return None
        area = shapely.area(geometry)
        if pieces_count == 1 or abs(shapely.area(fixed) - area) > 1e-9 * area:
            self.repaired += 1
        return fixed

    def _union(self, region: _Region) -> shapely.Geometry:
        """The union of a region's pieces, which are released. A piece's holes never reach the row
        lines pieces meet along (each is enclosed in its block or strip), so only the outlines are
        unioned, their vertices matched along those lines first, and the holes added back: for a
        region with many islands, a fraction of the union's work and memory."""
        rings, owner = shapely.get_rings(np.array(region.pieces, dtype=object), return_index=True)
        region.pieces = []  # a large region's pieces are most of its memory: one copy at a time
        outer = np.ones(len(rings), dtype=bool)
        outer[1:] = owner[1:] != owner[:-1]  # each piece's first ring
        outline = shapely.coverage_union_all(_match_seams(shapely.polygons(rings[outer]), self.step))
        if shapely.get_type_id(outline) != 3:  # parts meeting at a point: which holes are whose is unknown
            return shapely.difference(outline, shapely.union_all(shapely.polygons(rings[~outer])))
        rings = np.concatenate([shapely.get_rings(outline), rings[~outer]])
        return shapely.polygons(rings, indices=np.zeros(len(rings), dtype=np.intp))[0]


def _match_seams(pieces: np.ndarray, step: int) -> np.ndarray:
    """The pieces of one region with a vertex wherever one of them has a vertex on a row line they
    meet along (multiples of ``step``): a coverage union needs shared edges to match vertex for
    vertex, and a piece's edge along a block edge ends only where that piece turns. Works on the
    pieces' coordinates as flat arrays (``to_ragged_array``): no ring objects for a large region."""
    kind, coordinates, (ring_offsets, polygon_offsets) = shapely.to_ragged_array(pieces)
    y = coordinates[:, 1]
    on_line = y % step == 0
    span = float(coordinates[:, 0].max()) + 2.0  # points as one sortable number: y * span + x
    keys = np.unique(y[on_line] * span + coordinates[on_line, 0])
    along = on_line[:-1] & (y[1:] == y[:-1])
    along[ring_offsets[1:-1] - 1] = False  # no edge from a ring's last vertex to the next ring's first
    edges = np.flatnonzero(along)
    del on_line, along
    start, end, line = coordinates[edges, 0], coordinates[edges + 1, 0], y[edges] * span
    low = np.searchsorted(keys, line + np.minimum(start, end), "right")
    count = np.searchsorted(keys, line + np.maximum(start, end), "left") - low
    if not count.any():
        return pieces
    edge = np.repeat(np.arange(len(edges)), count)
    nth = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    key = keys[np.where(end[edge] > start[edge], low[edge] + nth, low[edge] + count[edge] - 1 - nth)]
    at = edges[edge] + 1  # inserted after the edge's start, in the edge's direction (ascending)
    points = np.column_stack([key - line[edge], y[edges[edge]]])
    del keys, key, start, end, line, low, count, nth, edge
    ring_offsets = ring_offsets + np.searchsorted(at, ring_offsets, "left")
    coordinates = np.insert(coordinates, at, points, axis=0)
    return shapely.from_ragged_array(kind, coordinates, (ring_offsets, polygon_offsets))


def _polygonal(geometry: Optional[shapely.Geometry]) -> Optional[shapely.Geometry]:
    """The polygons of a repaired geometry (lines and points a repair can leave are dropped)."""
    if geometry is None or shapely.is_empty(geometry):
        return None
    if shapely.get_type_id(geometry) in (3, 6):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if shapely.get_type_id(p) in (3, 6)]
    return shapely.union_all(np.array(parts, dtype=object)) if parts else None


def release_memory() -> None:
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
