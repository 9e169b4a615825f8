"""The task-specific input module: low-frequency content of the SAR image as per-block prompts."""

from __future__ import annotations

import math

import torch
from torch import nn

# How the frozen patch embedding E (B x h x w x D) reaches the per-token projection ``embedding_proj``:
#   "ours": each token gets its own D features (models trained here);
#   "authors": as the authors' ``PromptGenerator.init_embeddings`` does it, ``E.reshape(B, D, h * w)
#       .permute(0, 2, 1)`` on a tensor laid out B, h, w, D: token t gets the values E_flat[c * h * w + t],
#       c = 0..D-1, of the flattened (h, w, D) embedding, which mixes channels of different tokens.
#       Their trained ``embedding_generator`` weights expect that layout: models imported from their code use it.
EMBEDDING_LAYOUTS = ("ours", "authors")


def _centered_box(frequencies: torch.Tensor, half: int) -> torch.Tensor:
    """1 where an integer frequency lies in the kept band [-half, half) of the shifted spectrum."""
    return ((frequencies >= -half) & (frequencies < half)).float()


def low_pass(images: torch.Tensor, keep_fraction: float = 0.25) -> torch.Tensor:
    """Keep the central ``keep_fraction`` of the 2-D spectrum; return the magnitude image.

    images: B x C x H x W -> B x C x H x W. Same result as the authors' fftshift, central-square mask
    (half-width floor(sqrt(H W r) / 2)), inverse FFT, real part, absolute value; computed with real
    FFTs, whose Hermitian symmetry needs the mask averaged with its mirror (the real part of the
    complex filter is exactly that). In float32 outside autocast: half-precision FFTs need
    power-of-two sizes on CUDA.
    """
    height, width = images.shape[-2:]
    half = int(math.sqrt(height * width * keep_fraction) / 2)
    with torch.autocast(device_type=images.device.type, enabled=False):
        fy = torch.fft.fftfreq(height, 1.0 / height, device=images.device).round()
        fx = torch.fft.rfftfreq(width, 1.0 / width, device=images.device).round()
        mask = (
            _centered_box(fy, half)[:, None] * _centered_box(fx, half)[None, :]
            + _centered_box(-fy, half)[:, None] * _centered_box(-fx, half)[None, :]
        ) / 2
        spectrum = torch.fft.rfft2(images.float()) * mask
        filtered = torch.fft.irfft2(spectrum, s=(height, width))
    return filtered.abs().to(images.dtype)


class LowFrequencyInputModule(nn.Module):
    """Per-block prompts from the low-pass image and the frozen patch embedding.

    features = PatchConv(lowpass(I)) + Linear(D -> d)(PatchEmbed(I))       B x h x w x d, d = D / 32
    prompt_i = SharedProj(d -> D)(GELU(Linear_i(d -> d)(features)))        B x h x w x D
    prompt_i is added to the tokens before block i.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        patch_size: int = 16,
        in_chans: int = 3,
        scale_factor: int = 32,
        keep_fraction: float = 0.25,
        embedding_layout: str = "ours",
    ) -> None:
        super().__init__()
        if embedding_layout not in EMBEDDING_LAYOUTS:
            raise ValueError(f"embedding layout must be one of {', '.join(EMBEDDING_LAYOUTS)}, "
                             f"got {embedding_layout!r}")
        hidden = max(1, embed_dim // scale_factor)
        self.keep_fraction = keep_fraction
        self.embedding_layout = embedding_layout
        self.patch_conv = nn.Conv2d(in_chans, hidden, kernel_size=patch_size, stride=patch_size)
        self.embedding_proj = nn.Linear(embed_dim, hidden)
        self.block_mlps = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.act = nn.GELU()
        self.shared_proj = nn.Linear(hidden, embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # The authors' initialisation: trunc-normal linears, He-style conv, zero biases.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(module.bias)

    def features(self, images: torch.Tensor, patch_embedding: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x S x S, patch_embedding: B x h x w x D -> B x h x w x d."""
        low = self.patch_conv(low_pass(images, self.keep_fraction)).permute(0, 2, 3, 1)
        if self.embedding_layout == "authors":
            batch, height, width, dim = patch_embedding.shape
            patch_embedding = (patch_embedding.reshape(batch, dim, height * width).permute(0, 2, 1)
                               .reshape(batch, height, width, dim))
        return low + self.embedding_proj(patch_embedding)

    def prompt(self, features: torch.Tensor, block_index: int) -> torch.Tensor:
        """features: B x h x w x d -> the prompt of block ``block_index``, B x h x w x D."""
        return self.shared_proj(self.act(self.block_mlps[block_index](features)))
