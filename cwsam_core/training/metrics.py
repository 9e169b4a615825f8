"""Segmentation metrics from one confusion matrix over all evaluated pixels (METHOD.md, "Metrics").

Rows are reference classes, columns predictions. Pixels marked ignore (unlabelled, nodata) never
enter the matrix. Classes absent from both reference and prediction have undefined IoU, precision,
recall and F1 (NaN) and are left out of the means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np


def confusion_matrix(
    reference: np.ndarray, prediction: np.ndarray, num_classes: int, ignore: Optional[np.ndarray] = None
) -> np.ndarray:
    """num_classes x num_classes int64 counts; reference and prediction hold class indexes 0..N-1.

    reference, prediction: arrays of the same shape; ignore: a boolean array of that shape (True =
    leave the pixel out). Reference values outside 0..N-1 are left out too.
    """
    reference = np.asarray(reference).ravel()
    prediction = np.asarray(prediction).ravel()
    if reference.shape != prediction.shape:
        raise ValueError(f"reference and prediction differ in size: {reference.size} vs {prediction.size}")
    keep = (reference >= 0) & (reference < num_classes)
    if ignore is not None:
        keep &= ~np.asarray(ignore, dtype=bool).ravel()
    if np.any((prediction[keep] < 0) | (prediction[keep] >= num_classes)):
        raise ValueError(f"predictions must be class indexes 0..{num_classes - 1}")
    index = reference[keep].astype(np.int64) * num_classes + prediction[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class SegmentationMetrics:
    """Per-class and summary metrics of one confusion matrix."""

    confusion: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    miou: float
    overall_accuracy: float
    fwiou: float
    kappa: float
    pixels: int

    def per_class(self, values: Sequence[int], names: Sequence[str]) -> List[Dict[str, object]]:
        """One dict per class: value, name, iou, precision, recall, f1 and reference pixel count."""
        support = self.confusion.sum(axis=1)
        return [
            {"value": int(v), "name": n, "iou": _num(self.iou[i]), "precision": _num(self.precision[i]),
             "recall": _num(self.recall[i]), "f1": _num(self.f1[i]), "pixels": int(support[i])}
            for i, (v, n) in enumerate(zip(values, names))
        ]


def _num(value: float) -> Optional[float]:
    return None if np.isnan(value) else float(value)


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def metrics_from_confusion(confusion: np.ndarray) -> SegmentationMetrics:
    """IoU, precision, recall, F1 per class; mIoU, overall accuracy, frequency-weighted IoU, Cohen's kappa."""
    confusion = np.asarray(confusion, dtype=np.int64)
    true_positive = np.diag(confusion).astype(np.float64)
    reference = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    total = float(confusion.sum())
    iou = _safe_divide(true_positive, reference + predicted - true_positive)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, reference)
    f1 = _safe_divide(2 * true_positive, reference + predicted)
    if total == 0:
        nan = float("nan")
        return SegmentationMetrics(confusion, iou, precision, recall, f1, nan, nan, nan, nan, 0)
    observed = true_positive.sum() / total
    expected = float((reference * predicted).sum()) / (total * total)
    kappa = (observed - expected) / (1 - expected) if expected < 1 else float("nan")
    frequency = reference / total
    fwiou = float(np.nansum(frequency * iou))
    miou = float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")
    return SegmentationMetrics(confusion, iou, precision, recall, f1, miou, float(observed), fwiou, float(kappa),
                               int(total))
