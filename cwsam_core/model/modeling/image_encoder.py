"""SAM's ViT image encoder with adapters and the low-frequency input module."""

from __future__ import annotations

from functools import partial
from typing import Tuple, Type

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from torch.utils.checkpoint import checkpoint

from .adapted_block import AdaptedBlock
from .low_frequency import LowFrequencyInputModule


class AdaptedImageEncoderViT(ImageEncoderViT):
    """``segment_anything``'s ImageEncoderViT whose blocks carry adapters and receive prompts.

    The patch embedding, absolute position embedding and neck are SAM's own modules (built by
    ``ImageEncoderViT.__init__``); the blocks are :class:`AdaptedBlock` with SAM's parameter names.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        qkv_bias: bool = True,
        norm_layer: Type[nn.Module] = partial(nn.LayerNorm, eps=1e-6),
        act_layer: Type[nn.Module] = nn.GELU,
        use_rel_pos: bool = True,
        window_size: int = 14,
        global_attn_indexes: Tuple[int, ...] = (),
        embedding_layout: str = "ours",
    ) -> None:
        # depth=0: SAM builds everything but the blocks, which are built here with adapters.
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=0,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            out_chans=out_chans,
            qkv_bias=qkv_bias,
            norm_layer=norm_layer,
            act_layer=act_layer,
            use_abs_pos=True,
            use_rel_pos=use_rel_pos,
            window_size=window_size,
            global_attn_indexes=global_attn_indexes,
        )
        grid = img_size // patch_size
        self.blocks = nn.ModuleList(
            AdaptedBlock(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                norm_layer=norm_layer,
                act_layer=act_layer,
                use_rel_pos=use_rel_pos,
                window_size=0 if i in global_attn_indexes else window_size,
                input_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.input_module = LowFrequencyInputModule(embed_dim, depth, patch_size, in_chans,
                                                    embedding_layout=embedding_layout)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x 3 x S x S normalised image -> B x out_chans x S/16 x S/16 embedding."""
        # SAM's patch embedding is a permuted view of its convolution (channels first in memory); a
        # contiguous copy keeps the residual stream in token order, so that every later add, LayerNorm
        # and Linear reads memory in order instead of copying or striding (about 15 % of a CPU forward).
        patches = self.patch_embed(x).contiguous()
        features = self.input_module.features(x, patches)
        tokens = patches + self.pos_embed
        for index, block in enumerate(self.blocks):
            tokens = tokens + self.input_module.prompt(features, index)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(block, tokens, use_reentrant=False)
            else:
                tokens = block(tokens)
        return self.neck(tokens.permute(0, 3, 1, 2))
