"""The bottleneck adapter inserted twice in every ViT block."""

from __future__ import annotations

from typing import Type

import torch
from torch import nn


class Adapter(nn.Module):
    """Linear(D -> D * ratio), activation, Linear(D * ratio -> D).

    Residuals and scaling belong to the block that places the adapter, so one class serves both
    placements. Default PyTorch initialisation, as in the authors' code (no zero-init).
    """

    def __init__(self, dim: int, ratio: float = 0.25, act_layer: Type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        hidden = max(1, int(dim * ratio))
        self.down = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.up = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ... x D tokens -> ... x D."""
        return self.up(self.act(self.down(x)))
