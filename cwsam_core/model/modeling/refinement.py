"""A full-resolution refinement of the class logits, for encoders trained from scratch."""

from __future__ import annotations

import torch
from torch import nn


class FullResolutionRefinement(nn.Module):
    """Corrects the upsampled class logits with the full-resolution input pixels.

    The classwise decoder predicts at 1/4 of the input resolution, and a 16-pixel patch encoder
    trained from scratch on little data learns the radiometry of single pixels poorly; a few
    convolutions over the input and the logits give each pixel its own value and its 5 x 5
    neighbourhood back::

        logits' = logits + Conv1x1(GELU(Conv3x3(GELU(Conv3x3(cat(image, logits))))))

    The last convolution starts at zero, so an untrained refinement leaves the logits unchanged.
    Not used with a pretrained SAM encoder (the method stays as published there).
    """

    def __init__(self, num_classes: int, hidden: int = 24, in_chans: int = 3) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans + num_classes, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, num_classes, kernel_size=1),
        )
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)

    def forward(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """images: B x C x S x S, logits: B x N x S x S -> refined logits B x N x S x S."""
        return logits + self.layers(torch.cat([images.to(logits.dtype), logits], dim=1))
