"""The whole CWSAM model: adapted encoder, classwise decoder and the prompt-free decoder inputs."""

from __future__ import annotations

import torch
from segment_anything.modeling.prompt_encoder import PositionEmbeddingRandom
from torch import nn
from torch.nn import functional as F

from .classwise_decoder import ClasswiseMaskDecoder
from .image_encoder import AdaptedImageEncoderViT
from .pixel_expert import DEFAULT_WEIGHT, PixelGaussianExpert
from .refinement import FullResolutionRefinement


class CWSAM(nn.Module):
    """ClassWise-SAM-Adapter: B x 3 x S x S normalised images -> B x N x S x S class logits.

    ``pe_layer`` and ``no_mask_embed`` are the two pieces of SAM's prompt encoder that a prompt-free
    decoder needs; they take SAM's pretrained values when a checkpoint is loaded.
    """

    def __init__(
        self,
        image_encoder: AdaptedImageEncoderViT,
        mask_decoder: ClasswiseMaskDecoder,
        backbone: str = "custom",
        refine_channels: int = 0,
        input_clip: float | None = None,
        position_tables: str = "interpolate",
        pixel_expert: bool = False,
        pixel_expert_weight: float = DEFAULT_WEIGHT,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.mask_decoder = mask_decoder
        prompt_dim = mask_decoder.transformer_dim
        self.pe_layer = PositionEmbeddingRandom(prompt_dim // 2)
        self.no_mask_embed = nn.Embedding(1, prompt_dim)
        self.backbone = backbone
        # Optional full-resolution refinement of the logits (encoders trained from scratch only).
        self.refinement = (FullResolutionRefinement(mask_decoder.num_classes, refine_channels)
                           if refine_channels > 0 else None)
        # Optional per-pixel Gaussian classifier combined with the logits at inference (from scratch only);
        # fitted on the training labels by the trainer, neutral until then.
        self.pixel_expert = (PixelGaussianExpert(mask_decoder.num_classes, weight=pixel_expert_weight)
                             if pixel_expert else None)
        # Set by the builder when SAM weights are loaded: {"name": file name, "sha256": digest}.
        self.sam_checkpoint_identity: dict | None = None
        # True when the encoder holds pretrained SAM weights (then only its additions train).
        self.pretrained_encoder = False
        # Normalised inputs are clipped to [-input_clip, input_clip] before the encoder (None: not clipped).
        if input_clip is not None and not input_clip > 0:
            raise ValueError(f"input clip must be a positive number, got {input_clip}")
        self.input_clip = input_clip
        # How relative-position tables are fitted to another input size (checkpoint.fit_rel_pos).
        self.position_tables = position_tables

    @property
    def embedding_layout(self) -> str:
        return self.image_encoder.input_module.embedding_layout

    @property
    def num_classes(self) -> int:
        return self.mask_decoder.num_classes

    @property
    def refine_channels(self) -> int:
        return 0 if self.refinement is None else self.refinement.layers[0].out_channels

    @property
    def input_size(self) -> int:
        return self.image_encoder.img_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x S x S (S = ``input_size``) -> logits B x N x S x S."""
        if images.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(
                f"expected images of {self.input_size} x {self.input_size} pixels, got "
                f"{tuple(images.shape[-2:])}: tile the raster or build the model with that input size"
            )
        encoder_input = images if self.input_clip is None else images.clamp(-self.input_clip, self.input_clip)
        embeddings = self.image_encoder(encoder_input)
        image_pe = self.pe_layer(tuple(embeddings.shape[-2:])).unsqueeze(0)
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        logits = self.mask_decoder(embeddings, image_pe.to(embeddings.dtype), dense)
        logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        if self.refinement is not None:
            logits = self.refinement(images, logits)
        if self.pixel_expert is not None and not self.training:
            logits = logits + self.pixel_expert.weighted(images).to(logits.dtype)
        return logits
