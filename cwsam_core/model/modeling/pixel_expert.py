"""A per-pixel Gaussian classifier whose class posteriors are combined with the network's logits."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Below this many pixels per feature a class gets the pooled within-class covariance (its own mean).
MIN_PIXELS_PER_FEATURE = 10
# Log posteriors are floored here: one implausible pixel value must not veto what the network sees.
LOG_POSTERIOR_FLOOR = -30.0
# Weight of the log posterior against the network's logits for new models. Networks trained from scratch
# on a few images are overconfident (training loss near 0.1), so their logits outweigh the classifier's
# calibrated posterior at weight 1; 3 was chosen on every fold and seed of both real datasets
# (docs/EVALUATION.md, "The pixel expert's weight"). Files written before the weight existed used 1.
DEFAULT_WEIGHT = 3.0


class PixelGaussianExpert(nn.Module):
    """Gaussian maximum-likelihood classifier with equal priors on each pixel's channels and their
    ``window`` x ``window`` means: the classical SAR classifier, fitted on the training labels.

    A network trained from scratch on a few images learns rare classes and the radiometry of single
    pixels poorly, where this classifier is strong (a class with a few hundred labelled pixels gets a
    full density, and equal priors give it a fair chance). Measured on real SAR (docs/EVALUATION.md),
    the sum of the network's logits and this log posterior (a product of the two experts) scored
    above the network alone on every fold set and seed. Only in eval mode: the network trains on its
    own, so its training loss is not shaped by a classifier fitted on the same pixels.

    Classes without fitted parameters (``fitted`` 0: no labelled pixels) get a uniform share, so an
    unfitted expert leaves the network's decision unchanged. ``weight`` multiplies the log posterior where
    it joins the logits (:meth:`weighted`); it is part of the model card, not of the tensors.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, window: int = 5, weight: float = DEFAULT_WEIGHT) -> None:
        super().__init__()
        if not weight > 0:
            raise ValueError(f"the pixel expert's weight must be positive, got {weight}")
        features = 2 * in_chans
        self.window = window
        self.weight = float(weight)
        self.register_buffer("means", torch.zeros(num_classes, features))
        self.register_buffer("precisions", torch.eye(features).repeat(num_classes, 1, 1))
        self.register_buffer("log_dets", torch.zeros(num_classes))
        self.register_buffer("fitted", torch.zeros(num_classes))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted.any())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x C x H x W -> B x 2C x H x W: the channels and their local means (edges reflected)."""
        half = self.window // 2
        means = F.avg_pool2d(F.pad(images, (half, half, half, half), mode="reflect"), self.window, stride=1)
        return torch.cat([images, means], dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x C x H x W (the model's normalised input) -> B x N x H x W log posteriors."""
        x = self.features(images.float())
        scores = []
        for k in range(self.means.shape[0]):
            centred = x - self.means[k].view(1, -1, 1, 1)
            projected = torch.einsum("fg,bghw->bfhw", self.precisions[k], centred)
            scores.append(-0.5 * ((centred * projected).sum(dim=1) + self.log_dets[k]))
        log_likelihood = torch.stack(scores, dim=1)
        fitted = self.fitted.view(1, -1, 1, 1) > 0
        log_likelihood = torch.where(fitted, log_likelihood, torch.full_like(log_likelihood, -1e30))
        posterior = torch.log_softmax(log_likelihood, dim=1).clamp(min=LOG_POSTERIOR_FLOOR)
        # From the buffer as a tensor: no device-to-host sync on every tile.
        uniform = -torch.log(self.fitted.sum().clamp(min=1.0)).to(posterior.dtype)
        return torch.where(fitted, posterior, uniform.expand_as(posterior))

    def weighted(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x C x H x W -> B x N x H x W, ``weight`` x the log posteriors: what joins the logits."""
        return self(images) * self.weight

    @torch.no_grad()
    def fit(self, images: torch.Tensor, labels: torch.Tensor, max_pixels: int = 200_000, seed: int = 0) -> np.ndarray:
        """Fit every class that has labelled pixels in ``labels`` (B x H x W class indexes, others
        ignored) from ``images`` (B x C x H x W); classes without pixels keep what they had. Returns
        the pixels per class used (at most ``max_pixels`` each, drawn at random)."""
        num_classes, dims = self.means.shape
        x = self.features(images.float()).permute(0, 2, 3, 1).reshape(-1, dims).double().numpy()
        y = labels.reshape(-1).numpy()
        rng = np.random.default_rng(seed)
        picked = {}
        for k in range(num_classes):
            rows = np.flatnonzero(y == k)
            if len(rows) > max_pixels:
                rows = rng.choice(rows, max_pixels, replace=False)
            if len(rows):
                picked[k] = x[rows]
        if not picked:
            return np.zeros(num_classes, dtype=np.int64)
        # Pooled within-class covariance: for classes with too few pixels for their own.
        centred = np.concatenate([v - v.mean(axis=0) for v in picked.values()])
        pooled = centred.T @ centred / max(len(centred) - len(picked), 1)
        for k, values in picked.items():
            cov = np.cov(values, rowvar=False) if len(values) >= MIN_PIXELS_PER_FEATURE * dims else pooled.copy()
            cov = np.atleast_2d(cov)
            cov = cov + np.eye(dims) * (1e-3 * np.trace(cov) / dims + 1e-9)  # ridge: constant channels
            sign, log_det = np.linalg.slogdet(cov)
            if sign <= 0:
                continue
            self.means[k] = torch.from_numpy(values.mean(axis=0)).float()
            self.precisions[k] = torch.from_numpy(np.linalg.inv(cov)).float()
            self.log_dets[k] = float(log_det)
            self.fitted[k] = 1.0
        return np.array([len(picked.get(k, ())) for k in range(num_classes)], dtype=np.int64)
