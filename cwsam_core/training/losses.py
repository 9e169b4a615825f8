"""Training losses: cross-entropy that ignores unlabelled pixels, with class weights, optionally + Dice."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..common.labels import IGNORE_INDEX


def class_weights_from_counts(counts: Sequence[int], power: float = 0.5) -> torch.Tensor:
    """Inverse-frequency weights (counts ** -power), normalised to mean 1 over present classes.

    A class with no labelled pixel gets weight 0 (it cannot be learnt from this data).
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled pixel: class weights cannot be computed")
    weights[present] = counts[present] ** -power
    weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice coefficient on labelled pixels.

    logits: B x N x H x W; target: B x H x W class indexes, ``ignore_index`` for unlabelled pixels.
    """
    num_classes = logits.shape[1]
    labelled = (target != ignore_index).unsqueeze(1).to(logits.dtype)
    probabilities = logits.softmax(dim=1) * labelled
    one_hot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).to(logits.dtype) * labelled
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


class SegmentationLoss(nn.Module):
    """Cross-entropy over labelled pixels (``ignore_index`` elsewhere) with optional class weights,
    plus ``dice_weight`` times the soft Dice loss. Returns 0 (with a gradient) for a batch without any
    labelled pixel instead of NaN, so sparse labels cannot poison a run.

    ``normalization`` "labelled" divides the weighted sum by the summed weights of the labelled pixels
    (PyTorch's weighted mean); "pixels" divides it by the number of pixels, labelled or not, as the
    authors' soft-target CrossEntropyLoss does (their paper recipe).
    """

    def __init__(self, class_weights: Optional[torch.Tensor] = None, dice_weight: float = 0.0,
                 ignore_index: int = IGNORE_INDEX, normalization: str = "labelled") -> None:
        super().__init__()
        if normalization not in ("labelled", "pixels"):
            raise ValueError(f"normalization must be 'labelled' or 'pixels', got {normalization!r}")
        self.register_buffer("class_weights", class_weights if class_weights is not None else None)
        self.dice_weight = dice_weight
        self.ignore_index = ignore_index
        self.normalization = normalization

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """logits: B x N x H x W (any float dtype); target: B x H x W int64 -> scalar loss."""
        logits = logits.float()
        if not (target != self.ignore_index).any():
            return logits.sum() * 0.0
        if self.normalization == "pixels":
            loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index,
                                   reduction="sum") / target.numel()
        else:
            loss = F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index)
        return loss
