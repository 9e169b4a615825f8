"""Fine-tuning CWSAM on labelled rasters: sampling, loop, validation, best-model selection, resume.

One epoch = ``steps_per_epoch`` optimizer steps on random windows drawn inside the training blocks
of every source, followed by a validation pass over the held-out blocks. The window draw of epoch
``e`` depends only on (seed, e), so a run resumed from its saved state draws exactly what an
uninterrupted run would have drawn.
"""

from __future__ import annotations

import csv
import logging
import math
import platform
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from rasterio.windows import Window
from torch.nn.parallel import DistributedDataParallel

from . import __version__
from .build import build_cwsam
from .checkpoint import CheckpointError, atomic_torch_save, file_sha256, torch_load_safely
from .datasets import RasterLabels, TrainingDataError, block_split, open_raster, random_window
from .distributed import DistributedContext, setup_distributed
from .inference import _autocast
from .losses import IGNORE_INDEX, SegmentationLoss, class_weights_from_counts
from .metrics import SegmentationMetrics, confusion_matrix, metrics_from_confusion
from .model_file import ClassInfo, ModelCard, save_model_file
from .paths import OutputConflictError, check_outputs, model_output_files, raster_input_files
from .radiometry import NormalizationStats, SarReader
from .trainable import trainable_names

LOG = logging.getLogger("cwsam")


@dataclass
class TrainingSource:
    """One labelled image: an image raster with either a label raster of class values (any grid) or a
    polygon file (GeoPackage, Shapefile, GeoJSON; any CRS) whose ``class_field`` holds the classes."""

    image: Path
    labels: Optional[Path] = None
    polygons: Optional[Path] = None
    class_field: Optional[str] = None
    layer: Optional[str] = None  # layer of a multi-layer polygon file

    @property
    def label_path(self) -> Path:
        return Path(self.labels if self.labels is not None else self.polygons)


@dataclass
class TrainConfig:
    backbone: str
    classes: List[ClassInfo]
    output: Path
    sam_checkpoint: Optional[Path] = None
    tile_size: Optional[int] = None
    bands: List[str] = field(default_factory=lambda: ["VV", "VH"])
    input_scale: str = "auto"
    model_scale: str = "db"
    ignore_values: List[int] = field(default_factory=list)
    epochs: int = 10
    steps_per_epoch: int = 50
    batch_size: int = 4
    accumulate: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    val_fraction: float = 0.2
    class_weights: Optional[List[float]] = None  # None: inverse square-root frequency of the training labels
    dice_weight: float = 0.0
    augment: bool = True
    gradient_checkpointing: bool = False
    device: str = "auto"
    seed: int = 0
    validation_batch: int = 4


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
    """An open training source: reader, labels and its training / validation blocks."""

    def __init__(self, source: TrainingSource, config: TrainConfig) -> None:
        if (source.labels is None) == (source.polygons is None):
            raise TrainingDataError("give each training image either a label raster or a polygon file, not both")
        if source.polygons is not None and not source.class_field:
            raise TrainingDataError(f"{Path(source.polygons).name}: name the class field of the polygons")
        self.path = Path(source.image)
        self.dataset = open_raster(self.path, "image raster")
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
        self.train_blocks: List[Window] = []
        self.val_blocks: List[Window] = []
        self.reader: Optional[SarReader] = None

    def split_blocks(self, tile: int, val_fraction: float, seed: int) -> None:
        """Hold out a random share of blocks of two tiles a side: training windows move inside the
        training blocks, the validation blocks stay unseen."""
        self.train_blocks, self.val_blocks = block_split(
            self.dataset.height, self.dataset.width, 2 * tile, val_fraction, seed
        )

    def assign_whole(self, tile: int, validation: bool) -> None:
        """Use the whole image for training or for validation (split by files)."""
        blocks, _ = block_split(self.dataset.height, self.dataset.width, 2 * tile, 0.0)
        self.train_blocks, self.val_blocks = ([], blocks) if validation else (blocks, [])

    def open_reader(self, config: TrainConfig, normalization: Optional[dict]) -> SarReader:
        """A reader of this image; without ``normalization`` its statistics come from the image itself."""
        self.reader = SarReader(self.dataset, config.bands, config.model_scale, input_scale=config.input_scale,
                                normalization=normalization, warn=LOG.warning)
        return self.reader

    def close(self) -> None:
        self.labels.close()
        self.dataset.close()


def split_sources(sources: List[_Source], tile: int, val_fraction: float, seed: int) -> None:
    """The validation split: whole files when there are several (a random ``val_fraction`` of them, at
    least one, never all), blocks inside the image when there is one. Either way no validation pixel is
    ever inside a training window."""
    if len(sources) == 1 or val_fraction <= 0:
        for source in sources:
            source.split_blocks(tile, val_fraction, seed)
        return
    if not 0 < val_fraction < 1:
        raise TrainingDataError(f"validation fraction must lie in [0, 1), got {val_fraction}")
    n_val = min(max(1, int(round(len(sources) * val_fraction))), len(sources) - 1)
    held_out = set(np.random.default_rng(seed).permutation(len(sources))[:n_val].tolist())
    for index, source in enumerate(sources):
        source.assign_whole(tile, index in held_out)


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


def _draw_batch(sources: List[_Source], tile: int, batch: int, rng: np.random.Generator, augment: bool):
    """``batch`` labelled windows from the training blocks, sources chosen by their training area."""
    areas = np.array([sum(b.width * b.height for b in s.train_blocks) for s in sources], dtype=np.float64)
    images, labels = [], []
    attempts = 0
    while len(images) < batch:
        attempts += 1
        if attempts > 50 * batch:
            raise TrainingDataError(
                "no labelled pixels found in the training part of the data after many tries: check the labels, "
                "the class values and the ignore values"
            )
        source = sources[int(rng.choice(len(sources), p=areas / areas.sum()))]
        block = source.train_blocks[int(rng.integers(len(source.train_blocks)))]
        window = random_window(block, tile, rng)
        target = source.labels.read(window)
        image, valid = source.reader.read(window)
        target[~valid] = IGNORE_INDEX  # nodata pixels carry no label
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


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def state_path(output: Path) -> Path:
    return output.with_name(output.name + ".state.pt")


def train(
    sources: Sequence[TrainingSource],
    config: TrainConfig,
    resume: bool = False,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> TrainResult:
    """Fine-tune (or train from scratch) a CWSAM model; keeps the model file of the best validation mIoU.

    Writes ``config.output`` (the best model so far), ``<output>.state.pt`` (everything needed to
    resume, saved atomically every epoch) and ``<output>.log.csv`` (metrics per epoch). Under
    ``torchrun`` each process trains on its own windows (``config.batch_size`` per process), gradients
    are averaged at every step, and only rank 0 writes files and reports progress.
    """
    output = Path(config.output)
    _check_paths(sources, config)
    if not output.parent.is_dir():
        raise TrainingDataError(f"output folder does not exist: {output.parent}")
    if len(config.classes) < 2:
        raise TrainingDataError("at least two classes are needed to train a classifier")
    if not sources:
        raise TrainingDataError("no training data given")
    for name in ("epochs", "steps_per_epoch", "batch_size", "accumulate"):
        if int(getattr(config, name)) < 1:
            raise TrainingDataError(f"{name.replace('_', ' ')} must be at least 1, got {getattr(config, name)}")
    context = setup_distributed(config.device)
    if not context.is_main:
        progress = None
    device = context.device
    torch.manual_seed(config.seed)  # the same initial weights in every process
    opened: List[_Source] = []
    try:
        model = build_cwsam(config.backbone, len(config.classes), config.sam_checkpoint, config.tile_size)
        model.image_encoder.gradient_checkpointing = config.gradient_checkpointing
        tile = model.input_size
        for source in sources:
            opened.append(_Source(source, config))
        split_sources(opened, tile, config.val_fraction, config.seed)
        training_sources = [s for s in opened if s.train_blocks]
        counts = sum(s.stats.class_pixels for s in training_sources)
        for s in opened:
            _log_label_notes(s)
        if (counts > 0).sum() < 2:
            raise TrainingDataError(
                f"the training labels hold {int((counts > 0).sum())} of the classes (pixels per class: "
                f"{counts.tolist()}): at least two classes need labelled pixels"
            )
        readers = [s.open_reader(config, None) for s in opened]
        # Normalisation statistics of the training images, applied alike to every image.
        stats = _combined_statistics([s.reader for s in training_sources],
                                     [s.dataset.width * s.dataset.height for s in training_sources])
        for reader in readers:
            reader.stats = stats
        weights = (torch.tensor(config.class_weights, dtype=torch.float32) if config.class_weights
                   else class_weights_from_counts(counts))
        loss_fn = SegmentationLoss(weights.to(device), config.dice_weight)
        model.to(device).train()
        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
        total_steps = config.epochs * config.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.warmup_steps, total_steps))
        use_scaler = device.type == "cuda" and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        start_epoch, best_miou, best_epoch, history = 0, -1.0, -1, []
        if resume:
            start_epoch, best_miou, best_epoch, history = _load_state(output, model, optimizer, scheduler, scaler)
        # DDP broadcasts rank 0's weights at construction and averages gradients in backward.
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
            if context.enabled else model
        card = ModelCard(
            backbone=config.backbone, input_size=tile, classes=list(config.classes), bands=list(config.bands),
            input_scale=config.model_scale, normalization=stats.to_dict(),
        )
        data_fingerprint = [_fingerprint(given, source in training_sources) for given, source in zip(sources, opened)]
        cancelled = False
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            # Depends on (seed, epoch[, rank]) only: a resumed run draws what an uninterrupted one would.
            rng = np.random.default_rng([config.seed, epoch] + ([context.rank] if context.enabled else []))
            losses = []
            for step in range(config.steps_per_epoch):
                if should_cancel is not None and should_cancel():
                    cancelled = True
                    break
                optimizer.zero_grad(set_to_none=True)
                for micro in range(config.accumulate):
                    images, target = _draw_batch(training_sources, tile, config.batch_size, rng, config.augment)
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
                scheduler.step()
                if progress is not None:
                    progress({"epoch": epoch + 1, "epochs": config.epochs, "step": step + 1,
                              "steps": config.steps_per_epoch, "loss": losses[-1]})
            if cancelled:
                break
            loss_sum = context.all_reduce_sum(np.array([np.sum(losses), len(losses)], dtype=np.float64))
            metrics = validate(model, opened, tile, len(config.classes), device, config.validation_batch, context)
            record = EpochRecord(epoch + 1, float(loss_sum[0] / loss_sum[1]), metrics.miou, metrics.overall_accuracy,
                                 scheduler.get_last_lr()[0], time.perf_counter() - started)
            history.append(record)
            if epoch == start_epoch:
                _warn_about_validation(metrics, config.classes)
            improved = not math.isnan(metrics.miou) and metrics.miou > best_miou
            if improved:
                best_miou, best_epoch = metrics.miou, epoch + 1
            if context.is_main:
                if improved:
                    card.provenance = _provenance(config, data_fingerprint, best_epoch, metrics, context.world_size)
                    save_model_file(output, model, card)
                _write_log(output, history)
                _save_state(output, model, optimizer, scheduler, scaler, epoch + 1, best_miou, best_epoch, history)
            if progress is not None:
                progress({"epoch": epoch + 1, "epochs": config.epochs, "val_miou": metrics.miou,
                          "train_loss": record.train_loss, "best_miou": best_miou})
        if best_epoch < 0 and context.is_main:
            # No validation part (fraction 0) or cancelled before the first epoch ended: keep the last weights.
            if not cancelled or history:
                card.provenance = _provenance(config, data_fingerprint, len(history), None, context.world_size)
                save_model_file(output, model, card)
        context.barrier()  # other ranks return once rank 0 has written its files
        return TrainResult(output, best_epoch, best_miou, history, cancelled)
    finally:
        for s in opened:
            s.close()
        context.close()


def _check_paths(sources: Sequence[TrainingSource], config: TrainConfig) -> None:
    """Refuse, before any work, a model file (or its state and log) that is one of the training inputs."""
    inputs = [("SAM checkpoint", [config.sam_checkpoint])]
    for source in sources:
        inputs += [("training image", raster_input_files(source.image)),
                   ("label raster", raster_input_files(source.labels) if source.labels else []),
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


def _fingerprint(source: TrainingSource, training: bool) -> dict:
    label = source.label_path
    entry = {"image": str(source.image), "labels": str(label), "role": "training" if training else "validation",
             "image_sha256": file_sha256(source.image), "labels_sha256": file_sha256(label)}
    if source.polygons is not None:
        entry["class_field"] = source.class_field
    return entry


def _provenance(config: TrainConfig, data: list, epoch: int, metrics: Optional[SegmentationMetrics],
                processes: int = 1) -> dict:
    return {
        "trained_with": f"cwsam {__version__}", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": data, "epoch": epoch, "epochs": config.epochs, "steps_per_epoch": config.steps_per_epoch,
        "batch_size": config.batch_size, "processes": processes, "lr": config.lr, "seed": config.seed,
        "val_fraction": config.val_fraction,
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


def _save_state(output: Path, model, optimizer, scheduler, scaler, epoch: int, best_miou: float, best_epoch: int,
                history: List[EpochRecord]) -> None:
    names = trainable_names(model)
    atomic_torch_save({
        "format": "cwsam-training-state", "epoch": epoch, "best_miou": best_miou, "best_epoch": best_epoch,
        "history": [asdict(r) for r in history],
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items() if k in names},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
    }, state_path(output))


def _load_state(output: Path, model, optimizer, scheduler, scaler):
    path = state_path(output)
    if not path.is_file():
        raise TrainingDataError(f"--resume: no training state at {path}; start without --resume")
    try:
        state = torch_load_safely(path, "training state")
    except CheckpointError as exc:
        raise TrainingDataError(str(exc)) from None
    if not isinstance(state, dict) or state.get("format") != "cwsam-training-state":
        raise TrainingDataError(f"{path} is not a CWSAM training state")
    model.load_state_dict(state["model"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    history = [EpochRecord(**r) for r in state["history"]]
    return state["epoch"], state["best_miou"], state["best_epoch"], history
