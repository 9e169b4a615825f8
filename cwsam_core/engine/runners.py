"""What runs the network on tiles: one interface for PyTorch and ONNX Runtime, so that tiling, radiometry,
blending, writing and the run record (``inference``) are the same code whatever the engine.

Torch-free: the PyTorch runner lives in ``torch_runner`` and the ONNX Runtime one in ``onnx_runner``, each
imported only when a model of its kind is used.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Dict, Optional, Tuple, TypeVar

import numpy as np

CPU_BATCH_SIZE = 4  # tiles per batch where no GPU memory decides it
# The four flips of test-time augmentation, as axes of a B x C x S x S batch to mirror.
FLIPS: Tuple[Tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
Array = TypeVar("Array")  # a numpy array or a torch tensor


class TileRunner(ABC):
    """Class probabilities of batches of tiles.

    ``tile_size`` is the S of the B x 3 x S x S float32 batches the runner takes (None: the model card's);
    ``device`` says where the network runs ("cpu", "cuda:0"), for messages and the run record.
    """

    tile_size: Optional[int] = None
    device: str = "cpu"

    def batch_size(self, tile: int) -> Tuple[int, str]:
        """Tiles of ``tile`` px per batch when the user gives none, and how that was chosen."""
        return cpu_batch_size()

    @abstractmethod
    def probabilities(self, images: np.ndarray, flips: bool = False) -> np.ndarray:
        """B x 3 x S x S normalised images -> B x N x S x S class probabilities (float32); with ``flips``
        the mean over the image as it is, mirrored left-right, upside down and both."""

    def record(self) -> Dict[str, object]:
        """What the run record says about the engine: {"engine": {...}, "software": {...}}."""
        return {"engine": {}, "software": {}}


# The largest tile any backbone is run at: SAM's are trained at 1024 px; far beyond it, attention over the
# (S / 16)^2 tokens no longer fits in any memory.
MAX_TILE_SIZE = 8192


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None where that is not known."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def tile_size_problem(tile: int, classes: int = 2) -> Optional[str]:
    """Why tiles of ``tile`` px cannot be run (not a positive multiple of 16, beyond ``MAX_TILE_SIZE``, or one
    tile's input and class probabilities alone larger than the memory available), or None."""
    if tile <= 0 or tile % 16:
        return f"tile size must be a positive multiple of 16 pixels, got {tile}"
    if tile > MAX_TILE_SIZE:
        return (f"tile size {tile} px is beyond what any backbone can run (at most {MAX_TILE_SIZE} px; SAM's are "
                "trained at 1024): leave the tile size empty to use the model's")
    needed, free = 4 * tile * tile * (3 + 2 * classes), available_memory()
    if free is not None and needed > free:
        return (f"tile size {tile} px needs about {needed / 2**30:.1f} GiB for one tile, more than the "
                f"{free / 2**30:.1f} GiB of memory available: use a smaller tile size (the model's is the default)")
    return None


def cpu_batch_size() -> Tuple[int, str]:
    """The batch size without a CUDA GPU to size it by, and the words the run record gives it."""
    return CPU_BATCH_SIZE, f"{CPU_BATCH_SIZE} (the default without a CUDA GPU)"


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Softmax over ``axis`` in float32, stable for large logits."""
    shifted = logits.astype(np.float32, copy=False) - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def flip_mean(probabilities_of: Callable[[Array], Array], images: Array,
              flip: Callable[[Array, Tuple[int, ...]], Array]) -> Array:
    """Test-time augmentation: the mean of ``probabilities_of`` over the four ``FLIPS`` of ``images``, each
    result flipped back (``flip`` is ``np.flip`` or ``torch.flip``)."""
    total = None
    for axes in FLIPS:
        probabilities = probabilities_of(flip(images, axes) if axes else images)
        probabilities = flip(probabilities, axes) if axes else probabilities
        total = probabilities if total is None else total + probabilities
    return total / len(FLIPS)
