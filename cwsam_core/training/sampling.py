"""Where training windows come from: each labelled image opened as a source, cut into blocks, some held out
for validation (spatially apart, chosen so every class is validated where it can be), and windows drawn
from the training blocks (class-balanced, augmented with flips and 90-degree turns only, which keep SAR
statistics). The draw of epoch ``e`` depends only on (seed, e)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from rasterio.windows import Window

from ..common.labels import IGNORE_INDEX
from ..errors import SceneError, TrainingDataError
from ..raster.radiometry import NormalizationStats, SarReader
from ..raster.scene import open_scene
from ..vector.polygons import PolygonLabels
from .config import TrainConfig
from .datasets import RasterLabels, TrainingSource, nothing_labelled, random_window

LOG = logging.getLogger("cwsam")


class OpenedSource:
    """An open training source: reader, labels, its blocks and which of them are held out for validation.

    ``blocks`` tile the image; ``block_counts[i]`` holds the labelled pixels per class of block ``i``
    (class-balanced sampling and the class-aware validation choice use them); ``held_out[i]`` says
    whether block ``i`` is validation. Training windows may reach into held-out blocks for image
    context, but the labels there are masked out, so no validation label is ever trained on.
    """

    def __init__(self, source: TrainingSource, config: TrainConfig) -> None:
        if (source.labels is None) == (source.polygons is None):
            raise TrainingDataError("give each training image either a label raster or a polygon file, not both")
        if source.polygons is not None and not source.class_field:
            raise TrainingDataError(f"{Path(source.polygons).name}: name the class field of the polygons")
        self.given = source
        self.path = Path(source.image)
        try:
            self.dataset = open_scene(source.image)  # one file, or the files of one scene ("VV.tif,VH.tif")
        except SceneError as exc:
            raise TrainingDataError(str(exc)) from None
        try:
            if source.polygons is not None:
                self.labels = PolygonLabels(source.polygons, self.dataset, source.class_field, config.classes,
                                            layer=source.layer)
            else:
                self.labels = RasterLabels(source.labels, self.dataset, config.classes, config.ignore_values,
                                           source.renumber)
            self.stats = self.labels.stats()
            if isinstance(self.labels, RasterLabels) and (problem := nothing_labelled(self.labels, self.stats,
                                                                                       config.classes)):
                raise TrainingDataError(f"{problem}: nothing to train on")
        except BaseException:
            self.dataset.close()
            raise
        self.num_classes = len(config.classes)
        self.block_size = 0
        self.blocks: List[Window] = []
        self.block_counts = np.zeros((0, self.num_classes), dtype=np.int64)
        self.held_out = np.zeros(0, dtype=bool)
        self.reader: Optional[SarReader] = None
        self._fine: Optional[Tuple[int, np.ndarray]] = None  # (cell size, rows x cols x classes counts)

    @property
    def train_blocks(self) -> List[Window]:
        return [b for b, held in zip(self.blocks, self.held_out) if not held]

    @property
    def val_blocks(self) -> List[Window]:
        return [b for b, held in zip(self.blocks, self.held_out) if held]

    def cell_counts(self, cell: int) -> np.ndarray:
        """Labelled pixels per class in square cells of ``cell`` pixels: rows x cols x classes (read once)."""
        if self._fine is None or self._fine[0] != cell:
            height, width = self.dataset.height, self.dataset.width
            rows, cols = -(-height // cell), -(-width // cell)
            flat = np.zeros(rows * cols * self.num_classes, dtype=np.int64)
            chunk = cell * max(1, 2048 // cell)  # read in chunks of whole cells, not cell by cell
            for row in range(0, height, chunk):
                for col in range(0, width, chunk):
                    labels = self.labels.read(Window(col, row, min(chunk, width - col), min(chunk, height - row)))
                    r, c = np.nonzero(labels != IGNORE_INDEX)
                    index = (((row + r) // cell) * cols + (col + c) // cell) * self.num_classes + labels[r, c]
                    flat += np.bincount(index, minlength=flat.size)
            counts = flat.reshape(rows, cols, self.num_classes)
            self._fine = (cell, counts)
        return self._fine[1]

    def set_blocks(self, block: int, cell: int) -> None:
        """Tile the image with square blocks of ``block`` pixels (a multiple of ``cell``), none held out."""
        fine = self.cell_counts(cell)
        k = block // cell
        rows, cols = -(-fine.shape[0] // k), -(-fine.shape[1] // k)
        padded = np.zeros((rows * k, cols * k, self.num_classes), dtype=np.int64)
        padded[: fine.shape[0], : fine.shape[1]] = fine
        counts = padded.reshape(rows, k, cols, k, -1).sum(axis=(1, 3)).reshape(rows * cols, -1)
        height, width = self.dataset.height, self.dataset.width
        self.block_size = block
        self.blocks = [Window(col, row, min(block, width - col), min(block, height - row))
                       for row in range(0, height, block) for col in range(0, width, block)]
        self.block_counts = counts
        self.held_out = np.zeros(len(self.blocks), dtype=bool)

    def validation_mask(self, window: Window) -> np.ndarray:
        """h x w bool: True for the pixels of ``window`` that lie in held-out blocks."""
        rows = np.arange(int(window.row_off), int(window.row_off + window.height))
        cols = np.arange(int(window.col_off), int(window.col_off + window.width))
        if not self.held_out.any():
            return np.zeros((len(rows), len(cols)), dtype=bool)
        grid = self.held_out.reshape(-(-self.dataset.height // self.block_size), -1)
        r = np.clip(rows // self.block_size, 0, grid.shape[0] - 1)
        c = np.clip(cols // self.block_size, 0, grid.shape[1] - 1)
        return grid[r][:, c]

    def open_reader(self, config: TrainConfig, normalization: Optional[dict]) -> SarReader:
        """A reader of this image; without ``normalization`` its statistics come from the image itself."""
        self.reader = SarReader(self.dataset, config.bands, config.model_scale, input_scale=config.input_scale,
                                band_indexes=config.band_indexes, normalization=normalization, warn=LOG.warning)
        return self.reader

    def close(self) -> None:
        self.labels.close()
        self.dataset.close()


# A single image is split into the largest blocks (in tiles) that give at least MIN_BLOCKS labelled
# blocks, so a small image still gets a validation part; the smallest block is a quarter tile.
BLOCK_TILES = (2.0, 1.0, 0.5, 0.25)
MIN_BLOCKS = 4
SPLIT_TRIES = 64


def choose_validation(counts: np.ndarray, n_val: int, seed: int, tries: int = SPLIT_TRIES) -> np.ndarray:
    """Indexes of ``n_val`` items (files or blocks; ``counts``: items x classes labelled pixels) to hold out.

    Among ``tries`` random draws, the first that best keeps (1) labels in the validation part,
    (2) the most classes in both parts, (3) the most classes in training: so that the validation
    mIoU covers every class the data allow and training still sees them all.
    """
    rng = np.random.default_rng(seed)
    total = counts.sum(axis=0)
    best, best_score = None, None
    for _ in range(tries):
        chosen = np.sort(rng.permutation(len(counts))[:n_val])
        held = counts[chosen].sum(axis=0)
        kept = total - held
        score = (bool(held.sum() > 0), int(((held > 0) & (kept > 0)).sum()), int((kept > 0).sum()))
        if best_score is None or score > best_score:
            best, best_score = chosen, score
    return best


def split_sources(sources: List[OpenedSource], tile: int, val_fraction: float, seed: int) -> None:
    """The validation split: whole files when there are several (a ``val_fraction`` of them, at least
    one, never all), blocks inside the image when there is one; chosen by :func:`choose_validation`.
    Either way no validation label is ever inside a training window. With too few labelled blocks
    (a tiny image, labels in one place) nothing is held out, with a warning saying so."""
    if not 0 <= val_fraction < 1:
        raise TrainingDataError(f"validation fraction must lie in [0, 1), got {val_fraction}")
    cell = max(16, tile // 4)
    sizes = sorted({max(cell, int(round(tile * k / cell)) * cell) for k in BLOCK_TILES}, reverse=True)
    if len(sources) > 1 and val_fraction > 0:
        for source in sources:
            source.set_blocks(sizes[0], cell)
        n_val = min(max(1, int(round(len(sources) * val_fraction))), len(sources) - 1)
        counts = np.stack([s.block_counts.sum(axis=0) for s in sources])
        for index in choose_validation(counts, n_val, seed):
            sources[index].held_out[:] = True
        return
    for source in sources:
        source.set_blocks(sizes[0], cell)
        if val_fraction <= 0:
            continue
        for size in sizes:  # the largest blocks that still give enough labelled ones
            source.set_blocks(size, cell)
            if (source.block_counts.sum(axis=1) > 0).sum() >= MIN_BLOCKS:
                break
        labelled = np.flatnonzero(source.block_counts.sum(axis=1) > 0)
        if len(labelled) < 2:
            source.set_blocks(sizes[0], cell)
            LOG.warning("%s: the labels cover too small an area to hold out a validation part: training without "
                        "validation, and the model of the last epoch is kept", source.path.name)
            continue
        n_val = min(max(1, int(round(len(labelled) * val_fraction))), len(labelled) - 1)
        chosen = choose_validation(source.block_counts[labelled], n_val, seed)
        source.held_out[labelled[chosen]] = True
        if source.block_size < 2 * tile:
            LOG.info("%s: validation blocks of %d px (the image is small for %d px tiles)", source.path.name,
                     source.block_size, tile)


def combined_statistics(readers: Sequence[SarReader], weights: Sequence[float]) -> NormalizationStats:
    """Per-channel mean and std over several rasters, weighted by their pixel counts."""
    w = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    means = np.array([r.stats.mean for r in readers])
    variances = np.array([np.square(r.stats.std) for r in readers])
    mean = (w[:, None] * means).sum(axis=0)
    variance = (w[:, None] * (variances + np.square(means - mean))).sum(axis=0)
    return NormalizationStats(mean.tolist(), np.sqrt(np.maximum(variance, 1e-12)).tolist())


def _augment(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """Random flips and 90-degree rotations, the same for image (C x H x W) and labels (H x W)."""
    k = int(rng.integers(4))
    image, labels = np.rot90(image, k, axes=(1, 2)), np.rot90(labels, k)
    if rng.integers(2):
        image, labels = image[:, :, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def _window_around(row: int, col: int, tile: int, source: OpenedSource, rng: np.random.Generator) -> Window:
    """A tile x tile window holding pixel (row, col) at a random place away from its border, kept inside
    the image where the image is large enough."""
    top = row - int(rng.integers(tile // 4, tile - tile // 4))
    left = col - int(rng.integers(tile // 4, tile - tile // 4))
    top = min(max(top, 0), max(source.dataset.height - tile, 0))
    left = min(max(left, 0), max(source.dataset.width - tile, 0))
    return Window(left, top, tile, tile)


def _pick_window(sources: List[OpenedSource], tile: int, rng: np.random.Generator, balanced: float) -> Tuple[OpenedSource, Window]:
    """A training window: with probability ``balanced`` one around a pixel of a class drawn uniformly
    among the classes with training labels (rare classes get seen), else a random window of a
    random training block (sources chosen by their training area)."""
    if balanced > 0 and rng.random() < balanced:
        counts = [np.where(s.held_out[:, None], 0, s.block_counts) for s in sources]
        present = np.flatnonzero(sum(c.sum(axis=0) for c in counts) > 0)
        target = int(rng.choice(present))
        weights = np.concatenate([c[:, target] for c in counts]).astype(np.float64)
        pick = int(rng.choice(len(weights), p=weights / weights.sum()))
        for source, c in zip(sources, counts):
            if pick < len(c):
                break
            pick -= len(c)
        block = source.blocks[pick]
        rows, cols = np.nonzero(source.labels.read(block) == target)
        if len(rows):
            k = int(rng.integers(len(rows)))
            return source, _window_around(int(block.row_off) + int(rows[k]), int(block.col_off) + int(cols[k]),
                                          tile, source, rng)
    areas = np.array([sum(b.width * b.height for b in s.train_blocks) for s in sources], dtype=np.float64)
    source = sources[int(rng.choice(len(sources), p=areas / areas.sum()))]
    block = source.train_blocks[int(rng.integers(len(source.train_blocks)))]
    return source, random_window(block, tile, rng, source.dataset.height, source.dataset.width)


def draw_batch(sources: List[OpenedSource], tile: int, batch: int, rng: np.random.Generator, augment: bool,
                balanced: float = 0.0, replay: Optional[Tuple[List[OpenedSource], float]] = None):
    """``batch`` labelled windows from the training part of ``sources`` (see :func:`_pick_window`); with
    ``replay`` (sources, share), that share of the windows from those sources instead."""
    images, labels = [], []
    attempts = 0
    while len(images) < batch:
        attempts += 1
        if attempts > 50 * batch:
            raise TrainingDataError(
                "no labelled pixels found in the training part of the data after many tries: check the labels, "
                "the class values and the ignore values"
            )
        pool = sources
        if replay is not None and replay[0] and rng.random() < replay[1]:  # no draw without replay
            pool = replay[0]
        source, window = _pick_window(pool, tile, rng, balanced)
        target = source.labels.read(window)
        image, valid = source.reader.read(window)
        target[~valid | source.validation_mask(window)] = IGNORE_INDEX  # nodata, and validation labels
        if not (target != IGNORE_INDEX).any():
            continue
        if augment:
            image, target = _augment(image, target, rng)
        images.append(image)
        labels.append(target)
    return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels))


def validation_windows(sources: List[OpenedSource], tile: int):
    for source in sources:
        for block in source.val_blocks:
            for row in range(int(block.row_off), int(block.row_off + block.height), tile):
                for col in range(int(block.col_off), int(block.col_off + block.width), tile):
                    # Only the block's own pixels are scored: the rest of the window is masked out.
                    height = min(tile, int(block.row_off + block.height) - row)
                    width = min(tile, int(block.col_off + block.width) - col)
                    yield source, Window(col, row, tile, tile), height, width


def steps_per_pass(sources: Sequence[OpenedSource], tile: int, batch_size: int) -> int:
    """Optimizer steps that draw as many windows as the training blocks hold tiles: one pass over the data."""
    area = sum(int(b.width) * int(b.height) for s in sources for b in s.train_blocks)
    return max(1, math.ceil(area / (tile * tile) / batch_size))


def mix_sources(replayed: List[OpenedSource], share: float) -> Optional[Tuple[List[OpenedSource], float]]:
    """The replay argument of :func:`draw_batch`: None without replayed sources."""
    return (replayed, share) if replayed else None


def log_label_notes(source: OpenedSource) -> None:
    """Log what the labels of a source leave out, so users see why pixels are not used."""
    if source.stats.unnamed:
        LOG.warning("%s: label values not in the class list are ignored: %s", source.labels.path.name,
                    ", ".join(f"{v} ({n} px)" for v, n in sorted(source.stats.unnamed.items())))
