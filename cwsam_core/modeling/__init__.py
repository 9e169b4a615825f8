"""CWSAM modules, one component per file, reusing ``segment_anything.modeling``."""

from .adapted_block import AdaptedBlock
from .adapter import Adapter
from .classwise_decoder import ClasswiseMaskDecoder
from .cwsam import CWSAM
from .image_encoder import AdaptedImageEncoderViT
from .low_frequency import LowFrequencyInputModule, low_pass
from .refinement import FullResolutionRefinement

__all__ = [
    "Adapter",
    "AdaptedBlock",
    "AdaptedImageEncoderViT",
    "CWSAM",
    "ClasswiseMaskDecoder",
    "FullResolutionRefinement",
    "LowFrequencyInputModule",
    "low_pass",
]
