"""Class coverage on labelled data and the stacked-digits mode count.

Class coverage: a classifier labels each generated sample; report the share of each class,
the number of classes with at least one sample, and KL(generated class histogram || the
data's) (the class-histogram check of e.g. Santurkar et al. 2018, "A Classification-Based
Study of Covariate Shift in GAN Distributions").
Stacked digits (VEEGAN, Srivastava et al. 2017; PacGAN, Lin et al. 2018): a 3-channel image
is three digits; its mode is 100*d0 + 10*d1 + d2 of the classified channels; report the modes
covered (of 1,000) and KL(mode histogram || uniform over 1,000).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def class_histogram(labels: Tensor, num_classes: int) -> Tensor:
    """Share of each class among integer labels (N,) -> (num_classes,) float64 summing to 1."""
    counts = torch.bincount(labels.long().flatten().cpu(), minlength=num_classes).double()
    if len(counts) > num_classes:
        raise ValueError(f"labels exceed {num_classes} classes: max label {int(labels.max())}")
    return counts / counts.sum()


def kl_divergence(p: Tensor, q: Tensor) -> float:
    """KL(p || q) in nats of two histograms; +inf when p puts mass where q has none."""
    if bool(((p > 0) & (q == 0)).any()):
        return math.inf
    return float(torch.xlogy(p, p).sum() - torch.xlogy(p, q).sum())


def class_coverage(fake_labels: Tensor, real_labels: Tensor, num_classes: int) -> dict[str, float]:
    """classes_covered (classes with >= 1 generated sample), class_coverage (that share of
    num_classes), class_kl = KL(generated histogram || data's), class_share_<c> for each c."""
    p_fake = class_histogram(fake_labels, num_classes)
    p_real = class_histogram(real_labels, num_classes)
    covered = int((p_fake > 0).sum())
    out = {"class_coverage": covered / num_classes, "class_kl": kl_divergence(p_fake, p_real),
           "classes_covered": float(covered)}
    out.update({f"class_share_{c}": float(p_fake[c]) for c in range(num_classes)})
    return out


def stacked_modes(channel_labels: Tensor) -> dict[str, float]:
    """stacked_modes (distinct modes of 1,000 covered) and stacked_kl = KL(mode histogram ||
    uniform) for per-channel digit labels (N, 3)."""
    if channel_labels.dim() != 2 or channel_labels.shape[1] != 3:
        raise ValueError(f"need per-channel labels (N, 3); got shape {tuple(channel_labels.shape)}")
    d = channel_labels.long()
    modes = 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2]  # (N,)
    p = class_histogram(modes, 1000)
    return {"stacked_modes": float((p > 0).sum()), "stacked_kl": float(torch.xlogy(p, p * 1000).sum())}
