"""SAM's ViT block with the two CWSAM adapters."""

from __future__ import annotations

from typing import Optional, Tuple, Type

import torch
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from torch import nn

from .adapter import Adapter


class AdaptedBlock(Block):
    """A ``segment_anything`` ViT block with an adapter after attention and one beside the MLP.

    Parameter names of the SAM block are unchanged, so official checkpoints load directly::

        a   = Attn(LN1(x))                       (windowed or global, as in SAM)
        a   = a + AttnAdapter(a)                 (own residual; token-wise, so per window or not alike)
        x'  = x + a
        n   = LN2(x')
        out = x' + MLP(n) + s * MlpAdapter(n)    (s = 0.5)
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_layer: Type[nn.Module] = nn.LayerNorm,
        act_layer: Type[nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: Optional[Tuple[int, int]] = None,
        adapter_ratio: float = 0.25,
        mlp_adapter_scale: float = 0.5,
    ) -> None:
        super().__init__(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            norm_layer=norm_layer,
            act_layer=act_layer,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            window_size=window_size,
            input_size=input_size,
        )
        self.attn_adapter = Adapter(dim, adapter_ratio)
        self.mlp_adapter = Adapter(dim, adapter_ratio)
        self.mlp_adapter_scale = mlp_adapter_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x H x W x D tokens -> B x H x W x D."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (height, width))
        # The adapter is token-wise, so applying it after unpartitioning equals the authors' per-window
        # placement while skipping the window padding (up to 70 % more tokens at S = 512).
        x = shortcut + x + self.attn_adapter(x)
        normed = self.norm2(x)
        return x + self.mlp(normed) + self.mlp_adapter_scale * self.mlp_adapter(normed)
