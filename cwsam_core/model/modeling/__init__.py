"""CWSAM modules, one component per file, reusing ``segment_anything.modeling``."""

from .adapted_block import ATTENTION_KINDS, AdaptedBlock, set_attention
from .adapter import Adapter
from .classwise_decoder import ClasswiseMaskDecoder
from .cwsam import CWSAM
from .fused_attention import FusedAttention
from .image_encoder import AdaptedImageEncoderViT
from .low_frequency import LowFrequencyInputModule, low_pass
from .refinement import FullResolutionRefinement

__all__ = [
    "ATTENTION_KINDS",
    "Adapter",
    "AdaptedBlock",
    "AdaptedImageEncoderViT",
    "CWSAM",
    "ClasswiseMaskDecoder",
    "FullResolutionRefinement",
    "FusedAttention",
    "LowFrequencyInputModule",
    "low_pass",
    "set_attention",
]
