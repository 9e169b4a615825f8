"""Warm starts and the review loop: a new version of a model, trained from it on corrections.

A *warm start* continues training from an existing model file (``cwsam train --init-model``): the
backbone, classes, bands, scales, normalisation and tile size are the parent's, and the new file's
provenance names the parent (file name and SHA-256) and the whole chain before it (``lineage``), so
versions can be traced. Labels may only use the parent's classes. ``replay`` mixes in windows of the
parent's own training sources, as its provenance records them, where they are still on disk unchanged,
and, in the review loop, of the parent's own class map outside the corrections (:func:`anchor_labels`).

:func:`retrain` is the review loop's step, shared by the CLI, the dock and Processing: train a warm
start on correction polygons and publish it as the next version beside the parent
(``name.cwsam.pt`` -> ``name.v2.cwsam.pt`` -> ``name.v3.cwsam.pt``), never over an existing file,
only when training finished and the parent is still the file that was loaded. :func:`compare_maps`
says what a new version changed in the class map.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import rasterio
from rasterio.windows import Window, from_bounds

from ..common.labels import IGNORE_INDEX
from ..common.paths import check_outputs, model_output_files, next_version_path, version_number
from ..engine.inference import pixel_areas
from ..errors import (
    CheckpointError, ModelFileError, OutputConflictError, RadiometryError, RetrainCancelled, RetrainError,
    TrainingDataError,
)
from ..vector.polygons import PolygonLabels
from .config import ProgressCallback, TrainResult
from .datasets import TrainingSource
from .loop import train
from .parent import check_label_classes, check_unchanged, warm_start_config

LOG = logging.getLogger("cwsam")

# Default steps of a retrain by steps (no time budget), and its warm-up.
RETRAIN_STEPS = 60
RETRAIN_WARMUP = 5


# Pixels around the corrections left out of an anchor map: the parent's classes at a corrected place's
# edge are often the errors being corrected.
ANCHOR_MARGIN = 8


def anchor_labels(class_map: Path | str, corrections: Path | str, class_field: str, classes: Sequence,
                  output: Path, layer: Optional[str] = None, margin: int = ANCHOR_MARGIN, block: int = 1024) -> Path:
    """The parent's class map with the corrected places (and ``margin`` pixels around them) set to
    nodata, written to ``output`` block by block: labels that keep what the parent did elsewhere on this
    raster, replayed so that a few corrections do not unlearn the classes they lack."""
    with rasterio.open(class_map) as src:
        profile = dict(driver="GTiff", width=src.width, height=src.height, count=1, dtype="uint8", crs=src.crs,
                       transform=src.transform, nodata=255, compress="deflate")
        polygons = PolygonLabels(corrections, src, class_field, classes, layer=layer)
        with rasterio.open(output, "w", **profile) as dst:
            for row in range(0, src.height, block):
                rows = min(block, src.height - row)
                # The corrections of the block and ``margin`` rows and columns around it, grown by ``margin``.
                around = Window(-margin, row - margin, src.width + 2 * margin, rows + 2 * margin)
                corrected = _grow(polygons.read(around) != IGNORE_INDEX, margin)[margin:-margin or None,
                                                                                 margin:-margin or None]
                labels = src.read(1, window=Window(0, row, src.width, rows))
                dst.write(np.where(corrected, 255, labels).astype(np.uint8)[None],
                          window=Window(0, row, src.width, rows))
        polygons.close()
    return output


def _grow(mask: np.ndarray, margin: int) -> np.ndarray:
    """``mask`` dilated by a square of ``margin`` pixels each way (box sums of an integral image)."""
    if margin <= 0 or not mask.any():
        return mask
    size = 2 * margin + 1
    height, width = mask.shape
    total = np.pad(np.pad(mask.astype(np.int32), margin).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (total[size:size + height, size:size + width] - total[:height, size:size + width]
            - total[size:size + height, :width] + total[:height, :width])
    return sums > 0


@dataclass
class RetrainResult:
    """A published version: its file, its parent's file and SHA-256, and the training run."""

    model_path: Path
    parent: Path
    parent_sha256: str
    training: TrainResult
    version: int = 2


def retrain(
    model: Path | str,
    image: Path | str,
    corrections: Path | str,
    class_field: str,
    layer: Optional[str] = None,
    output: Optional[Path | str] = None,
    expected_sha256: Optional[str] = None,
    sam_checkpoint: Optional[Path | str] = None,
    time_budget: Optional[float] = None,
    steps: int = RETRAIN_STEPS,
    batch_size: int = 4,
    lr: Optional[float] = None,
    replay: float = 0.0,
    anchor_map: Optional[Path | str] = None,
    band_indexes: Optional[Sequence[int]] = None,
    input_scale: str = "auto",
    device: str = "auto",
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
) -> RetrainResult:
    """Train the next version of ``model`` on the correction polygons of ``corrections`` over ``image``.

    ``time_budget`` (minutes) or else ``steps`` optimizer steps; all corrections train (no validation
    part: the last weights are kept); ``band_indexes`` and ``input_scale`` read the raster as it was
    classified. ``replay`` draws that share of the windows from the model's own training data where
    still on disk and from ``anchor_map`` (the model's class map of ``image``) outside the corrections.
    The version goes to ``output`` (default: :func:`next_version_path`) only once training finished and
    ``model`` still has ``expected_sha256`` (default: its hash now); it is written beside, as a
    temporary file, then linked into place, so an existing file is never replaced and nothing is left
    behind on error or cancel (``RetrainCancelled``).
    """
    model = Path(model)
    expected = check_unchanged(model, expected_sha256)
    target = Path(output) if output is not None else next_version_path(model)
    if target.exists():
        raise RetrainError(f"{target} exists: versions are never overwritten; choose another output file")
    if not target.parent.is_dir():
        raise RetrainError(f"output folder does not exist: {target.parent}")
    try:
        check_outputs([("model file", [model]), ("correction layer", [corrections])],
                      [("new version", model_output_files(target))])
    except OutputConflictError as exc:
        raise RetrainError(str(exc)) from None
    if time_budget is None and int(steps) < 1:
        raise RetrainError(f"steps must be at least 1, got {steps}")
    workspace = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
    workspace.mkdir()
    try:
        config = warm_start_config(
            model, workspace / target.name, init_sha256=expected, sam_checkpoint=sam_checkpoint,
            time_budget=time_budget, epochs=1 if time_budget is None else 10,
            steps_per_epoch=int(steps) if time_budget is None else max(1, min(int(steps), 20)),
            batch_size=batch_size, lr=lr, replay=replay, val_fraction=0.0, device=device, seed=seed,
            warmup_steps=RETRAIN_WARMUP, band_indexes=list(band_indexes) if band_indexes else None,
            input_scale=input_scale)
        source = TrainingSource(image, polygons=Path(corrections), class_field=class_field, layer=layer)
        try:
            if replay > 0 and anchor_map is not None:
                check_label_classes([source], config.classes)  # the parent's; before the anchor reads the corrections
                anchor = anchor_labels(anchor_map, corrections, class_field, config.classes,
                                       workspace / "anchor.tif", layer=layer)
                config.replay_extra = [TrainingSource(image, labels=anchor)]
            result = train([source], config, progress=progress, should_cancel=should_cancel)
        except RetrainError:
            raise
        except (TrainingDataError, RadiometryError, CheckpointError, ModelFileError) as exc:
            raise RetrainError(str(exc)) from None
        if result.cancelled:
            raise RetrainCancelled(f"retraining cancelled: no version was written, {model.name} stays current")
        check_unchanged(model, expected)
        _publish(workspace / target.name, target)
        log = workspace / (target.name + ".log.csv")
        if log.is_file():
            os.replace(log, target.with_name(target.name + ".log.csv"))
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    result.model_path = target
    return RetrainResult(target, model, expected, result, version_number(target))


def _publish(written: Path, target: Path) -> None:
    """Put the finished file at ``target`` without ever replacing a file there (a hard link fails if
    one exists; where links are not supported, a rename after a last check)."""
    try:
        os.link(written, target)
    except FileExistsError:
        raise RetrainError(f"{target} appeared while training: versions are never overwritten; nothing was "
                           "written, retrain again") from None
    except OSError:
        if target.exists():
            raise RetrainError(f"{target} exists: versions are never overwritten; retrain again") from None
        os.replace(written, target)


@dataclass
class MapChange:
    """What a new class map changed against the previous one, over the pixels both classified.

    ``changed``: share of those pixels whose class changed; ``before``/``after``: area per class value
    in ``area_unit`` (m2, or pixels without a CRS); ``pixels``: pixels compared.
    """

    changed: float
    pixels: int
    before: Dict[int, float] = field(default_factory=dict)
    after: Dict[int, float] = field(default_factory=dict)
    area_unit: str = "m2"


def compare_maps(before: Path | str, after: Path | str, nodata: int = 255, block: int = 1024) -> MapChange:
    """Compare two class rasters of the same grid (``after`` may cover part of ``before``: the map view
    classified again), block by block. ``before`` is read on ``after``'s pixels."""
    with rasterio.open(before) as old, rasterio.open(after) as new:
        same_pixels = np.allclose([old.transform.a, old.transform.e], [new.transform.a, new.transform.e])
        if old.crs != new.crs or not same_pixels:
            raise RetrainError(f"{Path(before).name} and {Path(after).name} are not on the same grid: compare maps of "
                               "the same raster")
        offset = from_bounds(*new.bounds, transform=old.transform)
        row0, col0 = int(round(offset.row_off)), int(round(offset.col_off))
        changed = compared = 0
        before_area: Dict[int, float] = {}
        after_area: Dict[int, float] = {}
        unit = "pixels"
        for row in range(0, new.height, block):
            rows = min(block, new.height - row)
            area, unit = pixel_areas(new.transform, new.crs, row, rows)
            for col in range(0, new.width, block):
                window = Window(col, row, min(block, new.width - col), rows)
                b = new.read(1, window=window)
                a = old.read(1, window=Window(col0 + col, row0 + row, window.width, rows), boundless=True,
                             fill_value=nodata)
                both = (a != nodata) & (b != nodata)
                weights = np.broadcast_to(area[:, None], b.shape)[both]
                compared += int(both.sum())
                changed += int((a[both] != b[both]).sum())
                for values, totals in ((a[both], before_area), (b[both], after_area)):
                    sums = np.bincount(values.astype(np.int64), weights=weights, minlength=256)
                    for value in np.flatnonzero(sums):
                        totals[int(value)] = totals.get(int(value), 0.0) + float(sums[value])
    return MapChange(changed / compared if compared else math.nan, compared, before_area, after_area, unit)
