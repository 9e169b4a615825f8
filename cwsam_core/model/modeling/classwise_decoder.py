"""SAM's mask decoder turned into an N-class semantic head."""

from __future__ import annotations

import math
from typing import List

import torch
from segment_anything.modeling import MaskDecoder
from segment_anything.modeling.common import LayerNorm2d
from torch import nn


class ClasswiseMaskDecoder(MaskDecoder):
    """``segment_anything``'s MaskDecoder run without prompts, with a class head.

    The SAM decoder's modules and names are kept, so its pretrained tensors load directly. Only
    mask token 0 and its hypernetwork are used; the other hypernetworks and the IoU head are kept
    for checkpoint compatibility and listed by :meth:`unused_parameter_prefixes`.

    With C = transformer_dim and c = C / 8::

        src      = image_embedding + dense (no-mask) embedding              B x C x h x w
        hs, out  = TwoWayTransformer(src, pe, [iou token, mask tokens])
        features = cat(Upscale(out), Upscale(src))                          B x 2c x 4h x 4w
        classes  = ClassHead(features)                                      B x (c*N) x 4h x 4w
        logits[n] = sum_i Hyper_0(hs[mask token 0])[i] * classes[i*N + n]   B x N x 4h x 4w
    """

    def __init__(
        self,
        num_classes: int,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=transformer,
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        mask_dim = transformer_dim // 8
        self.class_head = nn.Sequential(
            nn.ConvTranspose2d(2 * mask_dim, 2 * mask_dim, kernel_size=2, stride=2),
            LayerNorm2d(2 * mask_dim),
            nn.GELU(),
            nn.Conv2d(2 * mask_dim, mask_dim * num_classes, kernel_size=7, stride=2, padding=3),
            nn.GELU(),
        )
        conv = self.class_head[3]
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (49 * conv.out_channels)))
        nn.init.zeros_(conv.bias)

    @staticmethod
    def unused_parameter_prefixes(num_mask_tokens: int) -> List[str]:
        """Parameter name prefixes (relative to the decoder) that never receive a gradient."""
        return [f"output_hypernetworks_mlps.{i}." for i in range(1, num_mask_tokens)] + ["iou_prediction_head."]

    def forward(  # type: ignore[override]
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        dense_embeddings: torch.Tensor,
    ) -> torch.Tensor:
        """image_embeddings: B x C x h x w, image_pe: 1 x C x h x w, dense_embeddings: B|1 x C x h|1 x w|1
        -> class logits B x N x 4h x 4w."""
        batch, channels, height, width = image_embeddings.shape
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(batch, -1, -1)
        src = image_embeddings + dense_embeddings
        hs, out = self.transformer(src, image_pe, tokens)
        out = out.transpose(1, 2).reshape(batch, channels, height, width)
        features = torch.cat([self.output_upscaling(out), self.output_upscaling(src)], dim=1)
        classes = self.class_head(features)
        hyper = self.output_hypernetworks_mlps[0](hs[:, 1, :])
        mask_dim = hyper.shape[-1]
        classes = classes.view(batch, mask_dim, self.num_classes, *classes.shape[-2:])
        return torch.einsum("bi,binhw->bnhw", hyper, classes)
