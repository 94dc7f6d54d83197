"""Inception score (IS).

Salimans et al. 2016, "Improved Techniques for Training GANs":
IS = exp(E_x KL(p(y|x) || p(y))), computed on `splits` disjoint random splits of the
samples (10 in the paper), reported as mean and standard deviation (ddof 0) over splits.
With the Inception network y ranges over its 1008 ImageNet logits; with the digits
classifier over the 10 digits (or the 10^C joint classes of a C-channel stacked image).
"""

from __future__ import annotations

import torch
from torch import Tensor


def joint_class_probs(logits: Tensor) -> Tensor:
    """Per-channel logits (N, C, K) -> probabilities of the joint class (N, K^C), channels
    independent given the image (channel 0 is the most significant digit)."""
    probs = logits.double().softmax(-1)  # (N, C, K)
    joint = probs[:, 0]
    for c in range(1, probs.shape[1]):
        joint = (joint[:, :, None] * probs[:, c, None, :]).reshape(len(probs), -1)
    return joint


def inception_score(probs: Tensor, *, splits: int = 10,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """(mean, std) of exp(E_x KL(p(y|x) || p(y))) over splits; probs (N, K) rows sum to 1."""
    if len(probs) < splits:
        raise ValueError(f"inception score needs at least {splits} samples for {splits} splits; got {len(probs)}")
    p = probs.double()[torch.randperm(len(probs), generator=generator)]
    scores = []
    for part in p.tensor_split(splits):  # exactly `splits` near-equal parts
        p_y = part.mean(0, keepdim=True)  # (1, K)
        kl = torch.xlogy(part, part) - torch.xlogy(part, p_y)  # (n, K); 0 log 0 = 0
        scores.append(kl.sum(1).mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))
