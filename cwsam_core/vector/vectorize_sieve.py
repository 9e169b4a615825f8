"""The minimum mapping unit: regions of a class raster under a size take a neighbour's class.

Part of :mod:`cwsam_core.vector.vectorize`. Regions are 4-connected pixels of one value (nodata included),
labelled a block of rows at a time; :class:`Sieve` gathers, per region and never per pixel, its size,
its neighbours and the length of boundary it shares with each, over the whole raster, then merges
every region under the threshold into the neighbour it shares the longest boundary with (ties: the
larger one), smallest regions first. A region whose neighbours are all nodata stays. GDAL's sieve
(``rasterio.features.sieve``) merges into the largest neighbour instead and needs the whole raster
in memory, hence this.
"""

from __future__ import annotations

import heapq
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..raster.output import CLASS_NODATA


def label_regions(block: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """4-connected regions of one value in a block (nodata included): the label of every pixel
    (int32, 0..n-1, numbered in row-major order of their first pixel) and each region's value. Runs
    of equal values along rows are joined where they overlap the run above; everything is
    vectorised (GDAL polygonises regions but does not label pixels, and its rasterisation of the
    polygons back to labels costs a pass over every edge for each row)."""
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
    return labels, values[firsts]


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


class Sieve:
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
