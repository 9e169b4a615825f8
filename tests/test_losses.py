"""Training losses: unlabelled pixels do not count, weights apply, Dice behaves."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from cwsam_core.common.labels import IGNORE_INDEX
from cwsam_core.training.losses import SegmentationLoss, class_weights_from_counts, soft_dice_loss


def test_unlabelled_pixels_do_not_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    sparse = target.clone()
    sparse[:, 4:] = IGNORE_INDEX
    loss = SegmentationLoss()(logits, sparse)
    expected = F.cross_entropy(logits[:, :, :4], target[:, :4])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert logits.grad[:, :, 4:].abs().sum() == 0 and logits.grad[:, :, :4].abs().sum() > 0


def test_batch_without_labels_gives_zero_not_nan():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = SegmentationLoss(dice_weight=1.0)(logits, torch.full((1, 4, 4), IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_class_weights():
    weights = class_weights_from_counts([900, 100, 0])
    assert weights[2] == 0
    assert weights[1] / weights[0] == pytest.approx(3.0)  # (100/900) ** -0.5
    assert weights[:2].mean().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no labelled pixel"):
        class_weights_from_counts([0, 0])
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = 2.0  # pixel 0 confidently class 0 (right), pixel 1 uncertain
    target = torch.tensor([[[0, 1]]])
    weighted = SegmentationLoss(class_weights=torch.tensor([1.0, 3.0]))(logits, target)
    plain = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 3.0]))
    assert weighted.item() == pytest.approx(plain.item())


def test_dice_is_zero_for_a_perfect_prediction_and_positive_otherwise():
    target = torch.tensor([[[0, 1], [1, 0]]])
    perfect = F.one_hot(target, 2).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(-perfect, target).item() > 0.5
