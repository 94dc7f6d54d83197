"""Fréchet distance between Gaussians fitted to two feature sets (FID).

Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium": FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)).

Tr((S_r S_g)^(1/2)) is computed as the sum of square roots of the eigenvalues of the
symmetric PSD matrix S_r^(1/2) S_g S_r^(1/2) (same spectrum as S_r S_g), in float64; this
needs no complex sqrtm and is stable for the rank-deficient covariances of small sets.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of (N, F) features, in float64."""
    if features.dim() != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, F) features; got shape {tuple(features.shape)}")
    f = features.double()
    mu = f.mean(0)
    centred = f - mu
    return mu, centred.T @ centred / (len(f) - 1)


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a PSD matrix (negative round-off eigenvalues clipped to 0)."""
    evals, evecs = torch.linalg.eigh((s + s.T) / 2)
    return (evecs * evals.clamp(min=0).sqrt()) @ evecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1  # (F, F), symmetric PSD, same eigenvalues as sigma1 sigma2
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * tr_covmean
    return float(value.clamp(min=0))


def fid(real: Tensor, fake: Tensor) -> float:
    """FID between real (N, F) and generated (M, F) features."""
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: real {real.shape[1]}, fake {fake.shape[1]}")
    return frechet_distance(*mean_cov(real), *mean_cov(fake))
