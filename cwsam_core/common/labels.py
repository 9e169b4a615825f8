"""What every source of training labels (label rasters, polygons) shares: the index of unlabelled pixels and
the summary a source gives of what it holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

# The class index of pixels that are neither trained on nor scored (unlabelled, nodata, unnamed values).
IGNORE_INDEX = 255


@dataclass
class LabelStats:
    """What a label source holds: pixel counts per class and of values no class names."""

    class_pixels: np.ndarray  # per class index
    unnamed: Dict[int, int]  # value -> pixel count, for values mapped to ignore
