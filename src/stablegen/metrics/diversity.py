"""Sample diversity: mean pairwise L2 distance of a subsample, in a feature space.

The average-pairwise-distance diversity score (Zhu et al. 2017, "Toward Multimodal
Image-to-Image Translation", with LPIPS as the distance; here L2 in any feature space).
A falling ratio diversity(generated) / diversity(data) is the stability guard's
mode-collapse signal: a collapsed generator draws near-identical samples.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .features import FeatureExtractor, extract


def mean_pairwise_distance(features: Tensor) -> float:
    """Mean of ||f_i - f_j|| over pairs i < j of (N, F) features, N >= 2."""
    if len(features) < 2:
        raise ValueError(f"diversity needs at least 2 samples; got {len(features)}")
    d = torch.pdist(features.double().reshape(len(features), -1))  # (N (N-1) / 2,)
    return float(d.mean())


def diversity(x: Tensor, features: FeatureExtractor | None = None, *, n: int = 1000,
              generator: torch.Generator | None = None, batch_size: int = 500) -> float:
    """Mean pairwise distance of a random subsample of at most n samples of x (N, ...),
    in the space of `features` (None: the flattened samples)."""
    if len(x) > n:
        x = x[torch.randperm(len(x), generator=generator)[:n].to(x.device)]
    f = extract(features, x, batch_size=batch_size).features if features is not None else x.detach().cpu()
    return mean_pairwise_distance(f)
