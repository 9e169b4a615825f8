"""Evaluating a model file on labelled rasters with the classification engine itself."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import rasterio
from rasterio.windows import Window

from ..common.card import ModelCard
from ..common.labels import IGNORE_INDEX
from ..engine.inference import classify_file
from ..errors import TrainingDataError
from ..model.card_reader import read_card
from ..raster.output import CLASS_NODATA
from ..raster.scene import open_scene
from .datasets import RasterLabels, label_classes_match, nothing_labelled
from .metrics import SegmentationMetrics, confusion_matrix, metrics_from_confusion

LOG = logging.getLogger("cwsam")


def evaluate(
    model_path: Path | str,
    pairs: Sequence[Tuple[Path, Path]],
    sam_checkpoint: Optional[Path | str] = None,
    ignore_values: Sequence[int] = (),
    device: str = "auto",
    progress=None,
    test_time_flips: bool = False,
    band_indexes: Optional[Sequence[int]] = None,
    input_scale: str = "auto",
) -> Tuple[SegmentationMetrics, ModelCard]:
    """Classify each image as a user would (same tiling, blending, radiometry) and score it against its
    labels read onto the image grid: one confusion matrix over all labelled pixels. Label values that
    no class of the model names, ``ignore_values``, label nodata and image nodata (written as nodata
    by the classifier) are left out. ``band_indexes`` and ``input_scale`` read the images as ``classify`` does.

    Labels that name their classes (see ``raster.class_names``) are matched with the model's by name: other
    numbers are renumbered, other names refused; labels without names are scored by number. Each is said."""
    card = read_card(model_path)
    num = len(card.classes)
    renumbers = {}
    for image, labels in pairs:  # before any classification: labels that cannot be scored are refused
        match = label_classes_match(labels, card.classes, ignore_values)
        _check_something_to_score(image, labels, card, ignore_values, match.renumber)
        if match.note:
            LOG.warning(match.note)
        renumbers[labels] = match.renumber
    confusion = np.zeros((num, num), dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="cwsam-eval-") as folder:
        for index, (image, labels) in enumerate(pairs):
            output = Path(folder) / f"classes_{index}.tif"
            classify_file(image, output, model_path, sam_checkpoint=sam_checkpoint, device=device,
                          test_time_flips=test_time_flips, band_indexes=band_indexes, input_scale=input_scale,
                          progress=None if progress is None else
                          (lambda f, m, i=index: progress((i + f) / len(pairs), f"image {i + 1}: {m}")))
            confusion += class_raster_confusion(output, image, labels, card, ignore_values, renumber=renumbers[labels])
    if not confusion.any():
        raise TrainingDataError("no labelled pixel was scored: every labelled pixel is nodata in the image(s); "
                                "evaluate on an image that has data where the labels are")
    return metrics_from_confusion(confusion), card


def _check_something_to_score(image_path: Path | str, labels_path: Path | str, card: ModelCard,
                              ignore_values: Sequence[int], renumber: Optional[Dict[int, int]] = None) -> None:
    """Refuse a label raster that holds no pixel of the model's classes on the image's grid."""
    with open_scene(image_path) as image:
        reference = RasterLabels(labels_path, image, card.classes, ignore_values, renumber)
        try:
            problem = nothing_labelled(reference, reference.stats(), card.classes)
        finally:
            reference.close()
    if problem:
        raise TrainingDataError(f"{problem}: nothing to score")


def class_raster_confusion(class_path: Path | str, image_path: Path | str, labels_path: Path | str, card: ModelCard,
                           ignore_values: Sequence[int] = (), rows: int = 1024,
                           renumber: Optional[Dict[int, int]] = None) -> np.ndarray:
    """N x N confusion of a written class raster against labels read onto the image's grid, in strips of
    ``rows`` rows (memory does not follow the raster size). Unlabelled and nodata pixels are left out.
    ``renumber``: label value -> class value (see ``datasets.label_classes_match``)."""
    lookup = {c.value: i for i, c in enumerate(card.classes)}
    num = len(card.classes)
    confusion = np.zeros((num, num), dtype=np.int64)
    with open_scene(image_path) as image, rasterio.open(class_path) as classes:
        reference = RasterLabels(labels_path, image, card.classes, ignore_values, renumber)
        try:
            for row in range(0, image.height, rows):
                window = Window(0, row, image.width, min(rows, image.height - row))
                target = reference.read(window)
                values = classes.read(1, window=window)
                predicted = np.zeros(values.shape, dtype=np.int64)
                for value, index in lookup.items():
                    predicted[values == value] = index
                ignore = (target == IGNORE_INDEX) | (values == CLASS_NODATA)
                confusion += confusion_matrix(target, predicted, num, ignore=ignore)
        finally:
            reference.close()
    return confusion
