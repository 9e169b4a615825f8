"""The named backbones: encoder and decoder sizes only, importable without torch (the plugin lists them
even when the engine's dependencies are missing). ``build.py`` turns a name into a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class BackboneConfig:
    """Encoder and decoder sizes of one named backbone."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: Tuple[int, ...]
    window_size: int = 14
    prompt_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    default_input_size: int = 1024
    sam_checkpoint: Optional[str] = None  # official file name, where SAM released one
    # Width of the full-resolution logit refinement of models trained from scratch (0: none).
    refine_channels: int = 0
    # A per-pixel Gaussian classifier combined with the logits (modeling.pixel_expert), from scratch only.
    pixel_expert: bool = False
    description: str = ""


BACKBONES: Dict[str, BackboneConfig] = {
    "vit_b": BackboneConfig(768, 12, 12, (2, 5, 8, 11), sam_checkpoint="sam_vit_b_01ec64.pth",
                            description="SAM ViT-B (GPU; CPU at S=512 is slow)"),
    "vit_l": BackboneConfig(1024, 24, 16, (5, 11, 17, 23), sam_checkpoint="sam_vit_l_0b3195.pth",
                            description="SAM ViT-L (GPU)"),
    "vit_h": BackboneConfig(1280, 32, 16, (7, 15, 23, 31), sam_checkpoint="sam_vit_h_4b8939.pth",
                            description="SAM ViT-H (large GPU)"),
    # Small configurations with SAM's layout, trained from scratch: CPU machines, the demo, tests.
    "vit_tiny": BackboneConfig(256, 6, 4, (2, 5), window_size=8, prompt_dim=64, decoder_mlp_dim=256,
                               decoder_heads=4, iou_head_hidden_dim=64, default_input_size=128, refine_channels=8,
                               pixel_expert=True, description="small ViT trained from scratch (CPU, no SAM weights)"),
    "vit_nano": BackboneConfig(64, 2, 2, (1,), window_size=4, prompt_dim=32, decoder_mlp_dim=64,
                               decoder_heads=2, iou_head_hidden_dim=32, default_input_size=128, refine_channels=8,
                               pixel_expert=True, description="tiny ViT to try the workflow in a minute (not for real maps)"),
}
