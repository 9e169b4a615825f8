"""What a training run is told and what it reports: the settings (``TrainConfig``), the recipes and their
learning rates, the learning-rate schedule over steps or over a time budget, and the records of a run."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from ..common.card import ClassInfo

if TYPE_CHECKING:  # only named in annotations: the config stays importable without rasterio (QGIS's process)
    from .datasets import TrainingSource

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
    # Warm start (see cwsam_core.training.retrain): continue from this model file (its backbone, classes, bands,
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


def lr_factor(step: int, warmup: int, progress: float) -> float:
    """The learning rate as a fraction of its peak: linear warm-up over ``warmup`` steps, then a cosine
    decay to 1e-3 over ``progress`` in [0, 1] (the part of the run after warm-up: steps or time)."""
    if step < warmup:
        return (step + 1) / warmup
    return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


class RunClock:
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
