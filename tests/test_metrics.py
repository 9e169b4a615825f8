"""Metrics from a confusion matrix, checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cwsam_core.training.metrics import confusion_matrix, metrics_from_confusion


def test_confusion_matrix_counts_and_ignores():
    reference = np.array([[0, 0, 1, 1], [2, 2, 2, 255]])
    prediction = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    ignore = np.array([[False, False, False, True], [False, False, False, False]])
    matrix = confusion_matrix(reference, prediction, 3, ignore=ignore)
    # 255 (outside 0..2) and the ignored pixel are left out: 6 pixels remain.
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match="class indexes"):
        confusion_matrix(np.array([0]), np.array([5]), 3)


def test_metrics_by_hand():
    matrix = np.array([[50, 10], [5, 35]])
    m = metrics_from_confusion(matrix)
    assert m.iou.tolist() == pytest.approx([50 / 65, 35 / 50])
    assert m.precision.tolist() == pytest.approx([50 / 55, 35 / 45])
    assert m.recall.tolist() == pytest.approx([50 / 60, 35 / 40])
    assert m.f1.tolist() == pytest.approx([100 / 115, 70 / 85])
    assert m.miou == pytest.approx((50 / 65 + 35 / 50) / 2)
    assert m.overall_accuracy == pytest.approx(0.85)
    assert m.fwiou == pytest.approx(0.6 * 50 / 65 + 0.4 * 35 / 50)
    expected = (60 * 55 + 40 * 45) / 100**2
    assert m.kappa == pytest.approx((0.85 - expected) / (1 - expected))
    assert m.pixels == 100


def test_absent_class_is_left_out_of_the_means():
    matrix = np.array([[10, 0, 0], [0, 0, 0], [2, 0, 8]])
    m = metrics_from_confusion(matrix)
    assert np.isnan(m.iou[1]) and np.isnan(m.precision[1])
    assert m.miou == pytest.approx((10 / 12 + 8 / 10) / 2)
    rows = m.per_class([0, 1, 5], ["water", "empty", "urban"])
    assert rows[1]["iou"] is None and rows[2]["value"] == 5 and rows[2]["pixels"] == 10


def test_perfect_and_empty():
    perfect = metrics_from_confusion(np.diag([3, 4]))
    assert perfect.miou == 1.0 and perfect.kappa == 1.0 and perfect.overall_accuracy == 1.0
    empty = metrics_from_confusion(np.zeros((2, 2), dtype=int))
    assert empty.pixels == 0 and np.isnan(empty.miou)
