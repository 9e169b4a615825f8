"""The PyTorch runner of the classification engine: a CWSAM ``nn.Module`` (or any module mapping B x 3 x S x S
images to B x N x S x S logits) on CPU, CUDA or Apple MPS, with autocast on CUDA, the automatic batch
size and optional ``torch.compile``."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .devices import LOG, auto_batch_size, compile_encoder
from ..errors import ClassificationError
from .runners import TileRunner, flip_mean


def select_device(name: str = "auto") -> torch.device:
    """CUDA, then Apple MPS, then CPU for "auto"; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ClassificationError("device cuda was asked for but no CUDA GPU is available: use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ClassificationError("device mps was asked for but Apple MPS is not available: use --device auto or cpu")
    if not (name == "cpu" or name == "mps" or name.startswith("cuda")):
        raise ClassificationError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return torch.device(name)


def _autocast(device: torch.device):
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, enabled=False)


def predict_probabilities(model: nn.Module, images: torch.Tensor, flips: bool = False) -> torch.Tensor:
    """Class probabilities B x N x S x S of B x 3 x S x S images; with ``flips`` the mean over the image as
    it is, mirrored left-right, upside down and both (test-time augmentation: 4 times the compute)."""
    def probabilities_of(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(batch).float(), dim=1)

    return flip_mean(probabilities_of, images, torch.flip) if flips else probabilities_of(images)


class TorchRunner(TileRunner):
    """A PyTorch module on a device; ``threads`` sets torch's CPU threads, ``compile_model`` compiles the
    image encoder (with a ``warn`` where that fails)."""

    def __init__(self, model: nn.Module, device: str | torch.device = "auto", threads: Optional[int] = None,
                 compile_model: bool = False, warn: Optional[Callable[[str], None]] = None) -> None:
        self.torch_device = device if isinstance(device, torch.device) else select_device(device)
        if threads:
            torch.set_num_threads(threads)
        self.model = model.to(self.torch_device).eval()
        size = getattr(model, "input_size", None)
        self.tile_size = int(size) if size is not None else None
        self.device = str(self.torch_device)
        if compile_model:
            compile_encoder(self.model, warn or LOG.warning)

    def batch_size(self, tile: int) -> Tuple[int, str]:
        return auto_batch_size(self.model, self.torch_device, tile, lambda: _autocast(self.torch_device))

    def probabilities(self, images: np.ndarray, flips: bool = False) -> np.ndarray:
        batch = torch.from_numpy(images).to(self.torch_device)
        with torch.inference_mode(), _autocast(self.torch_device):
            return predict_probabilities(self.model, batch, flips).cpu().numpy()

    def record(self) -> Dict[str, object]:
        return {"engine": {"name": "pytorch"}, "software": {"torch": str(torch.__version__)}}
