"""Fine-tuning CWSAM on labelled rasters: sampling, loop, validation, best-model selection, resume.

One epoch = ``steps_per_epoch`` optimizer steps on random windows drawn inside the training blocks
of every source, followed by a validation pass over the held-out blocks. The window draw of epoch
``e`` depends only on (seed, e), so a run resumed from its saved state draws exactly what an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from torch.nn.parallel import DistributedDataParallel

from . import __version__
from .build import build_cwsam
from .checkpoint import CheckpointError, atomic_torch_save, file_sha256, torch_load_safely
from .datasets import RasterLabels, TrainingDataError, TrainingSource, random_window
from .devices import compile_encoder
from .distributed import DistributedContext, setup_distributed
from .inference import _autocast
from .losses import IGNORE_INDEX, SegmentationLoss, class_weights_from_counts
from .metrics import SegmentationMetrics, confusion_matrix, metrics_from_confusion
from .model_file import ClassInfo, ModelCard, save_model_file
from .paths import OutputConflictError, check_outputs, model_output_files, raster_input_files
from .radiometry import INPUT_SCALES, NormalizationStats, SarReader
from .scene import SceneError, open_scene, scene_paths
from .trainable import trainable_names

LOG = logging.getLogger("cwsam")


# Peak learning rates by kind of training: a whole network from random weights learns fastest
# at 1e-3 with AdamW on these data; adapters on a frozen pretrained SAM encoder keep the gentler 2e-4.
LR_FROM_SCRATCH = 1e-3
LR_ADAPTERS = 2e-4
# A warm start (``init_model``) begins from trained weights: this share of the peak rate of a fresh run.
WARM_START_LR_FACTOR = 0.5

# Training recipes: "default" (this project's), or "paper": the authors' (xypu98/CWSAM train.py and their
# FUSAR-Map config), so that results can be compared with theirs: AdamW at 2e-4, one learning rate per
# epoch on a cosine to 1e-7 over the epochs (CosineAnnealingLR, no warm-up; 200 epochs in their config),
# an epoch being one pass over the training data (its area in tiles), cross-entropy weighted by their
# class weights where given (FUSAR-Map: building 1.5, vegetation 1, water 0.5, road 1.9, background 0.1;
# else equal) and normalised by the pixel count (a weighted sum over labelled pixels divided by all
# pixels, as their soft-target CrossEntropyLoss does), no augmentation, uniform windows.
RECIPES = ("default", "paper")
PAPER_EPOCHS = 200
PAPER_LR_MIN = 1e-7


@dataclass
class TrainConfig:
    backbone: str
    classes: List[ClassInfo]
    output: Path
    sam_checkpoint: Optional[Path] = None
    tile_size: Optional[int] = None
    bands: Optional[List[str]] = None  # the model's band names; None: the first image's own bands
    band_indexes: Optional[List[int]] = None  # 1-based raster bands to read, in the model's order
    input_scale: str = "auto"  # scale of the images' values; auto: detected (8-bit images: amplitude)
    model_scale: str = "auto"  # auto: amplitude for 8-bit images (never log-transformed), else dB
    ignore_values: List[int] = field(default_factory=list)
    epochs: int = 10  # the paper recipe: 200 in their config
    steps_per_epoch: Optional[int] = 50  # None: one pass over the training data (its area in tiles)
    batch_size: int = 4
    accumulate: int = 1
    lr: Optional[float] = None  # None: LR_FROM_SCRATCH or LR_ADAPTERS, by the kind of training
    weight_decay: float = 0.01
    warmup_steps: int = 20
    time_budget: Optional[float] = None  # minutes; when set, epochs run until it is spent
    val_fraction: float = 0.2
    class_weights: Optional[List[float]] = None  # None: equal from scratch, inverse sqrt frequency with SAM
    dice_weight: float = 0.0
    balanced_sampling: float = 0.5  # share of windows centred on a pixel of a class drawn uniformly
    augment: bool = True
    gradient_checkpointing: bool = False
    compile_encoder: bool = False  # torch.compile the image encoder (eager, with a warning, where that fails)
    device: str = "auto"
    seed: int = 0
    validation_batch: int = 4
    recipe: str = "default"  # or "paper": see RECIPES
    # Warm start (see cwsam_core.retrain): continue from this model file (its backbone, classes, bands,
    # scales, normalisation and tile size), recorded as the parent in the new file's provenance;
    # ``init_sha256``: the parent's SHA-256 when it was loaded elsewhere (a file changed since is refused).
    init_model: Optional[Path] = None
    init_sha256: Optional[str] = None
    replay: float = 0.0  # share of windows drawn from the parent's own training sources, where still on disk
    replay_extra: List[TrainingSource] = field(default_factory=list)  # replayed besides them (e.g. its own map)


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_miou: float
    val_overall_accuracy: float
    lr: float
    seconds: float


@dataclass
class TrainResult:
    model_path: Path
    best_epoch: int
    best_miou: float
    history: List[EpochRecord]
    cancelled: bool


ProgressCallback = Callable[[Dict[str, object]], None]


class _Source:
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
                from .polygons import PolygonLabels  # pyogrio and shapely only when polygons are used

                self.labels = PolygonLabels(source.polygons, self.dataset, source.class_field, config.classes,
                                            layer=source.layer)
            else:
                self.labels = RasterLabels(source.labels, self.dataset, config.classes, config.ignore_values)
            self.stats = self.labels.stats()
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


def split_sources(sources: List[_Source], tile: int, val_fraction: float, seed: int) -> None:
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


def _combined_statistics(readers: Sequence[SarReader], weights: Sequence[float]) -> NormalizationStats:
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


def _window_around(row: int, col: int, tile: int, source: _Source, rng: np.random.Generator) -> Window:
    """A tile x tile window holding pixel (row, col) at a random place away from its border, kept inside
    the image where the image is large enough."""
    top = row - int(rng.integers(tile // 4, tile - tile // 4))
    left = col - int(rng.integers(tile // 4, tile - tile // 4))
    top = min(max(top, 0), max(source.dataset.height - tile, 0))
    left = min(max(left, 0), max(source.dataset.width - tile, 0))
    return Window(left, top, tile, tile)


def _pick_window(sources: List[_Source], tile: int, rng: np.random.Generator, balanced: float) -> Tuple[_Source, Window]:
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


def _draw_batch(sources: List[_Source], tile: int, batch: int, rng: np.random.Generator, augment: bool,
                balanced: float = 0.0, replay: Optional[Tuple[List[_Source], float]] = None):
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


def _validation_windows(sources: List[_Source], tile: int):
    for source in sources:
        for block in source.val_blocks:
            for row in range(int(block.row_off), int(block.row_off + block.height), tile):
                for col in range(int(block.col_off), int(block.col_off + block.width), tile):
                    # Only the block's own pixels are scored: the rest of the window is masked out.
                    height = min(tile, int(block.row_off + block.height) - row)
                    width = min(tile, int(block.col_off + block.width) - col)
                    yield source, Window(col, row, tile, tile), height, width


def validate(model, sources: List[_Source], tile: int, num_classes: int, device: torch.device,
             batch_size: int, context: Optional[DistributedContext] = None) -> SegmentationMetrics:
    """Metrics on the validation blocks (one confusion matrix over all their labelled pixels).

    Under ``torchrun`` each process scores every ``world_size``-th window and the confusion matrices
    are summed, so every process returns the same metrics.
    """
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    model.eval()
    pending: list = []

    def run() -> None:
        images = torch.from_numpy(np.stack([p[0] for p in pending])).to(device)
        with torch.inference_mode(), _autocast(device):
            predictions = model(images).argmax(dim=1).cpu().numpy()
        for (_, target), prediction in zip(pending, predictions):
            confusion[:] += confusion_matrix(target, prediction, num_classes, ignore=target == IGNORE_INDEX)
        pending.clear()

    rank, world = (context.rank, context.world_size) if context is not None else (0, 1)
    for index, (source, window, height, width) in enumerate(_validation_windows(sources, tile)):
        if index % world != rank:
            continue
        image, valid = source.reader.read(window)
        target = source.labels.read(window)
        target[~valid] = IGNORE_INDEX
        target[height:, :] = IGNORE_INDEX
        target[:, width:] = IGNORE_INDEX
        if (target != IGNORE_INDEX).any():
            pending.append((image, target))
        if len(pending) == batch_size:
            run()
    if pending:
        run()
    model.train()
    if context is not None:
        confusion = context.all_reduce_sum(confusion)
    return metrics_from_confusion(confusion)


def lr_factor(step: int, warmup: int, progress: float) -> float:
    """The learning rate as a fraction of its peak: linear warm-up over ``warmup`` steps, then a cosine
    decay to 1e-3 over ``progress`` in [0, 1] (the part of the run after warm-up: steps or time)."""
    if step < warmup:
        return (step + 1) / warmup
    return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".state.pt")


def resolve_bands(config: TrainConfig, image: rasterio.io.DatasetReader) -> Tuple[List[str], Optional[List[int]]]:
    """The model's band names and the raster bands to read (1-based; None: matched by name in each image).

    Given names win; else the bands chosen with ``band_indexes``; else the image's own bands, named by
    their descriptions (or "band N"), the first three of a raster with more.
    """
    listed = ", ".join(f"{i}: {d or '(no description)'}" for i, d in enumerate(image.descriptions, 1))
    indexes = config.band_indexes
    if indexes is not None:
        bad = [i for i in indexes if not 1 <= int(i) <= image.count]
        if bad or not 1 <= len(indexes) <= 3:
            raise TrainingDataError(
                f"bands {','.join(map(str, indexes))}: {Path(image.name).name} has {image.count} band(s) ({listed}); "
                "choose 1 to 3 of them, e.g. bands 1,2")
        indexes = [int(i) for i in indexes]
    if config.bands:
        return list(config.bands), indexes
    if indexes is None and image.count > 3:
        LOG.warning("%s has %d bands (%s): the model uses the first three; choose others with the bands option",
                    Path(image.name).name, image.count, listed)
        indexes = [1, 2, 3]
    chosen = indexes or list(range(1, image.count + 1))
    names = [(image.descriptions[i - 1] or "").strip() or f"band {i}" for i in chosen]
    if len(set(n.lower() for n in names)) < len(names):
        names = [f"band {i}" for i in chosen]
    return names, indexes


def _is_8bit(source: _Source, config: TrainConfig) -> bool:
    dtypes = source.dataset.dtypes
    return all(dtypes[i - 1] == "uint8" for i in (config.band_indexes or range(1, len(dtypes) + 1)))


def _resolve(config: TrainConfig, opened: List[_Source], pretrained: bool) -> TrainConfig:
    """A copy of ``config`` with what it leaves to the data or to the kind of training filled in."""
    bands, indexes = resolve_bands(config, opened[0].dataset)
    config = replace(config, bands=bands, band_indexes=indexes)
    model_scale = config.model_scale
    if model_scale == "auto":
        # An 8-bit raster is a display product or digital numbers: normalised as it is, never log-transformed.
        model_scale = "amplitude" if all(_is_8bit(s, config) for s in opened) else "db"
    lr = config.lr if config.lr is not None else (LR_ADAPTERS if pretrained else LR_FROM_SCRATCH) * (
        WARM_START_LR_FACTOR if config.init_model is not None else 1.0)
    if config.recipe == "paper":
        return replace(config, model_scale=model_scale, lr=config.lr if config.lr is not None else LR_ADAPTERS,
                       warmup_steps=0, augment=False, balanced_sampling=0.0,
                       class_weights=config.class_weights or paper_class_weights(config.classes))
    return replace(config, model_scale=model_scale, lr=lr)


def paper_class_weights(classes: Sequence[ClassInfo]) -> Optional[List[float]]:
    """The authors' class weights for classes they set them for (FUSAR-Map 1.0's five, matched by name);
    None (equal weights, as their code without ``loss_weight``) otherwise."""
    from .authors import FUSAR_MAP_CLASSES, FUSAR_MAP_LOSS_WEIGHTS

    theirs = {c.name: w for c, w in zip(FUSAR_MAP_CLASSES, FUSAR_MAP_LOSS_WEIGHTS)}
    names = [c.name.strip().lower() for c in classes]
    return [theirs[n] for n in names] if sorted(names) == sorted(theirs) else None


def steps_per_pass(sources: Sequence[_Source], tile: int, batch_size: int) -> int:
    """Optimizer steps that draw as many windows as the training blocks hold tiles: one pass over the data."""
    area = sum(int(b.width) * int(b.height) for s in sources for b in s.train_blocks)
    return max(1, math.ceil(area / (tile * tile) / batch_size))


def _check_config(config: TrainConfig) -> None:
    if len(config.classes) < 2:
        raise TrainingDataError("at least two classes are needed to train a classifier")
    if config.recipe not in RECIPES:
        raise TrainingDataError(f"unknown recipe {config.recipe!r}: use {' or '.join(RECIPES)}")
    if config.recipe == "paper" and config.time_budget is not None:
        raise TrainingDataError("the paper recipe follows the authors' schedule by epochs: leave out the training time")
    for name in ("epochs", "steps_per_epoch", "batch_size", "accumulate"):
        if getattr(config, name) is None and name == "steps_per_epoch":
            continue
        if int(getattr(config, name)) < 1:
            raise TrainingDataError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(config, name)}")
    if config.time_budget is not None and not config.time_budget > 0:
        raise TrainingDataError(f"the training time must be more than 0 minutes, got {config.time_budget}")
    if config.lr is not None and not config.lr > 0:
        raise TrainingDataError(f"the learning rate must be more than 0, got {config.lr}")
    if not 0 <= config.balanced_sampling <= 1:
        raise TrainingDataError(f"the balanced-sampling share must lie in [0, 1], got {config.balanced_sampling}")
    for name, scale in (("input scale", config.input_scale), ("model scale", config.model_scale)):
        if scale not in ("auto", *INPUT_SCALES):
            raise TrainingDataError(f"unknown {name} {scale!r}: use auto, {', '.join(INPUT_SCALES)}")


class _Clock:
    """Where the run stands: optimizer steps done and training seconds spent (across resumes), and the
    learning-rate schedule over steps or, with a time budget, over the elapsed time."""

    def __init__(self, config: TrainConfig, steps: int = 0, seconds: float = 0.0) -> None:
        self.budget = config.time_budget * 60.0 if config.time_budget else None
        self.total_steps = config.epochs * config.steps_per_epoch
        self.warmup = config.warmup_steps
        self.paper = config.recipe == "paper"
        self.epochs, self.steps_per_epoch = config.epochs, config.steps_per_epoch
        self.lr_min = PAPER_LR_MIN / config.lr if config.lr else 0.0
        self.steps, self._before = steps, seconds
        self._started = time.perf_counter()
        self._warm_seconds: Optional[float] = None  # when warm-up ended, on the budget's clock

    def start(self) -> None:
        """Start counting training time (set-up and data checks before the first step do not count)."""
        self._started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return self._before + time.perf_counter() - self._started

    def fraction(self) -> float:
        """How much of the run is done, in [0, 1]."""
        if self.budget is not None:
            return min(1.0, self.seconds / self.budget)
        return min(1.0, self.steps / self.total_steps)

    def factor(self) -> float:
        if self.paper:  # their CosineAnnealingLR(T_max=epochs, eta_min=1e-7), stepped once per epoch
            epoch = self.steps // self.steps_per_epoch
            return self.lr_min + (1 - self.lr_min) * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        if self.budget is None:
            return lr_factor(self.steps, self.warmup, (self.steps - self.warmup) / max(1, self.total_steps - self.warmup))
        if self.steps >= self.warmup and self._warm_seconds is None:
            self._warm_seconds = self.seconds
        start = self._warm_seconds or 0.0
        return lr_factor(self.steps, self.warmup, (self.seconds - start) / max(1e-9, self.budget - start))

    def spent(self) -> bool:
        return self.budget is not None and self.seconds >= self.budget


def train(
    sources: Sequence[TrainingSource],
    config: TrainConfig,
    resume: bool = False,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> TrainResult:
    """Fine-tune (or train from scratch) a CWSAM model; keeps the model file of the best validation mIoU.

    Writes ``config.output`` (the best model so far), ``<output>.state.pt`` (everything needed to
    resume, saved atomically every epoch) and ``<output>.log.csv`` (metrics per epoch). With
    ``config.time_budget`` epochs of ``steps_per_epoch`` steps run until the budget is spent (the last
    one cut short) and the learning rate follows the elapsed time. Under ``torchrun`` each process
    trains on its own windows (``config.batch_size`` per process), gradients are averaged at every
    step, and only rank 0 writes files and reports progress.
    """
    output = Path(config.output)
    _check_paths(sources, config)
    if not output.parent.is_dir():
        raise TrainingDataError(f"output folder does not exist: {output.parent}")
    if not sources:
        raise TrainingDataError("no training data given")
    _check_config(config)
    context = setup_distributed(config.device)
    if not context.is_main:
        progress = None
    device = context.device
    torch.manual_seed(config.seed)  # the same initial weights in every process
    opened: List[_Source] = []
    parent = None
    replayed: List[_Source] = []
    try:
        if config.init_model is not None:
            from .retrain import check_label_classes, load_parent, replay_sources

            parent = load_parent(config.init_model, config.sam_checkpoint, config.init_sha256)
            model = parent.model
            check_label_classes(sources, parent.card)
        else:
            model = build_cwsam(config.backbone, len(config.classes), config.sam_checkpoint, config.tile_size)
        model.image_encoder.gradient_checkpointing = config.gradient_checkpointing
        tile = model.input_size
        for source in sources:
            opened.append(_Source(source, config))
        if parent is not None and config.replay > 0:
            replayed = [_Source(s, config) for s in replay_sources(parent, sources, config.replay_extra)]
        config = _resolve(config, opened, model.pretrained_encoder)
        split_sources(opened, tile, config.val_fraction, config.seed)
        split_sources(replayed, tile, 0.0, config.seed)  # replayed windows train, never validate
        training_sources = [s for s in opened if s.train_blocks]
        if config.steps_per_epoch is None:
            config = replace(config, steps_per_epoch=steps_per_pass(training_sources, tile, config.batch_size))
        counts = sum(s.block_counts[~s.held_out].sum(axis=0) for s in training_sources)
        for s in opened:
            _log_label_notes(s)
        if (counts > 0).sum() < (1 if parent is not None else 2):  # a warm start knows the other classes
            raise TrainingDataError(
                f"the training labels hold {int((counts > 0).sum())} of the classes (pixels per class: "
                f"{counts.tolist()}): at least two classes need labelled pixels"
            )
        readers = [s.open_reader(config, None) for s in opened + replayed]
        # Normalisation statistics of the training images, applied alike to every image; a warm start
        # keeps its parent's, which the parent's weights were trained with.
        if parent is not None and parent.card.normalization:
            stats = NormalizationStats.from_dict(parent.card.normalization)
        else:
            stats = _combined_statistics([s.reader for s in training_sources],
                                         [s.dataset.width * s.dataset.height for s in training_sources])
        for reader in readers:
            reader.stats = stats
        mix = mix_sources(replayed, config.replay)
        if model.pixel_expert is not None:
            _fit_pixel_expert(model, training_sources, tile, config, mix)
        # Without given weights: plain cross-entropy from scratch (inverse-frequency weights made small
        # models trade the common classes for the rare ones on real SAR), inverse square-root frequency
        # weights for adapters on SAM, as before.
        if config.class_weights:
            weights = torch.tensor(config.class_weights, dtype=torch.float32)
        elif model.pretrained_encoder and config.recipe != "paper":
            weights = class_weights_from_counts(counts)
        else:
            weights = torch.ones(len(config.classes))
        loss_fn = SegmentationLoss(weights.to(device), config.dice_weight,
                                   normalization="pixels" if config.recipe == "paper" else "labelled")
        model.to(device).train()
        if config.compile_encoder:
            compile_encoder(model, LOG.warning)
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        start_epoch, best_miou, best_epoch, history, clock = 0, -1.0, -1, [], _Clock(config)
        if resume:
            start_epoch, best_miou, best_epoch, history, steps, seconds = _load_state(output, model, optimizer, scaler)
            clock = _Clock(config, steps, seconds)
        # DDP broadcasts rank 0's weights at construction and averages gradients in backward.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if context.enabled else model
        card = ModelCard(
            backbone=config.backbone, input_size=tile, classes=list(config.classes), bands=list(config.bands),
            input_scale=config.model_scale, normalization=stats.to_dict(),
            training_input_scale=training_sources[0].reader.source_scale,
        )
        if parent is not None:
            card.tile_size, card.tile_overlap = parent.card.tile_size, parent.card.tile_overlap
            card.gsd = parent.card.gsd
        data_fingerprint = [_fingerprint(given, source in training_sources) for given, source in zip(sources, opened)]
        data_fingerprint += [_fingerprint(s.given, True, "replay") for s in replayed]
        cancelled = finished = False
        clock.start()
        epochs = itertools.count(start_epoch) if clock.budget is not None else range(start_epoch, config.epochs)
        for epoch in epochs:
            started = time.perf_counter()
            # Depends on (seed, epoch[, rank]) only: a resumed run draws what an uninterrupted one would.
            rng = np.random.default_rng([config.seed, epoch] + ([context.rank] if context.enabled else []))
            losses = []
            for step in range(config.steps_per_epoch):
                if should_cancel is not None and should_cancel():
                    cancelled = True
                    break
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * clock.factor()
                optimizer.zero_grad(set_to_none=True)
                for micro in range(config.accumulate):
                    images, target = _draw_batch(training_sources, tile, config.batch_size, rng, config.augment,
                                                 config.balanced_sampling, mix)
                    # Gradients are averaged across processes only on the last micro-batch.
                    sync = nullcontext() if micro == config.accumulate - 1 or not context.enabled else net.no_sync()
                    with sync:
                        with _autocast(device):
                            logits = net(images.to(device))
                        loss = loss_fn(logits, target.to(device)) / config.accumulate
                        scaler.scale(loss).backward()
                    losses.append(loss.item() * config.accumulate)
                scaler.step(optimizer)
                scaler.update()
                clock.steps += 1
                # Every process stops at the same step: rank 0's clock decides under torchrun.
                finished = clock.budget is not None and bool(
                    context.all_reduce_sum(np.array([float(clock.spent() and context.is_main)]))[0])
                if finished and clock.steps == 1:
                    raise TrainingDataError(
                        f"the training time ({config.time_budget:g} min) is shorter than one training step "
                        f"({clock.seconds:.1f} s here): give more time; nothing was written")
                if progress is not None:
                    progress({"epoch": epoch + 1, "epochs": _epochs_estimate(config, clock, epoch),
                              "step": step + 1, "steps": config.steps_per_epoch, "loss": losses[-1],
                              "fraction": clock.fraction()})
                if finished:
                    break
            if cancelled or not losses:
                break
            loss_sum = context.all_reduce_sum(np.array([np.sum(losses), len(losses)], dtype=np.float64))
            metrics = validate(model, opened, tile, len(config.classes), device, config.validation_batch, context)
            record = EpochRecord(epoch + 1, float(loss_sum[0] / loss_sum[1]), metrics.miou, metrics.overall_accuracy,
                                 optimizer.param_groups[0]["lr"], time.perf_counter() - started)
            history.append(record)
            if epoch == start_epoch and any(s.held_out.any() for s in opened):
                _warn_about_validation(metrics, config.classes)
            # Ties go to the later epoch: a score that does not move must not keep an untrained model.
            improved = not math.isnan(metrics.miou) and metrics.miou >= best_miou
            if improved:
                best_miou, best_epoch = metrics.miou, epoch + 1
            if context.is_main:
                if improved:
                    card.provenance = _provenance(config, data_fingerprint, best_epoch, metrics, context.world_size,
                                                  clock, parent)
                    _save_model(output, model, card, parent)
                _write_log(output, history)
                _save_state(output, model, optimizer, scaler, epoch + 1, best_miou, best_epoch, history, clock)
            if progress is not None:
                progress({"epoch": epoch + 1, "epochs": _epochs_estimate(config, clock, epoch),
                          "val_miou": metrics.miou, "train_loss": record.train_loss, "best_miou": best_miou,
                          "fraction": clock.fraction()})
            if finished:
                break
        if best_epoch < 0 and context.is_main:
            # No validation part (fraction 0) or cancelled before the first epoch ended: keep the last weights.
            if not cancelled or history:
                card.provenance = _provenance(config, data_fingerprint, len(history), None, context.world_size, clock,
                                              parent)
                _save_model(output, model, card, parent)
        _warn_about_a_still_score(history)
        context.barrier()  # other ranks return once rank 0 has written its files
        return TrainResult(output, best_epoch, best_miou, history, cancelled)
    finally:
        for s in opened + replayed:
            s.close()
        context.close()


def _save_model(output: Path, model, card: ModelCard, parent=None) -> None:
    """Write the model file; a warm start only while its parent is still the file it loaded."""
    if parent is not None:
        from .retrain import check_unchanged

        check_unchanged(parent.path, parent.sha256)
    save_model_file(output, model, card)


def mix_sources(replayed: List[_Source], share: float) -> Optional[Tuple[List[_Source], float]]:
    """The replay argument of :func:`_draw_batch`: None without replayed sources."""
    return (replayed, share) if replayed else None


# Pixels the per-pixel Gaussian classifier is fitted from: windows of the training part, about 1 M pixels.
PIXEL_EXPERT_PIXELS = 2 ** 20


def _fit_pixel_expert(model, sources: List[_Source], tile: int, config: TrainConfig,
                      replay: Optional[Tuple[List[_Source], float]]) -> None:
    """Fit the model's per-pixel Gaussian classifier on labelled pixels of training windows, drawn as
    training draws them (rare classes included) from a random stream of its own: the training draws
    stay as they were, and every process of a distributed run fits the same parameters. A warm start
    refits the classes its new labels hold and keeps its parent's fit of the others."""
    windows = max(4, min(64, PIXEL_EXPERT_PIXELS // (tile * tile)))
    rng = np.random.default_rng([config.seed, 0x9E37])
    images, labels = _draw_batch(sources, tile, windows, rng, False, config.balanced_sampling, replay)
    counts = model.pixel_expert.fit(images, labels, seed=config.seed)
    LOG.info("pixel expert fitted on %s labelled pixels per class", counts.tolist())


def _epochs_estimate(config: TrainConfig, clock: _Clock, epoch: int) -> int:
    """Epochs of the whole run: as configured, or with a time budget estimated from the time spent."""
    if clock.budget is None:
        return config.epochs
    fraction = clock.fraction()
    if fraction < 0.05:  # too early to tell
        return epoch + 1
    done = epoch + clock.steps % config.steps_per_epoch / config.steps_per_epoch
    return max(epoch + 1, math.ceil(done / fraction - 1e-6))


def _warn_about_a_still_score(history: List[EpochRecord]) -> None:
    """Say when validation could not select: the same mIoU in every epoch (the last epoch is kept)."""
    scores = [r.val_miou for r in history if not math.isnan(r.val_miou)]
    if len(scores) > 1 and max(scores) - min(scores) < 1e-9:
        LOG.warning("the validation mIoU stayed at %.4f in all %d epochs (the model predicts the same classes "
                    "there throughout), so it could not choose an epoch: the model of the last epoch is kept. "
                    "Train longer, or label more areas of the classes it misses", scores[0], len(scores))


def _check_paths(sources: Sequence[TrainingSource], config: TrainConfig) -> None:
    """Refuse, before any work, a model file (or its state and log) that is one of the training inputs."""
    inputs = [("SAM checkpoint", [config.sam_checkpoint]), ("parent model", [config.init_model])]
    for source in sources:
        inputs += [("training image", raster_input_files(path)) for path in scene_paths(source.image)]
        inputs += [("label raster", raster_input_files(source.labels) if source.labels else []),
                   ("polygon file", [source.polygons])]
    try:
        check_outputs(inputs, [("model file", model_output_files(config.output))])
    except OutputConflictError as exc:
        raise TrainingDataError(str(exc)) from None


def _warn_about_validation(metrics: SegmentationMetrics, classes: Sequence[ClassInfo]) -> None:
    """Say when the validation part lacks classes: its mIoU then covers only those it holds."""
    present = metrics.confusion.sum(axis=1) > 0
    if metrics.pixels == 0:
        LOG.warning("the validation part holds no labelled pixels: the model of the last epoch is kept; label more "
                    "areas or raise the validation fraction")
    elif not present.all():
        missing = ", ".join(c.name for c, p in zip(classes, present) if not p)
        LOG.warning("the validation part holds no labelled pixels of: %s; its mIoU covers the other classes only. "
                    "Label more areas of those classes or raise the validation fraction", missing)


def _log_label_notes(source: _Source) -> None:
    """Log what the labels of a source leave out, so users see why pixels are not used."""
    if source.stats.unnamed:
        LOG.warning("%s: label values not in the class list are ignored: %s", source.labels.path.name,
                    ", ".join(f"{v} ({n} px)" for v, n in sorted(source.stats.unnamed.items())))


def _fingerprint(source: TrainingSource, training: bool, role: Optional[str] = None) -> dict:
    """What the provenance records of a source: absolute paths (so that a later warm start can replay
    it), their SHA-256, its role (training, validation or replay) and how its labels were read."""
    label = source.label_path
    entry = {"image": ",".join(str(Path(p).absolute()) for p in scene_paths(source.image)),
             "labels": str(Path(label).absolute()),
             "role": role or ("training" if training else "validation"),
             "image_sha256": ",".join(file_sha256(p) for p in scene_paths(source.image)),
             "labels_sha256": file_sha256(label)}
    if source.polygons is not None:
        entry["class_field"] = source.class_field
        if source.layer:
            entry["layer"] = source.layer
    return entry


def _provenance(config: TrainConfig, data: list, epoch: int, metrics: Optional[SegmentationMetrics],
                processes: int, clock: _Clock, parent=None) -> dict:
    warm = {} if parent is None else {"parent": parent.lineage()[-1], "lineage": parent.lineage(),
                                      "replay": config.replay, "inherited_data": parent.training_data()}
    return {**warm,
        "trained_with": f"cwsam {__version__}", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": data, "epoch": epoch, "epochs": config.epochs, "steps_per_epoch": config.steps_per_epoch,
        "steps": clock.steps, "training_minutes": round(clock.seconds / 60, 2), "time_budget": config.time_budget,
        "batch_size": config.batch_size, "processes": processes, "lr": config.lr, "seed": config.seed,
        "val_fraction": config.val_fraction, "balanced_sampling": config.balanced_sampling, "recipe": config.recipe,
        "class_weights": config.class_weights, "ignore_values": list(config.ignore_values),
        "validation": None if metrics is None else {
            "miou": metrics.miou, "overall_accuracy": metrics.overall_accuracy, "fwiou": metrics.fwiou,
            "kappa": metrics.kappa, "iou": [None if np.isnan(v) else float(v) for v in metrics.iou],
        },
        "python": platform.python_version(), "torch": str(torch.__version__),
    }


def _write_log(output: Path, history: List[EpochRecord]) -> None:
    path = output.with_name(output.name + ".log.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(asdict(history[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in history)


def _save_state(output: Path, model, optimizer, scaler, epoch: int, best_miou: float, best_epoch: int,
                history: List[EpochRecord], clock: _Clock) -> None:
    names = trainable_names(model)
    atomic_torch_save({
        "format": "cwsam-training-state", "epoch": epoch, "best_miou": best_miou, "best_epoch": best_epoch,
        "history": [asdict(r) for r in history], "steps": clock.steps, "seconds": clock.seconds,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names},
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
    }, state_path(output))


def _load_state(output: Path, model, optimizer, scaler):
    """(epoch, best mIoU, best epoch, history, steps, seconds) of a saved run, its weights loaded."""
    path = state_path(output)
    if not path.is_file():
        raise TrainingDataError(f"--resume: no training state at {path}; start without --resume")
    try:
        state = torch_load_safely(path, "training state")
    except CheckpointError as exc:
        raise TrainingDataError(str(exc)) from None
    if not isinstance(state, dict) or state.get("format") != "cwsam-training-state" or "steps" not in state:
        raise TrainingDataError(f"{path} is not a training state of this CWSAM version: start without --resume")
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    history = [EpochRecord(**r) for r in state["history"]]
    return state["epoch"], state["best_miou"], state["best_epoch"], history, state["steps"], state["seconds"]
