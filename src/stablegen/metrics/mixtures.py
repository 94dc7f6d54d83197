"""Mode coverage, high-quality rate and reverse KL on 2-D Gaussian mixtures.

The VEEGAN / PacGAN protocol (Srivastava et al. 2017, "VEEGAN", Table 1; Lin et al. 2018,
"PacGAN"), as BENCHMARKS.md defines it: a sample is *high quality* (HQ) when it lies within
3 standard deviations of its nearest mean; a mode is *covered* when at least one HQ sample
is nearest to it; reverse KL = KL(histogram of HQ samples over modes || uniform).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..data.toys import mixture_means, mixture_std


def nearest_mode(x: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
    """(distance, index) of each sample's nearest mean, for x (N, D) and means (K, D)."""
    return torch.cdist(x.double(), means.double().to(x.device)).min(1)


def mode_metrics(x: Tensor, means: Tensor, std: float) -> dict[str, float]:
    """modes (covered, of K), hq (share of HQ samples, 0..1), reverse_kl (nats) for x (N, 2).

    With no HQ sample at all the histogram is empty and reverse_kl is +inf.
    """
    if x.dim() != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"need (N, {means.shape[1]}) samples; got shape {tuple(x.shape)}")
    nearest_dist, nearest = nearest_mode(x, means)
    hq = nearest_dist <= 3 * std
    counts = torch.bincount(nearest[hq], minlength=len(means)).double()  # (K,)
    if counts.sum() == 0:
        reverse_kl = math.inf
    else:
        p = counts / counts.sum()
        reverse_kl = float(torch.xlogy(p, p * len(means)).sum())
    return {"modes": float((counts > 0).sum()), "hq": float(hq.double().mean()), "reverse_kl": reverse_kl}


def mixture_metrics(x: Tensor, dataset: str) -> dict[str, float]:
    """`mode_metrics` for the built-in mixture `dataset` ('ring8' or 'grid25')."""
    return mode_metrics(x, mixture_means(dataset), mixture_std(dataset))
