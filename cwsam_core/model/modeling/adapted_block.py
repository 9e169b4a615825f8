"""SAM's ViT block with the two CWSAM adapters."""

from __future__ import annotations

import os
from typing import Optional, Tuple, Type

import torch
from segment_anything.modeling.image_encoder import Block, window_partition, window_unpartition
from torch import nn

from .adapter import Adapter
from .fused_attention import FusedAttention

# How the blocks compute attention: "fused" (FusedAttention: torch's scaled_dot_product_attention, the
# default) or "reference" (segment_anything's own Attention, for comparison). Both hold the same
# parameters under the same names. The environment variable CWSAM_ATTENTION sets the default of new
# models; set_attention switches an existing one.
ATTENTION_KINDS = ("fused", "reference")


def default_attention() -> str:
    kind = os.environ.get("CWSAM_ATTENTION", "fused").strip().lower() or "fused"
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"CWSAM_ATTENTION must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")
    return kind


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
        attention: Optional[str] = None,
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
        self.set_attention(attention or default_attention())

    @property
    def attention(self) -> str:
        return "fused" if isinstance(self.attn, FusedAttention) else "reference"

    def set_attention(self, kind: str) -> None:
        """Compute attention with "fused" or "reference"; the parameters stay the same objects."""
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {kind!r}")
        if kind == self.attention:
            return
        self.attn = (FusedAttention.from_attention(self.attn, self.window_size) if kind == "fused"
                     else self.attn.to_attention())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x H x W x D tokens -> B x H x W x D."""
        shortcut = x
        x = self.norm1(x)
        if isinstance(self.attn, FusedAttention) or self.window_size == 0:
            x = self.attn(x)  # FusedAttention partitions into windows itself
        else:
            height, width = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
            x = window_unpartition(self.attn(x), self.window_size, pad_hw, (height, width))
        # The adapter is token-wise, so applying it after unpartitioning equals the authors' per-window
        # placement while skipping the window padding (up to 70 % more tokens at S = 512).
        x = shortcut + x + self.attn_adapter(x)
        normed = self.norm2(x)
        return x + self.mlp(normed) + self.mlp_adapter_scale * self.mlp_adapter(normed)


def set_attention(model: nn.Module, kind: str) -> int:
    """Switch every AdaptedBlock in ``model`` to "fused" or "reference" attention; returns how many blocks."""
    blocks = [module for module in model.modules() if isinstance(module, AdaptedBlock)]
    for block in blocks:
        block.set_attention(kind)
    return len(blocks)
