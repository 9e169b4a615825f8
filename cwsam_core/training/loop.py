"""Fine-tuning CWSAM on labelled rasters: the loop, validation, best-model selection, resume (settings and
schedule in ``config``, windows in ``sampling``).

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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import rasterio
import torch
from torch.nn.parallel import DistributedDataParallel

from .. import __version__
from ..common.card import INPUT_SCALES, ClassInfo, ModelCard
from ..common.labels import IGNORE_INDEX
from ..common.paths import check_outputs, file_sha256, model_output_files, output_file_problem, raster_input_files
from ..engine.devices import compile_encoder
from ..engine.runners import tile_size_problem
from ..engine.torch_runner import _autocast
from ..errors import CheckpointError, OutputConflictError, TrainingDataError
from ..model.authors import FUSAR_MAP_CLASSES, FUSAR_MAP_LOSS_WEIGHTS
from ..model.build import build_cwsam
from ..model.checkpoint import atomic_torch_save, torch_load_safely
from ..model.model_file import save_model_file
from ..model.trainable import trainable_names
from ..raster.radiometry import NormalizationStats
from ..raster.scene import scene_paths
from .config import (
    LR_ADAPTERS, LR_FROM_SCRATCH, RECIPES, WARM_START_LR_FACTOR, EpochRecord, ProgressCallback, RunClock, TrainConfig,
    TrainResult,
)
from .datasets import TrainingSource
from .distributed import DistributedContext, setup_distributed
from .losses import SegmentationLoss, class_weights_from_counts
from .metrics import SegmentationMetrics, confusion_matrix, metrics_from_confusion
from .parent import check_label_classes, check_unchanged, load_parent, replay_sources
from .sampling import (
    OpenedSource, combined_statistics, draw_batch, log_label_notes, mix_sources, split_sources, steps_per_pass,
    validation_windows,
)

LOG = logging.getLogger("cwsam")


def validate(model, sources: List[OpenedSource], tile: int, num_classes: int, device: torch.device,
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
    for index, (source, window, height, width) in enumerate(validation_windows(sources, tile)):
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


def _is_8bit(source: OpenedSource, config: TrainConfig) -> bool:
    dtypes = source.dataset.dtypes
    return all(dtypes[i - 1] == "uint8" for i in (config.band_indexes or range(1, len(dtypes) + 1)))


def _resolve(config: TrainConfig, opened: List[OpenedSource], pretrained: bool) -> TrainConfig:
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
    theirs = {c.name: w for c, w in zip(FUSAR_MAP_CLASSES, FUSAR_MAP_LOSS_WEIGHTS)}
    names = [c.name.strip().lower() for c in classes]
    return [theirs[n] for n in names] if sorted(names) == sorted(theirs) else None


def _check_config(config: TrainConfig) -> None:
    if len(config.classes) < 2:
        raise TrainingDataError("at least two classes are needed to train a classifier")
    if config.tile_size is not None and (problem := tile_size_problem(int(config.tile_size), len(config.classes))):
        raise TrainingDataError(problem)
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
    if not sources:
        raise TrainingDataError("no training data given")
    _check_config(config)
    context = setup_distributed(config.device)
    if not context.is_main:
        progress = None
    device = context.device
    torch.manual_seed(config.seed)  # the same initial weights in every process
    opened: List[OpenedSource] = []
    parent = None
    replayed: List[OpenedSource] = []
    try:
        if config.init_model is not None:
            parent = load_parent(config.init_model, config.sam_checkpoint, config.init_sha256)
            model = parent.model
            sources = check_label_classes(sources, parent.card.classes, config.ignore_values)
        else:
            model = build_cwsam(config.backbone, len(config.classes), config.sam_checkpoint, config.tile_size)
        model.image_encoder.gradient_checkpointing = config.gradient_checkpointing
        tile = model.input_size
        for source in sources:
            opened.append(OpenedSource(source, config))
        if parent is not None and config.replay > 0:
            replayed = [OpenedSource(s, config) for s in replay_sources(parent, sources, config.replay_extra)]
        config = _resolve(config, opened, model.pretrained_encoder)
        split_sources(opened, tile, config.val_fraction, config.seed)
        split_sources(replayed, tile, 0.0, config.seed)  # replayed windows train, never validate
        training_sources = [s for s in opened if s.train_blocks]
        if config.steps_per_epoch is None:
            config = replace(config, steps_per_epoch=steps_per_pass(training_sources, tile, config.batch_size))
        counts = sum(s.block_counts[~s.held_out].sum(axis=0) for s in training_sources)
        for s in opened:
            log_label_notes(s)
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
            stats = combined_statistics([s.reader for s in training_sources],
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
        start_epoch, best_miou, best_epoch, history, clock = 0, -1.0, -1, [], RunClock(config)
        if resume:
            start_epoch, best_miou, best_epoch, history, steps, seconds = _load_state(output, model, optimizer, scaler)
            clock = RunClock(config, steps, seconds)
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
                    images, target = draw_batch(training_sources, tile, config.batch_size, rng, config.augment,
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
        check_unchanged(parent.path, parent.sha256)
    save_model_file(output, model, card)


# Pixels the per-pixel Gaussian classifier is fitted from: windows of the training part, about 1 M pixels.
PIXEL_EXPERT_PIXELS = 2 ** 20


def _fit_pixel_expert(model, sources: List[OpenedSource], tile: int, config: TrainConfig,
                      replay: Optional[Tuple[List[OpenedSource], float]]) -> None:
    """Fit the model's per-pixel Gaussian classifier on labelled pixels of training windows, drawn as
    training draws them (rare classes included) from a random stream of its own: the training draws
    stay as they were, and every process of a distributed run fits the same parameters. A warm start
    refits the classes its new labels hold and keeps its parent's fit of the others."""
    windows = max(4, min(64, PIXEL_EXPERT_PIXELS // (tile * tile)))
    rng = np.random.default_rng([config.seed, 0x9E37])
    images, labels = draw_batch(sources, tile, windows, rng, False, config.balanced_sampling, replay)
    counts = model.pixel_expert.fit(images, labels, seed=config.seed)
    named = ", ".join(f"{c.name} {int(n):,}" for c, n in zip(config.classes, counts.tolist()))
    LOG.info("per-pixel classifier (radar brightness of each class) learnt from labelled pixels: %s", named)


def _epochs_estimate(config: TrainConfig, clock: RunClock, epoch: int) -> int:
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
    """Refuse, before any work, a model file that cannot be written (its folder missing or read-only) or
    that (with its state and log) is one of the training inputs."""
    problem = output_file_problem(config.output, "model file", "model.cwsam.pt")
    if problem:
        raise TrainingDataError(problem)
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
                processes: int, clock: RunClock, parent=None) -> dict:
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
                history: List[EpochRecord], clock: RunClock) -> None:
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
