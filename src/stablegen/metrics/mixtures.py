"""Mode coverage, high-quality rate, spread and reverse KL on 2-D Gaussian mixtures.

The VEEGAN / PacGAN protocol (Srivastava et al. 2017, "VEEGAN", Table 1; Lin et al. 2018,
"PacGAN"), as BENCHMARKS.md defines it: a sample is *high quality* (HQ) when it lies within
3 standard deviations of its nearest mean; a mode is *covered* when at least one HQ sample
is nearest to it; reverse KL = KL(histogram of HQ samples over modes || uniform).

The HQ rate rewards samples tighter than the data (modes of half the width score 100 %), so
*spread* measures fidelity: the RMS distance of the HQ samples to their mode over the same
statistic of the data, 1.0 for the data's own density, 0.5 for modes half as wide. For a
D-dimensional Gaussian of std s the data's statistic is exact: r^2 / s^2 is chi-square with D
degrees of freedom, and its mean below 9 (the HQ radius) is D F_{D+2}(9) / F_D(9), F the
chi-square CDF (the truncated-moment identity of the gamma family).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.toys import mixture_means, mixture_std

HQ_RADIUS = 3.0  # in standard deviations


def data_hq_rms(std: float, dim: int) -> float:
    """RMS distance to its mean of a Gaussian's samples within HQ_RADIUS std of it (exact)."""
    from scipy.stats import chi2

    c = HQ_RADIUS**2
    return std * math.sqrt(dim * chi2.cdf(c, dim + 2) / chi2.cdf(c, dim))


def nearest_mode(x: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """(distance, index) of each sample's nearest mean, for x (N, D) and means (K, D)."""
    return torch.cdist(x.double(), means.double().to(x.device)).min(1)


def mode_metrics(x: Tensor, means: Tensor, std: float) -> dict[str, float]:
    """modes (covered, of K), hq (share of HQ samples, 0..1), spread (RMS distance of the HQ
    samples to their mode over the data's, 1.0 = the data), reverse_kl (nats) for x (N, 2).

    With no HQ sample at all the histogram is empty: reverse_kl is +inf and spread NaN.
    """
    if x.dim() != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"need (N, {means.shape[1]}) samples; got shape {tuple(x.shape)}")
    nearest_dist, nearest = nearest_mode(x, means)
    hq = nearest_dist <= HQ_RADIUS * std
    counts = torch.bincount(nearest[hq], minlength=len(means)).double()  # (K,)
    if counts.sum() == 0:
        reverse_kl = math.inf
    else:
        p = counts / counts.sum()
        reverse_kl = float(torch.xlogy(p, p * len(means)).sum())
    spread = (float(nearest_dist[hq].square().mean().sqrt()) / data_hq_rms(std, means.shape[1]) if hq.any()
              else math.nan)
    return {"modes": float((counts > 0).sum()), "hq": float(hq.double().mean()), "spread": spread,
            "reverse_kl": reverse_kl}


def mixture_metrics(x: Tensor, dataset: str) -> dict[str, float]:
    """`mode_metrics` for the built-in mixture `dataset` ('ring8' or 'grid25')."""
    return mode_metrics(x, mixture_means(dataset), mixture_std(dataset))
