"""Shared helpers for model tests: SAM checkpoints in the official layout, made at test time."""

from __future__ import annotations

from pathlib import Path

import torch

from cwsam_core.model.build import build_bare_sam


def write_sam_checkpoint(path: Path, backbone: str, seed: int = 0) -> Path:
    """A randomly initialised SAM of ``backbone`` saved as the official checkpoints are: a bare state dict."""
    torch.manual_seed(seed)
    torch.save(build_bare_sam(backbone).state_dict(), path)
    return path
