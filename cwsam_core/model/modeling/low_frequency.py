"""The task-specific input module: low-frequency content of the SAR image as per-block prompts."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

from ...common.card import EMBEDDING_LAYOUTS


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


def _axis_filter(length: int, half: int) -> np.ndarray:
    """The complex length x length matrix of one axis of ``low_pass``'s filter: inverse DFT . keep . DFT,
    keeping the integer frequencies in [-half, half) (float64)."""
    frequencies = np.round(np.fft.fftfreq(length, 1.0 / length))
    keep = ((frequencies >= -half) & (frequencies < half)).astype(np.float64)
    dft = np.fft.fft(np.eye(length), axis=0)
    return (dft.conj().T * keep) @ dft / length


class MatrixLowPass(nn.Module):
    """``low_pass`` for one image size as matrix products: the same function to float32 rounding, made of
    MatMul, Sub and Abs only, which every ONNX exporter and runtime supports (no FFT operators).

    The kept band is a product of one band per axis, so the complex filter is ``A X B^T`` with A and B
    the axes' filters (``_axis_filter``), and its real part ``Re A X Re B^T - Im A X Im B^T``. Costs
    4 S^3 multiply-adds per channel (at S = 512, about 1 % of vit_b's encoder).
    """

    def __init__(self, height: int, width: int, keep_fraction: float = 0.25) -> None:
        super().__init__()
        half = int(math.sqrt(height * width * keep_fraction) / 2)
        rows, cols = _axis_filter(height, half), _axis_filter(width, half)
        for name, matrix in (("rows_real", rows.real), ("rows_imag", rows.imag),
                             ("cols_real_t", cols.real.T), ("cols_imag_t", cols.imag.T)):
            self.register_buffer(name, torch.tensor(matrix, dtype=torch.float32), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        real = self.rows_real @ images @ self.cols_real_t - self.rows_imag @ images @ self.cols_imag_t
        return real.abs()


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
        # Set for ONNX export (``use_matrix_low_pass``): the low-pass as matrix products instead of FFTs.
        self.low_pass_operator: Optional[MatrixLowPass] = None
        self._init_weights()

    def use_matrix_low_pass(self, size: int) -> None:
        """Compute the low-pass of ``size`` x ``size`` images with :class:`MatrixLowPass` (for export: the
        same values without FFT operators); the state dict does not change."""
        self.low_pass_operator = MatrixLowPass(size, size, self.keep_fraction).to(self.patch_conv.weight.device)

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
        low_passed = (low_pass(images, self.keep_fraction) if self.low_pass_operator is None
                      else self.low_pass_operator(images).to(images.dtype))
        low = self.patch_conv(low_passed).permute(0, 2, 3, 1)
        if self.embedding_layout == "authors":
            batch, height, width, dim = patch_embedding.shape
            patch_embedding = (patch_embedding.reshape(batch, dim, height * width).permute(0, 2, 1)
                               .reshape(batch, height, width, dim))
        return low + self.embedding_proj(patch_embedding)

    def prompt(self, features: torch.Tensor, block_index: int) -> torch.Tensor:
        """features: B x h x w x d -> the prompt of block ``block_index``, B x h x w x D."""
        return self.shared_proj(self.act(self.block_mlps[block_index](features)))
